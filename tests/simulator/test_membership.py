"""Replicas join and leave during a run: the router is offered only the present ones, a left
replica drains what it holds, and every policy keeps its state by replica name."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.cluster import ReplicaSpec
from simulator.engine import OK, ClusterEvent, Simulation
from simulator.policies import POLICIES, make_policy
from simulator.runner import run_policy
from simulator.scenarios import Scenario
from simulator.workload import WorkloadConfig, generate_workload
from tests.simulator.gateway_bodies import body

SPECS = [ReplicaSpec(speed=1.0, max_batch=8, kv_blocks=32), ReplicaSpec(speed=0.6, max_batch=8, kv_blocks=32),
         ReplicaSpec(speed=1.0, max_batch=8, kv_blocks=32)]
N = 400
# Two lanes through the same small cluster: r2 joins at 30 s, r1 leaves at 60 s.
JOIN_S, LEAVE_S = 30.0, 60.0
EVENTS = [ClusterEvent(JOIN_S, "join", 2), ClusterEvent(LEAVE_S, "leave", 1)]


class Recorder:
    """Least-loaded that keeps every body it was offered and every outcome it was told."""

    name = "recorder"

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.outcomes: list[dict] = []

    def choose(self, fields: dict, rng: np.random.Generator) -> int:
        self.bodies.append(fields)
        loads = fields["replica_loads"]
        return loads.index(min(loads))

    def observe(self, experience: dict) -> None:
        self.outcomes.append(experience)


def simulate(policy: object, seed: int = 0):
    workload = generate_workload(WorkloadConfig(rate_rps=4.0), N, seed)
    sim = Simulation(SPECS, workload, policy, np.random.default_rng(seed), events=EVENTS, absent=(2,))
    return sim.run(), workload


def test_the_body_lists_only_present_replicas_by_stable_name() -> None:
    policy = Recorder()
    records, workload = simulate(policy)
    for t, fields in zip(workload.arrival_s, policy.bodies, strict=True):
        names = [r["name"] for r in fields["replicas"]]
        expected = ["r0", "r1"] if t < JOIN_S else ["r0", "r1", "r2"] if t < LEAVE_S else ["r0", "r2"]
        assert names == expected and len(fields["replica_loads"]) == len(names)


def test_a_joined_replica_gets_traffic_and_a_left_one_is_never_chosen_but_drains() -> None:
    records, workload = simulate(Recorder())
    before, after = workload.arrival_s < JOIN_S, workload.arrival_s >= LEAVE_S
    assert not (records.replica[before] == 2).any()
    assert (records.replica[~before] == 2).sum() > 20  # the newcomer is idle: least-loaded fills it
    assert not (records.replica[after] == 1).any()
    # What r1 held when it left finished normally after the leave.
    on_r1 = records.replica == 1
    assert (records.finish_s[on_r1] > LEAVE_S).any()
    assert (records.outcome[on_r1] == OK).all() and not np.isnan(records.finish_s).any()


def test_an_outcome_names_its_replica_and_indexes_the_list_it_was_chosen_from() -> None:
    policy = Recorder()
    records, _ = simulate(policy)
    assert len(policy.outcomes) == N
    names = {f"r{i}" for i in range(3)}
    for exp in policy.outcomes:
        assert exp["replica_name"] in names
        # loads after: of the replicas offered at decision time, the action indexes them
        assert len(exp["replica_loads"]) in (2, 3) and 0 <= exp["action"] < len(exp["replica_loads"])
    offered_r2 = [e for e in policy.outcomes if len(e["replica_loads"]) == 2 and e["replica_name"] == "r2"]
    assert offered_r2 and all(e["action"] == 1 for e in offered_r2)  # after r1 left, r2 is second


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_baseline_survives_membership_changes(name: str) -> None:
    policy = make_policy(name)
    records, workload = simulate(policy, seed=1)
    assert (records.replica >= 0).all() and not np.isnan(records.finish_s).any()
    assert not (records.replica[workload.arrival_s < JOIN_S] == 2).any()
    assert not (records.replica[workload.arrival_s >= LEAVE_S] == 1).any()
    assert (records.replica[workload.arrival_s >= JOIN_S] == 2).any()


@pytest.mark.parametrize("name", ["least_latency", "peak_ewma", "litellm_latency"])
def test_router_state_follows_the_name_when_a_replica_before_it_leaves(name: str) -> None:
    policy, rng = make_policy(name), np.random.default_rng(0)
    policy.start(None)
    three = body([0, 0, 0])
    assert 0 <= policy.choose(three, rng) < 3
    for _ in range(5):  # r2 is slow (and busy, for the in-flight counters)
        policy.choose(three, rng)
        policy.observe({"state": [], "action": 2, "replica_name": "r2", "latency_ms": 9000.0,
                        "success": True, "replica_loads": [0, 0, 0], "ttft_ms": 9000.0,
                        "prompt_tokens": 100, "output_tokens": 100})
    two = body([0, 0])
    two["replicas"][1]["name"] = "r2"  # r1 left: position 1 is now r2
    picks = [policy.choose(two, rng) for _ in range(40)]
    assert picks.count(0) > picks.count(1)  # r2's record came along with it, not r1's


def test_litellm_least_busy_counts_in_flight_by_name() -> None:
    policy, rng = make_policy("litellm_least_busy"), np.random.default_rng(0)
    assert [policy.choose(body([0, 0, 0]), rng) for _ in range(3)] == [0, 1, 2]
    policy.observe({"state": [], "action": 1, "replica_name": "r1", "latency_ms": 1.0,
                    "success": True, "replica_loads": [0, 0, 0]})
    two = body([0, 0])
    two["replicas"][1]["name"] = "r2"  # r1 left, its request done; r0 and r2 hold one each
    assert policy.choose(two, rng) == 0  # a tie, to the first; by position it would be r1's 0


def test_cache_aware_keeps_a_prefix_with_its_replica_across_a_leave() -> None:
    policy, rng = make_policy("cache_aware"), np.random.default_rng(0)
    policy.start(None)
    three = body([0, 0, 0], hashes=[1, 2, 3])
    three["replica_loads"], three["replicas"][0]["load"] = [1, 1, 0], 1
    three["replicas"][1]["load"] = 1
    assert policy.choose(three, rng) == 2  # least loaded; r2 now holds the prefix
    two = body([0, 0], hashes=[1, 2, 3])
    two["replicas"][1]["name"] = "r2"
    assert policy.choose(two, rng) == 1  # r2, at its new position


def test_per_replica_dqn_copes_with_scale_out() -> None:
    sc = Scenario("tiny_scale_out", "4 replicas, 2 more join half way through the run.",
                  speeds=(1.0, 0.6, 1.0, 0.3), max_batches=(8, 8, 8, 8), utilization=0.35,
                  absent=(2, 3), changes=((0.5, "join", 2, 1.0), (0.5, "join", 3, 1.0)))
    result = run_policy(sc, "dqn", 300, 0, train_requests=200,
                        config_overrides={"network": "per_replica", "batch_size": 32},
                        reward_overrides={"latency_mode": "per_token"})
    assert result.metrics["failure_rate"] < 0.05
    assert sum(result.metrics["routed_share"][2:]) > 0  # the joined replicas were used
