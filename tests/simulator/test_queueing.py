"""The simulator's queueing against closed forms: M/M/1 under FCFS and processor sharing (decode),
M/M/1 and M/D/1 (prefill)."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.cluster import ReplicaSpec
from simulator.engine import Simulation
from simulator.policies import RoundRobinPolicy
from simulator.workload import Workload


def poisson_workload(lam: float, mean_work: float, n: int, seed: int) -> Workload:
    """Poisson arrivals and exponential decode work (no prompt), the M/M/1 textbook input.

    The prefill emits the first token, so a request decodes output - 1 tokens: output = 1 + work.
    """
    rng = np.random.default_rng(seed)
    arrival = np.cumsum(rng.exponential(1.0 / lam, n))
    output = 1.0 + rng.exponential(mean_work, n)
    return Workload(arrival, np.zeros(n), output, duration_s=float(arrival[-1]))


def mm1_spec(max_batch: int, alpha: float = 0.0) -> ReplicaSpec:
    # 100 tokens/s and mean work 100 tokens: mu = 1 request/s. Memory never binds.
    return ReplicaSpec(speed=1.0, max_batch=max_batch, max_backlog=10**9, base_tps=100.0,
                       alpha=alpha, kv_blocks=10**9)


# Batch 1 is FCFS; alpha 1 with an unbounded batch splits a fixed rate b ways: processor
# sharing. Both have the same mean time in system.
@pytest.mark.parametrize(("max_batch", "alpha"), [(1, 0.0), (10**6, 1.0)],
                         ids=["fcfs_batch_1", "processor_sharing"])
@pytest.mark.parametrize("lam", [0.5, 0.8])
def test_mm1_mean_time_in_system_matches_closed_form(max_batch: int, alpha: float,
                                                      lam: float) -> None:
    n = 60_000
    wl = poisson_workload(lam, mean_work=100.0, n=n, seed=7)
    rec = Simulation([mm1_spec(max_batch, alpha)], wl, RoundRobinPolicy(),
                     np.random.default_rng(0), window_s=60.0).run()
    assert rec.success.all()
    warm = n // 10  # the queue starts empty; skip the transient
    mean_s = rec.latency_ms[warm:].mean() / 1000.0
    expected = 1.0 / (1.0 - lam)  # 1 / (mu - lambda), insensitive to FCFS vs PS
    assert mean_s == pytest.approx(expected, rel=0.08)


def test_free_batching_is_an_infinite_server_queue() -> None:
    # alpha 0 and no batch limit: nobody waits or slows down, so time in system = 1 / mu.
    wl = poisson_workload(5.0, mean_work=100.0, n=20_000, seed=2)
    rec = Simulation([mm1_spec(10**6)], wl, RoundRobinPolicy(), np.random.default_rng(0)).run()
    assert rec.latency_ms.mean() / 1000.0 == pytest.approx(1.0, rel=0.05)


def test_mm1_utilisation_and_little_law() -> None:
    lam, n = 0.6, 40_000
    wl = poisson_workload(lam, mean_work=100.0, n=n, seed=3)
    rec = Simulation([mm1_spec(1)], wl, RoundRobinPolicy(), np.random.default_rng(0)).run()
    busy = ((wl.output_tokens - 1) / 100.0).sum() / rec.finish_s.max()
    assert busy == pytest.approx(lam, rel=0.03)
    # Little: mean number in system = lambda * mean time in system = rho / (1 - rho).
    in_system = lam * rec.latency_ms.mean() / 1000.0
    assert in_system == pytest.approx(lam / (1 - lam), rel=0.1)


def test_batch_slowdown_makes_throughput_sublinear() -> None:
    spec = ReplicaSpec()
    totals = [b * spec.per_request_tps(b) for b in (1, 2, 8, 32)]
    assert totals == sorted(totals)  # more batch, more total throughput...
    per_seq = [spec.per_request_tps(b) for b in (1, 2, 8, 32)]
    assert per_seq == sorted(per_seq, reverse=True)  # ...but each sequence gets slower
    assert totals[-1] < 32 * totals[0]


def test_overflowing_backlog_is_rejected_fast() -> None:
    spec = ReplicaSpec(max_batch=2, max_backlog=4, base_tps=10.0, alpha=0.0, kv_blocks=100)
    n = 50
    wl = Workload(np.linspace(0.0, 0.05, n), np.zeros(n), np.full(n, 100.0), duration_s=0.05)
    rec = Simulation([spec], wl, RoundRobinPolicy(), np.random.default_rng(0),
                     reject_ms=5.0).run()
    assert rec.success.sum() == 4
    assert np.allclose(rec.latency_ms[~rec.success], 5.0)


def prefill_only(lam: float, prompts: np.ndarray, seed: int) -> Workload:
    """Poisson arrivals of prompts that produce one token: the replica is a prefill queue."""
    rng = np.random.default_rng(seed)
    arrival = np.cumsum(rng.exponential(1.0 / lam, prompts.size))
    return Workload(arrival, prompts, np.ones(prompts.size, dtype=np.int64),
                    duration_s=float(arrival[-1]))


PREFILL = ReplicaSpec(prefill_tps=1000.0, max_batch=64, max_backlog=10**9, kv_blocks=10**9)


@pytest.mark.parametrize("lam", [0.5, 0.8])
def test_prefill_queue_is_mm1_for_exponential_prompts(lam: float) -> None:
    # One prefill at a time, FIFO, at 1000 tokens/s; mean prompt 1000 tokens: mu = 1/s.
    n = 50_000
    prompts = np.maximum(1, np.rint(np.random.default_rng(4).exponential(1000.0, n))).astype(np.int64)
    rec = Simulation([PREFILL], prefill_only(lam, prompts, 5), RoundRobinPolicy(),
                     np.random.default_rng(0)).run()
    warm = n // 10
    mu = 1000.0 / prompts.mean()
    assert rec.ttft_ms[warm:].mean() / 1000.0 == pytest.approx(1.0 / (mu - lam), rel=0.08)
    assert np.array_equal(rec.ttft_ms, rec.latency_ms)  # one token: done at the first


def test_prefill_queue_is_md1_for_equal_prompts() -> None:
    # Pollaczek-Khinchine: time in system = 1/mu + rho / (2 mu (1 - rho)).
    lam, n = 0.7, 40_000
    rec = Simulation([PREFILL], prefill_only(lam, np.full(n, 1000), 6), RoundRobinPolicy(),
                     np.random.default_rng(0)).run()
    expected = 1.0 + lam / (2.0 * (1.0 - lam))
    assert rec.ttft_ms[n // 10:].mean() / 1000.0 == pytest.approx(expected, rel=0.05)
