"""The original specification's routing reward, 1 - latency_ms/1000 - 0.1 * var(loads) or -10 on failure, with
its weights and scales as configuration (RewardConfig)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


LATENCY_MODES = ("linear", "log", "per_token")


@dataclass(frozen=True)
class RewardConfig:
    """Reward weights and scales.

    load_scale defaults to 100 (variance of loads in [0, 1]), not the specification's raw loads (1.0):
    the raw variance grows with the square of the loads, so at loads [50, 40, 70] the balance
    term is -15.5, larger than the whole latency range and than a failure (-10), and the agent
    would learn to balance rather than to be fast (docs/design.md, decision 7). On the 0-1 scale the
    term is bounded by balance_weight * 0.25 and acts as a tie-breaker between replicas of
    equal latency; imbalance that actually hurts already shows up as latency.

    clip_min defaults to failure_penalty so a very slow success (latency > 11 s with the specification's
    scale) never scores worse than a failure; clip_max 1.0 is the best reward possible anyway.
    `RewardConfig.seed()` is the original specification's exact formula (raw loads, no clipping).
    """

    latency_scale_ms: float = 1000.0
    balance_weight: float = 0.1
    load_scale: float = 100.0
    failure_penalty: float = -10.0
    clip_min: float | None = -10.0
    clip_max: float | None = 1.0
    # How latency enters the reward. "linear": the specification's 1 - latency/latency_scale_ms,
    # which reaches the -10 floor at 11 s. "log": 1 - log(1 + latency/latency_scale_ms): a minute
    # scores -3.1, an hour -7.2, so generations of any length keep a gradient and stay above a
    # failure. "per_token": the same log of latency per output token / token_latency_scale_ms,
    # which takes out the output length (the router's choice does not set it).
    latency_mode: str = "linear"
    token_latency_scale_ms: float = 50.0
    # Time to first token, when a report has it: minus ttft_weight * log(1 + ttft/ttft_scale_ms).
    # The prefill a cached prefix saves shows here far more than in the end-to-end latency; on the
    # Mooncake trace (weight 1, scale 1 s) it lowered the DQN's mean TTFT by 40 % (simulator/README.md).
    ttft_weight: float = 0.0
    ttft_scale_ms: float = 1000.0

    def __post_init__(self) -> None:
        if self.latency_mode not in LATENCY_MODES:
            raise ValueError(f"latency_mode must be one of {LATENCY_MODES}, got {self.latency_mode!r}")
        if not _finite(self.ttft_weight) or self.ttft_weight < 0:
            raise ValueError(f"ttft_weight must be a finite number >= 0, got {self.ttft_weight!r}")
        if not _finite(self.ttft_scale_ms) or self.ttft_scale_ms <= 0:
            raise ValueError(f"ttft_scale_ms must be a finite number > 0, got {self.ttft_scale_ms!r}")
        if not _finite(self.token_latency_scale_ms) or self.token_latency_scale_ms <= 0:
            raise ValueError(f"token_latency_scale_ms must be a finite number > 0, got "
                             f"{self.token_latency_scale_ms!r}")
        for name in ("latency_scale_ms", "load_scale"):
            value = getattr(self, name)
            if not _finite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        for name in ("balance_weight", "failure_penalty"):
            if not _finite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)!r}")
        for name in ("clip_min", "clip_max"):
            value = getattr(self, name)
            if value is not None and not _finite(value):
                raise ValueError(f"{name} must be a finite number or None, got {value!r}")
        low, high = self.clip_min, self.clip_max
        if low is not None and high is not None and low > high:
            raise ValueError(f"clip_min ({low}) must not exceed clip_max ({high})")

    @classmethod
    def seed(cls) -> RewardConfig:
        """The original specification's formula exactly: variance of raw loads, no clipping."""
        return cls(load_scale=1.0, clip_min=None, clip_max=None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RewardConfig:
        return cls(**data)


DEFAULT_REWARD = RewardConfig()


def compute_reward(
    latency_ms: float,
    success: bool,
    replica_loads: Sequence[float],
    config: RewardConfig = DEFAULT_REWARD,
    output_tokens: int | None = None,
    ttft_ms: float | None = None,
) -> float:
    """Reward of one routed request; `replica_loads` are the loads reported after it.
    `output_tokens` is used by latency_mode "per_token" (without it, that mode scores as "log"),
    `ttft_ms` by a ttft_weight above 0 (without it, no TTFT term)."""
    if not success:
        reward = config.failure_penalty
    else:
        loads = np.asarray(replica_loads, dtype=np.float64) / config.load_scale
        if loads.size == 0:
            raise ValueError("replica_loads must not be empty")
        # Population variance (ddof=0), as numpy's var and the specification compute it.
        balance = float(loads.var())
        cost = float(_latency_cost(np.float64(latency_ms), output_tokens, config))
        if config.ttft_weight and ttft_ms is not None and math.isfinite(ttft_ms):
            cost += config.ttft_weight * math.log1p(max(ttft_ms, 0.0) / config.ttft_scale_ms)
        reward = 1.0 - cost - config.balance_weight * balance
    return _clip(reward, config)


def compute_rewards(
    latency_ms: np.ndarray | Sequence[float],
    success: np.ndarray | Sequence[bool],
    replica_loads: np.ndarray | Sequence[Sequence[float]],
    config: RewardConfig = DEFAULT_REWARD,
    output_tokens: np.ndarray | Sequence[int] | None = None,
    ttft_ms: np.ndarray | Sequence[float | None] | None = None,
) -> np.ndarray:
    """Vectorised `compute_reward` for B requests: latency (B,), success (B,), loads (B, N); ttft_ms
    (B,) with None or NaN where a report has none."""
    latency = np.asarray(latency_ms, dtype=np.float64)
    ok = np.asarray(success, dtype=bool)
    loads = np.asarray(replica_loads, dtype=np.float64) / config.load_scale
    if loads.ndim != 2 or latency.shape != (loads.shape[0],) or ok.shape != latency.shape:
        raise ValueError(
            f"expected latency (B,), success (B,), loads (B, N); got {latency.shape}, "
            f"{ok.shape}, {loads.shape}"
        )
    cost = _latency_cost(latency, output_tokens, config)
    if config.ttft_weight and ttft_ms is not None:
        ttft = np.array([np.nan if t is None else t for t in ttft_ms], dtype=np.float64)
        cost = cost + np.where(np.isfinite(ttft), config.ttft_weight
                               * np.log1p(np.maximum(np.nan_to_num(ttft), 0.0) / config.ttft_scale_ms), 0.0)
    rewards = 1.0 - cost - config.balance_weight * loads.var(axis=1)
    rewards = np.where(ok, rewards, config.failure_penalty)
    if config.clip_min is not None or config.clip_max is not None:
        rewards = np.clip(rewards, config.clip_min, config.clip_max)
    return rewards.astype(np.float32)


def _latency_cost(latency_ms: np.ndarray, output_tokens: object, config: RewardConfig) -> np.ndarray:
    if config.latency_mode == "linear":
        return latency_ms / config.latency_scale_ms
    if config.latency_mode == "per_token" and output_tokens is not None:
        tokens = np.maximum(np.asarray(output_tokens, dtype=np.float64), 1.0)
        return np.log1p(np.maximum(latency_ms, 0.0) / tokens / config.token_latency_scale_ms)
    return np.log1p(np.maximum(latency_ms, 0.0) / config.latency_scale_ms)


def _clip(reward: float, config: RewardConfig) -> float:
    if config.clip_min is not None and reward < config.clip_min:
        return config.clip_min
    if config.clip_max is not None and reward > config.clip_max:
        return config.clip_max
    return reward
