"""Routing policies: the heuristics a gateway uses today, and the interface the DQN shares.

A policy is any object with ``choose(request_fields, rng) -> int``; it may also define
``start(context)`` (called once before the first request) and ``observe(experience)``
(called with each ``record_experience`` body). An HTTP-backed policy fits the same shape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Policy(Protocol):
    """Chooses a replica from the seed's ``select_replica`` body."""

    name: str

    def choose(self, request_fields: dict, rng: np.random.Generator) -> int: ...


class BasePolicy:
    """No-op ``start`` and ``observe`` for policies that need neither."""

    name = "base"

    def start(self, context: Any) -> None:
        self.context = context

    def observe(self, experience: dict) -> None:
        return None


def _argmin_random(values: list[float], rng: np.random.Generator) -> int:
    best = min(values)
    ties = [i for i, v in enumerate(values) if v == best]
    return ties[0] if len(ties) == 1 else ties[int(rng.integers(len(ties)))]


class RandomPolicy(BasePolicy):
    name = "random"

    def choose(self, request_fields: dict, rng: np.random.Generator) -> int:
        return int(rng.integers(len(request_fields["replica_loads"])))


class RoundRobinPolicy(BasePolicy):
    name = "round_robin"

    def __init__(self) -> None:
        self._next = 0

    def choose(self, request_fields: dict, rng: np.random.Generator) -> int:
        n = len(request_fields["replica_loads"])
        choice, self._next = self._next % n, (self._next + 1) % n
        return choice


class LeastLoadedPolicy(BasePolicy):
    """Join-the-shortest-queue on ``replica_loads``, ties broken at random."""

    name = "least_loaded"

    def choose(self, request_fields: dict, rng: np.random.Generator) -> int:
        return _argmin_random(request_fields["replica_loads"], rng)


class PowerOfTwoPolicy(BasePolicy):
    """Power of two choices: sample two distinct replicas, take the less loaded."""

    name = "p2c"

    def choose(self, request_fields: dict, rng: np.random.Generator) -> int:
        loads = request_fields["replica_loads"]
        n = len(loads)
        if n == 1:
            return 0
        a = int(rng.integers(n))
        b = int(rng.integers(n - 1))
        b += b >= a
        if loads[a] == loads[b]:
            return a if rng.random() < 0.5 else b
        return a if loads[a] < loads[b] else b


class LeastLatencyPolicy(BasePolicy):
    """Lowest EWMA of observed latency per replica; an unseen replica counts as 0 ms."""

    name = "least_latency"

    def __init__(self, alpha: float = 0.1) -> None:
        self.alpha = alpha
        self.ewma: list[float] = []

    def choose(self, request_fields: dict, rng: np.random.Generator) -> int:
        n = len(request_fields["replica_loads"])
        if len(self.ewma) != n:
            self.ewma = [0.0] * n
        return _argmin_random(self.ewma, rng)

    def observe(self, experience: dict) -> None:
        if self.ewma:
            a = experience["action"]
            self.ewma[a] += self.alpha * (experience["latency_ms"] - self.ewma[a])


class PeakEwmaPolicy(LeastLatencyPolicy):
    """EWMA latency times (load + 1), as Finagle/Linkerd balance: a strong blind heuristic."""

    name = "peak_ewma"

    def choose(self, request_fields: dict, rng: np.random.Generator) -> int:
        loads = request_fields["replica_loads"]
        if len(self.ewma) != len(loads):
            self.ewma = [0.0] * len(loads)
        return _argmin_random([e * (x + 1) for e, x in zip(self.ewma, loads, strict=True)], rng)


class OraclePolicy(BasePolicy):
    """Shortest expected delay with the true speeds: argmin (load + 1) / speed.

    Not blind (it reads the simulator's real speeds, outages included), so it is a ceiling
    for heuristics; it is not the optimal policy under batching.
    """

    name = "oracle"

    def choose(self, request_fields: dict, rng: np.random.Generator) -> int:
        speeds = self.context.true_speeds()
        loads = request_fields["replica_loads"]
        cost = [(x + 1) / s if s > 0 else float("inf")
                for x, s in zip(loads, speeds, strict=True)]
        return _argmin_random(cost, rng)


POLICIES: dict[str, Callable[[], Any]] = {
    "random": RandomPolicy,
    "round_robin": RoundRobinPolicy,
    "least_loaded": LeastLoadedPolicy,
    "p2c": PowerOfTwoPolicy,
    "least_latency": LeastLatencyPolicy,
    "peak_ewma": PeakEwmaPolicy,
    "oracle": OraclePolicy,
}
ALIASES = {"power_of_two": "p2c", "jsq": "least_loaded", "rr": "round_robin"}


def canonical_name(name: str) -> str:
    """Resolve an alias (``power_of_two`` -> ``p2c``)."""
    return ALIASES.get(name, name)


def make_policy(name: str, **kwargs: Any) -> Any:
    """Build a policy by name; ``dqn`` is built by ``simulator.dqn_policy``."""
    name = canonical_name(name)
    if name == "dqn":
        from simulator.dqn_policy import DQNPolicy

        return DQNPolicy(**kwargs)
    if name not in POLICIES:
        known = ", ".join(sorted([*POLICIES, "dqn"]))
        raise KeyError(f"unknown policy {name!r}; known: {known}")
    return POLICIES[name](**kwargs)
