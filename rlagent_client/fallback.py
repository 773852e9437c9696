"""Fail-open machinery: the heuristics that decide whenever the agent cannot, and the circuit
breaker that stops asking a failing agent (open after K consecutive failures, one probe after a
cool-down, closed again on its success).

A heuristic is any callable `loads -> replica index`; pass your own to `RLAgentClient(heuristic=...)`.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

# The service's own fallback, so a gateway's heuristic decision is the one the service would make.
from agent_app.rl.policy import least_loaded

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

Heuristic = Callable[[Sequence[float]], int]
_rng = random.Random()


def power_of_two(replica_loads: Sequence[float]) -> int:
    """Power-of-two-choices: the less loaded of two replicas drawn at random."""
    if len(replica_loads) == 1:
        return 0
    a, b = _rng.sample(range(len(replica_loads)), 2)
    return a if replica_loads[a] <= replica_loads[b] else b


def random_choice(replica_loads: Sequence[float]) -> int:
    """A replica drawn uniformly: the baseline every policy must beat."""
    return _rng.randrange(len(replica_loads))


class RoundRobin:
    """Each replica in turn, whatever its load; safe to share between threads."""

    __name__ = "round_robin"

    def __init__(self) -> None:
        self._counter = itertools.count()
        self._lock = threading.Lock()

    def __call__(self, replica_loads: Sequence[float]) -> int:
        with self._lock:
            return next(self._counter) % len(replica_loads)


power_of_two.__name__ = "power_of_two"
random_choice.__name__ = "random"

_FACTORIES: dict[str, Callable[[], Heuristic]] = {
    "least_loaded": lambda: least_loaded,
    "round_robin": RoundRobin,
    "power_of_two": lambda: power_of_two,
    "random": lambda: random_choice,
}


def make_heuristic(name: str) -> Heuristic:
    """A fresh heuristic by name (RL_AGENT_HEURISTIC)."""
    try:
        return _FACTORIES[name]()
    except KeyError:
        raise ValueError(f"RL_AGENT_HEURISTIC must be one of {', '.join(_FACTORIES)}, got {name!r}") from None


def heuristic_name(heuristic: Heuristic) -> str:
    """The name a decision reports as its policy."""
    return getattr(heuristic, "__name__", None) or type(heuristic).__name__


class CircuitBreaker:
    """Thread-safe; `clock` is injectable so tests can move time without sleeping."""

    def __init__(
        self, failures: int = 5, cooldown_s: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if failures < 1:
            raise ValueError(f"failures must be >= 1, got {failures}")
        self.failure_threshold = failures
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._consecutive = 0
        self._opened_at = 0.0
        self._probe_in_flight = False
        self.opened = 0  # times the circuit opened
        self.rejected = 0  # calls refused while open

    @property
    def state(self) -> str:
        with self._lock:
            if self._state == OPEN and self._clock() - self._opened_at >= self.cooldown_s:
                return HALF_OPEN  # the next allow() sends a probe
            return self._state

    def allow(self) -> bool:
        """May a call go out now? In half-open state exactly one probe is allowed at a time."""
        with self._lock:
            if self._state == CLOSED:
                return True
            if self._state == OPEN:
                if self._clock() - self._opened_at < self.cooldown_s:
                    self.rejected += 1
                    return False
                self._state = HALF_OPEN
            if self._probe_in_flight:
                self.rejected += 1
                return False
            self._probe_in_flight = True
            return True

    def record_success(self) -> None:
        with self._lock:
            self._state = CLOSED
            self._consecutive = 0
            self._probe_in_flight = False

    def record_failure(self) -> None:
        with self._lock:
            self._consecutive += 1
            probe_failed = self._state == HALF_OPEN
            self._probe_in_flight = False
            if probe_failed or (self._state == CLOSED and self._consecutive >= self.failure_threshold):
                self._state = OPEN
                self._opened_at = self._clock()
                self.opened += 1

    def snapshot(self) -> dict[str, Any]:
        state = self.state
        with self._lock:
            return {"state": state, "consecutive_failures": self._consecutive, "opened": self.opened,
                    "rejected": self.rejected}
