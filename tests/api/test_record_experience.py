"""POST /record_experience: the specification's body, decision ids, the batch form and idempotency."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import SEED_EXPERIENCE, SEED_SELECT, random_experience

pytestmark = pytest.mark.django_db


def record(client, body, expected=201):
    response = client.post("/record_experience", body, format="json")
    assert response.status_code == expected, response.content
    return response.json()


def test_the_specification_body_is_stored_with_its_reward(client, store, settings):
    settings.REWARD_LATENCY_MODE = "linear"  # the original specification's reward
    body = record(client, SEED_EXPERIENCE)
    loads = np.array([5, 4, 7]) / 100.0
    expected = 1.0 - 265.3 / 1000.0 - 0.1 * loads.var()
    assert body["stored"] == 1 and body["buffer_size"] == 1
    assert body["rewards"][0] == pytest.approx(expected, abs=1e-6)
    row = store.recent(1)[0]
    assert row["action"] == 1
    assert row["state"] == pytest.approx(SEED_EXPERIENCE["state"], rel=1e-6)
    # next_state: the decision's state with the loads reported after the request.
    assert row["next_state"] == pytest.approx([5, 4, 7] + SEED_EXPERIENCE["state"][3:], rel=1e-6)


def test_the_default_reward_keeps_its_signal_for_minute_long_requests(client):
    rewards = [record(client, {**SEED_EXPERIENCE, "latency_ms": ms})["rewards"][0]
               for ms in (300, 20_000, 60_000)]
    assert rewards[0] > rewards[1] > rewards[2] > -10.0  # linear clips all of 11 s and more at -10
    balance = 0.1 * (np.array([5, 4, 7]) / 100).var()
    assert rewards[0] == pytest.approx(1.0 - np.log1p(0.3) - balance, abs=1e-6)


def test_failed_request_costs_the_failure_penalty(client):
    body = record(client, {**SEED_EXPERIENCE, "success": False})
    assert body["rewards"] == [-10.0]


def test_client_next_state_is_kept(client, store):
    next_state = [1, 2, 3, 4, 0.1, 2.0, 1.0, 0.2, 0.3, 0.9]
    record(client, {**SEED_EXPERIENCE, "next_state": next_state})
    assert store.recent(1)[0]["next_state"] == pytest.approx(next_state, rel=1e-6)


def test_decision_id_replaces_state_and_action(client, store):
    decision = client.post("/select_replica", SEED_SELECT, format="json").json()
    record(client, {"decision_id": decision["decision_id"], "latency_ms": 300.0, "success": True,
                    "replica_loads": [6, 3, 7]})
    row = store.recent(1)[0]
    assert row["action"] == decision["replica_idx"]
    assert row["state"] == pytest.approx(decision["state"], rel=1e-6)


def test_forged_decision_id_is_refused(client, store):
    decision = client.post("/select_replica", SEED_SELECT, format="json").json()
    token = decision["decision_id"]
    forged = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    body = record(client, {"decision_id": forged, "latency_ms": 1.0, "success": True,
                           "replica_loads": [1, 1, 1]}, expected=400)
    assert "decision_id" in body
    assert store.size() == 0


def test_batch_form_stores_every_experience(client, store):
    rng = np.random.default_rng(1)
    body = record(client, {"experiences": [random_experience(rng) for _ in range(250)]})
    assert body["stored"] == 250 and len(body["rewards"]) == 250
    assert store.size() == 250


def test_batch_with_one_bad_item_stores_nothing_and_names_it(client, store):
    rng = np.random.default_rng(2)
    batch = [random_experience(rng) for _ in range(5)]
    batch[3]["latency_ms"] = -1
    body = record(client, {"experiences": batch}, expected=400)
    assert "latency_ms" in body["experiences"]["3"]
    assert store.size() == 0


def test_retried_report_with_the_same_id_is_stored_once(client, store):
    first = record(client, {**SEED_EXPERIENCE, "experience_id": "req-42"})
    again = record(client, {**SEED_EXPERIENCE, "experience_id": "req-42"})
    assert (first["stored"], first["duplicates"]) == (1, 0)
    assert (again["stored"], again["duplicates"]) == (0, 1)
    batch = record(client, {"experiences": [{**SEED_EXPERIENCE, "experience_id": "req-43"}] * 3})
    assert (batch["stored"], batch["duplicates"]) == (1, 2)
    assert store.size() == 2


def test_a_weighted_time_to_first_token_lowers_the_reward_of_a_slow_first_token(client, settings):
    settings.REWARD_TTFT_WEIGHT = 1.0
    fast, slow = (record(client, {**SEED_EXPERIENCE, "ttft_ms": ttft})["rewards"][0]
                  for ttft in (100.0, 5000.0))
    without = record(client, SEED_EXPERIENCE)["rewards"][0]
    assert without > fast > slow
    assert fast - slow == pytest.approx(np.log1p(5.0) - np.log1p(0.1), abs=1e-5)
