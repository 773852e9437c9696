"""A/B results per policy arm: latency mean and p99, success rate, and the difference with a 95% CI.

Gateways tag each reported outcome with the arm that routed it (`arm`: "rl", "heuristic", ...);
the replay store keeps running totals and a log-bucket latency histogram per arm atomically with
the experiences themselves (`agent_app.replay.histogram`).
"""

from __future__ import annotations

import math
from typing import Any

from agent_app.replay import get_replay_store
from agent_app.replay.histogram import quantile_ms

Z_95 = 1.959964
BASELINE, CANDIDATE = "heuristic", "rl"


def summarize(totals: dict[str, Any]) -> dict[str, Any]:
    """One arm's totals {count, successes, latency_sum, latency_sq_sum, buckets} -> its figures."""
    count = totals["count"]
    mean = totals["latency_sum"] / count
    variance = max(totals["latency_sq_sum"] / count - mean**2, 0.0) * count / max(count - 1, 1)
    return {
        "count": count,
        "success_rate": totals["successes"] / count,
        "latency_mean_ms": mean,
        "latency_std_ms": math.sqrt(variance),
        "latency_p99_ms": quantile_ms(totals["buckets"], 0.99),
    }


def compare(baseline: dict[str, Any], candidate: dict[str, Any]) -> dict[str, Any]:
    """Candidate minus baseline, with normal-approximation (Welch) 95% intervals."""
    n_b, n_c = baseline["count"], candidate["count"]
    diff = candidate["latency_mean_ms"] - baseline["latency_mean_ms"]
    se = math.sqrt(baseline["latency_std_ms"] ** 2 / n_b + candidate["latency_std_ms"] ** 2 / n_c)
    p_b, p_c = baseline["success_rate"], candidate["success_rate"]
    se_p = math.sqrt(p_b * (1 - p_b) / n_b + p_c * (1 - p_c) / n_c)
    return {
        "baseline": BASELINE,
        "candidate": CANDIDATE,
        "latency_mean_diff_ms": diff,
        "latency_mean_diff_ci95_ms": [diff - Z_95 * se, diff + Z_95 * se],
        "latency_p99_diff_ms": candidate["latency_p99_ms"] - baseline["latency_p99_ms"],
        "success_rate_diff": p_c - p_b,
        "success_rate_diff_ci95": [p_c - p_b - Z_95 * se_p, p_c - p_b + Z_95 * se_p],
        "candidate_is_faster": diff + Z_95 * se < 0,
    }


def ab_results() -> dict[str, Any]:
    totals_by_arm = get_replay_store().arm_totals()
    arms = {arm: summarize(totals) for arm, totals in totals_by_arm.items() if totals["count"]}
    comparison = None
    if arms.get(BASELINE, {}).get("count", 0) > 1 and arms.get(CANDIDATE, {}).get("count", 0) > 1:
        comparison = compare(arms[BASELINE], arms[CANDIDATE])
    return {"arms": arms, "comparison": comparison}
