"""Baseline policies: their known ordering on heterogeneous replicas, and their contracts."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.policies import POLICIES, Policy, make_policy
from simulator.runner import run_policy


@pytest.fixture(scope="module")
def heterogeneous() -> dict[str, dict]:
    names = ("random", "round_robin", "least_loaded", "p2c", "oracle")
    return {p: run_policy("heterogeneous", p, 8000, seed=0).metrics for p in names}


def test_oracle_beats_least_loaded_beats_round_robin(heterogeneous: dict) -> None:
    mean = {p: m["mean_ms"] for p, m in heterogeneous.items()}
    assert mean["oracle"] < mean["least_loaded"] < mean["round_robin"]
    assert mean["least_loaded"] < mean["p2c"] < mean["random"]


def test_blind_rotations_are_alike_and_overload_the_slow_replica(heterogeneous: dict) -> None:
    rr, rnd = heterogeneous["round_robin"], heterogeneous["random"]
    assert rnd["mean_ms"] == pytest.approx(rr["mean_ms"], rel=0.1)
    assert rr["failure_rate"] > 0.02 and heterogeneous["least_loaded"]["failure_rate"] < 0.01


def test_least_loaded_sends_less_to_slow_replicas(heterogeneous: dict) -> None:
    share = heterogeneous["least_loaded"]["routed_share"]
    assert share[0] > share[1] > share[2]


def body(loads: list[int]) -> dict:
    return {"replica_loads": loads, "queue_depth": 0.0, "recent_latency_ms": 0.0,
            "current_rps": 0.0, "success_rate": 1.0}


@pytest.mark.parametrize("name", sorted(set(POLICIES) - {"oracle"}))
def test_every_policy_returns_a_valid_index(name: str) -> None:
    policy = make_policy(name)
    assert isinstance(policy, Policy)
    rng = np.random.default_rng(0)
    for loads in ([0, 0, 0], [5, 1, 9], [100, 100, 0, 3]):
        assert 0 <= policy.choose(body(loads), rng) < len(loads)


def test_least_loaded_breaks_ties_at_random() -> None:
    policy, rng = make_policy("least_loaded"), np.random.default_rng(0)
    picks = {policy.choose(body([3, 1, 1]), rng) for _ in range(50)}
    assert picks == {1, 2}


def test_p2c_never_picks_the_most_loaded_of_three() -> None:
    policy, rng = make_policy("power_of_two"), np.random.default_rng(0)
    assert all(policy.choose(body([1, 2, 9]), rng) != 2 for _ in range(200))


def test_least_latency_learns_from_experiences() -> None:
    policy, rng = make_policy("least_latency"), np.random.default_rng(0)
    policy.choose(body([0, 0]), rng)
    for _ in range(20):
        policy.observe({"state": [], "action": 0, "latency_ms": 900.0, "success": True,
                        "replica_loads": [0, 0]})
        policy.observe({"state": [], "action": 1, "latency_ms": 100.0, "success": True,
                        "replica_loads": [0, 0]})
    assert policy.choose(body([0, 0]), rng) == 1


def test_unknown_policy_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="least_loaded"):
        make_policy("fastest")
