"""What the gateway can see: sliding-window metrics, the original specification's request
bodies, and what vLLM replicas' /metrics and the request itself add.

``replica_loads`` are counts (running + waiting requests per replica, clipped to 0-100):
the gateway knows its own in-flight counts, never a replica's capacity or cache contents.
"""

from __future__ import annotations

from collections import deque

from simulator.cluster import Replica


def _clip100(x: float) -> float:
    return 0.0 if x < 0 else (100.0 if x > 100 else x)


class Window:
    """Arrivals and completions over the last ``window_s`` simulated seconds."""

    def __init__(self, window_s: float = 60.0) -> None:
        self.window_s = window_s
        self._arrivals: deque[float] = deque()
        self._done: deque[tuple[float, float, bool]] = deque()  # (t, latency_ms, success)
        self._lat_sum = 0.0
        self._ok = 0

    def arrival(self, t: float) -> None:
        self._arrivals.append(t)

    def completion(self, t: float, latency_ms: float, success: bool) -> None:
        self._done.append((t, latency_ms, success))
        if success:
            self._lat_sum += latency_ms
            self._ok += 1

    def _expire(self, now: float) -> None:
        cutoff = now - self.window_s
        arrivals, done = self._arrivals, self._done
        while arrivals and arrivals[0] < cutoff:
            arrivals.popleft()
        while done and done[0][0] < cutoff:
            _, lat, ok = done.popleft()
            if ok:
                self._lat_sum -= lat
                self._ok -= 1

    def stats(self, now: float) -> tuple[float, float, float]:
        """(mean latency ms of successes, arrivals/s, success fraction) in the window."""
        self._expire(now)
        n = len(self._done)
        latency = self._lat_sum / self._ok if self._ok else 0.0
        span = min(self.window_s, now) if now > 0 else self.window_s
        rps = len(self._arrivals) / max(span, 1.0)
        success = self._ok / n if n else 1.0
        return latency, rps, success


def replica_loads(replicas: list[Replica]) -> list[int]:
    """Running + waiting requests at each replica (a count, clipped to 100)."""
    return [min(100, r.load) for r in replicas]


def select_body(replicas: list[Replica], window: Window, now: float,
                request: dict | None = None) -> dict:
    """The original specification's ``POST /select_replica`` body (its five fields first),
    plus ``replicas`` and, when given, ``request`` (prompt_tokens, max_tokens and, if the
    workload knows them, prefix_hashes).

    ``replicas`` holds per replica what its vLLM /metrics reports: ``running``
    (vllm:num_requests_running), ``waiting`` (vllm:num_requests_waiting), ``kv_cache_usage``
    (vllm:kv_cache_usage_perc: blocks held by running requests; cached free blocks do not
    count), and ``load``, the unclipped count behind ``replica_loads``.
    """
    latency, rps, success = window.stats(now)
    loads: list[int] = []
    metrics: list[dict] = []
    queued = 0
    for r in replicas:  # one pass: this runs for every routed request
        running = len(r.decoding) + (r.pf_rid >= 0)
        waiting = len(r.waiting)
        load = running + waiting + r.failing_inflight
        queued += waiting
        loads.append(load if load < 100 else 100)
        cache = r.cache
        metrics.append({"name": r.name, "load": load, "running": running, "waiting": waiting,
                        "kv_cache_usage": (len(cache.ref) + cache.anon) / cache.capacity})
    body = {
        "replica_loads": loads,
        "queue_depth": _clip100(float(queued)),
        "recent_latency_ms": latency,
        "current_rps": rps,
        "success_rate": success,
        "replicas": metrics,
    }
    if request is not None:
        body["request"] = request
    return body


def host_signals(replicas: list[Replica], now: float, day_s: float,
                 day_phase: float) -> tuple[float, float, float]:
    """(memory, cpu, time_of_day) in 0-1, the fields the service adds itself.

    memory is the KV memory held by running requests across the cluster, cpu the share of
    batch slots busy.
    """
    used = blocks = running = slots = 0
    for r in replicas:
        used += len(r.cache.ref) + r.cache.anon
        blocks += r.cache.capacity
        running += len(r.decoding) + (r.pf_rid >= 0)
        slots += r.spec.max_batch
    tod = (now / day_s + day_phase) % 1.0
    return min(1.0, used / blocks), min(1.0, running / slots), tod


def raw_state(body: dict, host: tuple[float, float, float]) -> list[float]:
    """The specification's N + 7 state: loads, queue, latency (s), rps, success, mem, cpu, tod."""
    return [
        *(float(x) for x in body["replica_loads"]),
        float(body["queue_depth"]),
        body["recent_latency_ms"] / 1000.0,
        float(body["current_rps"]),
        float(body["success_rate"]),
        *host,
    ]


def experience_body(state: list[float], action: int, latency_ms: float, success: bool,
                    loads_after: list[int], ttft_ms: float | None = None,
                    prompt_tokens: int = 0, output_tokens: int = 0,
                    replica_name: str | None = None) -> dict:
    """The original specification's ``POST /record_experience`` body for one completed
    request (its five fields first; latency_ms is end to end), plus ``ttft_ms`` (None for a
    failed request), ``prompt_tokens``, ``output_tokens`` and, when given, ``replica_name``
    (what the gateway sent it to: ``action`` indexes the list offered at decision time)."""
    body = {
        "state": state,
        "action": action,
        "latency_ms": latency_ms,
        "success": success,
        "replica_loads": loads_after,
        "ttft_ms": ttft_ms,
        "prompt_tokens": prompt_tokens,
        "output_tokens": output_tokens,
    }
    if replica_name is not None:
        body["replica_name"] = replica_name
    return body
