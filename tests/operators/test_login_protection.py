"""The admin login locks a username out, from one address, after repeated failures."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

pytestmark = pytest.mark.django_db
PASSWORD = "a-long-and-unusual-passphrase"


@pytest.fixture
def staff(db):
    return get_user_model().objects.create_user("ops", password=PASSWORD, is_staff=True, is_superuser=True)


def login(client: Client, password: str):
    return client.post("/admin/login/?next=/admin/", {"username": "ops", "password": password})


def test_repeated_failures_lock_the_account_out_even_with_the_right_password(staff, settings):
    client = Client(SERVER_NAME="localhost")
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert login(client, "wrong").status_code == 200  # the form again, with an error
    assert login(client, "wrong").status_code == 429
    locked = login(client, PASSWORD)
    assert locked.status_code == 429
    assert "_auth_user_id" not in client.session


def test_a_success_before_the_limit_resets_the_count(staff, settings):
    client = Client(SERVER_NAME="localhost")
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        login(client, "wrong")
    assert login(client, PASSWORD).status_code == 302
    client.logout()
    assert login(client, "wrong").status_code == 200
