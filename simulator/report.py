"""Text and Markdown tables of a benchmark: TTFT and end-to-end latency, failures, cache hits,
traffic shares, and each policy's gap to the best baseline.

"Best baseline" is, column by column, the best value over every non-learning, non-oracle
policy in the run (least-loaded, p2c, peak-EWMA, the cache-aware routers, ...).
"""

from __future__ import annotations

import math

# (metric, header): the latency columns, each compared with the best baseline's value.
LATENCY = (("ttft_mean_ms", "TTFT mean"), ("ttft_p50_ms", "p50"), ("ttft_p99_ms", "p99"),
           ("mean_ms", "E2E mean"), ("p50_ms", "p50"), ("p99_ms", "p99"))
DELTAS = (("ttft_mean_ms", "ΔTTFT"), ("ttft_p99_ms", "ΔTTFTp99"), ("mean_ms", "ΔE2E"),
          ("p99_ms", "ΔE2Ep99"))


def _value(summary: dict, key: str) -> float:
    return summary["aggregate"].get(key, {}).get("mean", float("nan"))


def best_baseline(policies: dict, key: str) -> tuple[float | None, str | None]:
    """(lowest mean over seeds, policy) of ``key`` among the baselines of one scenario."""
    best: tuple[float | None, str | None] = (None, None)
    for name, summary in policies.items():
        if summary.get("kind", "baseline") != "baseline":
            continue
        v = _value(summary, key)
        if not math.isnan(v) and (best[0] is None or v < best[0]):
            best = (v, name)
    return best


def _delta(value: float, ref: float | None) -> str:
    if ref is None or not ref or math.isnan(value):
        return "-"
    return f"{100 * (value / ref - 1):+.1f}%"


def _seconds(ms: float) -> str:
    return "-" if math.isnan(ms) else f"{ms / 1000:.2f}"


def _spread(summary: dict, key: str) -> str:
    std = summary["aggregate"].get(key, {}).get("std", float("nan"))
    return "" if math.isnan(std) or summary["aggregate"]["seeds"] < 2 else f"±{std / 1000:.2f}"


def _shift(summary: dict) -> str:
    shifts = summary.get("shift")
    if not shifts:
        return ""
    needed = [s["requests_to_shift"] for s in shifts]
    during = sum(s["share_during"] for s in shifts) / len(shifts)
    pre = sum(s["pre_share"] for s in shifts) / len(shifts)
    text = "never" if any(n is None for n in needed) else f"{sum(needed) / len(needed):.0f}"
    after = [s["share_after"] for s in shifts if s.get("share_after") is not None]
    back = f"->{sum(after) / len(after):.2f} after" if after else ""
    return f"  bad share {pre:.2f}->{during:.2f}{back}, shifted in {text} req"


def _rows(policies: dict) -> list[list[str]]:
    refs = {key: best_baseline(policies, key)[0] for key, _ in DELTAS}
    rows = []
    for name, summary in policies.items():
        agg = summary["aggregate"]
        mark = {"learner": " (learns)", "oracle": " (oracle)"}.get(summary.get("kind", ""), "")
        rows.append([
            name + mark,
            *(_seconds(_value(summary, key)) + (_spread(summary, key) if "mean" in key else "")
              for key, _ in LATENCY),
            f"{100 * _value(summary, 'failure_rate'):.2f}",
            f"{100 * _value(summary, 'cache_hit_rate'):.1f}",
            *(_delta(_value(summary, key), refs[key]) for key, _ in DELTAS),
            "/".join(f"{s:.2f}" for s in agg["routed_share"]),
        ])
    return rows


HEADER = ["policy", *(h for _, h in LATENCY), "fail %", "hit %", *(h for _, h in DELTAS),
          "routed share"]


def _best_line(policies: dict) -> str:
    parts = []
    for key, label in (("ttft_mean_ms", "TTFT mean"), ("ttft_p99_ms", "TTFT p99"),
                       ("mean_ms", "E2E mean"), ("p99_ms", "E2E p99")):
        value, name = best_baseline(policies, key)
        if name is not None:
            parts.append(f"{label} {name} {value / 1000:.2f} s")
    return "best baseline: " + ("; ".join(parts) if parts else "none in this run")


def _title(sc_name: str, block: dict) -> str:
    policies = block["policies"]
    seeds = next(iter(policies.values()))["aggregate"]["seeds"] if policies else 0
    load = block.get("load")
    cap = block.get("capacity_rps")
    extra = f", load {load:.2f} of {cap:.2f} req/s" if load is not None and cap else ""
    return f"{sc_name} ({seeds} seeds{extra})"


def format_table(results: dict) -> str:
    """One block per scenario: latencies in seconds (mean over seeds), Δ vs best baseline."""
    lines: list[str] = []
    for sc_name, block in results.items():
        policies = block["policies"]
        rows = [HEADER, *_rows(policies)]
        widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
        lines.append(f"== {_title(sc_name, block)}; latencies in s; Δ vs best baseline")
        for row, summary in zip(rows, [None, *policies.values()], strict=True):
            text = "  ".join(c.ljust(w) if i in (0, len(row) - 1) else c.rjust(w)
                             for i, (c, w) in enumerate(zip(row, widths, strict=True)))
            lines.append(text.rstrip() + (_shift(summary) if summary else ""))
        lines.append(_best_line(policies))
        lines.append("")
    return "\n".join(lines)


def format_markdown(results: dict) -> str:
    """The same numbers as Markdown (for docs/BENCHMARKS.md), one table per scenario."""
    out: list[str] = []
    for sc_name, block in results.items():
        policies = block["policies"]
        out.append(f"**{_title(sc_name, block)}**; latencies in s, mean over seeds; Δ vs best "
                   "baseline\n")
        out.append("| " + " | ".join(HEADER) + " |")
        out.append("|" + "---|" * len(HEADER))
        for row in _rows(policies):
            out.append("| " + " | ".join(row) + " |")
        out.append("\n" + _best_line(policies) + "\n")
    return "\n".join(out)
