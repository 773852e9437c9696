"""The desired-replica signal: sizing a pool for a latency target, with hysteresis, on hand-made windows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from agent_app.autoscaling import DesiredReplicas, LatencyTarget, PoolWindow, ReplicaWindow, estimate

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
    # 16 of 32 slots busy while completing 10 req/s: half used, 20 req/s at full use.
    by_load = ReplicaWindow(completed_per_s=10.0, in_flight=16.0, latency_ms={95: 2400.0}, concurrency=32)
    by_latency = replace(by_load, in_flight=None, mean_latency_ms=1600.0)
    target = LatencyTarget(percentile=95, threshold_ms=4000.0)
    for replica in (by_load, by_latency):
        found = estimate(PoolWindow(arrival_rate=20.0, replicas=[replica] * 2), target)
        assert found.replica_capacity_rps == pytest.approx(20.0)
        assert found.utilisation == pytest.approx(0.5)


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
