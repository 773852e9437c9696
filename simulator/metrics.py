"""Latency (time to first token, end to end), failure, cache and traffic-share metrics of a
run, and their spread over seeds.

Latency percentiles are over successful requests; failures are counted separately
(a fast error must not look like a fast answer). ``mean_ms``/``p50_ms``/... are end to end.
"""

from __future__ import annotations

import numpy as np

from simulator.engine import ERRORED, REJECTED, Records

SCALARS = ("mean_ms", "p50_ms", "p90_ms", "p99_ms", "ttft_mean_ms", "ttft_p50_ms",
           "ttft_p90_ms", "ttft_p99_ms", "tpot_mean_ms", "cache_hit_rate", "failure_rate",
           "rejected_rate", "errored_rate", "throughput_rps")


def run_metrics(records: Records, num_replicas: int) -> dict:
    """Summary of one run: latency percentiles, failure rates, share per replica."""
    ok = records.success
    lat = records.latency_ms[ok]
    n = len(records.outcome)
    routed = np.bincount(records.replica.astype(np.int64), minlength=num_replicas)
    served = np.bincount(records.replica[ok].astype(np.int64), minlength=num_replicas)
    span = float(np.nanmax(records.finish_s) - records.arrival_s[0]) if n else 0.0
    pct = np.percentile(lat, [50, 90, 99]) if lat.size else np.full(3, np.nan)
    return {
        "requests": n,
        "mean_ms": float(lat.mean()) if lat.size else float("nan"),
        "p50_ms": float(pct[0]),
        "p90_ms": float(pct[1]),
        "p99_ms": float(pct[2]),
        "failure_rate": float(1.0 - ok.mean()) if n else 0.0,
        "rejected_rate": float((records.outcome == REJECTED).mean()) if n else 0.0,
        "errored_rate": float((records.outcome == ERRORED).mean()) if n else 0.0,
        "throughput_rps": float(ok.sum() / span) if span > 0 else 0.0,
        **token_metrics(records),
        "routed_share": (routed / max(n, 1)).round(4).tolist(),
        "served_share": (served / max(int(ok.sum()), 1)).round(4).tolist(),
    }


def token_metrics(records: Records) -> dict:
    """TTFT percentiles and mean time per output token over successes, and the cache hit rate:
    the share of successful requests' prompt blocks served from a replica's prefix cache."""
    nan = float("nan")
    out = {"ttft_mean_ms": nan, "ttft_p50_ms": nan, "ttft_p90_ms": nan, "ttft_p99_ms": nan,
           "tpot_mean_ms": nan, "cache_hit_rate": 0.0}
    if records.ttft_ms is None:
        return out
    ok = records.success
    ttft = records.ttft_ms[ok]
    if ttft.size:
        pct = np.percentile(ttft, [50, 90, 99])
        out.update(ttft_mean_ms=float(ttft.mean()), ttft_p50_ms=float(pct[0]),
                   ttft_p90_ms=float(pct[1]), ttft_p99_ms=float(pct[2]))
    # TPOT as vLLM defines it: (E2E - TTFT) / (output tokens - 1), for outputs of 2+ tokens.
    decoded = ok & (records.output_tokens > 1)
    if decoded.any():
        tpot = ((records.latency_ms[decoded] - records.ttft_ms[decoded])
                / (records.output_tokens[decoded] - 1))
        out["tpot_mean_ms"] = float(tpot.mean())
    blocks = int(records.prompt_blocks[ok].sum())
    if blocks:
        out["cache_hit_rate"] = float(records.hit_blocks[ok].sum() / blocks)
    return out


def aggregate(per_seed: list[dict]) -> dict:
    """Mean, std, min and max of every scalar metric over seeds; mean traffic shares."""
    out: dict = {"seeds": len(per_seed)}
    for key in SCALARS:
        vals = np.array([m[key] for m in per_seed], dtype=float)
        out[key] = {
            "mean": float(vals.mean()),
            "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
            "min": float(vals.min()),
            "max": float(vals.max()),
        }
    for key in ("routed_share", "served_share"):
        out[key] = np.mean([m[key] for m in per_seed], axis=0).round(4).tolist()
    return out


def shift_metrics(records: Records, event_s: float, bad_replica: int,
                  end_s: float | None = None, window: int = 50) -> dict:
    """How fast a policy moves traffic off ``bad_replica`` once it goes bad at ``event_s``.

    ``requests_to_shift``: routing decisions after the event until the share sent to the
    bad replica, over the last ``window`` decisions, first falls to half its share over the
    ``window`` * 10 decisions before the event (None if it never does); an upper bound
    within ``window``. ``share_after`` is the share once the replica is healthy again.
    """
    arrival = records.arrival_s
    start = int(np.searchsorted(arrival, event_s))
    stop = len(arrival) if end_s is None else int(np.searchsorted(arrival, end_s))
    to_bad = (records.replica == bad_replica).astype(np.float64)
    before = to_bad[max(0, start - 10 * window):start]
    pre_share = float(before.mean()) if before.size else float("nan")
    during, after = to_bad[start:stop], to_bad[stop:]
    result = {
        "event_s": event_s,
        "pre_share": pre_share,
        "share_during": float(during.mean()) if during.size else float("nan"),
        "share_after": float(after.mean()) if after.size else None,
        "failures_during": int((~records.success[start:stop]).sum()),
        "requests_to_shift": None,
    }
    if during.size >= window and pre_share > 0:
        rolling = np.convolve(during, np.ones(window) / window, mode="valid")
        hits = np.nonzero(rolling <= 0.5 * pre_share)[0]
        if hits.size:
            result["requests_to_shift"] = int(hits[0] + window)
    return result


def relative(value: float, reference: float) -> float:
    """``value / reference - 1`` (negative is better for latencies and failure rates)."""
    return value / reference - 1.0 if reference else float("nan")
