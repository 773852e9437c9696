"""Line charts as inline SVG, drawn in Python: the dashboard loads nothing from any CDN."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT = 520, 200
LEFT, RIGHT, TOP, BOTTOM = 58, 12, 10, 24
# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")


@dataclass(frozen=True)
class Chart:
    title: str
    svg: SafeString
    legend: list[tuple[str, str, str]] = field(default_factory=list)  # (name, colour, latest value)
    empty: bool = False


def number(value: float | None, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 10 ** -digits):
        return f"{value:.2e}"
    text = f"{value:.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def percent(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value * 100:.1f}%"


def line_chart(
    title: str,
    times: Sequence[datetime],
    series: dict[str, Sequence[float | None]],
    *,
    fmt: Callable[[float | None], str] = number,
    y_range: tuple[float, float] | None = None,
) -> Chart:
    """One chart; None values leave a gap. `y_range` fixes the axis (0-1 for rates)."""
    values = [v for vs in series.values() for v in vs if v is not None and math.isfinite(v)]
    if not times or not values:
        svg = (f'<svg class="chart empty" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
               f'aria-label="{escape(title)}: no data yet"><title>{escape(title)}: no data yet</title>'
               f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" class="note">'
               "no data yet: a point is added after each training run</text></svg>")
        return Chart(title, mark_safe(svg), empty=True)
    low, high = y_range or _padded(min(values), max(values))
    t0, t1 = times[0].timestamp(), times[-1].timestamp()
    span = (t1 - t0) or 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(t: datetime) -> float:
        return LEFT + (t.timestamp() - t0) / span * plot_w if t1 > t0 else LEFT + plot_w / 2

    def y(v: float) -> float:
        return TOP + (1 - (min(max(v, low), high) - low) / (high - low)) * plot_h

    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    for fraction in (0.0, 0.5, 1.0):
        value = low + fraction * (high - low)
        gy = y(value)
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{gy:.1f}" y2="{gy:.1f}"/>')
        parts.append(f'<text class="axis" x="{LEFT - 6}" y="{gy + 4:.1f}" text-anchor="end">'
                     f"{escape(fmt(value))}</text>")
    for t, anchor in ((times[0], "start"), (times[-1], "end")):
        label = timezone.localtime(t).strftime("%H:%M:%S")
        tx = LEFT if anchor == "start" else WIDTH - RIGHT
        parts.append(f'<text class="axis" x="{tx}" y="{HEIGHT - 6}" text-anchor="{anchor}">{label}</text>')
    legend = []
    for i, (name, vs) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        for run in _runs(times, vs):
            if len(run) == 1:
                t, v = run[0]
                parts.append(f'<circle class="series" cx="{x(t):.1f}" cy="{y(v):.1f}" r="3" '
                             f'fill="{colour}"><title>{escape(name)}</title></circle>')
            else:
                points = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in run)
                parts.append(f'<polyline class="series" fill="none" stroke="{colour}" stroke-width="2" '
                             f'points="{points}"><title>{escape(name)}</title></polyline>')
        latest = next((v for v in reversed(vs) if v is not None and math.isfinite(v)), None)
        legend.append((name, colour, fmt(latest)))
    parts.append("</svg>")
    return Chart(title, mark_safe("".join(parts)), legend)


def _padded(low: float, high: float) -> tuple[float, float]:
    if high - low < 1e-12:
        pad = abs(high) * 0.1 or 1.0
        return low - pad, high + pad
    pad = (high - low) * 0.05
    return low - pad, high + pad


def _runs(times: Sequence[datetime], values: Sequence[float | None]) -> list[list[tuple[datetime, float]]]:
    """Consecutive defined points: a missing value breaks the line instead of bridging it."""
    runs: list[list[tuple[datetime, float]]] = [[]]
    for t, v in zip(times, values, strict=False):
        if v is None or not math.isfinite(v):
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append((t, v))
    return [run for run in runs if run]
