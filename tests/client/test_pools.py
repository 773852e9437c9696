"""Replica pools from the gateway's side: a client with RL_AGENT_POOL names its pool in every
/select_replica body, every /record_experience batch and the weights URL (and a client without one
sends exactly the bodies it always did); its reports land in that pool's buffer only; a pool the
service does not know makes the heuristic decide, and the decision says why."""

from __future__ import annotations

import json
import logging

import pytest

from agent_app.pools import NAME_PATTERN, NAME_RULE
from rlagent_client.config import POOL_NAME, POOL_RULE, ClientConfig
from tests.client.conftest import SELECT, answer, select_answer

POOL = "alpha"
UNKNOWN = "no-such-pool"
ORIGINAL_KEYS = set(SELECT)  # the body of a client without a pool, as before pools


def service_answers(method: str, path: str, headers: dict[str, str], body: bytes):
    """The dummy's answers: a decision, or every reported experience stored."""
    if path.startswith("/select_replica"):
        return 200, {}, json.dumps(select_answer(1)).encode()
    stored = len(json.loads(body)["experiences"]) if path.startswith("/record_experience") else 0
    return 201, {}, json.dumps({"stored": stored, "duplicates": 0, "rewards": [], "buffer_size": 0}).encode()


def batches(dummy) -> list[dict]:
    return [body for body in dummy.bodies if "experiences" in body]


def selections(dummy) -> list[dict]:
    return [body for body in dummy.bodies if "experiences" not in body]


def buffer_size(stack, pool: str | None = None) -> int:
    resp = stack.call("GET", "/stats" + (f"?pool={pool}" if pool else ""))
    assert resp.status_code == 200, resp.text
    return resp.json()["buffer_size"] or 0


def test_the_client_validates_pool_names_by_the_services_rule():
    assert (POOL_NAME.pattern, POOL_RULE) == (NAME_PATTERN.pattern, NAME_RULE)  # one rule, two copies
    assert ClientConfig.from_env({"USE_RL_AGENT": "true", "RL_AGENT_POOL": " llama-70b "}).pool == "llama-70b"
    assert ClientConfig.from_env({"USE_RL_AGENT": "true", "RL_AGENT_POOL": ""}).pool is None
    assert ClientConfig.from_env({}).pool is None
    for bad in ("", "-x", "a" * 64, "a/b", "llama 70b", "é"):
        with pytest.raises(ValueError, match="RL_AGENT_POOL must be a pool name"):
            ClientConfig(pool=bad)


def test_a_client_with_a_pool_names_it_in_every_body(dummy, make_client):
    dummy.behave(service_answers)
    client = make_client(dummy.url, api_key="k", pool=POOL, timeout_ms=2000, report_batch_size=3,
                         report_interval_ms=60_000)
    decisions = [client.select(**SELECT), client.select(**SELECT, request={"prompt_tokens": 80})]
    assert all(d.decided_by == "service" for d in decisions)
    for _ in range(3):
        for decision in decisions:
            client.report(decision, 90.0, True, [5, 4, 7])
    client.close()
    sent = selections(dummy)
    assert [body["pool"] for body in sent] == [POOL, POOL]
    assert "replica_loads" in sent[0] and "replicas" in sent[1]  # the original and the per-replica form
    assert [(body["pool"], len(body["experiences"])) for body in batches(dummy)] == [(POOL, 3), (POOL, 3)]
    assert not any("pool" in item for body in batches(dummy) for item in body["experiences"])
    assert client.stats()["pool"] == POOL


def test_a_client_without_a_pool_sends_the_bodies_it_always_did(dummy, make_client):
    dummy.behave(service_answers)
    client = make_client(dummy.url, api_key="k", timeout_ms=2000, report_interval_ms=60_000)
    client.report(client.select(**SELECT), 90.0, True, [5, 4, 7])
    client.close()
    assert [set(body) for body in selections(dummy)] == [ORIGINAL_KEYS]
    assert [set(body) for body in batches(dummy)] == [{"experiences"}]


def test_local_inference_asks_for_the_pools_weights(dummy, make_client):
    dummy.behave(lambda method, path, headers, body: (404, {}, b'{"detail": "no trained model yet"}'))
    make_client(dummy.url, inference="local", pool=POOL, weights_refresh_s=3600)
    make_client(dummy.url, inference="local", weights_refresh_s=3600)
    assert dummy.hits == {f"/model/weights?pool={POOL}": 1, "/model/weights": 1}


