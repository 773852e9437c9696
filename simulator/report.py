"""Text tables of a benchmark: latency, failures and the gain over the best plain heuristic."""

from __future__ import annotations

import math

REFERENCE = ("least_loaded", "p2c")  # "best of" these is the bar a smarter router must clear


def _fmt_ms(stat: dict) -> str:
    return f"{stat['mean']:8.0f} ±{stat['std']:5.0f}"


def _reference(policies: dict, key: str) -> float | None:
    vals = [policies[p]["aggregate"][key]["mean"] for p in REFERENCE if p in policies]
    return min(vals) if vals else None


def _delta(value: float, ref: float | None) -> str:
    if ref is None or not ref or math.isnan(value):
        return "    -"
    return f"{100 * (value / ref - 1):+5.1f}%"


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


def format_table(results: dict) -> str:
    """One block per scenario: a row per policy, mean ± std over seeds."""
    lines: list[str] = []
    header = (f"{'policy':<14} {'mean ms':>15} {'p50 ms':>8} {'p99 ms':>15} {'fail %':>7} "
              f"{'Δmean':>7} {'Δp99':>7}  routed share")
    for sc_name, block in results.items():
        policies = block["policies"]
        seeds = next(iter(policies.values()))["aggregate"]["seeds"] if policies else 0
        lines.append(f"== {sc_name} ({seeds} seeds; Δ vs best of least_loaded/p2c)")
        lines.append(header)
        ref_mean = _reference(policies, "mean_ms")
        ref_p99 = _reference(policies, "p99_ms")
        for name, summary in policies.items():
            agg = summary["aggregate"]
            share = "/".join(f"{s:.2f}" for s in agg["routed_share"])
            lines.append(
                f"{name:<14} {_fmt_ms(agg['mean_ms'])} {agg['p50_ms']['mean']:8.0f} "
                f"{_fmt_ms(agg['p99_ms'])} {100 * agg['failure_rate']['mean']:7.2f} "
                f"{_delta(agg['mean_ms']['mean'], ref_mean):>7} "
                f"{_delta(agg['p99_ms']['mean'], ref_p99):>7}  {share}{_shift(summary)}"
            )
        lines.append("")
    return "\n".join(lines)


def format_markdown(results: dict) -> str:
    """The same numbers as a Markdown table (for docs/BENCHMARKS.md)."""
    rows = ["| scenario | policy | mean ms (± std) | p50 ms | p99 ms (± std) | failed % "
            "| Δmean | Δp99 |", "|---|---|---|---|---|---|---|---|"]
    for sc_name, block in results.items():
        policies = block["policies"]
        ref_mean = _reference(policies, "mean_ms")
        ref_p99 = _reference(policies, "p99_ms")
        for name, summary in policies.items():
            agg = summary["aggregate"]
            rows.append(
                f"| {sc_name} | {name} | {agg['mean_ms']['mean']:.0f} ± "
                f"{agg['mean_ms']['std']:.0f} | {agg['p50_ms']['mean']:.0f} | "
                f"{agg['p99_ms']['mean']:.0f} ± {agg['p99_ms']['std']:.0f} | "
                f"{100 * agg['failure_rate']['mean']:.2f} | "
                f"{_delta(agg['mean_ms']['mean'], ref_mean).strip()} | "
                f"{_delta(agg['p99_ms']['mean'], ref_p99).strip()} |"
            )
    return "\n".join(rows)
