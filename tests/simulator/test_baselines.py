"""Production routers as baselines: each one's choice on hand-made states, and their contracts."""

from __future__ import annotations

import math
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest

from simulator.policies import ALIASES, POLICIES, Policy, canonical_name, make_policy
from simulator.runner import run_policy
from tests.simulator.gateway_bodies import body, done, plain

BASELINES = ("peak_ewma", "envoy_least_request", "litellm_latency", "litellm_least_busy",
             "cache_aware", "llmd_scorer", "session_affinity")


def picks(policy, fields: dict, n: int = 900, seed: int = 0) -> Counter:
    rng = np.random.default_rng(seed)
    return Counter(policy.choose(fields, rng) for _ in range(n))


@pytest.mark.parametrize("name", BASELINES)
def test_every_baseline_is_registered_built_and_valid_with_or_without_the_added_fields(
        name: str) -> None:
    assert name in POLICIES
    policy = make_policy(name)
    assert isinstance(policy, Policy) and policy.name == name
    rng = np.random.default_rng(0)
    for fields in (plain([5, 1, 9]), plain([0, 0]), body([3, 0, 7, 2], [1, 0, 2, 0],
                                                         [0.5, 0.1, 0.9, 0.2], hashes=[1, 2])):
        assert 0 <= policy.choose(fields, rng) < len(fields["replica_loads"])


def test_aliases_name_the_systems_they_reproduce() -> None:
    for alias in ("linkerd", "envoy", "sglang", "vllm_router", "llm-d", "production_stack"):
        assert canonical_name(alias) in BASELINES
    assert set(ALIASES.values()) <= set(POLICIES)


