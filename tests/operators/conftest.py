"""Operators' fixtures: a logged-in superuser, a staff member without rights, a plain user."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.conftest import SEED_SELECT

PASSWORD = "correct-horse-battery-staple"


@pytest.fixture(autouse=True)
def no_fsync(monkeypatch):
    """Checkpoint durability has tests of its own; here fsync only makes runs slow on a busy disk."""
    import os

    monkeypatch.setattr(os, "fsync", lambda fd: None)


def logged_in(user) -> Client:
    browser = Client(SERVER_NAME="localhost")
    browser.force_login(user)
    return browser


@pytest.fixture
def admin_user(db, django_user_model):
    return django_user_model.objects.create_superuser("operator", "operator@example.com", PASSWORD)


@pytest.fixture
def operator(client, admin_user) -> Client:
    """A superuser's browser session, on a fresh agent and an empty replay store (via `client`)."""
    return logged_in(admin_user)


@pytest.fixture
def plain_user(db, django_user_model):
    return django_user_model.objects.create_user("visitor", "visitor@example.com", PASSWORD)


@pytest.fixture
def viewer(client, django_user_model) -> Client:
    """Staff without any permission: may open the admin and the dashboard, may change nothing."""
    user = django_user_model.objects.create_user("viewer", "viewer@example.com", PASSWORD, is_staff=True)
    return logged_in(user)


@pytest.fixture
def train(client, fill):
    """Report experiences once, then run `runs` training runs of `iterations` steps each."""
    filled = []

    def run(runs: int = 1, iterations: int = 2) -> list[dict]:
        if not filled:
            fill(200)
            filled.append(True)
        results = []
        for _ in range(runs):
            response = client.post(f"/train?batch_size=32&iterations={iterations}")
            assert response.status_code == 200, response.content
            results.append(response.json())
        return results

    return run


def select(client, **overrides) -> dict:
    response = client.post("/select_replica", {**SEED_SELECT, **overrides}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def config_form(operator: Client, pool: str = "default") -> dict:
    """The pool's configuration form's current values (and hidden initials) as a browser would post them."""
    from agent_app.models import AgentConfig

    response = operator.get(f"/admin/agent_app/agentconfig/{AgentConfig.load(pool).pk}/change/")
    assert response.status_code == 200
    form = response.context["adminform"].form
    data = {}
    for name in form.fields:
        data[name] = data[f"initial-{name}"] = _post_value(form[name].value())
    return data


def _post_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def save_config(operator: Client, **changes) -> object:
    from agent_app.models import AgentConfig

    data = {**config_form(operator), **{k: _post_value(v) for k, v in changes.items()}}
    return operator.post(f"/admin/agent_app/agentconfig/{AgentConfig.load().pk}/change/", data, follow=True)
