"""The head-to-head harness's pure parts: capacity from the fake replicas' timing, trace slices at
the target rate, prompts the fake replica counts right, and the per-router summaries and ratios."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.h2h.workload import (
    MAX_GAP_MEANS,
    ClusterModel,
    Outcome,
    median_and_spread,
    prompt_text,
    ratios_to_best,
    slices,
    summarize,
)
from examples.fake_replica import count_tokens
from simulator.replay import cached_trace, trace_path


@pytest.fixture(scope="module")
def trace():
    return cached_trace(str(trace_path("azure-code")))


def test_capacity_is_each_replica_full_batch_over_the_mean_service_time():
    model = ClusterModel(speeds=(1.0, 0.5), max_batch=2, overhead_ms=0.0, prefill_ms_per_token=0.0,
                         decode_ms_per_token=10.0, contention=0.5)
    # 11 tokens: 10 decode steps of 10 ms, slowed 1.5x by the second running request = 150 ms.
    outputs = np.array([11, 11])
    assert model.service_ms(np.array([0, 0]), outputs) == pytest.approx([150.0, 150.0])
    assert model.capacity_rps(np.array([0, 0]), outputs) == pytest.approx((2 * 1.0 + 2 * 0.5) / 0.150)


def test_slices_are_consecutive_and_each_runs_at_the_target_rate(trace):
    warmup, measured = slices(trace, rate_rps=3.0, warmup=50, per_run=40, seeds=3, max_output=100)
    assert len(warmup) == 50 and [len(s) for s in measured] == [40, 40, 40]
    for part in (warmup, *measured):
        at = [r.at_s for r in part]
        assert at[0] == 0.0 and at == sorted(at)
        n = len(part)
        assert n / (at[-1] * n / (n - 1)) == pytest.approx(3.0)  # span plus one mean gap
        assert all(1 <= r.output_tokens <= 100 for r in part)
        gaps = np.diff(at)  # the trace's idle minutes are shortened, not replayed as silence
        assert gaps.max() <= MAX_GAP_MEANS * np.median(gaps) * (1 + 1e-9)
    # The first measured slice continues the trace where the warm-up stopped.
    assert measured[0][0].prompt_tokens == int(trace.prompt_tokens[50])
    assert measured[1][0].prompt_tokens == int(trace.prompt_tokens[90])


@pytest.mark.parametrize("tokens", [1, 7, 100, 2048])
def test_prompt_text_is_counted_as_the_requested_tokens_and_shares_no_prefix(tokens):
    text = prompt_text("s0-12", tokens)
    assert abs(count_tokens(text) - tokens) <= 1
    assert text.split()[0] == "s0-12" and prompt_text("s0-13", tokens).split()[0] != "s0-12"


def test_summary_counts_failures_apart_and_shares_over_the_served():
    outcomes = [Outcome(0, "a", True, 1.0, 0.1), Outcome(1, "a", True, 3.0, 0.3),
                Outcome(2, "b", True, 2.0, None), Outcome(3, "", False, 9.0, None, "http 503")]
    row = summarize(outcomes, ["a", "b", "c"])
    assert row["requests"] == 4 and row["failures"] == 1
    assert row["mean_ms"] == pytest.approx(2000) and row["p50_ms"] == pytest.approx(2000)
    assert row["ttft_mean_ms"] == pytest.approx(200)
    assert (row["share_a"], row["share_b"], row["share_c"]) == pytest.approx((2 / 3, 1 / 3, 0))


def test_ratios_are_to_the_best_router_of_the_same_run_and_seeds_give_median_and_spread():
    run = {name: {"mean_ms": mean, "p50_ms": 1.0, "p99_ms": 2.0, "ttft_mean_ms": math.nan,
                  "ttft_p99_ms": 1.0} for name, mean in (("x", 100.0), ("y", 150.0))}
    ratios = ratios_to_best(run)
    assert ratios["x"]["mean_ms"] == 1.0 and ratios["y"]["mean_ms"] == pytest.approx(1.5)
    assert math.isnan(ratios["x"]["ttft_mean_ms"])
    assert median_and_spread([3.0, 1.0, math.nan, 2.0]) == (2.0, 1.0, 3.0)
