"""The `/select_replica` body: the original one (`replica_loads`), or the per-replica form
(`replicas` with optional running, waiting and KV-cache usage each, and the request's size and
prefix hashes); either names the replica pool when the gateway routes for one."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

REPLICA_FIELDS = ("running", "waiting", "kv_cache_usage")
REQUEST_FIELDS = ("prompt_tokens", "max_tokens")
MAX_PREFIX_HASHES = 512


def select_payload(
    replica_loads: Sequence[float],
    queue_depth: float,
    recent_latency_ms: float,
    current_rps: float,
    success_rate: float,
    *,
    names: Sequence[str] | None = None,
    replica_metrics: Sequence[Mapping[str, float]] | None = None,
    request: Mapping[str, Any] | None = None,
    pool: str | None = None,
) -> dict[str, Any]:
    """The original body when `names` is None; else one `replicas` entry per load, with the
    metrics given for it (missing or non-finite ones are left out) and `request` if given.
    `pool` None leaves the body without one: the service's default pool."""
    body: dict[str, Any] = {"queue_depth": float(queue_depth), "recent_latency_ms": float(recent_latency_ms),
                            "current_rps": float(current_rps), "success_rate": float(success_rate)}
    if pool is not None:
        body["pool"] = pool
    loads = [float(load) for load in replica_loads]
    if names is None:
        return {"replica_loads": loads, **body}
    if len(names) != len(loads):
        raise ValueError(f"{len(names)} replica names for {len(loads)} loads")
    if replica_metrics is not None and len(replica_metrics) != len(loads):
        raise ValueError(f"metrics for {len(replica_metrics)} replicas, {len(loads)} loads")
    replicas = []
    for i, (name, load) in enumerate(zip(names, loads, strict=True)):
        entry: dict[str, Any] = {"name": name, "load": load}
        for key in REPLICA_FIELDS:
            value = (replica_metrics[i] if replica_metrics is not None else {}).get(key)
            if value is not None and math.isfinite(float(value)):
                entry[key] = float(value) if key == "kv_cache_usage" else int(value)
        replicas.append(entry)
    out: dict[str, Any] = {"replicas": replicas, **body}
    if request:
        sized = {key: int(request[key]) for key in REQUEST_FIELDS if request.get(key) is not None}
        if any(value < 0 for value in sized.values()):
            raise ValueError(f"request sizes must be >= 0, got {sized}")
        if request.get("prefix_hashes"):  # rlagent_client/prefix.py; the service takes up to 512
            sized["prefix_hashes"] = [str(h) for h in request["prefix_hashes"][:MAX_PREFIX_HASHES]]
        if sized:
            out["request"] = sized
    return out
