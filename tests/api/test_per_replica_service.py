"""The per-replica network served: one model for any cluster size and any names, trained from
named decisions and from the original body's reports alike; permuting replicas permutes nothing
but the answer's index."""

from __future__ import annotations

import numpy as np
import pytest

from agent_app import replica_outcomes
from agent_app.models import AgentConfig
from agent_app.serving import policy_cache
from tests.api.test_named_clusters import EXTRAS, named, report, select
from tests.conftest import random_experience

pytestmark = pytest.mark.django_db


@pytest.fixture
def per_replica(settings, monkeypatch):
    # A stopped clock: the replicas' statistics weigh 5 s buckets by age, so two decisions that
    # straddle a bucket boundary would otherwise see slightly different features.
    monkeypatch.setattr(replica_outcomes, "clock", lambda: 1_800_000_000.0)
    settings.RL_NETWORK = "per_replica"
    settings.MAX_REPLICAS = 8


def train_on_named_clusters(client, rng) -> None:
    """Decisions over clusters of 3 to 6 named replicas, reported with latency that grows with load."""
    for _ in range(120):
        size = int(rng.integers(3, 7))
        loads = rng.integers(0, 60, size).astype(float).tolist()
        decision = select(client, named(loads, [f"old-{i}" for i in range(size)]))
        chosen = loads[decision["replica_idx"]]
        report(client, decision, loads, latency_ms=200.0 + 40.0 * chosen, ttft_ms=50.0, output_tokens=100)
    assert client.post("/train?batch_size=64&iterations=150").status_code == 200


def test_one_model_serves_clusters_of_any_size_and_new_names(client, per_replica):
    train_on_named_clusters(client, np.random.default_rng(0))
    AgentConfig.objects.update_or_create(pool="default", defaults={"exploration_enabled": False})
    for size in (2, 5, 8):
        body = select(client, named([30.0] * (size - 1) + [0.0], [f"new-{i}" for i in range(size)]))
        assert body["policy"] == "dqn" and 0 <= body["replica_idx"] < size
    assert policy_cache.snapshot.network_kind == "per_replica"
    too_many = select(client, named([1.0] * 9))
    assert too_many["policy"] == "least_loaded" and "MAX_REPLICAS=8" in too_many["fallback_reason"]


def test_permuting_the_replicas_permutes_only_the_index(client, per_replica):
    train_on_named_clusters(client, np.random.default_rng(1))
    AgentConfig.objects.update_or_create(pool="default", defaults={"exploration_enabled": False})
    rng = np.random.default_rng(2)
    for _ in range(5):
        loads = rng.integers(0, 60, 6).astype(float).tolist()
        names = [f"old-{i}" for i in range(6)]
        order = rng.permutation(6)
        first = select(client, named(loads, names))
        second = select(client, named([loads[i] for i in order], [names[i] for i in order]))
        assert first["replica_name"] == second["replica_name"]
        assert first["confidence"] == pytest.approx(second["confidence"], abs=1e-5)


def test_reports_in_the_original_form_train_the_per_replica_network(client, per_replica, store):
    rng = np.random.default_rng(3)
    batch = [random_experience(rng) for _ in range(200)]
    assert client.post("/record_experience", {"experiences": batch}, format="json").status_code == 201
    stored = store.recent(1)[0]["state"]
    assert stored[0] == -3.0  # a compact observation of the 3 replicas of REPLICA_NAMES
    assert client.post("/train?batch_size=64&iterations=20").status_code == 200
    assert select(client, {"replica_loads": [5, 3, 7], **EXTRAS})["model_version"] == 1


def test_a_report_in_the_original_form_is_stored_as_the_decision_saw_it(client, per_replica, store):
    from agent_app.decisions import decode_decision

    decision = select(client, {"replica_loads": [5, 3, 7], **EXTRAS})
    body = {"state": decision["state"], "action": decision["replica_idx"], "latency_ms": 300.0,
            "success": True, "replica_loads": [5, 4, 7]}
    assert client.post("/record_experience", {"experiences": [body] * 3}, format="json").status_code == 201
    stored = store.recent(1)[0]["state"]
    assert stored == pytest.approx(decode_decision(decision["decision_id"]).state, abs=1e-6)
