"""Local inference: the gateway runs the service's published weights in-process and answers what
the service would, falls back while there are no ready weights, and fetches each version once."""

from __future__ import annotations

import random
import time

import pytest
import requests

from tests.client.conftest import SELECT, answer


def random_inputs(rng: random.Random) -> dict:
    return {"replica_loads": [round(rng.uniform(0, 30), 2) for _ in range(3)],
            "queue_depth": rng.uniform(0, 50), "recent_latency_ms": rng.uniform(10, 900),
            "current_rps": rng.uniform(0, 200), "success_rate": rng.uniform(0.8, 1.0)}


def test_local_decisions_match_the_service_for_the_same_state_and_weights_version(
    trained_service, make_client
):
    service = trained_service
    client = make_client(service.url(""), api_key=service.api_key, inference="local", weights_refresh_s=0.1)
    model = client.local.model
    assert model.ready and model.network is not None, client.stats()["local_model"]
    # Every web worker refreshes its snapshot within SYNC_INTERVAL_SECONDS: wait until they all serve it.
    probe = random_inputs(random.Random(0))
    service.wait_for(
        lambda: all(service.call("POST", "/select_replica", json=probe, auth=False).json()["model_version"]
                    == model.version for _ in range(10)),
        15, "every web worker to serve the published model",
    )
    rng, chosen, n = random.Random(5), set(), 80
    for _ in range(n):
        inputs = random_inputs(rng)
        remote = service.call("POST", "/select_replica", json=inputs, auth=False).json()
        assert (remote["policy"], remote["model_version"]) == ("dqn", model.version), remote
        memory, cpu, time_of_day = remote["state"][-3:]  # the service's host figures and clock
        local = client.select(**inputs, memory=memory, cpu=cpu, time_of_day=time_of_day)
        assert (local.decided_by, local.policy, local.reason) == ("local", "dqn", None)
        assert local.replica_idx == remote["replica_idx"] and local.model_version == remote["model_version"]
        assert local.state == pytest.approx(remote["state"])
        assert local.confidence == pytest.approx(remote["confidence"], abs=1e-5)  # the same Q-values
        chosen.add(local.replica_idx)
        client.report(local, 100.0, True, inputs["replica_loads"])  # sent as state + action
    time.sleep(0.5)  # a few refresh rounds: the unchanged version answers 304
    client.close()
    assert client.reporter.snapshot()["stored"] == n
    weights = client.stats()["local_model"]
    assert weights["fetched"] == 1 and weights["not_modified"] >= 2 and weights["errors"] == 0, weights
    assert client.stats()["decisions"] == {"local/dqn": n}
    print(f"replicas chosen by the trained model over {n} states: {sorted(chosen)}")


def test_local_inference_falls_back_until_the_published_weights_are_ready(
    trained_service, dummy, make_client
):
    blob = requests.get(trained_service.url("/model/weights"), timeout=10).content
    published = {"version": None, "ready": "false"}

    def weights(method, path, headers, body):
        if published["version"] is None:
            return 404, {}, b'{"detail": "no trained model yet"}'
        tag = f'"v{published["version"]}"'
        meta = {"ETag": tag, "X-Model-Version": str(published["version"]),
                "X-Model-Ready": published["ready"]}
        if headers.get("If-None-Match") == tag:
            return 304, meta, b""
        return 200, {**meta, "Content-Type": "application/octet-stream"}, blob

    dummy.behave(weights)
    client = make_client(dummy.url, inference="local", weights_refresh_s=3600)  # refreshed by hand below
    decision = client.select(**SELECT)
    assert decision.decided_by == "heuristic" and decision.replica_idx == 1
    assert decision.reason == "no_model: no model published yet (no trained model yet)"
    published["version"] = 3  # weights exist but have too few training steps
    assert client.local.refresh()
    decision = client.select(**SELECT)
    assert decision.decided_by == "heuristic" and decision.reason.startswith("not_ready: model v3"), decision
    published.update(version=4, ready="true")
    assert client.local.refresh()
    decision = client.select(**SELECT)
    assert (decision.decided_by, decision.model_version, decision.reason) == ("local", 4, None)
    assert not client.local.refresh()  # 304: nothing downloaded
    dummy.behave(answer(503))
    assert not client.local.refresh()  # the service is sick: keep deciding with the model we have
    assert client.select(**SELECT).decided_by == "local"
    assert client.stats()["local_model"]["errors"] == 1 and dummy.hits["/select_replica"] == 0
    assert client.stats()["fallbacks"] == {"no_model": 1, "not_ready": 1}


def test_local_inference_with_no_service_decides_by_the_heuristic(make_client):
    client = make_client("http://127.0.0.1:9", inference="local")
    decision = client.select(**SELECT)
    assert decision.decided_by == "heuristic" and decision.replica_idx == 1
    assert decision.reason.startswith("no_model: weights unavailable: ConnectionRefusedError"), decision
