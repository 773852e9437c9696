"""Named clusters: /select_replica with `replicas` and `request`, reports against their decisions,
the per-replica statistics the service learns, and a 400 naming each bad new field."""

from __future__ import annotations

import pytest

from agent_app import replica_outcomes
from agent_app.decisions import decode_decision
from agent_app.models import AgentConfig
from tests.conftest import SEED_SELECT

pytestmark = pytest.mark.django_db
EXTRAS = {key: value for key, value in SEED_SELECT.items() if key != "replica_loads"}


def named(loads: list[float], names: list[str] | None = None, **signals) -> dict:
    names = names or [f"gpu-{i}" for i in range(len(loads))]
    replicas = [{"name": name, "load": load} for name, load in zip(names, loads, strict=True)]
    for key, values in signals.items():
        for replica, value in zip(replicas, values, strict=True):
            replica[key] = value
    return {"replicas": replicas, **EXTRAS}


def select(client, body: dict) -> dict:
    response = client.post("/select_replica", body, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def report(client, decision: dict, loads: list[float], expected: int = 201, **fields) -> dict:
    body = {"decision_id": decision["decision_id"], "replica_loads": loads, "latency_ms": 900.0,
            "success": True, **fields}
    response = client.post("/record_experience", body, format="json")
    assert response.status_code == expected, response.content
    return response.json()


def test_a_named_cluster_of_any_size_is_answered_by_index_and_name(client):
    AgentConfig.objects.update_or_create(pool="default", defaults={"exploration_enabled": False})
    body = select(client, {**named([9, 1, 5, 7, 8]), "request": {"prompt_tokens": 812, "max_tokens": 256}})
    assert (body["replica_idx"], body["replica_name"], body["policy"]) == (1, "gpu-1", "least_loaded")
    decision = decode_decision(body["decision_id"])
    assert (decision.action, decision.replica, decision.prompt_tokens) == (1, "gpu-1", 812)


def test_reports_against_named_decisions_teach_the_service_each_replica(client, settings, monkeypatch):
    monkeypatch.setattr(replica_outcomes, "clock", lambda: 1_800_000_000.0)  # one bucket, equal weights
    settings.RL_NETWORK = "per_replica"
    AgentConfig.objects.update_or_create(pool="default", defaults={"exploration_enabled": False})
    for _ in range(6):
        fast = select(client, named([0, 50], ["fast", "slow"]))
        report(client, fast, [1, 50], latency_ms=1000.0, ttft_ms=100.0, output_tokens=91)
        slow = select(client, named([50, 0], ["fast", "slow"]))
        report(client, slow, [50, 1], success=False, latency_ms=30.0)
    replicas = client.get("/stats").json()["replicas"]
    assert replicas["fast"]["latency_ms"] == pytest.approx(1000.0)
    assert replicas["fast"]["tpot_ms"] == pytest.approx(10.0)  # (1000 - 100) / 90
    assert "ttft_ms_per_ktok" not in replicas["fast"]  # the decision did not say the prompt's size
    assert replicas["fast"]["failure_rate"] == 0.0 and replicas["slow"]["failure_rate"] == 1.0
    assert replicas["fast"]["share"] == pytest.approx(0.5)


def test_the_original_body_and_the_named_body_decide_alike(client, fill):
    fill(300)
    assert client.post("/train?batch_size=64&iterations=120").status_code == 200
    AgentConfig.objects.update_or_create(pool="default", defaults={"exploration_enabled": False})
    for loads in ([5, 3, 7], [50, 10, 0], [1, 1, 90]):
        original = select(client, {**SEED_SELECT, "replica_loads": loads})
        extended = select(client, named(loads, ["replica-1", "replica-2", "replica-3"]))
        assert original["policy"] == extended["policy"] == "dqn"
        assert (extended["replica_idx"], extended["replica_name"], extended["confidence"]) == (
            original["replica_idx"], original["replica_name"], original["confidence"])


def test_with_the_fixed_network_a_cluster_of_another_size_is_routed_least_loaded(client, fill, store):
    fill(300)
    assert client.post("/train?batch_size=64&iterations=120").status_code == 200
    body = select(client, named([5, 3, 7, 0]))
    assert body["policy"] in {"least_loaded", "explore"}
    if body["policy"] == "least_loaded":
        assert body["replica_idx"] == 3 and "scores 3 replicas" in body["fallback_reason"]
    # Its outcome is still stored and counted (per-replica statistics, the gate's evidence); the
    # fixed network's training skips a state of another width.
    assert report(client, body, [5, 3, 7, 1])["stored"] == 1
    assert client.post("/train?batch_size=64&iterations=2").status_code == 200


BAD_SELECTS = [
    ({"replicas": "gpu-0"}, "replicas"),
    ({"replicas": []}, "replicas"),
    ({"replicas": [{"name": f"r{i}", "load": 1} for i in range(257)]}, "replicas"),
    ({"replicas": [{"name": "a", "load": 1}, {"name": "a", "load": 2}]}, "replicas"),
    ({"replicas": [{"name": "a"}]}, "replicas"),
    ({"replicas": [{"name": "a b", "load": 1}]}, "replicas"),
    ({"replicas": [{"name": 7, "load": 1}]}, "replicas"),
    ({"replicas": [{"name": "a", "load": -1}]}, "replicas"),
    ({"replicas": [{"name": "a", "load": 1, "kv_cache_usage": 1.5}]}, "replicas"),
    ({"replicas": [{"name": "a", "load": 1, "running": True}]}, "replicas"),
    ({"replicas": [{"name": "a", "load": 1, "waiting": "2"}]}, "replicas"),
    ({"replicas": [{"name": "a", "load": 1}], "request": {"prompt_tokens": "812"}}, "request"),
    ({"replicas": [{"name": "a", "load": 1}], "request": {"max_tokens": 1.5}}, "request"),
    ({"replicas": [{"name": "a", "load": 1}], "request": [812]}, "request"),
    ({"replicas": [{"name": "a", "load": 1}], "replica_loads": [1, 2, 3]}, "replicas"),
    ({}, "replica_loads"),
]


@pytest.mark.parametrize("fields, named_field", BAD_SELECTS)
def test_bad_cluster_fields_get_a_400_naming_them(client, fields, named_field):
    response = client.post("/select_replica", {**EXTRAS, **fields}, format="json")
    assert response.status_code == 400 and named_field in response.json(), response.content


@pytest.mark.parametrize("fields, named_field", [
    ({"ttft_ms": -1}, "ttft_ms"), ({"ttft_ms": "5"}, "ttft_ms"), ({"output_tokens": 1.5}, "output_tokens"),
    ({"output_tokens": -3}, "output_tokens"), ({"replica_loads": [1, 2, 3]}, "replica_loads"),
])
def test_bad_report_fields_get_a_400_naming_them_and_store_nothing(client, store, settings, fields,
                                                                    named_field):
    settings.RL_NETWORK = "per_replica"
    decision = select(client, named([5, 3, 7, 0, 2]))
    refused = report(client, decision, [5, 3, 7, 1, 2], expected=400, **fields)
    assert named_field in refused and store.size() == 0


def test_a_state_report_may_name_the_replica_instead_of_the_action(client, store):
    state = [5, 3, 7, 12, 0.28, 8.2, 0.98, 0.5, 0.4, 0.5]
    body = {"state": state, "replica": "replica-3", "latency_ms": 100.0, "success": True,
            "replica_loads": [5, 3, 8]}
    assert client.post("/record_experience", body, format="json").status_code == 201
    assert store.recent(1)[0]["action"] == 2
    for bad in ({"replica": "replica-9"}, {"replica": "replica-1", "action": 0}):
        refused = client.post("/record_experience", {**body, **bad}, format="json")
        assert refused.status_code == 400 and "replica" in refused.json(), refused.content
    assert store.size() == 1


def test_the_heuristic_weighs_reported_queues_and_kv_use(client, settings):
    AgentConfig.objects.update_or_create(pool="default", defaults={"exploration_enabled": False})
    # gpu-0 has the lowest load but a long queue of waiting requests and a nearly full KV cache.
    body = named([2, 6, 9], waiting=[8, 0, 3], running=[0, 6, 6], kv_cache_usage=[0.97, 0.3, 0.5])
    decision = select(client, body)
    assert (decision["replica_name"], decision["policy"]) == ("gpu-1", "scorer")
    assert decision["fallback_reason"]  # the heuristic says why it routes
    settings.RL_HEURISTIC = "least_loaded"
    assert select(client, body)["replica_name"] == "gpu-0"
    assert select(client, named([2, 6, 9]))["policy"] == "least_loaded"  # loads alone: least-loaded
