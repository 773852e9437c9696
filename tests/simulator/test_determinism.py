"""Same seed, same records; paired seeds give every policy the same workload."""

from __future__ import annotations

import numpy as np

from simulator.runner import run_policy
from simulator.scenarios import get_scenario
from simulator.workload import generate_workload


def _same(a, b) -> bool:
    return all(np.array_equal(getattr(a, f), getattr(b, f), equal_nan=True)
               for f in ("arrival_s", "finish_s", "latency_ms", "replica", "outcome", "ttft_ms",
                         "hit_blocks"))


def test_same_seed_gives_identical_records() -> None:
    for policy in ("p2c", "least_loaded", "random"):
        first = run_policy("outage", policy, 3000, seed=5)
        second = run_policy("outage", policy, 3000, seed=5)
        assert _same(first.records, second.records)
        assert first.metrics == second.metrics


def test_same_seed_same_trace_replay() -> None:
    for policy in ("p2c", "least_loaded"):
        first = run_policy("trace:mooncake-synthetic", policy, 1500, seed=4)
        second = run_policy("trace:mooncake-synthetic", policy, 1500, seed=4)
        assert _same(first.records, second.records) and first.metrics == second.metrics
    other = run_policy("trace:mooncake-synthetic", "least_loaded", 1500, seed=5)
    assert not np.array_equal(other.records.prompt_tokens, first.records.prompt_tokens)


def test_different_seeds_differ() -> None:
    a = run_policy("heterogeneous", "p2c", 2000, seed=1)
    b = run_policy("heterogeneous", "p2c", 2000, seed=2)
    assert not np.array_equal(a.records.arrival_s, b.records.arrival_s)


def test_policies_share_the_workload_of_a_seed() -> None:
    a = run_policy("burst", "round_robin", 2000, seed=3)
    b = run_policy("burst", "least_loaded", 2000, seed=3)
    assert np.array_equal(a.records.arrival_s, b.records.arrival_s)
    assert not np.array_equal(a.records.replica, b.records.replica)


def test_workload_has_heavy_tails_and_the_configured_rate() -> None:
    cfg = get_scenario("homogeneous").workload_config()
    wl = generate_workload(cfg, 20_000, seed=0)
    assert np.all(np.diff(wl.arrival_s) >= 0)
    rate = len(wl) / wl.duration_s
    assert 0.9 * cfg.rate_rps < rate < 1.15 * cfg.rate_rps  # bursts add a few percent
    for tokens, (low, high) in ((wl.prompt_tokens, cfg.prompt_clip),
                                (wl.output_tokens, cfg.output_clip)):
        assert tokens.min() >= low and tokens.max() <= high
        assert np.percentile(tokens, 99) > 5 * np.median(tokens)  # lognormal tail
