"""A/B results per arm (with a confidence interval) and the published weights for local inference."""

from __future__ import annotations

import numpy as np
import pytest

from agent_app.replay.histogram import bucket_upper_ms, latency_bucket
from agent_app.rl.inference import NumpyQNetwork, weights_from_bytes
from agent_app.rl.state import normalize_state
from tests.conftest import SEED_EXPERIENCE, SEED_SELECT

pytestmark = pytest.mark.django_db


def report_arm(client, arm: str, latencies, success=True):
    batch = [{**SEED_EXPERIENCE, "latency_ms": float(v), "success": success, "arm": arm} for v in latencies]
    assert client.post("/record_experience", {"experiences": batch}, format="json").status_code == 201


def test_ab_results_compare_the_arms_with_a_confidence_interval(client):
    rng = np.random.default_rng(0)
    report_arm(client, "heuristic", rng.normal(400, 50, 500).clip(1))
    report_arm(client, "rl", rng.normal(300, 50, 500).clip(1))
    body = client.get("/ab_results").json()
    heuristic, rl = body["arms"]["heuristic"], body["arms"]["rl"]
    assert heuristic["count"] == rl["count"] == 500
    assert heuristic["latency_mean_ms"] == pytest.approx(400, abs=10)
    assert rl["success_rate"] == 1.0
    assert 300 < rl["latency_p99_ms"] < 480  # normal(300, 50): p99 ~ 416, within the 5% buckets
    comparison = body["comparison"]
    low, high = comparison["latency_mean_diff_ci95_ms"]
    assert low < comparison["latency_mean_diff_ms"] < high < 0
    assert comparison["candidate_is_faster"] is True
    assert client.get("/stats").json()["ab"]["comparison"]["baseline"] == "heuristic"


def test_outcomes_without_an_arm_are_not_counted(client):
    client.post("/record_experience", SEED_EXPERIENCE, format="json")
    assert client.get("/ab_results").json() == {"arms": {}, "comparison": None}


def test_a_bad_arm_name_is_refused(client, store):
    response = client.post("/record_experience", {**SEED_EXPERIENCE, "arm": "Not An Arm!"}, format="json")
    assert response.status_code == 400 and "arm" in response.json()
    assert store.size() == 0


def test_latency_buckets_are_five_percent_wide():
    for latency in (1.0, 250.0, 12_345.0):
        upper = bucket_upper_ms(latency_bucket(latency))
        assert latency <= upper <= latency * 1.06 + 1


def test_weights_endpoint_serves_the_published_model_with_an_etag(client, fill, settings):
    settings.RL_MIN_TRAINING_STEPS = 1  # ready after one run, however short a busy machine's budget makes it
    assert client.get("/model/weights").status_code == 404
    fill(200)
    assert client.post("/train?batch_size=64&iterations=5").status_code == 200
    response = client.get("/model/weights")
    assert response.status_code == 200
    assert response["ETag"] == '"v1"' and response["X-Model-Version"] == "1"
    assert response["X-Model-Ready"] == "true"
    network = NumpyQNetwork(weights_from_bytes(response.content))
    decision = client.post("/select_replica", SEED_SELECT, format="json").json()
    q_values = network.q_values(normalize_state(decision["state"], 3))
    assert np.isfinite(q_values).all() and q_values.shape == (3,)
    assert client.get("/model/weights", HTTP_IF_NONE_MATCH='"v1"').status_code == 304
