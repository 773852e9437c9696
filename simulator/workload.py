"""Pre-generated request streams: modulated Poisson arrivals and heavy-tailed token lengths.

A workload depends only on its config and seed, so every policy sees the same requests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class WorkloadConfig:
    """Arrival process and token-length distributions of one traffic pattern."""

    rate_rps: float = 4.0  # mean arrival rate before bursts
    day_s: float = 1800.0  # a compressed day: one diurnal cycle every 30 simulated minutes
    diurnal_amp: float = 0.25  # rate swings by +-25 % over the day
    day_phase: float = 0.0  # time of day (0-1) at t = 0
    burst_every_s: float = 300.0  # mean gap between random short bursts (0 disables them)
    burst_len_s: float = 20.0
    burst_mult: float = 1.5
    # Scheduled bursts as (start_fraction, end_fraction, multiplier) of the run's length.
    bursts: tuple[tuple[float, float, float], ...] = ()
    prompt_median: float = 400.0  # lognormal, clipped: chat prompts with a long RAG tail
    prompt_sigma: float = 1.0
    prompt_clip: tuple[int, int] = (16, 8192)
    output_median: float = 150.0
    output_sigma: float = 0.9
    output_clip: tuple[int, int] = (4, 2048)


@dataclass
class Workload:
    """Arrival times (s) and token lengths of every request, in arrival order; with a trace
    that has them, each prompt's 512-token block hashes (equal leading hashes: a shared prefix)."""

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    duration_s: float = field(default=0.0)
    prefix_hashes: list[tuple[int, ...]] | None = None

    def __len__(self) -> int:
        return int(self.arrival_s.shape[0])


def _tokens(rng: np.random.Generator, n: int, median: float, sigma: float,
            clip: tuple[int, int]) -> np.ndarray:
    raw = rng.lognormal(mean=math.log(median), sigma=sigma, size=n)
    return np.clip(np.rint(raw), clip[0], clip[1]).astype(np.int64)


def token_samples(cfg: WorkloadConfig, samples: int = 200_000) -> tuple[np.ndarray, np.ndarray]:
    """(prompt, output) tokens drawn from the clipped distributions with a fixed seed."""
    rng = np.random.default_rng(12345)
    prompt = _tokens(rng, samples, cfg.prompt_median, cfg.prompt_sigma, cfg.prompt_clip)
    output = _tokens(rng, samples, cfg.output_median, cfg.output_sigma, cfg.output_clip)
    return prompt, output


def mean_tokens(cfg: WorkloadConfig, samples: int = 200_000) -> tuple[float, float]:
    """Mean (prompt, output) tokens of the clipped distributions, by fixed-seed sampling."""
    prompt, output = token_samples(cfg, samples)
    return float(prompt.mean()), float(output.mean())


def _burst_windows(cfg: WorkloadConfig, rng: np.random.Generator,
                   horizon_s: float) -> list[tuple[float, float, float]]:
    windows = [(a * horizon_s, b * horizon_s, m) for a, b, m in cfg.bursts]
    if cfg.burst_every_s > 0:
        t = rng.exponential(cfg.burst_every_s)
        while t < horizon_s * 2:
            windows.append((t, t + cfg.burst_len_s, cfg.burst_mult))
            t += cfg.burst_len_s + rng.exponential(cfg.burst_every_s)
    return windows


def rate_at(cfg: WorkloadConfig, t: np.ndarray,
            windows: list[tuple[float, float, float]]) -> np.ndarray:
    """Instantaneous arrival rate at times ``t`` (diurnal cycle times active bursts)."""
    phase = 2.0 * math.pi * (t / cfg.day_s + cfg.day_phase)
    rate = cfg.rate_rps * (1.0 + cfg.diurnal_amp * np.sin(phase))
    for start, end, mult in windows:
        rate = np.where((t >= start) & (t < end), rate * mult, rate)
    return rate


def generate_workload(cfg: WorkloadConfig, n: int, seed: int) -> Workload:
    """Draw ``n`` requests by thinning a homogeneous Poisson process of the peak rate."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    horizon = n / cfg.rate_rps  # scheduled bursts are placed as fractions of this
    windows = _burst_windows(cfg, rng, horizon)
    peak_mult = max([m for _, _, m in windows] + [1.0])
    # Overlapping bursts multiply; bound the product so thinning stays exact.
    peak_mult = peak_mult ** max(1, _max_overlap(windows))
    lam_max = cfg.rate_rps * (1.0 + cfg.diurnal_amp) * peak_mult
    times: list[np.ndarray] = []
    count, t0 = 0, 0.0
    while count < n:
        chunk = max(1024, int((n - count) * lam_max / cfg.rate_rps * 1.2))
        cand = t0 + np.cumsum(rng.exponential(1.0 / lam_max, size=chunk))
        t0 = float(cand[-1])
        keep = rng.random(chunk) * lam_max < rate_at(cfg, cand, windows)
        times.append(cand[keep])
        count += int(keep.sum())
    arrival = np.concatenate(times)[:n]
    prompt = _tokens(rng, n, cfg.prompt_median, cfg.prompt_sigma, cfg.prompt_clip)
    output = _tokens(rng, n, cfg.output_median, cfg.output_sigma, cfg.output_clip)
    return Workload(arrival, prompt, output, duration_s=float(arrival[-1]) if n else 0.0)


def _max_overlap(windows: list[tuple[float, float, float]]) -> int:
    edges = sorted([(s, 1) for s, _, _ in windows] + [(e, -1) for _, e, _ in windows])
    depth = best = 0
    for _, step in edges:
        depth += step
        best = max(best, depth)
    return best
