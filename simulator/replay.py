"""A trace as a workload: its arrivals and token counts, time-scaled to a chosen request rate.

Seed 0 replays the file from its first request; another seed starts at a seed-chosen request
and wraps around, so seeds differ in which part of the trace comes first. Past the end the
trace repeats with its block hashes renumbered (a lap shares no prefix with the one before).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from simulator.trace_files import Trace, load_trace
from simulator.workload import Workload

TRACE_DIR = Path(__file__).resolve().parent / "traces"
# Names of the traces shipped in simulator/traces/ (see its README.md for source and license).
NAMED_TRACES = {
    "azure-code": "AzureLLMInferenceTrace_code.csv",
    "mooncake-synthetic": "mooncake_synthetic_trace.jsonl",
}


def trace_path(name: str) -> Path:
    """A shipped trace by name, or any file by path."""
    return TRACE_DIR / NAMED_TRACES[name] if name in NAMED_TRACES else Path(name)


@lru_cache(maxsize=8)
def cached_trace(path: str) -> Trace:
    return load_trace(path)


def period_s(trace: Trace) -> float:
    """Length of one lap: the trace's span plus one mean gap (the wrap-around gap)."""
    n, span = len(trace), float(trace.arrival_s[-1])
    gap = span / (n - 1) if n > 1 and span > 0 else 1.0
    return span + gap


def trace_rate(trace: Trace) -> float:
    """Requests/s of the trace as recorded, averaged over a lap."""
    return len(trace) / period_s(trace)


def replay(trace: Trace, n: int, seed: int, rate_rps: float) -> Workload:
    """``n`` requests of ``trace`` with arrival times scaled so the mean rate is ``rate_rps``."""
    size = len(trace)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 3]))
    offset = 0 if seed == 0 else int(rng.integers(size))
    pos = offset + np.arange(n)
    idx, lap = pos % size, pos // size
    period = period_s(trace)
    t = trace.arrival_s[idx] + lap * period
    arrival = (t - t[0]) * (trace_rate(trace) / rate_rps) if n else t
    hashes = None
    if trace.prefix_hashes is not None:
        stride = 1 + max((max(h) for h in trace.prefix_hashes if h), default=0)
        src = trace.prefix_hashes
        hashes = [src[i] if k == 0 else tuple(x + k * stride for x in src[i])
                  for i, k in zip(idx.tolist(), lap.tolist(), strict=True)]
    return Workload(arrival, trace.prompt_tokens[idx].copy(), trace.output_tokens[idx].copy(),
                    duration_s=float(arrival[-1]) if n else 0.0, prefix_hashes=hashes)
