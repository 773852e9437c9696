"""Background reporting: report() never waits for the service, a full queue drops the oldest and
counts them, batches reach /record_experience, retries are stored once, close() flushes."""

from __future__ import annotations

import json
import re
import time

import requests

from rlagent_client import Decision
from tests.client.conftest import SELECT

SLOW_S = 1.0
STATE = [5, 3, 7, 12, 0.28, 8.2, 0.98, 0.5, 0.4, 0.5]


def heuristic_decision(arm: str = "heuristic") -> Decision:
    return Decision(1, "replica-2", "heuristic", "mode=shadow", "least_loaded", arm, state=STATE)


def batch_answer(delay_s: float = 0.0):
    def behaviour(method, path, headers, body):
        time.sleep(delay_s)
        count = len(json.loads(body)["experiences"])
        body = {"stored": count, "duplicates": 0, "rewards": [], "buffer_size": 0}
        return 201, {}, json.dumps(body).encode()

    return behaviour


def buffer_size(stack) -> int:
    return stack.call("GET", "/stats").json()["buffer_size"]


def test_report_never_blocks_the_caller_and_counts_what_it_drops(dummy, make_client):
    dummy.behave(batch_answer(delay_s=SLOW_S))  # each batch takes a second to be acknowledged
    client = make_client(dummy.url, report_queue_size=100, report_batch_size=50, report_interval_ms=10)
    decision, n, slowest = heuristic_decision(), 5000, 0.0
    started = time.perf_counter()
    for i in range(n):
        before = time.perf_counter()
        client.report(decision, 100.0 + i, True, [5, 4, 7])
        slowest = max(slowest, time.perf_counter() - before)
    elapsed = time.perf_counter() - started
    assert elapsed < SLOW_S / 2 and slowest < SLOW_S / 10, (elapsed, slowest)  # never waited for a batch
    snap = client.reporter.snapshot()
    assert snap["enqueued"] == n and snap["queued"] <= 100
    assert snap["dropped"] >= n - 100 - 50  # at most one batch in flight, the queue holds 100
    client.close(timeout_s=5)
    snap = client.reporter.snapshot()
    accounted = snap["dropped"] + snap["stored"] + snap["duplicates"] + snap["rejected"] + snap["failed"]
    assert accounted == n and snap["queued"] == snap["in_flight"] == 0, snap
    sent = [item for body in dummy.bodies for item in body["experiences"]]
    assert len(sent) == snap["stored"] and len(sent) <= 100 + 50
    assert sent[-1]["latency_ms"] == 100.0 + n - 1  # the newest survived: the oldest were dropped
    ids = [item["experience_id"] for item in sent]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", i) for i in ids)
    assert all(item["arm"] == "heuristic" and item["state"] == STATE and item["action"] == 1 for item in sent)


def test_reports_reach_the_service_in_batches_and_close_flushes_the_rest(service, make_client):
    before = buffer_size(service)
    client = make_client(service.url(""), api_key=service.api_key, report_batch_size=400,
                         report_interval_ms=60_000, timeout_ms=2000)
    decision = client.select(**SELECT)
    assert decision.decided_by == "service" and decision.decision_id
    for i in range(1000):
        client.report(decision, 80.0 + i % 50, i % 10 != 0, [5, 4, 7])
    client.close()  # two full batches went by themselves; close() sends the last 200
    snap = client.reporter.snapshot()
    assert (snap["stored"], snap["batches"], snap["dropped"], snap["failed"]) == (1000, 3, 0, 0), snap
    assert buffer_size(service) - before == 1000


def test_a_batch_retried_after_a_lost_answer_is_stored_once(service, dummy, make_client):
    answers = []

    def answer_lost_once(method, path, headers, body):  # the service stores it, the answer is lost
        resp = requests.post(service.url(path), data=body, timeout=30, headers={
            "Authorization": headers["Authorization"], "Content-Type": "application/json"})
        answers.append(resp.json())
        if len(answers) == 1:
            return 503, {}, b'{"detail": "bad gateway"}'
        return resp.status_code, {}, resp.content

    dummy.behave(answer_lost_once)
    before = buffer_size(service)
    client = make_client(dummy.url, api_key=service.api_key, report_interval_ms=10)
    for _ in range(30):
        client.report(heuristic_decision("rl"), 90.0, True, [5, 4, 7])
    client.close()
    snap = client.reporter.snapshot()
    assert (snap["retries"], snap["stored"], snap["duplicates"]) == (1, 0, 30), snap
    assert answers[0]["stored"] == 30 and answers[1]["duplicates"] == 30
    assert buffer_size(service) - before == 30


def test_items_the_service_refuses_are_counted_and_the_rest_of_the_batch_is_stored(service, make_client):
    before = buffer_size(service)
    client = make_client(service.url(""), api_key=service.api_key, report_interval_ms=60_000)
    for i in range(11):
        loads = [5, 4] if i == 6 else [5, 4, 7]  # the service has 3 replicas: item 6 is refused
        client.report(heuristic_decision(), 90.0, True, loads)
    client.report(heuristic_decision(), float("nan"), True, [5, 4, 7])  # never leaves the gateway
    client.close()
    snap = client.reporter.snapshot()
    assert (snap["rejected"], snap["stored"], snap["failed"]) == (1, 10, 0), snap
    assert client.stats()["invalid_reports"] == 1
    assert buffer_size(service) - before == 10
