"""What a router reads from a ``select_replica`` body, with fallbacks for the original five fields.

Newer bodies carry ``replicas`` (per-replica running/waiting/KV-cache use, as vLLM's ``/metrics``
reports them) and ``request`` (token counts, prefix block hashes); older callers send only
``replica_loads``, so every reader here falls back on it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

BLOCK_TOKENS = 512  # the prefix block size of ``request["prefix_hashes"]`` (Mooncake's hash_ids)


def num_replicas(fields: dict) -> int:
    return len(fields["replica_loads"])


def _replicas(fields: dict) -> list[dict] | None:
    reps = fields.get("replicas")
    return reps if reps and len(reps) == len(fields["replica_loads"]) else None


def active_requests(fields: dict) -> list[float]:
    """Requests in flight at each replica (running + waiting), unclipped when known.

    The simulated gateway is every replica's only client, so this equals the count a proxy
    keeps of its own outstanding requests (Envoy's rq_active, Finagle's pending).
    """
    reps = _replicas(fields)
    if reps is None:
        return [float(x) for x in fields["replica_loads"]]
    return [float(r.get("load", r.get("running", 0) + r.get("waiting", 0))) for r in reps]


def waiting_requests(fields: dict) -> list[float]:
    """``vllm:num_requests_waiting`` per replica; without it, the load (running is unknown)."""
    reps = _replicas(fields)
    if reps is None or any("waiting" not in r for r in reps):
        return active_requests(fields)
    return [float(r["waiting"]) for r in reps]


def kv_cache_usage(fields: dict) -> list[float]:
    """``vllm:kv_cache_usage_perc`` (0-1) per replica; 0 everywhere when not reported."""
    reps = _replicas(fields)
    if reps is None:
        return [0.0] * num_replicas(fields)
    return [float(r.get("kv_cache_usage", 0.0)) for r in reps]


def replica_names(fields: dict) -> list[str]:
    reps = _replicas(fields)
    if reps is None:
        return [f"r{i}" for i in range(num_replicas(fields))]
    return [str(r.get("name", f"r{i}")) for i, r in enumerate(reps)]


class ReplicaIds:
    """Stable integer ids for replica names, in order of first sight: a router keys its state
    by them, so a replica that joins or leaves moves no other replica's state. With a fixed
    cluster named r0..rN the id of each replica is its index."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._last: list[int] = []

    def __len__(self) -> int:
        return len(self._ids)

    def of(self, fields: dict) -> list[int]:
        """The ids of the replicas a ``select_replica`` body offers, in its order."""
        ids = self._ids
        self._last = [ids.setdefault(name, len(ids)) for name in replica_names(fields)]
        return self._last

    def chosen(self, experience: dict) -> int | None:
        """The id of the replica an outcome came from: ``replica_name`` when the body has it,
        else ``action`` in the last offered list, else the default name ``r<action>``."""
        name = experience.get("replica_name")
        a = experience["action"]
        if name is None and 0 <= a < len(self._last):
            return self._last[a]
        name = f"r{a}" if name is None else str(name)
        return self._ids.setdefault(name, len(self._ids))


def request_of(fields: dict) -> dict:
    return fields.get("request") or {}


def prefix_hashes(fields: dict) -> list[int] | None:
    """The request's prefix block hashes, or None when the workload has no prefix information."""
    hashes = request_of(fields).get("prefix_hashes")
    return list(hashes) if hashes is not None else None


def prompt_blocks(fields: dict) -> int:
    """How many prefix blocks the prompt spans (at least one)."""
    tokens = request_of(fields).get("prompt_tokens")
    return max(1, math.ceil(tokens / BLOCK_TOKENS)) if tokens else 1


def argmin_random(values: list[float], rng: np.random.Generator) -> int:
    best = min(values)
    ties = [i for i, v in enumerate(values) if v == best]
    return ties[0] if len(ties) == 1 else ties[int(rng.integers(len(ties)))]


def argmax_random(values: list[float], rng: np.random.Generator) -> int:
    return argmin_random([-v for v in values], rng)


class RouterPolicy:
    """Keeps the simulator context for the clock; ``observe`` does nothing unless overridden."""

    name = "router"
    context: Any = None

    def start(self, context: Any) -> None:
        self.context = context

    def observe(self, experience: dict) -> None:
        return None

    def now(self) -> float:
        """Simulated seconds (0 without a context, e.g. on hand-made request bodies)."""
        return float(getattr(self.context, "now", 0.0)) if self.context is not None else 0.0