def test_for_pool_gives_each_pool_its_own_client_and_reports_never_mix_pools(dummy, make_client):
    dummy.behave(service_answers)
    client = make_client(dummy.url, api_key="k", timeout_ms=2000, report_interval_ms=60_000)
    beta = client.for_pool("beta")
    assert client.for_pool("beta") is beta and client.for_pool(None) is client
    assert beta.for_pool("beta") is beta
    assert beta.config.pool == "beta" and beta.breaker is not client.breaker
    with pytest.raises(ValueError, match="pool must be a pool name"):
        client.for_pool("not/a pool")
    for owner in (client, beta, client, beta, beta):
        owner.report(owner.select(**SELECT), 90.0, True, [5, 4, 7])
    client.close()  # closes beta too: its queued reports are sent
    sent = {body.get("pool"): len(body["experiences"]) for body in batches(dummy)}
    assert sent == {None: 2, "beta": 3} and len(batches(dummy)) == 2  # one batch per pool, each whole
    assert [body.get("pool") for body in selections(dummy)] == [None, "beta", None, "beta", "beta"]
    assert client.stats()["pools"]["beta"]["decisions"] == {"service/dqn": 3}


@pytest.mark.parametrize("body, reason", [
    ({"detail": "pool 'x' does not exist", "pool": "x"}, "unknown_pool: pool 'x' does not exist"),
    ({"detail": "Not found."}, "error: http 404"),  # a 404 that names no pool: a proxy, a wrong URL
    (b"<html>not found</html>", "error: http 404"),
])
def test_only_a_404_naming_the_pool_is_an_unknown_pool(dummy, make_client, body, reason):
    dummy.behave(answer(404, body))
    decision = make_client(dummy.url, pool="x", timeout_ms=1000).select(**SELECT)
    assert decision.decided_by == "heuristic" and decision.reason.startswith(reason), decision


def test_a_client_with_a_pool_selects_and_reports_in_that_pool_only(service, make_client):
    service.manage("create_pool", POOL)
    before, before_default = buffer_size(service, POOL), buffer_size(service)
    arms_before = service.call("GET", f"/ab_results?pool={POOL}").json()["arms"].get("rl", {}).get("count", 0)
    client = make_client(service.url(""), api_key=service.api_key, pool=POOL, timeout_ms=2000,
                         report_interval_ms=60_000)
    decisions = [client.select(**SELECT) for _ in range(20)]
    assert all(d.decided_by == "service" and d.decision_id for d in decisions), decisions[0]
    for decision in decisions:
        client.report(decision, 90.0, True, [5, 4, 7])
    client.close()
    assert client.reporter.snapshot()["stored"] == 20, client.reporter.snapshot()
    stats = service.call("GET", f"/stats?pool={POOL}").json()
    assert stats["pool"] == POOL and stats["buffer_size"] - before == 20
    assert buffer_size(service) == before_default  # nothing reached the default pool
    arms = service.call("GET", f"/ab_results?pool={POOL}").json()["arms"]
    assert arms["rl"]["count"] - arms_before == 20


def test_an_unknown_pool_makes_the_heuristic_decide_and_says_why(service, make_client, caplog):
    before_default = buffer_size(service)
    client = make_client(service.url(""), api_key=service.api_key, pool=UNKNOWN, timeout_ms=2000,
                         breaker_failures=3, report_interval_ms=60_000)
    with caplog.at_level(logging.WARNING, logger="rlagent_client"):
        decisions = [client.select(**SELECT) for _ in range(5)]
    assert all(d.decided_by == "heuristic" and d.replica_idx == 1 and d.fallback for d in decisions)
    assert decisions[0].reason.startswith(f"unknown_pool: pool '{UNKNOWN}' does not exist"), decisions[0]
    # A setting to fix, not a passing failure: the circuit opens, the service is asked once a cool-down.
    assert [d.reason.split(":")[0] for d in decisions] == ["unknown_pool"] * 3 + ["circuit_open"] * 2
    assert client.stats()["fallbacks"] == {"unknown_pool": 3, "circuit_open": 2}
    warnings = [r.getMessage() for r in caplog.records if UNKNOWN in r.getMessage()]
    assert len(warnings) == 1 and "create_pool" in warnings[0], warnings  # said once, with the remedy
    for decision in decisions:
        client.report(decision, 90.0, True, [5, 4, 7])
    client.close()
    snap = client.reporter.snapshot()
    assert (snap["rejected"], snap["stored"], snap["failed"]) == (5, 0, 0), snap  # not retried
    assert buffer_size(service) == before_default


def test_local_inference_for_an_unknown_pool_says_so(service, make_client):
    client = make_client(service.url(""), inference="local", pool=UNKNOWN)
    decision = client.select(**SELECT)
    assert decision.decided_by == "heuristic" and decision.replica_idx == 1
    assert decision.reason.startswith(f"no_model: pool '{UNKNOWN}' does not exist"), decision.reason