@pytest.mark.parametrize("name", BASELINES)
def test_a_seed_fixes_every_choice(name: str) -> None:
    def run(seed: int) -> list[int]:
        policy, rng, data = make_policy(name), np.random.default_rng(seed), np.random.default_rng(7)
        policy.start(SimpleNamespace(now=0.0))
        out = []
        for t in range(300):
            policy.context.now = t * 0.5
            loads = data.integers(0, 40, 4).tolist()
            fields = body(loads, [x // 3 for x in loads], data.random(4).tolist(),
                          hashes=[int(data.integers(3)), t])
            out.append(policy.choose(fields, rng))
            policy.observe(done(out[-1], float(data.integers(100, 5000)), ttft_ms=50.0))
        return out

    assert run(3) == run(3)


@pytest.mark.parametrize("name", BASELINES)
def test_baselines_run_in_the_simulator_deterministically(name: str) -> None:
    first = run_policy("homogeneous", name, 1500, seed=4)
    again = run_policy("homogeneous", name, 1500, seed=4)
    assert np.array_equal(first.records.replica, again.records.replica)
    assert first.records.replica.min() >= 0


# --- Envoy least_request -------------------------------------------------------------------------

def test_envoy_draws_with_replacement_so_the_busiest_of_three_wins_only_when_drawn_twice() -> None:
    counts = picks(make_policy("envoy"), body([1, 2, 9]), n=9000)
    assert counts[2] / 9000 == pytest.approx(1 / 9, abs=0.02)
    assert counts[0] / 9000 == pytest.approx(5 / 9, abs=0.02)


def test_envoy_compares_unclipped_active_requests_from_the_replicas_field() -> None:
    fields = body([300, 120])  # replica_loads clip both to 100
    counts = picks(make_policy("envoy_least_request"), fields, n=2000)
    assert counts[1] / 2000 == pytest.approx(3 / 4, abs=0.04)  # 0 only when drawn twice


def test_envoy_unequal_weights_follow_weight_over_active_requests() -> None:
    policy, rng = make_policy("envoy_least_request", weights=[3, 1, 1]), np.random.default_rng(0)
    idle = Counter(policy.choose(body([0, 0, 0]), rng) for _ in range(500))
    assert idle[0] == pytest.approx(300, abs=3) and idle[1] == pytest.approx(100, abs=3)
    busy_policy = make_policy("envoy_least_request", weights=[3, 1, 1])
    busy = Counter(busy_policy.choose(body([5, 0, 0]), rng) for _ in range(600))
    assert busy[0] < busy[1]  # 3 / 6 < 1 / 1
    with pytest.raises(ValueError, match="2 weights for 3 replicas"):
        make_policy("envoy", weights=[2, 1]).choose(body([0, 0, 0]), rng)
    with pytest.raises(ValueError, match="choice_count"):
        make_policy("envoy", choice_count=0)


# --- LiteLLM ------------------------------------------------------------------------------------

def test_litellm_latency_tries_unseen_deployments_then_picks_the_lowest_latency_per_token() -> None:
    policy, rng = make_policy("litellm_latency"), np.random.default_rng(0)
    policy.observe(done(0, 2000.0, output_tokens=200))  # 0.010 s per token
    assert picks(policy, plain([0, 0, 0]), n=200).keys() == {1, 2}  # unseen average 0
    policy.observe(done(1, 1000.0, output_tokens=20))  # faster request, 0.050 s per token
    policy.observe(done(2, 900.0, output_tokens=10))
    assert all(policy.choose(plain([0, 0, 0]), rng) == 0 for _ in range(50))


def test_litellm_latency_keeps_its_first_nine_samples_and_rolls_only_the_last() -> None:
    policy = make_policy("litellm_latency")
    for _ in range(10):
        policy.observe(done(0, 100.0))
    for _ in range(50):
        policy.observe(done(0, 10_000.0))
    assert policy.latency[0] == [0.001] * 9 + [0.1]
    assert policy.average(0) == pytest.approx((9 * 0.001 + 0.1) / 10)


def test_litellm_latency_buffer_spreads_over_near_best_and_streaming_uses_ttft() -> None:
    policy = make_policy("litellm_latency", lowest_latency_buffer=0.5, stream=True)
    for a, latency, ttft in ((0, 1000.0, 300.0), (1, 1300.0, 100.0), (2, 800.0, 500.0)):
        policy.observe(done(a, latency, ttft_ms=ttft))
    assert set(picks(policy, plain([0, 0, 0]), n=300)) == {1}  # 0.001 vs 0.003 and 0.005 s/token
    policy.stream = False
    assert set(picks(policy, plain([0, 0, 0]), n=300)) == {0, 2}  # 0.010 within 1.5 x 0.008


def test_litellm_latency_drops_zero_token_samples_and_uses_seconds_without_token_counts() -> None:
    policy = make_policy("litellm_latency")
    policy.observe(done(0, 500.0, output_tokens=0))
    assert 0 not in policy.latency
    policy.observe({"state": [], "action": 0, "latency_ms": 500.0, "success": True,
                    "replica_loads": []})  # an older caller: no output_tokens
    assert policy.latency[0] == [0.5]


def test_litellm_least_busy_counts_its_own_in_flight_and_breaks_ties_by_first_deployment() -> None:
    policy, rng = make_policy("litellm_least_busy"), np.random.default_rng(0)
    fields = plain([50, 0, 0])  # the replicas' own counts are not what it reads
    assert [policy.choose(fields, rng) for _ in range(4)] == [0, 1, 2, 0]
    policy.observe(done(1, 100.0, success=False))  # failures decrement too
    assert policy.choose(fields, rng) == 1
    assert policy.in_flight == [2, 1, 1]


# --- vLLM production-stack session routing ------------------------------------------------------

def test_session_affinity_is_sticky_whatever_the_load_and_spreads_sessions() -> None:
    policy, rng = make_policy("session_affinity"), np.random.default_rng(0)
    home = {s: policy.choose(body([0, 0, 0], session=f"user-{s}"), rng) for s in range(300)}
    for s in range(0, 300, 7):
        assert policy.choose(body([90, 90, 0], session=f"user-{s}"), rng) == home[s]
    share = Counter(home.values())
    assert all(60 < share[i] < 150 for i in range(3))


def test_session_affinity_uses_the_first_prefix_hash_and_moves_only_a_removed_replicas_keys() -> None:
    policy, rng = make_policy("session_affinity"), np.random.default_rng(0)
    a = policy.choose(body([0, 0, 0, 0], hashes=[42, 7]), rng)
    assert policy.choose(body([0, 0, 0, 0], hashes=[42, 99, 3]), rng) == a
    before = {k: policy.replica_for(str(k)) for k in range(400)}
    policy._build(["r0", "r1", "r2"])  # r3 leaves the ring
    after = {k: policy.replica_for(str(k)) for k in range(400)}
    assert all(after[k] == before[k] for k in before if before[k] != 3)


def test_session_affinity_without_a_key_takes_the_lowest_recent_request_rate() -> None:
    policy, rng = make_policy("session_affinity"), np.random.default_rng(0)
    policy.start(SimpleNamespace(now=0.0))
    assert [policy.choose(plain([0, 0]), rng) for _ in range(3)] == [0, 1, 0]
    policy.context.now = 100.0  # the window forgot them: an idle replica first
    assert policy.choose(plain([0, 0]), rng) == 0


# --- Linkerd / Finagle peak EWMA ----------------------------------------------------------------

def test_peak_ewma_jumps_to_peaks_and_decays_by_time_not_per_sample() -> None:
    policy = make_policy("peak_ewma")
    policy.start(SimpleNamespace(now=0.0))
    policy.choose(plain([0, 0]), np.random.default_rng(0))
    assert policy.cost == [30.0, 30.0]  # Linkerd's default RTT for an unseen replica
    policy.observe(done(0, 1000.0))
    assert policy.cost[0] == 1000.0  # a peak is taken at once
    policy.observe(done(0, 100.0))
    assert policy.cost[0] == pytest.approx(1000.0)  # no time elapsed: no weight on the sample
    policy.context.now = 10.0
    policy.observe(done(0, 100.0))
    assert policy.cost[0] == pytest.approx(1000 / math.e + 100 * (1 - 1 / math.e))
    policy.context.now = 20.0
    assert policy.load(0, 3, 20.0) == pytest.approx(policy.cost[0] * 4)
    assert policy.cost[0] == pytest.approx((1000 / math.e + 100 * (1 - 1 / math.e)) / math.e)


def test_peak_ewma_times_the_first_token_of_a_streamed_answer_unless_told_e2e() -> None:
    policy = make_policy("peak_ewma")
    policy.choose(plain([0, 0]), np.random.default_rng(0))
    policy.observe(done(0, 9000.0, ttft_ms=400.0))
    policy.observe(done(1, 9000.0, success=False))  # a failure has no first token: its latency
    assert policy.cost == [400.0, 9000.0]
    policy = make_policy("peak_ewma", sample="e2e")  # a non-streamed answer is one frame
    policy.choose(plain([0, 0]), np.random.default_rng(0))
    policy.observe(done(0, 9000.0, ttft_ms=400.0))
    assert policy.cost == [9000.0, 30.0]
    with pytest.raises(ValueError, match="sample"):
        make_policy("peak_ewma", sample="headers")


class Decisions(SimpleNamespace):
    """A simulator context: each decision's state is a fresh list, handed back with its outcome."""

    def raw_state(self) -> list:
        return self.state


def test_peak_ewma_samples_the_first_token_when_it_arrives_and_counts_pending_until_then() -> None:
    policy, rng = make_policy("peak_ewma"), np.random.default_rng(0)
    policy.start(Decisions(now=0.0, state=[]))
    states = []
    for _ in range(4):  # two replicas: P2C always compares both, the cheaper (fewer pending) wins
        policy.context.state = [len(states)]
        states.append((policy.context.state, policy.choose(body([50, 50]), rng)))
    assert sorted(policy.pending) == [2, 2]  # its own handles, not the body's loads
    first, a = states[0]
    policy.context.now = 1.0
    policy.observe_first_token({"state": first, "action": a, "ttft_ms": 700.0})
    assert policy.cost[a] == 700.0 and policy.pending[a] == 1  # timed and released at once
    policy.observe(done(a, 60_000.0, ttft_ms=700.0) | {"state": first})
    assert policy.cost[a] == 700.0 and policy.pending[a] == 1  # the end adds no second sample
    failed, b = next(s for s in states if s[1] != a)
    policy.observe(done(b, 50.0, success=False) | {"state": failed})  # no first token: its error
    assert policy.cost[b] == 50.0 and policy.pending[b] == 1


def test_peak_ewma_e2e_ignores_first_tokens_and_holds_pending_to_the_end() -> None:
    policy, rng = make_policy("peak_ewma", sample="e2e"), np.random.default_rng(0)
    policy.start(Decisions(now=0.0, state=[0]))
    a = policy.choose(body([0, 0]), rng)
    policy.observe_first_token({"state": policy.context.state, "action": a, "ttft_ms": 700.0})
    assert policy.cost[a] == 30.0 and policy.pending[a] == 1
    policy.observe(done(a, 60_000.0, ttft_ms=700.0) | {"state": policy.context.state})
    assert policy.cost[a] == 60_000.0 and policy.pending[a] == 0


def test_the_engine_reports_each_first_token_once_before_its_completion() -> None:
    class Recorder:
        name = "recorder"

        def __init__(self) -> None:
            self.events: list[tuple] = []

        def choose(self, fields: dict, rng: np.random.Generator) -> int:
            return int(rng.integers(len(fields["replica_loads"])))

        def observe_first_token(self, event: dict) -> None:
            self.events.append(("first", id(event["state"]), event["action"], event["ttft_ms"]))

        def observe(self, experience: dict) -> None:
            self.events.append(("done", id(experience["state"]), experience["action"],
                                experience["ttft_ms"]))

    recorder = Recorder()
    rec = run_policy("heterogeneous", recorder, 300, seed=0).records
    firsts = [e for e in recorder.events if e[0] == "first"]
    assert len(firsts) == int(rec.success.sum()) > 250
    seen: dict = {}
    for kind, key, action, ttft in recorder.events:
        if kind == "first":
            assert key not in seen
            seen[key] = (action, ttft)
        elif ttft is not None:  # a success: its first token came earlier, with the same TTFT
            assert seen.pop(key) == (action, ttft)
    assert not seen  # no failures here after a first token: every one was completed


def test_peak_ewma_weighs_latency_by_pending_requests_between_two_choices() -> None:
    policy, rng = make_policy("linkerd"), np.random.default_rng(0)
    policy.start(SimpleNamespace(now=0.0))
    policy.choose(plain([0, 0]), rng)
    policy.observe(done(0, 1000.0))
    policy.observe(done(1, 300.0))
    assert set(picks(policy, body([0, 0]), n=50)) == {1}
    assert set(picks(policy, body([0, 5]), n=50)) == {0}  # 300 x 6 > 1000 x 1


def test_peak_ewma_finagle_mode_penalises_an_unseen_replica_with_requests_outstanding() -> None:
    policy, rng = make_policy("peak_ewma", default_rtt_ms=None), np.random.default_rng(0)
    policy.choose(plain([0, 0]), rng)
    policy.observe(done(0, 5000.0))
    assert set(picks(policy, body([0, 0]), n=50)) == {1}  # unseen and idle: cost 0
    assert set(picks(policy, body([50, 1]), n=50)) == {0}  # unseen, one outstanding: penalty
