"""Request bodies: the specification's select_replica, record_experience and N + 7 state, field
for field, plus what a gateway learns from vLLM replicas and the request itself."""

from __future__ import annotations

import math

import numpy as np
import pytest

from simulator.policies import LeastLoadedPolicy
from simulator.runner import simulate
from simulator.scenarios import get_scenario
from simulator.workload import generate_workload

# The specification's example bodies (docs/original-specification.md), field for field.
SEED_SELECT = {"replica_loads": [5, 3, 7], "queue_depth": 12, "recent_latency_ms": 280.5,
               "current_rps": 8.2, "success_rate": 0.98}
SEED_EXPERIENCE = {"state": [5, 3, 7, 12, 0.28, 8.2, 0.98, 0.5, 0.4, 0.5], "action": 1,
                   "latency_ms": 265.3, "success": True, "replica_loads": [5, 4, 7]}
ADDED_SELECT = ["replicas", "request"]
ADDED_EXPERIENCE = ["ttft_ms", "prompt_tokens", "output_tokens", "replica_name"]


class Recorder(LeastLoadedPolicy):
    """Least-loaded that keeps every body and state it is shown."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.states: list[list[float]] = []
        self.experiences: list[dict] = []

    def choose(self, request_fields: dict, rng: np.random.Generator) -> int:
        self.bodies.append(request_fields)
        self.states.append(self.context.raw_state())
        return super().choose(request_fields, rng)

    def observe(self, experience: dict) -> None:
        self.experiences.append(experience)


@pytest.fixture(scope="module", params=["heterogeneous", "outage", "trace:mooncake-synthetic"])
def recorded(request: pytest.FixtureRequest) -> tuple[Recorder, int]:
    sc = get_scenario(request.param)
    policy = Recorder()
    simulate(sc, sc.workload(3000, seed=0), policy, seed=0)
    return policy, sc.num_replicas


def _same_shape(value: object, example: object) -> bool:
    if isinstance(example, bool):
        return isinstance(value, bool)
    if isinstance(example, int | float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, list)


def test_select_body_has_the_specification_fields_then_the_added_ones(
        recorded: tuple[Recorder, int]) -> None:
    policy, n = recorded
    for body in policy.bodies[::97]:
        assert list(body) == list(SEED_SELECT) + ADDED_SELECT
        assert all(_same_shape(body[k], v) for k, v in SEED_SELECT.items())
        assert len(body["replica_loads"]) == n
        assert all(isinstance(x, int) and 0 <= x <= 100 for x in body["replica_loads"])
        assert 0 <= body["queue_depth"] <= 100 and 0 <= body["success_rate"] <= 1
        assert body["recent_latency_ms"] >= 0 and body["current_rps"] >= 0


def test_raw_state_is_in_specification_order_with_latency_in_seconds(recorded: tuple[Recorder, int]) -> None:
    policy, n = recorded
    for body, state in list(zip(policy.bodies, policy.states, strict=True))[::97]:
        assert len(state) == n + 7
        assert state[:n] == [float(x) for x in body["replica_loads"]]
        assert state[n] == body["queue_depth"]
        assert state[n + 1] == pytest.approx(body["recent_latency_ms"] / 1000.0)
        assert state[n + 2] == body["current_rps"] and state[n + 3] == body["success_rate"]
        assert all(0.0 <= v <= 1.0 for v in state[n + 4:])  # memory, cpu, time of day
        assert all(math.isfinite(v) for v in state)


def test_replicas_report_what_vllm_metrics_would(recorded: tuple[Recorder, int]) -> None:
    policy, n = recorded
    for body in policy.bodies[::97]:
        reps = body["replicas"]
        assert [r["name"] for r in reps] == [f"r{i}" for i in range(n)]
        for r, clipped in zip(reps, body["replica_loads"], strict=True):
            assert list(r) == ["name", "load", "running", "waiting", "kv_cache_usage"]
            assert min(100, r["load"]) == clipped and r["load"] >= r["running"] + r["waiting"]
            assert 0.0 <= r["kv_cache_usage"] <= 1.0
        assert body["queue_depth"] == min(100, sum(r["waiting"] for r in reps))
    assert any(r["kv_cache_usage"] > 0 for b in policy.bodies for r in b["replicas"])


def test_request_carries_tokens_and_prefix_hashes_only_when_the_trace_has_them(
        recorded: tuple[Recorder, int]) -> None:
    policy, _ = recorded
    with_prefix = "prefix_hashes" in policy.bodies[0]["request"]
    for body in policy.bodies[::97]:
        req = body["request"]
        assert set(req) == {"prompt_tokens", "max_tokens"} | ({"prefix_hashes"} if with_prefix else set())
        assert req["prompt_tokens"] >= 0 and req["max_tokens"] >= 0
        if with_prefix:
            assert len(req["prefix_hashes"]) == -(-req["prompt_tokens"] // 512)


def test_experience_body_has_the_specification_fields_then_the_added_ones(
        recorded: tuple[Recorder, int]) -> None:
    policy, n = recorded
    assert len(policy.experiences) == len(policy.bodies)  # one report per request
    for exp in policy.experiences[::97]:
        assert list(exp) == list(SEED_EXPERIENCE) + ADDED_EXPERIENCE
        if exp["success"]:
            assert 0 <= exp["ttft_ms"] <= exp["latency_ms"]
        else:
            assert exp["ttft_ms"] is None
        assert exp["prompt_tokens"] >= 0 and exp["output_tokens"] >= 0
        assert all(_same_shape(exp[k], v) for k, v in SEED_EXPERIENCE.items())
        assert len(exp["state"]) == n + 7 and len(exp["replica_loads"]) == n
        assert 0 <= exp["action"] < n and exp["latency_ms"] >= 0


def test_failures_are_reported_as_unsuccessful_experiences() -> None:
    sc = get_scenario("outage")
    policy = Recorder()
    simulate(sc, generate_workload(sc.workload_config(), 4000, seed=1), policy, seed=1)
    failed = [e for e in policy.experiences if not e["success"]]
    assert failed and all(e["action"] == sc.bad_replica for e in failed)
    assert min(b["success_rate"] for b in policy.bodies) < 0.9  # the window sees them


def test_experience_carries_the_very_state_object_of_its_decision() -> None:
    # service_policy.ServicePolicy keys its decision ids on this identity.
    sc = get_scenario("homogeneous")
    policy = Recorder()
    simulate(sc, generate_workload(sc.workload_config(), 500, seed=2), policy, seed=2)
    decided = {id(s) for s in policy.states}
    assert all(id(e["state"]) in decided for e in policy.experiences)
