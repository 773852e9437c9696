"""Hand-made ``select_replica`` and ``record_experience`` bodies for the router baselines' tests."""

from __future__ import annotations


def body(loads: list[float], waiting: list[float] | None = None, kv: list[float] | None = None,
         hashes: list[int] | None = None, prompt_tokens: int = 1024,
         session: str | None = None) -> dict:
    """A ``select_replica`` body with the per-replica and per-request fields a gateway adds."""
    waiting = waiting if waiting is not None else [0] * len(loads)
    kv = kv if kv is not None else [0.0] * len(loads)
    request: dict = {"prompt_tokens": prompt_tokens, "max_tokens": 100}
    if hashes is not None:
        request["prefix_hashes"] = hashes
    if session is not None:
        request["session_id"] = session
    return {
        "replica_loads": [min(100, x) for x in loads], "queue_depth": float(sum(waiting)),
        "recent_latency_ms": 0.0, "current_rps": 0.0, "success_rate": 1.0,
        "replicas": [{"name": f"r{i}", "load": x, "running": x - w, "waiting": w, "kv_cache_usage": k}
                     for i, (x, w, k) in enumerate(zip(loads, waiting, kv, strict=True))],
        "request": request,
    }


def plain(loads: list[int]) -> dict:
    """The original specification's five fields only."""
    return {"replica_loads": loads, "queue_depth": 0.0, "recent_latency_ms": 0.0,
            "current_rps": 0.0, "success_rate": 1.0}


def done(action: int, latency_ms: float, success: bool = True, ttft_ms: float | None = None,
         output_tokens: int = 100) -> dict:
    return {"state": [], "action": action, "latency_ms": latency_ms, "success": success,
            "replica_loads": [], "ttft_ms": ttft_ms, "prompt_tokens": 100,
            "output_tokens": output_tokens}
