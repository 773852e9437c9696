"""State encoding for N replicas in the specification's order, with one table of scales (StateScales).
A report without next_state gets `next_state_after`: the state with the reported loads."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# Raw state order (docs/design.md, decision 6): N replica loads, then these, as the specification lists them.
EXTRA_FEATURES = ("queue_depth", "latency_s", "rps", "success_rate", "memory", "cpu", "time_of_day")


@dataclass(frozen=True)
class StateScales:
    """How each raw feature is mapped to the roughly [0, 1] range the network sees.

    | feature        | raw (spec. example)   | normalised                               |
    | -------------- | --------------------- | ---------------------------------------- |
    | replica load   | 0-100 (5)             | load / load_scale (0.05)                 |
    | queue depth    | 0-100 (12)            | queue / queue_scale (0.12)               |
    | latency        | seconds (0.28)        | latency / latency_scale_s (0.28)         |
    | rps            | req/s (8.2)           | log1p(rps) / log1p(rps_scale) (0.31)     |
    | success rate   | 0-1 (0.98)            | as is                                    |
    | memory, CPU    | 0-1 (0.5, 0.4)        | as is                                    |
    | time of day    | hour/24 (0.5)         | as is                                    |

    RPS spans orders of magnitude between deployments, so it is log-compressed: 1000 req/s
    maps to 1.0 and 8 req/s is still distinguishable from 0. Every normalised value is then
    clipped to [-clip, clip] so one absurd reading cannot saturate the network.
    """

    load_scale: float = 100.0
    queue_scale: float = 100.0
    latency_scale_s: float = 1.0
    rps_scale: float = 1000.0
    rps_log: bool = True
    clip: float | None = 10.0

    def __post_init__(self) -> None:
        for name in ("load_scale", "queue_scale", "latency_scale_s", "rps_scale"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if self.clip is not None and (not math.isfinite(self.clip) or self.clip <= 0):
            raise ValueError(f"clip must be a finite number > 0 or None, got {self.clip!r}")


DEFAULT_SCALES = StateScales()


def state_dim(num_replicas: int) -> int:
    """Length of the state vector for `num_replicas` replicas (N + 7): the one definition of it."""
    return num_replicas + len(EXTRA_FEATURES)


def feature_names(num_replicas: int) -> list[str]:
    """Name of every position in the state vector, in order."""
    return [f"load_{i}" for i in range(num_replicas)] + list(EXTRA_FEATURES)


@lru_cache(maxsize=64)
def _multipliers(num_replicas: int, scales: StateScales) -> np.ndarray:
    # One multiply per feature; computed once per (N, scales) pair.
    rps = 1.0 / (math.log1p(scales.rps_scale) if scales.rps_log else scales.rps_scale)
    per_extra = [1.0 / scales.queue_scale, 1.0 / scales.latency_scale_s, rps, 1.0, 1.0, 1.0, 1.0]
    values = [1.0 / scales.load_scale] * num_replicas + per_extra
    array = np.asarray(values, dtype=np.float32)
    array.flags.writeable = False
    return array


def normalize_state(
    raw: np.ndarray | Sequence[float],
    num_replicas: int,
    scales: StateScales = DEFAULT_SCALES,
) -> np.ndarray:
    """Raw state(s) -> float32 network input; shape (N+7,) or a batch (B, N+7)."""
    x = np.array(raw, dtype=np.float32)  # always a fresh array: the caller's input is untouched
    expected = state_dim(num_replicas)
    if x.ndim not in (1, 2) or x.shape[-1] != expected:
        raise ValueError(
            f"state must have {expected} values ({num_replicas} replicas + {len(EXTRA_FEATURES)}), "
            f"got shape {x.shape}"
        )
    if scales.rps_log:
        rps = x[..., num_replicas + 2]
        np.log1p(rps, out=rps)
    x *= _multipliers(num_replicas, scales)
    if scales.clip is not None:
        np.clip(x, -scales.clip, scales.clip, out=x)
    return x


@lru_cache(maxsize=64)
def _multiplier_list(num_replicas: int, scales: StateScales) -> tuple[float, ...]:
    return tuple(_multipliers(num_replicas, scales).tolist())


def normalize_one(
    raw: Sequence[float], num_replicas: int, scales: StateScales = DEFAULT_SCALES
) -> list[float]:
    """normalize_state for one state in plain Python (a third of its cost for one vector: the
    /select_replica hot path); equal to it within float32 rounding."""
    multipliers = _multiplier_list(num_replicas, scales)
    if len(raw) != len(multipliers):
        raise ValueError(f"state must have {len(multipliers)} values ({num_replicas} replicas + "
                         f"{len(EXTRA_FEATURES)}), got {len(raw)}")
    x = [value * scale for value, scale in zip(raw, multipliers, strict=True)]
    if scales.rps_log:
        rps = raw[num_replicas + 2]
        logged = math.log1p(rps) if rps > -1.0 else (-math.inf if rps == -1.0 else math.nan)  # as NumPy
        x[num_replicas + 2] = logged * multipliers[num_replicas + 2]
    if scales.clip is None:
        return x
    high, low = scales.clip, -scales.clip
    return [high if value > high else low if value < low else value for value in x]


def time_of_day_now(now: dt.datetime | None = None) -> float:
    """Fraction of the day elapsed, hour/24 with minutes as the fraction of an hour."""
    now = now or dt.datetime.now()
    return (now.hour + now.minute / 60.0 + now.second / 3600.0) / 24.0


def build_state(
    replica_loads: Sequence[float],
    queue_depth: float,
    recent_latency_ms: float,
    current_rps: float,
    success_rate: float,
    memory: float = 0.0,
    cpu: float = 0.0,
    time_of_day: float | None = None,
) -> list[float]:
    """The original specification's raw state vector from API fields.

    Latency arrives in milliseconds and is stored in seconds (the specification's example: 280.5 ms -> 0.28).
    Memory and CPU default to 0 when the gateway does not report them (a constant carries no
    information, so it is harmless); time of day defaults to the local clock.
    """
    if len(replica_loads) == 0:
        raise ValueError("replica_loads must not be empty")
    if time_of_day is None:
        time_of_day = time_of_day_now()
    return [
        *(float(load) for load in replica_loads),
        float(queue_depth),
        float(recent_latency_ms) / 1000.0,
        float(current_rps),
        float(success_rate),
        float(memory),
        float(cpu),
        float(time_of_day),
    ]


def next_state_after(state: Sequence[float], replica_loads_after: Sequence[float]) -> list[float]:
    """`state` with its N loads replaced by the loads reported after the request.

    This is what next_state is when a client reports an outcome without one: one request
    barely moves queue, latency, rps or resources, so every other feature is carried over.
    """
    num_replicas = len(state) - len(EXTRA_FEATURES)
    if num_replicas < 1:
        raise ValueError(
            f"state has {len(state)} values; it needs at least {state_dim(1)} (N >= 1 replicas)"
        )
    if len(replica_loads_after) != num_replicas:
        raise ValueError(
            f"replica_loads has {len(replica_loads_after)} values but the state describes "
            f"{num_replicas} replicas"
        )
    return [float(load) for load in replica_loads_after] + [
        float(value) for value in state[num_replicas:]
    ]
