"""What a gateway measures for the agent's state, per replica name: requests in flight (the
loads), an EWMA of latency and success, and requests per second over the last 10 s."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from typing import Any

EWMA = 0.1  # weight of the newest request in the latency and success averages
RPS_WINDOW_S = 10.0


class Traffic:
    """Thread-safe; each update is a few additions under one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.in_flight: Counter[str] = Counter()
        self.latency_ms = 0.0
        self.success_rate = 1.0
        self.finished = 0
        self._arrivals: deque[float] = deque()

    def observe(self, names: Sequence[str]) -> tuple[list[float], float, float, float, float]:
        """(replica_loads, queue_depth, recent_latency_ms, current_rps, success_rate) for `names`."""
        now = time.monotonic()
        with self._lock:
            self._arrivals.append(now)
            while self._arrivals and now - self._arrivals[0] > RPS_WINDOW_S:
                self._arrivals.popleft()
            loads = [float(self.in_flight[name]) for name in names]
            rps = len(self._arrivals) / RPS_WINDOW_S
            return loads, float(sum(loads)), self.latency_ms, rps, self.success_rate

    def begin(self, name: str) -> None:
        with self._lock:
            self.in_flight[name] += 1

    def end(self, name: str, names: Sequence[str], latency_ms: float | None, success: bool) -> list[float]:
        """Record an outcome (latency None: forgotten, not measured); the loads of `names` after it."""
        with self._lock:
            self.in_flight[name] = max(0, self.in_flight[name] - 1)
            if latency_ms is not None:
                weight = 1.0 if self.finished == 0 else EWMA  # the first answer sets the average
                self.finished += 1
                self.latency_ms = (1 - weight) * self.latency_ms + weight * latency_ms
                self.success_rate = (1 - EWMA) * self.success_rate + EWMA * float(success)
            return [float(self.in_flight[n]) for n in names]

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"in_flight": {k: v for k, v in self.in_flight.items() if v},
                    "latency_ms": self.latency_ms, "success_rate": self.success_rate,
                    "finished": self.finished}
