"""API keys guard every state-changing endpoint; the hot path checks them without a query."""

from __future__ import annotations

import os

import pytest
from django.test import override_settings

from agent_app.models import ApiKey
from tests.conftest import SEED_EXPERIENCE, SEED_SELECT

pytestmark = pytest.mark.django_db

STATE_CHANGING = [("/record_experience", SEED_EXPERIENCE), ("/train", None), ("/save_model", None)]


@pytest.mark.parametrize(("path", "body"), STATE_CHANGING)
def test_state_changing_endpoints_need_a_key(anonymous, store, path, body):
    response = anonymous.post(path, body, format="json")
    assert response.status_code == 401
    assert "API key" in response.json()["detail"]
    assert store.size() == 0


@pytest.mark.parametrize(("path", "body"), STATE_CHANGING)
def test_a_wrong_key_is_refused(anonymous, store, path, body):
    anonymous.credentials(HTTP_AUTHORIZATION="Bearer rlk_not-a-real-key")
    assert anonymous.post(path, body, format="json").status_code == 401


def test_x_api_key_header_works_too(anonymous, api_key, store):
    anonymous.credentials(HTTP_X_API_KEY=api_key)
    assert anonymous.post("/record_experience", SEED_EXPERIENCE, format="json").status_code == 201


def test_open_endpoints_answer_without_a_key(anonymous):
    assert anonymous.post("/select_replica", SEED_SELECT, format="json").status_code == 200
    assert anonymous.get("/stats").status_code == 200


def test_each_open_group_covers_its_read_only_companion(anonymous):
    # As docs/configuration.md says: `select_replica` opens the weights, `stats` the A/B results.
    assert anonymous.get("/ab_results").status_code == 200
    assert anonymous.get("/model/weights").status_code == 404  # open: no model published yet
    with override_settings(OPEN_ENDPOINTS=[]):
        assert anonymous.get("/ab_results").status_code == 401
        assert anonymous.get("/model/weights").status_code == 401
        assert anonymous.get("/health").status_code == 200  # health checks are always open
        assert anonymous.get("/ready").status_code in (200, 503)


@override_settings(OPEN_ENDPOINTS=["health"])
def test_select_and_stats_can_be_closed(anonymous, api_key):
    assert anonymous.post("/select_replica", SEED_SELECT, format="json").status_code == 401
    assert anonymous.get("/stats").status_code == 401
    anonymous.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key}")
    assert anonymous.post("/select_replica", SEED_SELECT, format="json").status_code == 200


def test_keys_are_stored_hashed(api_key):
    stored = ApiKey.objects.get(name="tests")
    assert api_key not in (stored.digest, stored.prefix) and len(stored.digest) == 64
    assert api_key.startswith(stored.prefix)


def test_a_deactivated_key_stops_working(anonymous, api_key, store):
    ApiKey.objects.update(active=False)
    anonymous.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key}")
    assert anonymous.post("/record_experience", SEED_EXPERIENCE, format="json").status_code == 401


def test_a_key_created_since_the_last_refresh_works_at_once(anonymous, store, settings, monkeypatch):
    """A gateway that creates a key and uses it straight away is not refused until the next refresh."""
    from agent_app.api.auth import create_api_key
    from agent_app.serving import policy_cache

    settings.POLICY_SYNC_THREAD = True  # a refresh thread, as in production: no refresh per call
    monkeypatch.setattr(policy_cache, "_thread_pid", os.getpid())
    policy_cache.refresh()
    raw = create_api_key(name="just-created")[1]
    assert len(policy_cache.snapshot.api_key_digests) == 0
    anonymous.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert anonymous.post("/record_experience", SEED_EXPERIENCE, format="json").status_code == 201
    anonymous.credentials(HTTP_AUTHORIZATION="Bearer rlk_not-a-real-key")
    assert anonymous.post("/record_experience", SEED_EXPERIENCE, format="json").status_code == 401
