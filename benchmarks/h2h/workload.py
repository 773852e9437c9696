"""The head-to-head's pure parts: the fake cluster's capacity from its timing model, trace slices
rescaled to a share of it, prompt texts of a given token count, and the per-router summaries."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from simulator.replay import replay
from simulator.trace_files import Trace


@dataclass(frozen=True)
class ClusterModel:
    """The fake replicas' timing (examples/fake_replica/engine.py), slowed so a 2-core machine
    streams every token: 20 ms per decoded token and 0.2 ms per prompt token at speed 1."""

    speeds: tuple[float, ...] = (1.0, 0.5, 0.25)
    max_batch: int = 4
    overhead_ms: float = 5.0
    prefill_ms_per_token: float = 0.2
    decode_ms_per_token: float = 20.0
    contention: float = 0.25

    def batch_factor(self) -> float:
        return 1 + self.contention * (self.max_batch - 1)

    def service_ms(self, prompt_tokens: np.ndarray, output_tokens: np.ndarray) -> np.ndarray:
        """Each request's time at speed 1 in a full batch (no cached prefix)."""
        per_request = (self.overhead_ms + prompt_tokens * self.prefill_ms_per_token
                       + np.maximum(output_tokens - 1, 0) * self.decode_ms_per_token)
        return per_request * self.batch_factor()

    def capacity_rps(self, prompt_tokens: np.ndarray, output_tokens: np.ndarray) -> float:
        """Requests/s the cluster finishes with every batch full: each replica runs `max_batch`
        requests at once, each taking the mean service time divided by its speed."""
        mean_s = float(np.mean(self.service_ms(prompt_tokens, output_tokens))) / 1000
        return sum(self.max_batch * speed for speed in self.speeds) / mean_s


MAX_GAP_MEANS = 10.0  # an arrival gap longer than this many median gaps is shortened to it


@dataclass(frozen=True)
class Request:
    index: int  # position in the trace slice (the same request for every router)
    at_s: float  # arrival, seconds from the slice's start
    prompt_tokens: int
    output_tokens: int


def clip_outputs(trace: Trace, max_output: int) -> tuple[np.ndarray, np.ndarray]:
    """The trace's prompt and output sizes, outputs at least 1 and at most `max_output`."""
    return trace.prompt_tokens, np.clip(trace.output_tokens, 1, max_output)


def slices(trace: Trace, rate_rps: float, warmup: int, per_run: int, seeds: int, max_output: int
           ) -> tuple[list[Request], list[list[Request]]]:
    """Consecutive slices from the trace's start: the warm-up first, then one slice per seed, each
    rebased to start at 0, its idle gaps shortened to MAX_GAP_MEANS median gaps, and time-scaled so
    its own mean rate is `rate_rps` (bursts keep their shape; no slice runs far off the target)."""
    work = replay(trace, warmup + per_run * seeds, seed=0, rate_rps=rate_rps)
    outputs = np.clip(work.output_tokens, 1, max_output)

    def cut(start: int, stop: int) -> list[Request]:
        if stop <= start:
            return []
        gaps = np.diff(work.arrival_s[start:stop])
        if len(gaps):  # the trace's idle periods (up to minutes) would pack the rest into a burst
            gaps = np.minimum(gaps, MAX_GAP_MEANS * float(np.median(gaps)))
        at = np.concatenate([[0.0], np.cumsum(gaps)])
        n, span = stop - start, float(at[-1])
        # The slice's span plus one mean gap lasts n / rate_rps seconds.
        scale = (n / rate_rps) / (span * n / (n - 1)) if n > 1 and span > 0 else 1.0
        return [Request(i - start, float(at[i - start]) * scale, int(work.prompt_tokens[i]), int(outputs[i]))
                for i in range(start, stop)]

    measured = [cut(warmup + k * per_run, warmup + (k + 1) * per_run) for k in range(seeds)]
    return cut(0, warmup), measured


def prompt_text(request_id: str, prompt_tokens: int) -> str:
    """A prompt the fake replica counts as about `prompt_tokens` (4 tokens per 3 words); its first
    word is unique, so no two requests share a cached prefix (the Azure trace has no prefix data)."""
    words = max(1, round(prompt_tokens * 3 / 4))
    return " ".join([request_id] + ["tok"] * (words - 1))


@dataclass(frozen=True)
class Outcome:
    index: int
    replica: str  # who served it ("" when nobody did)
    ok: bool
    latency_s: float
    ttft_s: float | None
    error: str = ""


def _pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def summarize(outcomes: Sequence[Outcome], replicas: Sequence[str]) -> dict[str, float]:
    """Mean, p50 and p99 of end-to-end latency and TTFT (ms) over the successes, the failures, and
    each replica's share of the successes."""
    done = [o for o in outcomes if o.ok]
    latency = [o.latency_s * 1000 for o in done]
    ttft = [o.ttft_s * 1000 for o in done if o.ttft_s is not None]
    served = Counter(o.replica for o in done)
    row = {
        "requests": float(len(outcomes)), "failures": float(len(outcomes) - len(done)),
        "mean_ms": float(np.mean(latency)) if latency else float("nan"),
        "p50_ms": _pct(latency, 50), "p99_ms": _pct(latency, 99),
        "ttft_mean_ms": float(np.mean(ttft)) if ttft else float("nan"),
        "ttft_p50_ms": _pct(ttft, 50), "ttft_p99_ms": _pct(ttft, 99),
    }
    for name in replicas:
        row[f"share_{name}"] = served[name] / len(done) if done else 0.0
    return row


RATIO_KEYS = ("mean_ms", "p50_ms", "p99_ms", "ttft_mean_ms", "ttft_p99_ms")


def ratios_to_best(run: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per router, each latency figure divided by the best (lowest) router's in the same run:
    1.0 is the best, 1.3 is 30 % slower."""
    out: dict[str, dict[str, float]] = {}
    for key in RATIO_KEYS:
        values = [row[key] for row in run.values() if np.isfinite(row[key])]
        best = min(values) if values else float("nan")
        for name, row in run.items():
            out.setdefault(name, {})[key] = row[key] / best if values and best > 0 else float("nan")
    return out


def median_and_spread(values: Sequence[float]) -> tuple[float, float, float]:
    """(median, min, max) over the seeds, ignoring runs without a figure."""
    finite = [v for v in values if np.isfinite(v)]
    if not finite:
        return float("nan"), float("nan"), float("nan")
    return float(np.median(finite)), float(min(finite)), float(max(finite))
