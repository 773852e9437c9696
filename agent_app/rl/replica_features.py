"""Per-replica observations for the set-based Q-network: each replica's features (value plus a
presence flag for optional signals), the cluster/request context, and the flat padded layout."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from agent_app.rl.state import EXTRA_FEATURES

# Optional per-replica signals, each encoded as (value, present). Scales map typical values to ~[0, 1].
OPTIONAL_REPLICA = ("running", "waiting", "kv_cache_usage", "tpot_ms", "ttft_ms_per_ktok", "failure_rate",
                    "latency_ms", "prefix_match")
_REPLICA_SCALES = {"running": 100.0, "waiting": 100.0, "kv_cache_usage": 1.0, "tpot_ms": 100.0,
                   "ttft_ms_per_ktok": 1000.0, "failure_rate": 1.0, "latency_ms": 10_000.0,
                   "prefix_match": 1.0}
# What the service learns per replica from recorded outcomes (the rest a gateway reports).
LEARNED_REPLICA = ("tpot_ms", "ttft_ms_per_ktok", "failure_rate", "latency_ms")
REPLICA_DIM = 1 + 2 * len(OPTIONAL_REPLICA)  # load, then (value, flag) per optional signal
# The specification's seven cluster features, then the request's (value, flag) pairs.
CONTEXT_DIM = len(EXTRA_FEATURES) + 4
_LOAD_SCALE = 100.0
# encode_rows scales the raw values a row per signal (the load, then OPTIONAL_REPLICA's), a column
# per replica; the learned signals are one run of those rows.
_INVERSE_SCALES = 1.0 / np.array([[_LOAD_SCALE], *([_REPLICA_SCALES[name]] for name in OPTIONAL_REPLICA)])
_FIRST_LEARNED = 1 + OPTIONAL_REPLICA.index(LEARNED_REPLICA[0])
_LEARNED_SIGNALS = slice(_FIRST_LEARNED, _FIRST_LEARNED + len(LEARNED_REPLICA))
assert OPTIONAL_REPLICA[_FIRST_LEARNED - 1:_LEARNED_SIGNALS.stop - 1] == LEARNED_REPLICA
_TOKENS_LOG_SCALE = math.log1p(8192.0)
_CLIP = 10.0


@dataclass(frozen=True)
class ReplicaFeatures:
    """What is known of one replica; None marks a signal its caller did not report."""

    load: float
    running: float | None = None
    waiting: float | None = None
    kv_cache_usage: float | None = None
    tpot_ms: float | None = None  # learned: recent time per output token after the first
    ttft_ms_per_ktok: float | None = None  # learned: recent time to first token per 1000 prompt tokens
    failure_rate: float | None = None  # learned: recent share of failed requests
    latency_ms: float | None = None  # learned: recent end-to-end latency of its successful requests
    prefix_match: float | None = None  # share of the request's prefix blocks it likely holds (0-1)

    def encode(self) -> list[float]:
        row = [_clip(self.load / _LOAD_SCALE)]
        for name in OPTIONAL_REPLICA:
            value = getattr(self, name)
            ok = value is not None and math.isfinite(value)
            row += [_clip(value / _REPLICA_SCALES[name]) if ok else 0.0, 1.0 if ok else 0.0]
        return row


def encode_rows(loads: Sequence[float], signals: dict[str, Sequence[float | None]],
                names: Sequence[str] = (), learned: Mapping[str, Mapping[str, float]] | None = None
                ) -> np.ndarray:
    """`ReplicaFeatures.encode` for a whole cluster at once, (n, REPLICA_DIM) float32: the loads, then
    each optional signal's values by replica (None where unknown); a signal not in `signals` is
    unknown for every replica. `learned`, when given, holds the LEARNED_REPLICA statistics by replica
    name and supplies those signals for `names` (see `learned_columns`). Vectorised for the
    service's hot path: a few whole-array steps whatever the cluster's size."""
    raw = np.full((1 + len(OPTIONAL_REPLICA), len(loads)), math.nan)  # a row per signal, NaN: unknown
    raw[0] = loads
    for row, name in enumerate(OPTIONAL_REPLICA, start=1):
        values = signals.get(name)
        if values is not None:
            raw[row] = values  # None becomes NaN
    if learned:
        if len(names) != len(loads):
            raise ValueError(f"{len(names)} names for {len(loads)} loads")
        learned_columns(learned).of(names, out=raw[_LEARNED_SIGNALS])
    known = np.isfinite(raw)
    scaled = np.where(known, raw, 0.0)
    scaled *= _INVERSE_SCALES
    np.maximum(scaled, -_CLIP, out=scaled)
    np.minimum(scaled, _CLIP, out=scaled)
    rows = np.empty((len(loads), REPLICA_DIM), dtype=np.float32)
    rows[:, 0] = scaled[0]
    rows[:, 1::2] = scaled[1:].T
    rows[:, 2::2] = known[1:].T
    return rows


class LearnedColumns:
    """The LEARNED_REPLICA statistics of every replica name in one statistics mapping, as one array
    (a row per statistic, NaN where nothing was learned), so a decision indexes it once instead of
    looking up each statistic of each replica."""

    def __init__(self, learned: Mapping[str, Mapping[str, float]]) -> None:
        self._index = {name: i for i, name in enumerate(learned)}
        # The last column stands for any name the mapping does not know.
        self._table = np.full((len(LEARNED_REPLICA), len(learned) + 1), math.nan)
        for i, stats in enumerate(learned.values()):
            self._table[:, i] = [stats.get(key) for key in LEARNED_REPLICA]

    def of(self, names: Sequence[str], out: np.ndarray | None = None) -> np.ndarray:
        """(len(LEARNED_REPLICA), len(names)) raw statistics of `names`, in that order (into `out`)."""
        unknown = len(self._index)
        return self._table.take([self._index.get(name, unknown) for name in names], axis=1, out=out)


# Recent LearnedColumns by the identity of their mapping. Replaced, never changed in place, so
# threads may read it without a lock; holding the mappings keeps their ids from being reused.
_LEARNED_CACHE_SIZE = 16
_learned_cache: dict[int, tuple[Mapping[str, Mapping[str, float]], LearnedColumns]] = {}


def learned_columns(learned: Mapping[str, Mapping[str, float]]) -> LearnedColumns:
    """`LearnedColumns(learned)`, built once per mapping: a mapping must not be changed in place once
    used here (the serving snapshot builds a new one at each refresh, so a refresh is picked up)."""
    global _learned_cache
    cache = _learned_cache
    entry = cache.get(id(learned))
    if entry is None or entry[0] is not learned:
        entry = (learned, LearnedColumns(learned))
        recent = list(cache.items())[-(_LEARNED_CACHE_SIZE - 1):]
        _learned_cache = {**dict(recent), id(learned): entry}
    return entry[1]


def observation_dim(max_replicas: int) -> int:
    """Length of the flat observation: padded replica rows, their mask, then the context."""
    return max_replicas * (REPLICA_DIM + 1) + CONTEXT_DIM


def encode_context(normalized_extras: Sequence[float], prompt_tokens: float | None = None,
                   max_tokens: float | None = None) -> list[float]:
    """The specification's 7 normalised cluster features plus the request's token counts (log-scaled)."""
    if len(normalized_extras) != len(EXTRA_FEATURES):
        raise ValueError(f"expected the {len(EXTRA_FEATURES)} normalised cluster features "
                         f"({', '.join(EXTRA_FEATURES)}), got {len(normalized_extras)}")
    context = [float(v) for v in normalized_extras]
    for tokens in (prompt_tokens, max_tokens):
        ok = tokens is not None and math.isfinite(tokens) and tokens >= 0
        context += [math.log1p(tokens) / _TOKENS_LOG_SCALE if ok else 0.0, 1.0 if ok else 0.0]
    return context


def encode_observation(replicas: Sequence[ReplicaFeatures], context: Sequence[float],
                       max_replicas: int) -> np.ndarray:
    """Flat float32 observation: `max_replicas` rows of REPLICA_DIM (zero past the real ones), a 0/1
    mask, then the context. A fixed layout lets the replay buffer store any cluster size."""
    n = len(replicas)
    if not 1 <= n <= max_replicas:
        raise ValueError(f"need 1..{max_replicas} replicas, got {n}")
    if len(context) != CONTEXT_DIM:
        raise ValueError(f"context must have {CONTEXT_DIM} values, got {len(context)}")
    rows = np.zeros((max_replicas, REPLICA_DIM), dtype=np.float32)
    rows[:n] = [r.encode() for r in replicas]
    mask = np.zeros(max_replicas, dtype=np.float32)
    mask[:n] = 1.0
    return np.concatenate([rows.ravel(), mask, np.asarray(context, dtype=np.float32)])


def split_observation(obs: np.ndarray, max_replicas: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows (..., N, REPLICA_DIM), mask (..., N), context (..., CONTEXT_DIM)) views of flat observations."""
    cut = max_replicas * REPLICA_DIM
    rows = obs[..., :cut].reshape(*obs.shape[:-1], max_replicas, REPLICA_DIM)
    return rows, obs[..., cut:cut + max_replicas], obs[..., cut + max_replicas:]


