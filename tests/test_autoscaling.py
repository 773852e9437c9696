"""The desired-replica signal: sizing a pool for a latency target, with hysteresis, on hand-made windows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest

from agent_app.autoscaling import (
    DEFAULT_BATCH_SLOWDOWN,
    DesiredReplicas,
    LatencyTarget,
    PoolWindow,
    ReplicaWindow,
    estimate,
    utilisation,
)

ROOT = Path(__file__).resolve().parent.parent
TARGET = LatencyTarget(percentile=99, threshold_ms=1000.0)  # aims at rho* = 1 - 200/1000 = 0.8 below


def pool(arrivals: float, replicas: int = 4, *, capacity: float = 8.0, zero_load_ms: float = 200.0,
         broken: int = 0, completed: float | None = None) -> PoolWindow:
    """A window as the model sees the world: processor-sharing replicas of `capacity` req/s whose
    p99 is `zero_load_ms` stretched by 1 / (1 - rho); `broken` more replicas fail every request."""
    done = arrivals / replicas if completed is None else completed
    rho = done / capacity
    healthy = ReplicaWindow(completed_per_s=done, in_flight=rho / (1 - rho),
                            latency_ms={50: zero_load_ms / 2 / (1 - rho), 99: zero_load_ms / (1 - rho)})
    failing = ReplicaWindow(completed_per_s=done, in_flight=0.5, latency_ms={99: 20.0}, failure_rate=1.0)
    return PoolWindow(arrival_rate=arrivals, replicas=[healthy] * replicas + [failing] * broken)


SLOTS, ALONE_S = 32, 4.0  # a batching engine: 32 slots, 4 s per request alone


def stretch(batch: float, slowdown: float = DEFAULT_BATCH_SLOWDOWN) -> float:
    return 1.0 + slowdown * max(batch - 1.0, 0.0)


FULL_BATCH_RPS = SLOTS / (ALONE_S * stretch(SLOTS))  # 32 / (4 s * 1.93) = 4.15 req/s


def engine(completed: float, *, slowdown: float = DEFAULT_BATCH_SLOWDOWN, p99_ms: float = 500.0,
           share: float = 1.0) -> ReplicaWindow:
    """A batching engine as the estimate models it, completing `completed` req/s (below
    FULL_BATCH_RPS): it runs the b requests with b / (ALONE_S * g(b)) = completed."""
    batch = completed * ALONE_S * (1 - slowdown) / (1 - completed * ALONE_S * slowdown)
    return ReplicaWindow(completed_per_s=completed, in_flight=batch, latency_ms={99: 9000.0},
                         ttft_ms={99: p99_ms}, concurrency=SLOTS, batch_slowdown=slowdown,
                         window_share=share)


TTFT = LatencyTarget(percentile=99, threshold_ms=2000.0, metric="ttft")


def run(history: list[PoolWindow], **options: object) -> list[int]:
    desired = DesiredReplicas(TARGET, **options)
    return [desired.evaluate(window).recommendation for window in history]


def test_steady_traffic_keeps_the_count():
    assert run([pool(20.0)] * 10) == [4] * 10


def test_the_estimate_explains_itself():
    found = estimate(pool(20.0), TARGET)
    assert found.current_replicas == found.healthy_replicas == 4
    assert found.replica_capacity_rps == pytest.approx(8.0)
    assert found.utilisation == pytest.approx(20 / 32)
    assert found.target_utilisation == pytest.approx(0.8)
    assert found.headroom_rps == pytest.approx(32 * 0.8 - 20)
    assert found.raw_estimate == pytest.approx(20 / (8 * 0.8))
    assert found.needed_replicas == 4
    assert found.utilisation_one_more == pytest.approx(20 / 40)
    assert found.utilisation_one_fewer == pytest.approx(20 / 24)
    assert found.latency_headroom_ms == pytest.approx(1000 - 200 / (1 - 20 / 32))
    assert not found.latency_bound
    json.dumps(asdict(found), allow_nan=False)  # ready for /stats as it is


def test_rising_traffic_scales_up_at_once():
    # 36 req/s arrive while the four replicas complete only 7.5 each: the pool falls behind.
    history = [pool(20.0)] * 3 + [pool(28.0), pool(36.0, completed=7.5)]
    assert run(history) == [4, 4, 4, 5, 6]  # 28 / 6.4 = 4.4; 36 / 6.4 = 5.6


def test_falling_traffic_scales_down_only_after_the_cool_down():
    history = [pool(20.0)] * 2 + [pool(8.0)] * 5  # 8 / 6.4 = 1.25: two replicas are enough
    assert run(history, cooldown_evaluations=3) == [4, 4, 4, 4, 2, 2, 2]


def test_the_cool_down_also_counts_seconds_when_asked():
    desired = DesiredReplicas(TARGET, cooldown_evaluations=2, cooldown_seconds=120.0)
    at_30s = [desired.evaluate(w, at=30.0 * i).recommendation for i, w in enumerate([pool(8.0)] * 7)]
    assert at_30s == [4, 4, 4, 4, 2, 2, 2]  # lower since t=0: down at t=120 s, the fifth evaluation


def test_scaling_down_stops_at_the_highest_estimate_of_the_stretch():
    history = [pool(20.0), pool(8.0), pool(14.0), pool(8.0)]  # 14 / 6.4 = 2.2 -> 3
    assert run(history, cooldown_evaluations=3) == [4, 4, 4, 3]


def test_a_failing_replica_scales_up():
    history = [pool(20.0)] * 2 + [pool(20.0, replicas=3, broken=1)] * 2
    assert run(history) == [4, 4, 5, 5]  # 20 / 6.4 = 3.1 healthy, plus the broken one
    found = estimate(pool(20.0, replicas=3, broken=1), TARGET)
    assert found.healthy_replicas == 3 and found.effective_replicas == pytest.approx(3.0)
    assert found.utilisation_one_fewer == pytest.approx(20 / 16)  # the broken one stays in the mix


def test_a_replica_failing_some_requests_counts_for_the_rest():
    window = pool(20.0)
    degraded = replace(window.replicas[0], failure_rate=0.25)
    found = estimate(replace(window, replicas=[degraded, *window.replicas[1:]]), TARGET)
    assert found.effective_replicas == pytest.approx(3.75)
    assert found.raw_estimate == pytest.approx(20 / 6.4 + 0.25)


def test_latency_over_target_at_low_utilisation_holds_and_says_so():
    # A slow model: 1.5 s at zero load; more replicas cannot bring p99 under 1 s.
    slow = pool(4.0, zero_load_ms=1500.0)
    found = estimate(slow, TARGET)
    assert found.latency_bound and found.latency_headroom_ms < 0
    assert found.target_utilisation == TARGET.min_utilisation
    assert found.needed_replicas == 4  # sized for 30% would be 2, but never fewer while over
    assert "cannot meet it" in found.reason
    assert run([slow] * 8, cooldown_evaluations=2) == [4] * 8


def test_no_flapping_around_a_boundary():
    # 25 / 6.4 = 3.9 -> 4 and 26 / 6.4 = 4.06 -> 5: the estimate flips every evaluation.
    history = [pool(25.0 if i % 2 else 26.0) for i in range(20)]
    recommendations = run(history, cooldown_evaluations=3)
    assert recommendations == [5] * 20
    assert sum(a != b for a, b in zip(recommendations, recommendations[1:], strict=False)) == 0


@pytest.mark.parametrize(("history", "bounds", "expected"), [
    ([pool(0.0)] * 4, {"min_replicas": 2}, [4, 2, 2, 2]),  # no traffic: the floor, after two
    ([pool(20.0), pool(200.0, completed=7.9)], {"max_replicas": 6}, [4, 6]),
    ([pool(20.0, replicas=8)], {"max_replicas": 5}, [5]),
    ([pool(1.0, replicas=1)] * 3, {"min_replicas": 3}, [3, 3, 3]),
])
def test_the_recommendation_stays_within_its_bounds(history, bounds, expected):
    assert run(history, cooldown_evaluations=2, **bounds) == expected


def test_a_pool_that_completed_nothing_holds_unless_nothing_arrives():
    idle = ReplicaWindow(completed_per_s=0.0, in_flight=0.0, latency_ms={})
    found = estimate(PoolWindow(arrival_rate=3.0, replicas=[idle] * 3), TARGET)
    assert found.needed_replicas == 3 and "capacity unknown" in found.reason
    assert json.loads(json.dumps(asdict(found), allow_nan=False))["utilisation"] is None
    assert estimate(PoolWindow(arrival_rate=0.0, replicas=[idle] * 3), TARGET).needed_replicas == 0


def test_batch_slots_and_littles_law_give_the_same_capacity():
    # 16 of 32 slots busy while completing 10 req/s: with no slowdown, half used, 20 req/s at full use.
    by_load = ReplicaWindow(completed_per_s=10.0, in_flight=16.0, latency_ms={95: 2400.0}, concurrency=32,
                            batch_slowdown=0.0)
    by_latency = replace(by_load, in_flight=None, mean_latency_ms=1600.0)
    target = LatencyTarget(percentile=95, threshold_ms=4000.0)
    for replica in (by_load, by_latency):
        found = estimate(PoolWindow(arrival_rate=20.0, replicas=[replica] * 2), target)
        assert found.replica_capacity_rps == pytest.approx(20.0)
        assert found.utilisation == pytest.approx(0.5)


def test_the_batch_slowdown_lowers_capacity():
    # The same replica, its requests 3 % slower per other one in the batch: at a full batch each
    # takes 1.93x as long as alone, at 16 only 1.45x, so 16 busy slots are 75 % of its capacity.
    replica = ReplicaWindow(completed_per_s=10.0, in_flight=16.0, latency_ms={95: 2400.0}, concurrency=32)
    target = LatencyTarget(percentile=95, threshold_ms=4000.0)
    capacities = [estimate(PoolWindow(20.0, [replace(replica, batch_slowdown=s)] * 2), target)
                  .replica_capacity_rps for s in (0.0, 0.01, DEFAULT_BATCH_SLOWDOWN, 0.1)]
    assert capacities[0] == pytest.approx(20.0)
    assert capacities == sorted(capacities, reverse=True)
    assert capacities[2] == pytest.approx(20.0 * stretch(16) / stretch(32))  # 15.0 req/s
    # Sized on it: 40 req/s need 40 / (15 * 0.85) = 3.1 -> 4 replicas, not 40 / (20 * 0.85) = 2.4 -> 3.
    found = estimate(PoolWindow(40.0, [replica] * 2), target)
    assert found.needed_replicas == 4 and found.utilisation == pytest.approx(40 / 30.05, rel=1e-3)


@pytest.mark.parametrize("completed", [0.5, 1.5, 2.5, 3.5, 4.0])
def test_a_batching_engine_reads_its_full_batch_capacity_at_any_load(completed):
    found = estimate(PoolWindow(arrival_rate=3 * completed, replicas=[engine(completed)] * 3), TTFT)
    assert found.replica_capacity_rps == pytest.approx(FULL_BATCH_RPS)
    assert found.utilisation == pytest.approx(completed / FULL_BATCH_RPS)


def test_a_full_batch_is_full_whatever_the_slowdown():
    for slowdown in (0.0, DEFAULT_BATCH_SLOWDOWN, 0.2):
        rho = utilisation(np.array([32.0, 40.0]), np.array([32.0, 32.0]), np.full(2, slowdown))
        assert rho.tolist() == [0.99, 0.99]  # waiting requests: it completes at its capacity
    no_slots = utilisation(np.array([1.0, 3.0]), np.full(2, np.nan), np.zeros(2))
    assert no_slots.tolist() == [0.5, 0.75]  # processor sharing: L / (1 + L)


def test_batching_engines_scale_with_their_traffic():
    # Steady, rising past what four hold at 85 % (4 * 4.15 * 0.85 = 14.1 req/s), then falling.
    def window(arrivals: float, replicas: int) -> PoolWindow:
        return PoolWindow(arrivals, [engine(min(arrivals / replicas, 0.98 * FULL_BATCH_RPS))] * replicas)

    desired = DesiredReplicas(TTFT, cooldown_evaluations=2)
    steady = [desired.evaluate(window(12.0, 4)).recommendation for _ in range(3)]
    assert steady == [4, 4, 4]
    assert desired.evaluate(window(16.0, 4)).recommendation == 5  # 16 / 3.53 = 4.5
    falling = [desired.evaluate(window(6.0, 5)).recommendation for _ in range(3)]
    assert falling == [5, 2, 2]  # 6 / 3.53 = 1.7, after the cool-down


def test_a_fresh_replica_in_the_window_does_not_trigger_a_min_utilisation_sizing():
    # Three replicas behind a backlog (over their slots, TTFT p99 3 s) and three that joined 6 s
    # before the window's end (a tenth of it), still filling and quick. The pool's utilisation
    # (capacity-weighted, 0.45) with its mean p99 (2.6 s) reads "over the threshold at low
    # utilisation": sized for 30 %, 10 replicas. Each replica's latency with its own utilisation
    # says the old ones are full: the estimate aims at 85 % and holds the six.
    old = ReplicaWindow(completed_per_s=4.1, in_flight=45.0, latency_ms={99: 9000.0}, ttft_ms={99: 3000.0},
                        concurrency=SLOTS)
    fresh = engine(1.0, p99_ms=1200.0, share=0.1)
    window = PoolWindow(arrival_rate=17.0, replicas=[old] * 3 + [fresh] * 3)
    found = estimate(window, TTFT)
    assert not found.latency_bound and found.target_utilisation == TTFT.max_utilisation
    assert found.observed_latency_ms > TTFT.threshold_ms
    assert found.effective_replicas == pytest.approx(6.0)  # the fresh ones are not half broken
    assert found.replica_capacity_rps == pytest.approx((3 * 4.1 / 0.99 + 0.3 * FULL_BATCH_RPS) / 3.3)
    assert found.raw_estimate == 6.0  # 17 / (4.14 * 0.85) = 4.8, but not below six while over
    assert DesiredReplicas(TTFT, max_replicas=16).evaluate(window).recommendation == 6


def test_a_fresh_replica_counts_its_own_capacity_for_the_share_of_the_window_it_was_seen():
    slow = replace(engine(1.0), completed_per_s=0.5)  # reads half as fast as the others
    for share, mean in ((1.0, (3 + 0.5) / 4), (0.25, (3 + 0.25 * 0.5) / 3.25)):
        found = estimate(PoolWindow(8.0, [engine(1.0)] * 3 + [replace(slow, window_share=share)]), TTFT)
        assert found.replica_capacity_rps == pytest.approx(mean * FULL_BATCH_RPS)
        assert found.effective_replicas == pytest.approx(4.0)


def test_a_time_to_first_token_target_reads_ttft():
    replica = ReplicaWindow(completed_per_s=5.0, in_flight=1.0, latency_ms={90: 9000.0}, ttft_ms={90: 400.0})
    found = estimate(PoolWindow(arrival_rate=10.0, replicas=[replica] * 2),
                     LatencyTarget(percentile=90, threshold_ms=500.0, metric="ttft"))
    assert found.observed_latency_ms == 400.0 and found.target_utilisation == pytest.approx(0.6)


GOOD = ReplicaWindow(completed_per_s=5.0, in_flight=1.0, latency_ms={99: 300.0})


@pytest.mark.parametrize(("window", "target", "field"), [
    (PoolWindow(arrival_rate=-1.0, replicas=[GOOD]), TARGET, "arrival_rate"),
    (PoolWindow(arrival_rate=1.0, replicas=[]), TARGET, "replicas"),
    (PoolWindow(1.0, [GOOD, replace(GOOD, completed_per_s=-2.0)]), TARGET, "replicas[1].completed_per_s"),
    (PoolWindow(1.0, [replace(GOOD, in_flight=float("nan"))]), TARGET, "replicas[0].in_flight"),
    (PoolWindow(1.0, [replace(GOOD, in_flight=None)]), TARGET, "replicas[0].in_flight"),
    (PoolWindow(1.0, [replace(GOOD, failure_rate=1.5)]), TARGET, "replicas[0].failure_rate"),
    (PoolWindow(1.0, [replace(GOOD, concurrency=0)]), TARGET, "replicas[0].concurrency"),
    (PoolWindow(1.0, [replace(GOOD, batch_slowdown=-0.1)]), TARGET, "replicas[0].batch_slowdown"),
    (PoolWindow(1.0, [replace(GOOD, window_share=1.5)]), TARGET, "replicas[0].window_share"),
    (PoolWindow(1.0, [replace(GOOD, latency_ms={50: 9.0})]), TARGET, "replicas[0].latency_ms[99]"),
    (PoolWindow(1.0, [GOOD]), replace(TARGET, metric="ttft"), "replicas[0].ttft_ms[99]"),
    (PoolWindow(1.0, [GOOD]), replace(TARGET, percentile=75), "target.percentile"),
    (PoolWindow(1.0, [GOOD]), replace(TARGET, metric="tpot"), "target.metric"),
    (PoolWindow(1.0, [GOOD]), replace(TARGET, threshold_ms=0.0), "target.threshold_ms"),
])
def test_bad_input_names_the_field(window, target, field):
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        estimate(window, target)


@pytest.mark.parametrize(("options", "field"), [
    ({"min_replicas": -1}, "min_replicas"),
    ({"min_replicas": 4, "max_replicas": 3}, "max_replicas"),
    ({"cooldown_evaluations": 0}, "cooldown_evaluations"),
    ({"cooldown_seconds": -5.0}, "cooldown_seconds"),
])
def test_bad_bounds_name_the_field(options, field):
    with pytest.raises(ValueError, match=field):
        DesiredReplicas(TARGET, **options)


def test_time_is_required_for_a_cool_down_in_seconds_and_never_goes_back():
    desired = DesiredReplicas(TARGET, cooldown_seconds=60.0)
    with pytest.raises(ValueError, match="at"):
        desired.evaluate(pool(20.0))
    desired.evaluate(pool(20.0), at=100.0)
    with pytest.raises(ValueError, match="at went backwards"):
        desired.evaluate(pool(20.0), at=99.0)


def test_importing_the_module_loads_no_django():
    code = ("import sys, agent_app.autoscaling\n"
            "assert not [m for m in sys.modules if m.split('.')[0] == 'django']\n")
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=env, timeout=60)
