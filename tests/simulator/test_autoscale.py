"""The autoscaling loop in simulated time: the pool follows the traffic within its bounds, new
replicas wait out their start-up, removed ones drain, and the fixed-size search is the smallest."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from agent_app.autoscaling import LatencyTarget
from simulator.autoscale import (
    AutoscaledRun,
    DayConfig,
    Gateway,
    day_workload,
    main,
    run_autoscaled,
    run_fixed,
    smallest_fixed,
    windows_above,
)
from simulator.cluster import ReplicaSpec
from simulator.engine import ERRORED, OK, ClusterEvent, Records, Simulation
from simulator.policies import make_policy
from simulator.workload import WorkloadConfig, generate_workload

# A half-hour day from 2.4 to 9.6 req/s on replicas of 4.1 req/s: one replica at the trough, three
# or more at the peak. About 10 800 requests: well under a second per run.
SMALL = DayConfig(mean_rps=6.0, day_s=1800.0, window_s=30.0, startup_s=60.0, cooldown_s=120.0,
                  max_replicas=6)


@pytest.fixture(scope="module")
def small_run() -> AutoscaledRun:
    return run_autoscaled(SMALL, seed=0)


def _pool_sizes(run: AutoscaledRun) -> np.ndarray:
    return np.array([s.routable + s.starting for s in run.steps])


def test_the_day_is_poisson_on_a_cycle_from_trough_to_peak() -> None:
    workload = day_workload(SMALL, seed=1)
    assert workload.arrival_s[-1] < SMALL.day_s and workload.duration_s == SMALL.day_s
    trough, peak = SMALL.rate_bounds()
    assert (trough, peak) == pytest.approx((2.4, 9.6))
    counts, _ = np.histogram(workload.arrival_s, bins=6, range=(0.0, SMALL.day_s))
    rates = counts / (SMALL.day_s / 6)
    assert rates[0] < 0.6 * SMALL.mean_rps and rates[2] > 1.3 * SMALL.mean_rps  # trough, then peak
    assert len(workload) == pytest.approx(SMALL.mean_rps * SMALL.day_s, rel=0.05)


def test_the_pool_grows_as_the_rate_rises_and_shrinks_as_it_falls(small_run: AutoscaledRun) -> None:
    sizes = _pool_sizes(small_run)
    times = np.array([s.at_s for s in small_run.steps])
    first = sizes[times < SMALL.day_s / 4].max()
    peak = sizes[(times > 0.3 * SMALL.day_s) & (times < 0.7 * SMALL.day_s)].max()
    last = sizes[times > 0.85 * SMALL.day_s].min()
    assert first <= 2 and peak >= 3 and last < peak
    assert small_run.actions["up"] >= 1 and small_run.actions["down"] >= 1
    assert small_run.moved["drained"] >= 1
    # More replicas were routable around the peak than at the trough: the joins took effect.
    routed, arrival = small_run.records.replica, small_run.records.arrival_s
    mid = (arrival > 0.4 * SMALL.day_s) & (arrival < 0.6 * SMALL.day_s)
    assert len(np.unique(routed[mid])) > len(np.unique(routed[arrival < 120.0]))


def test_the_pool_stays_within_its_bounds() -> None:
    bounded = replace(SMALL, mean_rps=9.0, min_replicas=2, max_replicas=3)  # the peak wants more than 3
    run = run_autoscaled(bounded, seed=2)
    sizes = _pool_sizes(run)
    assert sizes.min() >= 2 and sizes.max() <= 3
    assert 3 in sizes and all(2 <= s.recommendation <= 3 for s in run.steps)
    assert max(s.needed for s in run.steps) > 3  # the estimate asked for more; the bound held
    for at in np.arange(0.0, bounded.day_s, 5.0):  # never more than max billed-and-active at once
        active = [lease for lease in run.leases
                  if lease.start_s <= at and (lease.leave_s is None or at < lease.leave_s)]
        assert 2 <= len(active) <= 3


def test_a_new_replica_gets_no_request_before_its_start_up_nor_after_it_left(
        small_run: AutoscaledRun) -> None:
    records = small_run.records
    started = [lease for lease in small_run.leases if lease.start_s > 0]
    assert started
    for lease in started:
        assert lease.ready_s - lease.start_s == SMALL.startup_s
        on_slot = records.replica == lease.slot
        early = on_slot & (records.arrival_s >= lease.start_s) & (records.arrival_s < lease.ready_s)
        assert not early.any()
        assert (on_slot & (records.arrival_s >= lease.ready_s)).any()  # routable once ready
    for lease in small_run.leases:
        if lease.leave_s is None:
            continue
        later = [other.start_s for other in small_run.leases if other.slot == lease.slot
                 and other.start_s >= lease.leave_s]
        after = (records.replica == lease.slot) & (records.arrival_s >= lease.leave_s) \
            & (records.arrival_s < min(later, default=np.inf))
        assert not after.any()
        # What it held finished: billed until its last request ended.
        assert lease.end_s >= lease.leave_s
    assert (records.outcome == OK).mean() > 0.99


def test_a_scale_down_cancels_replicas_still_starting_first() -> None:
    # A start-up longer than the cool-down: the pool shrinks while replicas are still starting.
    run = run_autoscaled(replace(SMALL, startup_s=240.0, cooldown_s=0.0, cooldown_evaluations=1), seed=0)
    cancelled = [lease for lease in run.leases if lease.start_s > 0 and lease.leave_s == lease.ready_s]
    assert run.moved["cancelled"] == len(cancelled) >= 1
    for lease in cancelled:
        assert lease.start_s < lease.end_s < lease.ready_s  # billed until the cancelling evaluation
        never = (run.records.replica == lease.slot) & (run.records.arrival_s >= lease.start_s) \
            & (run.records.arrival_s < lease.ready_s + 1.0)
        assert not never.any()


def test_the_same_seed_gives_the_same_run(small_run: AutoscaledRun) -> None:
    again = run_autoscaled(SMALL, seed=0)
    assert [(s.at_s, s.recommendation) for s in again.steps] == [(s.at_s, s.recommendation)
                                                                  for s in small_run.steps]
    assert np.array_equal(again.records.replica, small_run.records.replica)
    assert again.replica_hours == small_run.replica_hours


def test_the_fixed_search_returns_the_smallest_size_holding_the_target() -> None:
    cfg = replace(SMALL, day_s=900.0)
    workload = day_workload(cfg, seed=3)
    n, tried = smallest_fixed(cfg, 3, workload)
    assert n is not None and n >= 2 and list(tried) == list(range(1, n + 1))
    assert tried[n] <= 1.0 - cfg.hold_share
    assert tried[n - 1] > 1.0 - cfg.hold_share
    assert run_fixed(cfg, n - 1, 3, workload).mean() == tried[n - 1]
    # A target nothing can meet: no size holds it.
    none, _ = smallest_fixed(replace(cfg, max_replicas=3, target=LatencyTarget(99, 1.0, "ttft")), 3, workload)
    assert none is None


def test_a_window_is_above_target_by_its_percentile_and_failures_count_as_slow() -> None:
    cfg = replace(SMALL, day_s=3.0, window_s=1.0, target=LatencyTarget(50, 100.0, "ttft"))
    finish = np.array([0.1, 0.2, 0.3, 1.1, 1.2, 1.3, 2.5])
    ttft = np.array([50.0, 50.0, 500.0, 50.0, np.nan, np.nan, 50.0])
    outcome = np.array([OK, OK, OK, OK, ERRORED, ERRORED, OK])
    records = Records(arrival_s=finish - 0.05, finish_s=finish, latency_ms=ttft * 2, replica=np.zeros(7),
                      outcome=outcome, ttft_ms=ttft)
    # Window 0: median 50 ms; window 1: two of three failed, median infinite; window 2: 50 ms.
    assert windows_above(records, cfg).tolist() == [False, True, False]


def test_ticks_run_every_period_until_the_last_arrival_and_scheduled_events_apply_once() -> None:
    workload = generate_workload(WorkloadConfig(rate_rps=2.0, burst_every_s=0.0), 200, seed=0)
    ticks: list[tuple[float, tuple[int, ...]]] = []

    def tick(sim: Simulation) -> None:
        ticks.append((sim.now, sim.present))
        if len(ticks) == 2:
            sim.schedule(ClusterEvent(sim.now + 5.0, "leave", 1))

    specs = [ReplicaSpec(max_batch=8, kv_blocks=32)] * 3
    sim = Simulation(specs, workload, make_policy("least_loaded"), np.random.default_rng(0),
                     absent=(2,), tick_s=10.0, on_tick=tick)
    sim.schedule(ClusterEvent(12.0, "join", 2))  # before the run: queued once with the others
    records = sim.run()
    last = workload.arrival_s[-1]
    assert [t for t, _ in ticks] == pytest.approx([10.0 * k for k in range(1, int(last // 10.0) + 1)])
    assert ticks[0][1] == (0, 1) and ticks[1][1] == (0, 1, 2) and ticks[2][1] == (0, 2)
    assert not ((records.replica == 1) & (records.arrival_s >= 25.0)).any()
    with pytest.raises(ValueError, match="in the past"):
        sim.schedule(ClusterEvent(1.0, "join", 1))


def test_the_command_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seeds", "1", "--day-hours", "0.25", "--mean-rps", "4", "--window-s", "30",
                 "--max-replicas", "4"]) == 0
    out = capsys.readouterr().out
    assert "ttft p99 <= 2000 ms" in out and "target met on" in out and "batch slowdown 0.03" in out
    assert len(out.strip().splitlines()) == 4  # settings, header, one seed, the mean


def test_the_estimate_is_told_the_slots_the_slowdown_and_how_long_a_replica_was_seen() -> None:
    gateway = Gateway(make_policy("least_loaded"))
    joined = gateway.replica_window("r3", 15.0, 60.0, 32, 0.05)  # routable for the last 15 s
    assert (joined.window_share, joined.concurrency, joined.batch_slowdown) == (0.25, 32, 0.05)
    assert gateway.replica_window("r0", 60.0, 60.0, None, 0.03).window_share == 1.0