def with_loads(obs: np.ndarray, loads: Sequence[float], max_replicas: int) -> np.ndarray:
    """A copy of `obs` with the replicas' loads replaced (next_state when none is reported)."""
    out = np.array(obs, dtype=np.float32)
    rows, mask, _ = split_observation(out, max_replicas)
    if len(loads) != int(mask.sum()):
        raise ValueError(f"{len(loads)} loads for {int(mask.sum())} replicas")
    rows[: len(loads), 0] = np.clip(np.asarray(loads, dtype=np.float32) / _LOAD_SCALE, -_CLIP, _CLIP)
    return out


def token_costs(latency_ms: float, ttft_ms: float | None, prompt_tokens: float | None,
                output_tokens: float | None) -> tuple[float | None, float | None]:
    """(time per output token after the first, TTFT per 1000 prompt tokens) of one successful
    request, each None when what it needs was not reported."""
    if ttft_ms is None:
        return None, None
    decoded = output_tokens - 1 if output_tokens else 0
    tpot = max(0.0, latency_ms - ttft_ms) / decoded if decoded > 0 else None
    # Floor at 256 tokens: a tiny prompt's TTFT is mostly queueing, not per-token cost.
    per_ktok = ttft_ms * 1000.0 / max(prompt_tokens, 256) if prompt_tokens and prompt_tokens > 0 else None
    return tpot, per_ktok


