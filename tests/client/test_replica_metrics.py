"""Replica metrics as features: vLLM's /metrics parsed (both KV names), scraped in the background
from real fake replicas, unreadable replicas marked but still routable, and the bodies the client
sends (`replicas` form only when asked, the original body otherwise)."""

from __future__ import annotations

import json
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from examples.fake_replica import FakeReplica, ReplicaProfile
from rlagent_client import ClientConfig
from rlagent_client.payload import select_payload
from rlagent_client.replica_metrics import ReplicaMetricsScraper, parse_vllm_metrics
from tests.client.conftest import answer, select_answer

OLD_VLLM = """# HELP vllm:num_requests_running Number of requests currently running on GPU.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m"} 3.0
vllm:num_requests_waiting{model_name="m"} 2.0
vllm:gpu_cache_usage_perc{model_name="m"} 0.41
"""
TWO_ENGINES = """vllm:num_requests_running{engine="0",model_name="m"} 4
vllm:num_requests_running{engine="1",model_name="m"} 1
vllm:num_requests_waiting{engine="0",model_name="m"} 0
vllm:num_requests_waiting{engine="1",model_name="m"} 6
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.2
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.7
vllm:gpu_cache_usage_perc{engine="0",model_name="m"} 0.99
vllm:num_requests_running{broken line
process_cpu_seconds_total 12.5
"""


def test_both_kv_cache_names_parse_and_engines_add_up():
    assert parse_vllm_metrics(OLD_VLLM) == {"running": 3.0, "waiting": 2.0, "kv_cache_usage": 0.41}
    # the new KV name wins over the old one; running and waiting add up; KV is the fullest engine's
    assert parse_vllm_metrics(TWO_ENGINES) == {"running": 5.0, "waiting": 6.0, "kv_cache_usage": 0.7}
    assert parse_vllm_metrics("# nothing here\nup 1\n") == {}


def test_the_original_body_unless_per_replica_features_are_asked_for():
    assert select_payload([5, 2], 7, 280.5, 8.2, 0.98) == {
        "replica_loads": [5.0, 2.0], "queue_depth": 7.0, "recent_latency_ms": 280.5, "current_rps": 8.2,
        "success_rate": 0.98}
    body = select_payload([5, 2], 7, 280.5, 8.2, 0.98, names=["gpu-a-0", "gpu-b-1"],
                          replica_metrics=[{"running": 3, "waiting": 2, "kv_cache_usage": 0.41}, {}],
                          request={"prompt_tokens": 812, "max_tokens": 256})
    assert body == {"replicas": [{"name": "gpu-a-0", "load": 5.0, "running": 3, "waiting": 2,
                                  "kv_cache_usage": 0.41}, {"name": "gpu-b-1", "load": 2.0}],
                    "request": {"prompt_tokens": 812, "max_tokens": 256}, "queue_depth": 7.0,
                    "recent_latency_ms": 280.5, "current_rps": 8.2, "success_rate": 0.98}
    with pytest.raises(ValueError, match="names"):
        select_payload([5, 2], 0, 0, 0, 1, names=["only-one"])
    with pytest.raises(ValueError, match=">= 0"):
        select_payload([5], 0, 0, 0, 1, names=["a"], request={"prompt_tokens": -1})


@pytest.fixture
def replicas():
    started = [FakeReplica(ReplicaProfile(f"gpu-{i}", max_batch=1, decode_ms_per_token=10.0)).start()
               for i in range(2)]
    yield started
    for replica in started:
        replica.stop()


