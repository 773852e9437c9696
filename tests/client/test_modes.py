"""Shadow and canary modes split traffic as configured, and tag reports with the arm the service
aggregates A/B results by."""

from __future__ import annotations

import math
import random

import pytest

from tests.client.conftest import SELECT, ab_counts


def within(observed: int, n: int, p: float, sigmas: float = 4.5) -> bool:
    """Is a binomial count consistent with share p? (4.5 sigma: a false alarm in ~150 000 runs)."""
    return abs(observed - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def test_canary_routes_the_configured_share_by_the_agent_and_tags_each_arm(service, make_client):
    before = ab_counts(service)
    client = make_client(service.url(""), api_key=service.api_key, mode="canary", canary_percent=30,
                         timeout_ms=2000)
    n = 400
    decisions = [client.select(**SELECT) for _ in range(n)]  # no request key: a random split
    by_arm = {arm: [d for d in decisions if d.arm == arm] for arm in ("rl", "heuristic")}
    assert within(len(by_arm["rl"]), n, 0.30), len(by_arm["rl"])
    assert all(d.decided_by == "service" for d in by_arm["rl"])
    assert all(d.decided_by == "heuristic" for d in by_arm["heuristic"])
    assert {d.reason for d in by_arm["heuristic"]} == {"canary: heuristic arm"}
    for decision in decisions:
        client.report(decision, 100.0 if decision.arm == "rl" else 140.0, True, [5, 4, 7])
    client.close()
    assert client.reporter.snapshot()["stored"] == n
    after = ab_counts(service)
    for arm, chosen in by_arm.items():
        assert after.get(arm, 0) - before.get(arm, 0) == len(chosen), (arm, before, after)
    assert service.call("GET", "/ab_results").json()["comparison"]["candidate"] == "rl"


def test_canary_split_is_stable_per_request_key(make_client, dummy):
    client = make_client(dummy.url, mode="canary", canary_percent=20, report=False)
    keys = [f"user-{i}" for i in range(3000)]
    first = {key: client.in_canary(key) for key in keys}
    assert all(client.in_canary(key) == first[key] for key in keys[:300])  # same key, same arm
    assert within(sum(first.values()), len(keys), 0.20)
    other = make_client(dummy.url, mode="canary", canary_percent=20, report=False)
    assert all(other.in_canary(key) == first[key] for key in keys[:300])  # and in every gateway process


@pytest.mark.parametrize("percent, expected", [(0, "heuristic"), (100, "rl")])
def test_canary_at_zero_or_a_hundred_percent_sends_all_to_one_arm(make_client, dummy, percent, expected):
    client = make_client(dummy.url, mode="canary", canary_percent=percent, report=False, timeout_ms=1000)
    keys = [str(random.random()) for _ in range(200)]
    assert {client.in_canary(key) for key in keys} == {expected == "rl"}


def test_shadow_routes_by_the_heuristic_and_counts_the_agents_would_be_choice(service, make_client):
    before = ab_counts(service)
    client = make_client(service.url(""), api_key=service.api_key, mode="shadow", timeout_ms=2000,
                         shadow_concurrency=4)
    n = 120
    decisions = []
    for i in range(n):
        loads = [random.randint(0, 20) for _ in range(3)]
        decision = client.select(loads, 12, 280.5, 8.2, 0.98)
        assert (decision.decided_by, decision.arm) == ("heuristic", "heuristic")
        assert decision.policy == "least_loaded" and loads[decision.replica_idx] == min(loads)
        decisions.append(decision)
        decision.shadow_choice(timeout_s=10)  # the upstream request takes longer than the agent's answer
        client.report(decision, 120.0 + i % 7, True, loads)
    answers = [d.shadow_choice() for d in decisions]
    client.close()
    shadow = client.stats()["shadow"]
    assert shadow["asked"] == n == shadow["answered"] + shadow["failed"] + shadow["skipped"]
    assert shadow["answered"] >= n - 5, shadow  # a rare timeout on a loaded machine is allowed
    assert sum(1 for a in answers if a and a.decided_by == "service") == shadow["answered"]
    assert all(a.arm == "heuristic" for a in answers if a)
    assert sum(shadow["agent_choices"].values()) == shadow["answered"]
    agreed = sum(1 for d in decisions if (a := d.shadow_choice()) and a.decided_by == "service"
                 and a.replica_idx == d.replica_idx)
    assert shadow["agreed"] == agreed
    after = ab_counts(service)
    assert after.get("heuristic", 0) - before.get("heuristic", 0) == n  # every report is the heuristic arm
    assert after.get("rl", 0) == before.get("rl", 0)