class ReplicaStats:
    """Per-replica statistics learned from recorded outcomes (exponential moving averages, by name)."""

    def __init__(self, decay: float = 0.95) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = decay
        self._stats: dict[str, dict[str, float]] = {}

    def observe(self, name: str, success: bool, latency_ms: float, ttft_ms: float | None = None,
                prompt_tokens: int = 0, output_tokens: int = 0) -> None:
        stats = self._stats.setdefault(name, {})
        self._update(stats, "failure_rate", 0.0 if success else 1.0)
        if success:
            self._update(stats, "latency_ms", latency_ms)
        if not success:
            return
        tpot, ttft_per_ktok = token_costs(latency_ms, ttft_ms, prompt_tokens, output_tokens)
        if tpot is not None:
            self._update(stats, "tpot_ms", tpot)
        if ttft_per_ktok is not None:
            self._update(stats, "ttft_ms_per_ktok", ttft_per_ktok)

    def _update(self, stats: dict[str, float], key: str, value: float) -> None:
        old = stats.get(key)
        stats[key] = value if old is None else self.decay * old + (1.0 - self.decay) * value

    def get(self, name: str) -> dict[str, float]:
        """Known statistics of `name` (absent keys: nothing learned yet)."""
        return dict(self._stats.get(name, {}))


def replicas_from_body(
    body: dict, stats: ReplicaStats | None = None
) -> tuple[list[str], list[ReplicaFeatures]]:
    """Names and features of every replica in a select_replica body: its `replicas` entries when
    given, else `replica_loads` alone (older callers); learned statistics from `stats`."""
    entries = body.get("replicas")
    if not entries:
        entries = [{"name": f"r{i}", "load": load} for i, load in enumerate(body["replica_loads"])]
    names, features = [], []
    for i, entry in enumerate(entries):
        name = str(entry.get("name", f"r{i}"))
        learned = stats.get(name) if stats is not None else {}
        names.append(name)
        features.append(ReplicaFeatures(
            load=float(entry["load"]), running=entry.get("running"), waiting=entry.get("waiting"),
            kv_cache_usage=entry.get("kv_cache_usage"), tpot_ms=learned.get("tpot_ms"),
            ttft_ms_per_ktok=learned.get("ttft_ms_per_ktok"), failure_rate=learned.get("failure_rate"),
            latency_ms=learned.get("latency_ms")))
    return names, features


# Compact observations: what the service's replay store and decision ids keep for the per-replica
# network, [-n, n rows of REPLICA_DIM, the context]. The leading -n tells them from the fixed
# network's raw states (whose first value, a load, is never negative) and says how many rows follow.


def compact_observation(rows: np.ndarray | Sequence[Sequence[float]],
                        context: Sequence[float]) -> list[float]:
    rows = np.asarray(rows, dtype=np.float32)
    return [-float(len(rows)), *rows.ravel().tolist(), *(float(v) for v in context)]


def is_compact(state: Sequence[float]) -> bool:
    return len(state) > 0 and state[0] < 0


def compact_size(num_replicas: int) -> int:
    return 1 + num_replicas * REPLICA_DIM + CONTEXT_DIM


def pad_compact(states: Sequence[Sequence[float]], max_replicas: int) -> np.ndarray:
    """Compact observations -> the padded flat layout of `encode_observation` (B, observation_dim)."""
    out = np.zeros((len(states), observation_dim(max_replicas)), dtype=np.float32)
    cut = max_replicas * REPLICA_DIM
    for i, state in enumerate(states):
        n = int(-state[0])
        if not 1 <= n <= max_replicas or len(state) != compact_size(n):
            raise ValueError(f"observation {i} is not a compact observation of 1..{max_replicas} replicas")
        out[i, : n * REPLICA_DIM] = state[1 : 1 + n * REPLICA_DIM]
        out[i, cut : cut + n] = 1.0
        out[i, cut + max_replicas :] = state[1 + n * REPLICA_DIM :]
    return out


def compact_with_loads(state: Sequence[float], loads: Sequence[float]) -> list[float]:
    """A compact observation with each replica's load replaced (next_state when none is reported)."""
    n = int(-state[0])
    if len(loads) != n:
        raise ValueError(f"{len(loads)} loads for {n} replicas")
    out = list(state)
    for i, load in enumerate(loads):
        out[1 + i * REPLICA_DIM] = _clip(load / _LOAD_SCALE)
    return out


def _clip(value: float) -> float:
    return _CLIP if value > _CLIP else -_CLIP if value < -_CLIP else float(value)
