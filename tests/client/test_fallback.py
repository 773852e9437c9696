"""Fail-open: whatever the service does (stop, slow down, fail, talk nonsense, keep failing), the
gateway gets a replica within the timeout, and the decision says who chose it and why."""

from __future__ import annotations

import signal
import time

import pytest

from tests.client.conftest import SELECT, answer, select_answer

SLOW_S = 2.0  # the slowed service answers after this; the client must not wait for it
STOPPED = ("error: ConnectionRefusedError", "error: ConnectionResetError")


def test_select_falls_back_within_the_timeout_when_the_service_is_slow(dummy, make_client):
    dummy.behave(answer(200, select_answer(), delay_s=SLOW_S))
    client = make_client(dummy.url, timeout_ms=50, breaker_failures=100)
    for _ in range(3):
        started = time.perf_counter()
        decision = client.select(**SELECT)
        waited = time.perf_counter() - started
        assert (decision.decided_by, decision.reason) == ("heuristic", "timeout")
        assert decision.policy == "least_loaded"
        assert decision.replica_idx == 1 and decision.fallback  # least-loaded of [5, 3, 7]
        assert waited < SLOW_S / 4, f"select() waited {waited:.3f} s for a service that takes {SLOW_S} s"
    assert client.stats()["fallbacks"] == {"timeout": 3}


@pytest.mark.parametrize("status, body, reason", [
    (500, {"detail": "boom"}, "error: http 500"),
    (503, {"detail": "store down"}, "error: http 503"),
    (400, {"replica_loads": ["must have exactly 4 values"]}, "error: http 400"),
    (200, b"<html>a proxy's error page</html>", "error: bad response"),
    (200, {**select_answer(), "replica_idx": 9}, "error: replica_idx 9 out of range"),
])
def test_select_falls_back_when_the_service_answers_an_error(dummy, make_client, status, body, reason):
    dummy.behave(answer(status, body))
    decision = make_client(dummy.url, timeout_ms=1000).select(**SELECT)
    assert decision.decided_by == "heuristic" and decision.reason.startswith(reason), decision
    assert decision.replica_idx == 1 and decision.arm == "rl"


def test_select_falls_back_when_the_service_is_stopped_and_uses_it_again_once_back(service, make_client):
    client = make_client(service.url(""), timeout_ms=2000, breaker_failures=100)
    assert client.select(**SELECT).decided_by == "service"
    service.stop("web", signal.SIGKILL)  # a crash: nothing answers on the port
    try:
        for _ in range(3):
            started = time.perf_counter()
            decision = client.select(**SELECT)
            assert decision.decided_by == "heuristic" and decision.replica_idx == 1
            # refused, or reset by a worker still dying: either way nothing serves on the port
            assert decision.reason.startswith(STOPPED), decision.reason
            assert time.perf_counter() - started < 1.0  # refused at once: well within the 2 s timeout
    finally:
        service.start("web")
    decision = client.select(**SELECT)
    assert decision.decided_by == "service" and decision.policy in ("dqn", "least_loaded")
    assert decision.decision_id and decision.model_version is not None and len(decision.state) == 10


def test_the_client_stops_calling_a_failing_service_and_probes_it_after_the_cooldown(dummy, make_client):
    dummy.behave(answer(503, {"detail": "down"}))
    client = make_client(dummy.url, timeout_ms=1000, breaker_failures=3, breaker_cooldown_s=0.3)
    reasons = [client.select(**SELECT).reason for _ in range(8)]
    assert reasons == ["error: http 503"] * 3 + ["circuit_open"] * 5
    assert dummy.hits["/select_replica"] == 3  # an open circuit sends nothing
    assert client.breaker.state == "open"
    time.sleep(0.35)
    dummy.behave(answer(200, select_answer(2)))
    decision = client.select(**SELECT)  # the half-open probe
    assert decision.decided_by == "service" and decision.replica_idx == 2
    assert client.breaker.state == "closed" and dummy.hits["/select_replica"] == 4
    assert client.stats()["breaker"]["opened"] == 1


def test_a_failed_probe_keeps_the_circuit_open(dummy, make_client):
    dummy.behave(answer(500))
    client = make_client(dummy.url, timeout_ms=1000, breaker_failures=2, breaker_cooldown_s=0.2)
    for _ in range(4):
        client.select(**SELECT)
    time.sleep(0.25)
    assert client.select(**SELECT).reason == "error: http 500"  # the probe went out and failed
    assert client.select(**SELECT).reason == "circuit_open"
    assert dummy.hits["/select_replica"] == 3


def test_the_fallback_heuristic_is_pluggable(dummy, make_client):
    dummy.behave(answer(503))

    def last_replica(loads):
        return len(loads) - 1

    decision = make_client(dummy.url, heuristic=last_replica).select(**SELECT)
    assert (decision.replica_idx, decision.policy, decision.decided_by) == (2, "last_replica", "heuristic")
    robin = make_client(dummy.url, heuristic="round_robin", mode="heuristic")
    assert [robin.select(**SELECT).replica_idx for _ in range(4)] == [0, 1, 2, 0]


def test_heuristic_mode_never_calls_the_service(dummy, make_client):
    client = make_client(dummy.url, mode="heuristic")
    for _ in range(20):
        decision = client.select(**SELECT)
        client.report(decision, 120.0, True, [5, 4, 7])
        assert (decision.decided_by, decision.reason) == ("heuristic", "mode=heuristic")
        assert decision.arm == "heuristic"
    client.close()
    assert sum(dummy.hits.values()) == 0
    assert client.reporter is None and client.local is None
