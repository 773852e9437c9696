"""POST /select_replica: the specification's contract, fallback, exploration switches, a query-free
hot path."""

from __future__ import annotations

import pytest
from django.test import override_settings

from agent_app.decisions import decode_decision
from agent_app.models import AgentConfig
from tests.conftest import SEED_SELECT

pytestmark = pytest.mark.django_db


def select(client, **changes):
    response = client.post("/select_replica", {**SEED_SELECT, **changes}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def disable_exploration():
    AgentConfig.objects.update_or_create(pool="default", defaults={"exploration_enabled": False})


def test_answers_the_specification_fields_and_what_a_gateway_needs(client):
    body = select(client)
    assert set(body) >= {"replica_idx", "replica_name", "confidence", "exploration"}
    assert body["replica_name"] == f"replica-{body['replica_idx'] + 1}"
    assert 0.0 <= body["confidence"] <= 1.0
    assert isinstance(body["exploration"], bool)
    assert body["policy"] in {"dqn", "explore", "least_loaded"}
    assert len(body["state"]) == 10
    assert body["state"][:7] == [5, 3, 7, 12, 0.2805, 8.2, 0.98]
    decision = decode_decision(body["decision_id"])
    assert decision.action == body["replica_idx"]
    assert decision.state == pytest.approx(body["state"], rel=1e-6)


def test_without_a_trained_model_least_loaded_decides_and_says_why(client):
    disable_exploration()
    for loads, expected in (([5, 3, 7], 1), ([0, 9, 9], 0), ([8, 9, 2], 2)):
        body = select(client, replica_loads=loads)
        assert body["replica_idx"] == expected
        assert body["policy"] == "least_loaded"
        assert body["fallback_reason"] == "no trained model yet"
        assert body["exploration"] is False


@override_settings(RL_EXPLORATION=False)
def test_rl_exploration_false_never_explores(client):
    assert not any(select(client)["exploration"] for _ in range(200))


def test_exploration_turned_off_in_the_admin_overrides_the_environment(client):
    disable_exploration()
    assert not any(select(client)["exploration"] for _ in range(200))


def test_full_epsilon_explores_and_names_every_replica(client):
    bodies = [select(client) for _ in range(300)]
    assert all(b["exploration"] and b["policy"] == "explore" for b in bodies)
    assert {b["replica_idx"] for b in bodies} == {0, 1, 2}


def test_trained_model_routes_with_the_dqn(client, fill):
    fill(300)
    assert client.post("/train?batch_size=64&iterations=120").status_code == 200
    disable_exploration()
    body = select(client)
    assert body["policy"] == "dqn"
    assert body["fallback_reason"] is None
    assert body["model_version"] == 1


@override_settings(REPLICA_NAMES=["gpu-a", "gpu-b", "gpu-c"])
def test_replica_names_are_configurable(client):
    body = select(client)
    assert body["replica_name"] == ["gpu-a", "gpu-b", "gpu-c"][body["replica_idx"]]


def test_hot_path_makes_no_database_query_once_warm(client, django_assert_num_queries, monkeypatch):
    from agent_app.services.routing import select_replica
    from agent_app.serving import policy_cache

    monkeypatch.setattr("threading.Thread.start", lambda self: None)  # keep the test single-threaded
    with override_settings(POLICY_SYNC_THREAD=True):
        policy_cache._thread_pid = None
        select_replica(**SEED_SELECT)  # first call per process: initial refresh
        with django_assert_num_queries(0):
            for _ in range(20):
                select_replica(**SEED_SELECT)
    policy_cache._thread_pid = None
