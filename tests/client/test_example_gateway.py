"""The example gateway and fake replicas, driven with real HTTP chat requests, and the one-command
demo run as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from examples.fake_replica import FakeReplica, ReplicaProfile
from examples.gateway import Gateway
from simulator.live_service import ROOT

PROFILES = [ReplicaProfile("replica-1", speed=2.0), ReplicaProfile("replica-2", speed=1.0),
            ReplicaProfile("replica-3", speed=0.5)]


@pytest.fixture
def replicas():
    started = [FakeReplica(profile, seed=i).start() for i, profile in enumerate(PROFILES)]
    yield started
    for replica in started:
        replica.stop()


def chat(url: str, i: int) -> tuple[int, dict, dict]:
    body = {"model": "demo", "messages": [{"role": "user", "content": "word " * (20 + 7 * i)}],
            "max_tokens": 8 + i % 24, "user": f"user-{i % 10}"}
    request = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as resp:
        return resp.status, dict(resp.headers), json.loads(resp.read())


def test_the_gateway_routes_chat_requests_by_the_agent_and_reports_them(service, replicas, make_client):
    client = make_client(service.url(""), api_key=service.api_key, timeout_ms=2000)
    gateway = Gateway([r.url for r in replicas], client, names=[p.name for p in PROFILES]).start()
    try:
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda i: chat(gateway.url, i), range(60)))
        stats = json.loads(urllib.request.urlopen(gateway.url + "/gateway/stats", timeout=10).read())
    finally:
        gateway.stop()
    for status, headers, body in answers:
        assert status == 200 and headers["X-Decided-By"] == "service" and headers["X-Arm"] == "rl"
        assert body["object"] == "chat.completion" and body["usage"]["completion_tokens"] >= 8
        assert body["system_fingerprint"] == headers["X-Replica"]  # answered by the replica it was sent to
    rows = {row["replica"]: row for row in stats["replicas"]}
    assert sum(row["requests"] for row in rows.values()) == 60 and all(r.in_flight == 0 for r in replicas)
    assert sum(r.served for r in replicas) == 60
    assert {name: row["requests"] for name, row in rows.items()} == {
        r.profile.name: r.served for r in replicas}
    assert stats["decided_by"] == {"service": 60}
    client.close()
    assert client.reporter.snapshot()["stored"] == 60


def test_the_gateway_keeps_serving_with_the_heuristic_when_the_agent_is_unreachable(replicas, make_client):
    client = make_client("http://127.0.0.1:9", breaker_failures=2, report=False)
    gateway = Gateway([r.url for r in replicas], client).start()
    try:
        answers = [chat(gateway.url, i) for i in range(10)]
    finally:
        gateway.stop()
    assert all(status == 200 and headers["X-Decided-By"] == "heuristic" for status, headers, _ in answers)
    reasons = [headers["X-Decision-Reason"] for _, headers, _ in answers]
    assert all(reason.startswith("error: ConnectionRefusedError") for reason in reasons[:2]), reasons
    assert set(reasons[2:]) == {"circuit_open"}


def run_demo(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RL_AGENT", "USE_RL_AGENT"))}
    command = [sys.executable, "-m", "examples.run_demo", *args]
    return subprocess.run(command, cwd=ROOT, env={**clean, **env}, capture_output=True, text=True,
                          timeout=120)


def test_the_demo_runs_end_to_end_with_one_command(service):
    result = run_demo({"USE_RL_AGENT": "true", "RL_AGENT_URL": service.url(""),
                       "RL_AGENT_API_KEY": service.api_key, "RL_AGENT_TIMEOUT_MS": "2000"},
                      "--requests", "60", "--concurrency", "6")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "60 requests in" in out and "60 ok, 0 failed" in out
    for name in ("replica-1", "replica-2", "replica-3"):
        assert any(line.startswith(name) for line in out.splitlines()), out
    assert "'rl': 60" in out and "stored=60" in out and "dropped=0" in out


def test_the_demo_without_a_service_routes_with_the_heuristic():
    result = run_demo({"USE_RL_AGENT": "true", "RL_AGENT_URL": "http://127.0.0.1:9"}, "--requests", "30")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "does not answer /health: routing with least_loaded" in result.stdout
    assert "'heuristic/least_loaded': 30" in result.stdout
