"""The hot endpoints after their fast paths: every documented field, JSON whatever Accept says, a
bad body in a large batch named with nothing stored, decision counters that add up when they are
counted off the request path, and published weights served under their own version."""

from __future__ import annotations

import os

import numpy as np
import pytest
from django.db import connection
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

from agent_app.api import serializers as io
from agent_app.decisions import decode_decision
from agent_app.models import AgentConfig, AgentState
from agent_app.rl import normalize_state, softmax_confidence
from agent_app.rl.inference import weights_to_bytes
from agent_app.serving import policy_cache
from tests.conftest import SEED_EXPERIENCE, SEED_SELECT, random_experience
from tests.rl.test_single_state_paths import random_weights

pytestmark = pytest.mark.django_db


def test_a_dqn_decision_answers_every_documented_field(client, fill):
    fill(300)
    assert client.post("/train?batch_size=64&iterations=120").status_code == 200
    AgentConfig.objects.update_or_create(pool="default", defaults={"exploration_enabled": False})
    response = client.post("/select_replica", SEED_SELECT, format="json")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == set(io.SelectReplicaResponse().fields)
    documented = io.SelectReplicaResponse(data=body)
    assert documented.is_valid(), documented.errors
    assert (body["policy"], body["fallback_reason"], body["exploration"]) == ("dqn", None, False)
    q_values = policy_cache.snapshot.network.q_values(normalize_state(body["state"], 3))
    assert body["replica_idx"] == int(np.argmax(q_values))
    assert body["replica_name"] == f"replica-{body['replica_idx'] + 1}"
    assert body["confidence"] == pytest.approx(softmax_confidence(q_values, body["replica_idx"]), abs=1e-5)
    decision = decode_decision(body["decision_id"])
    assert (decision.model_version, decision.action) == (body["model_version"], body["replica_idx"])
    assert decision.state == pytest.approx(body["state"], rel=1e-6)


@pytest.mark.parametrize("accept", ["text/html", "application/xml", "*/*"])
def test_the_hot_endpoints_answer_json_whatever_accept_says(client, accept):
    selected = client.post("/select_replica", SEED_SELECT, format="json", HTTP_ACCEPT=accept)
    assert selected.status_code == 200 and selected["Content-Type"] == "application/json"
    recorded = client.post("/record_experience", SEED_EXPERIENCE, format="json", HTTP_ACCEPT=accept)
    assert recorded.status_code == 201 and recorded["Content-Type"] == "application/json"
    assert recorded.json() == {"stored": 1, "duplicates": 0, "rewards": recorded.json()["rewards"],
                               "buffer_size": 1}
    refused = client.post("/select_replica", {**SEED_SELECT, "queue_depth": "12"}, format="json",
                          HTTP_ACCEPT=accept)
    assert refused.status_code == 400 and "queue_depth" in refused.json()


def test_one_bad_body_in_a_large_batch_is_named_and_nothing_is_stored(client, store):
    rng = np.random.default_rng(5)
    batch = [random_experience(rng) for _ in range(600)]
    batch[417]["state"][6] = 1.5  # a success rate above 1
    response = client.post("/record_experience", {"experiences": batch}, format="json")
    assert response.status_code == 400
    errors = response.json()["experiences"]
    named = errors["417"] if isinstance(errors, dict) else errors[417]
    assert "state" in named and "[6]" in str(named["state"])
    assert store.size() == 0


def test_a_batch_reports_the_buffer_size_after_its_own_append(client, store):
    rng = np.random.default_rng(6)
    batch = [random_experience(rng, experience_id=f"x{i}") for i in range(300)]
    first = client.post("/record_experience", {"experiences": batch[:100]}, format="json").json()
    again = client.post("/record_experience", {"experiences": batch}, format="json").json()
    assert (first["stored"], first["buffer_size"]) == (100, 100)
    assert (again["stored"], again["duplicates"], again["buffer_size"]) == (200, 100, 300)
    assert len(again["rewards"]) == 300


def decisions_counted(client) -> dict[str, float]:
    """rl_agent_decisions_total per policy, as a scrape of /metrics reads it."""
    response = client.get("/metrics")
    assert response.status_code == 200
    counted: dict[str, float] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            if sample.name == "rl_agent_decisions_total":
                counted[sample.labels["policy"]] = counted.get(sample.labels["policy"], 0) + sample.value
    return counted


def test_decisions_counted_off_the_request_path_add_up_in_metrics_and_stats(client, monkeypatch):
    monkeypatch.setattr("threading.Thread.start", lambda self: None)  # the refresh is called by hand
    with override_settings(POLICY_SYNC_THREAD=True):
        policy_cache._thread_pid = None
        try:
            before = decisions_counted(client)
            bodies = [client.post("/select_replica", SEED_SELECT, format="json").json() for _ in range(40)]
            # No refresh ran since: the scrape counts this worker's decisions itself.
            after = decisions_counted(client)
            for policy in ("explore", "least_loaded", "dqn"):
                made = sum(body["policy"] == policy for body in bodies)
                assert after.get(policy, 0) - before.get(policy, 0) == made, policy
            policy_cache.refresh()  # what the background thread does every SYNC_INTERVAL_SECONDS
            selections = client.get("/stats").json()["selections"]
            for name in {body["replica_name"] for body in bodies}:
                made = sum(body["replica_name"] == name for body in bodies)
                assert sum(selections[name].values()) == made, name
            assert decisions_counted(client) == after  # a second scrape adds nothing
        finally:
            policy_cache._thread_pid = None


def publish(version: int, blob: bytes) -> None:
    AgentState.objects.update_or_create(pool="default", defaults={
        "model_version": version, "serving_weights": blob, "steps_done": 1000, "epsilon": 0.05})


def test_weights_are_served_under_the_version_they_were_published_with(client):
    rng = np.random.default_rng(7)
    blobs = {version: weights_to_bytes(random_weights(rng, dueling=False)) for version in (1, 2, 3)}
    publish(1, blobs[1])
    policy_cache.refresh()
    publish(2, blobs[2])
    published_v3 = []

    def publish_right_after_the_version_is_read(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if not published_v3 and "model_version" in sql and "serving_weights" not in sql:
            published_v3.append(True)  # the trainer publishes v3 between the web worker's reads
            publish(3, blobs[3])
        return result

    with connection.execute_wrapper(publish_right_after_the_version_is_read):
        policy_cache.refresh()  # one refresh of the background thread, racing the publish
    assert published_v3
    snapshot = policy_cache.snapshot
    assert snapshot.model_version in (2, 3)
    assert snapshot.weights_blob == blobs[snapshot.model_version]
    # What a gateway downloads now (no refresh in between: the thread is "running").
    with override_settings(POLICY_SYNC_THREAD=True):
        policy_cache._thread_pid = os.getpid()
        try:
            response = client.get("/model/weights")
        finally:
            policy_cache._thread_pid = None
    assert response["ETag"] == f'"v{snapshot.model_version}"'
    assert response.content == blobs[snapshot.model_version]
