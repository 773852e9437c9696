"""The routing gate: least-loaded routes until the model's own decisions are measured better on live
traffic, then the model routes with a holdout, and hands back when it falls behind."""

from __future__ import annotations

import pytest

from agent_app.models import AgentState
from agent_app.rl.state import normalize_state
from agent_app.serving import policy_cache
from tests.conftest import SEED_SELECT

pytestmark = pytest.mark.django_db


@pytest.fixture
def gate(settings):
    settings.RL_ROUTING_GATE = True
    settings.RL_GATE_MIN_OUTCOMES = 30
    settings.RL_TRIAL_FRACTION = 0.5
    settings.RL_HOLDOUT_FRACTION = 0.1
    settings.RL_MIN_TRAINING_STEPS = 1


def decide(client, count: int) -> list[dict]:
    return [client.post("/select_replica", SEED_SELECT, format="json").json() for _ in range(count)]


def report(client, decisions: list[dict], model_ms: float, heuristic_ms: float) -> None:
    experiences = [{"decision_id": d["decision_id"], "replica_loads": [5, 3, 7], "success": True,
                    "latency_ms": heuristic_ms if d["policy"] == "least_loaded" else model_ms}
                   for d in decisions]
    assert client.post("/record_experience", {"experiences": experiences}, format="json").status_code == 201


def test_an_untrained_service_routes_least_loaded_and_never_explores(client, gate):
    decisions = decide(client, 50)
    assert {d["policy"] for d in decisions} == {"least_loaded"}
    assert all(d["replica_idx"] == 1 and not d["exploration"] for d in decisions)
    assert "no trained model yet" in decisions[0]["fallback_reason"]


def test_the_model_takes_over_once_measured_better_and_hands_back_when_worse(client, gate, fill):
    fill(300)
    assert client.post("/train?batch_size=64&iterations=50").status_code == 200
    decisions = decide(client, 200)
    tried = [d for d in decisions if d["policy"] != "least_loaded"]
    assert 60 <= len(tried) <= 140  # RL_TRIAL_FRACTION of the requests
    held = [d for d in decisions if d["policy"] == "least_loaded"]
    assert "measured better" in held[0]["fallback_reason"]
    assert client.get("/stats").json()["routing"]["routes"] == "heuristic"

    report(client, decisions, model_ms=100.0, heuristic_ms=3000.0)
    routing = client.get("/stats").json()["routing"]
    assert routing["routes"] == "model" and AgentState.load().router == "model"
    assert routing["evidence"]["model_lead"] > 0 and routing["arms"]["model"]["outcomes"] == len(tried)
    after = decide(client, 200)
    holdout = [d for d in after if d["policy"] == "least_loaded"]
    assert len(holdout) <= 40 and all(d["fallback_reason"].startswith("holdout") for d in holdout)

    report(client, after, model_ms=20_000.0, heuristic_ms=100.0)
    report(client, decide(client, 300), model_ms=20_000.0, heuristic_ms=100.0)
    assert client.get("/stats").json()["routing"]["routes"] == "heuristic"


def test_exploration_under_the_gate_stays_near_the_best_q(client, gate, fill, settings):
    fill(300)
    assert client.post("/train?batch_size=64&iterations=50").status_code == 200
    settings.RL_EXPLORATION_MARGIN = 0.0  # only replicas tied with the best may be explored
    decisions = [d for d in decide(client, 200) if d["policy"] == "explore"]
    network = policy_cache.snapshot.network
    # Each decision's own state: memory, CPU and the time of day move between requests.
    best = [int(network.q_values(normalize_state(d["state"], 3)).argmax()) for d in decisions]
    assert decisions and [d["replica_idx"] for d in decisions] == best