def busy(replica: FakeReplica, requests: int, pool: ThreadPoolExecutor) -> list:
    body = json.dumps({"max_tokens": 300, "messages": [{"role": "user", "content": "hi"}]}).encode()
    request = urllib.request.Request(replica.url + "/v1/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    return [pool.submit(lambda: urllib.request.urlopen(request, timeout=60).read()) for _ in range(requests)]


def wait_until(condition, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_the_scraper_keeps_each_replicas_running_and_waiting(replicas):
    scraper = ReplicaMetricsScraper({"gpu-0": replicas[0].url, "gpu-1": replicas[1].url},
                                    interval_s=0.05).start()
    try:
        assert scraper.wait_rounds(1)
        idle = {"running": 0.0, "waiting": 0.0, "kv_cache_usage": 0.0}
        assert scraper.features(["gpu-0", "gpu-1"]) == [idle, idle]
        with ThreadPoolExecutor(3) as pool:
            pending = busy(replicas[1], 3, pool)
            seen = wait_until(lambda: scraper.features(["gpu-1"])[0].get("waiting") == 2.0)
            features = scraper.features(["gpu-0", "gpu-1"])
            for future in pending:
                future.result()
        assert seen, scraper.stats()
        assert features[0]["running"] == 0.0 and features[1]["running"] == 1.0
        assert features[1]["kv_cache_usage"] > 0
        assert scraper.stats()["unreachable"] == {}
    finally:
        scraper.stop()


def test_an_unreadable_replica_is_marked_and_sent_without_metrics(replicas):
    dead = FakeReplica(ReplicaProfile("gpu-dead"))
    dead_url = dead.url
    dead.stop()  # nothing listens there any more
    scraper = ReplicaMetricsScraper({"gpu-0": replicas[0].url, "gpu-dead": dead_url}, interval_s=0.05).start()
    try:
        assert scraper.wait_rounds(2)
        stats = scraper.stats()
        assert list(stats["unreachable"]) == ["gpu-dead"]
        assert stats["unreachable"]["gpu-dead"]["since"] <= time.time()
        assert "ConnectionRefusedError" in stats["unreachable"]["gpu-dead"]["error"]
        assert scraper.features(["gpu-0", "gpu-dead", "unknown"])[1:] == [{}, {}]
        replicas[0].stop()  # a replica that goes away is marked too, and its old figures are not sent
        assert wait_until(lambda: "gpu-0" in scraper.stats()["unreachable"])
        assert scraper.features(["gpu-0"]) == [{}]
    finally:
        scraper.stop()


def test_the_client_sends_scraped_metrics_in_the_replicas_form(replicas, dummy, make_client):
    dummy.behave(answer(200, select_answer(1)))
    with pytest.raises(ValueError, match="RL_AGENT_REPLICA_URLS"):
        ClientConfig(replica_metrics=True)
    client = make_client(dummy.url, report=False, timeout_ms=2000, replica_metrics=True,
                         replica_names=("gpu-0", "gpu-1"), replica_urls=(replicas[0].url, replicas[1].url),
                         metrics_interval_s=0.05)
    assert client.scraper.wait_rounds(1)
    decision = client.select([3, 1], 4, 200.0, 5.0, 1.0, request={"prompt_tokens": 100, "max_tokens": 50})
    assert decision.decided_by == "service" and decision.replica_idx == 1
    assert dummy.bodies[-1]["replicas"] == [
        {"name": "gpu-0", "load": 3.0, "running": 0, "waiting": 0, "kv_cache_usage": 0.0},
        {"name": "gpu-1", "load": 1.0, "running": 0, "waiting": 0, "kv_cache_usage": 0.0}]
    assert dummy.bodies[-1]["request"] == {"prompt_tokens": 100, "max_tokens": 50}
    assert "replica_loads" not in dummy.bodies[-1]
    assert client.stats()["replica_metrics"]["rounds"] >= 1


def test_without_the_option_the_client_sends_the_original_body(dummy, make_client):
    dummy.behave(answer(200, select_answer(0)))
    client = make_client(dummy.url, report=False, timeout_ms=2000)
    client.select([3, 1, 2], 4, 200.0, 5.0, 1.0)
    assert set(dummy.bodies[-1]) == {"replica_loads", "queue_depth", "recent_latency_ms", "current_rps",
                                     "success_rate"}
    assert client.scraper is None and client.stats()["replica_metrics"] is None


def test_reports_carry_ttft_and_output_tokens_only_when_given(dummy, make_client):
    dummy.behave(answer(201, {"stored": 1, "duplicates": 0}))
    client = make_client(dummy.url, mode="heuristic")  # heuristic mode: nothing is reported
    assert client.reporter is None
    client = make_client(dummy.url, timeout_ms=2000, api_key="k", report_interval_ms=10)
    dummy.behave(lambda method, path, headers, body: (
        (200, {}, json.dumps(select_answer(0)).encode()) if path == "/select_replica"
        else (201, {}, b'{"stored": 1, "duplicates": 0}')))
    decision = client.select([1, 2, 3])
    client.report(decision, 300.0, True, [1, 2, 3], ttft_ms=40.0, output_tokens=12)
    client.report(decision, 300.0, True, [1, 2, 3])
    client.close()
    reported = [e for body in dummy.bodies if "experiences" in body for e in body["experiences"]]
    assert [(e.get("ttft_ms"), e.get("output_tokens")) for e in reported] == [(40.0, 12), (None, None)]
