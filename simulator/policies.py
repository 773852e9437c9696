"""Routing policies: the heuristics a gateway uses today, and the interface the DQN shares.

A policy is any object with ``choose(request_fields, rng) -> int``; it may also define
``start(context)`` (called once before the first request) and ``observe(experience)``
(called with each ``record_experience`` body). An HTTP-backed policy fits the same shape.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np

from simulator.baselines import (
    EnvoyLeastRequestPolicy,
    LiteLLMLatencyPolicy,
    LiteLLMLeastBusyPolicy,
    SessionAffinityPolicy,
)
from simulator.cache_routers import CacheAwarePolicy, LlmdScorerPolicy
from simulator.router_view import active_requests


@runtime_checkable
class Policy(Protocol):
    """Chooses a replica from the original specification's ``select_replica`` body."""

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


class PeakEwmaPolicy(BasePolicy):
    """Peak EWMA with power of two choices, as Linkerd's proxy (tower) and Finagle balance.

    Cost of a replica = RTT estimate x (pending + 1), pending = its requests in flight. The
    estimate jumps to any RTT above it (peak-sensitive); otherwise it moves toward the RTT with
    weight 1 - exp(-dt / ``decay_s``), dt = time since its last update, and reading a cost decays
    it toward 0 the same way, so an idle replica looks cheaper and is probed again. Two distinct
    replicas are drawn at random and the cheaper one taken (ties: the first drawn). Every outcome
    updates the estimate, errors included (a fast error looks fast; Linkerd relies on failure
    accrual, not modelled). Defaults are Linkerd's: ``decay_s`` 10 s, an unseen replica starts at
    ``default_rtt_ms`` 30 ms; ``default_rtt_ms=None`` is Finagle's rule instead (an unseen
    replica costs 0, or a huge penalty + pending while its first request is outstanding).
    RTT is the end-to-end latency; ``stream=True`` uses the time to first token (Linkerd times
    a response by its headers, which a streamed completion sends with its first token).
    """

    name = "peak_ewma"
    _PENALTY_MS = 1e12  # Finagle: Long.MaxValue >> 16 ns

    def __init__(self, decay_s: float = 10.0, default_rtt_ms: float | None = 30.0,
                 stream: bool = False) -> None:
        self.decay_s = decay_s
        self.default_rtt_ms = default_rtt_ms
        self.stream = stream
        self.cost: list[float] = []
        self.stamp: list[float] = []
        self.context: Any = None

    def _now(self) -> float:
        return float(getattr(self.context, "now", 0.0)) if self.context is not None else 0.0

    def _update(self, i: int, rtt: float, now: float) -> float:
        w = math.exp(-max(now - self.stamp[i], 0.0) / self.decay_s)
        self.cost[i] = rtt if rtt > self.cost[i] else self.cost[i] * w + rtt * (1.0 - w)
        self.stamp[i] = now
        return self.cost[i]

    def load(self, i: int, pending: float, now: float) -> float:
        cost = self._update(i, 0.0, now)
        if cost == 0.0 and pending and self.default_rtt_ms is None:
            return self._PENALTY_MS + pending
        return cost * (pending + 1.0)

    def choose(self, request_fields: dict, rng: np.random.Generator) -> int:
        pending = active_requests(request_fields)
        n, now = len(pending), self._now()
        if len(self.cost) != n:
            self.cost = [self.default_rtt_ms or 0.0] * n
            self.stamp = [now] * n
        if n == 1:
            return 0
        a = int(rng.integers(n))
        b = int(rng.integers(n - 1))
        b += b >= a
        return a if self.load(a, pending[a], now) <= self.load(b, pending[b], now) else b

    def observe(self, experience: dict) -> None:
        a = experience["action"]
        if a >= len(self.cost):
            return
        rtt = experience.get("ttft_ms") if self.stream else None
        self._update(a, experience["latency_ms"] if rtt is None else rtt, self._now())


class OraclePolicy(BasePolicy):
    """Shortest expected delay with the true speeds: argmin (load + 1) / speed, speed being each
    replica's current capacity for the workload's mean request (prefill and decode).

    Not blind (it reads the simulator's real speeds, outages included), so it is a ceiling
    for count-based heuristics; it is not the optimal policy under batching, and it knows
    nothing of the prefix cache.
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
    # what production gateways run (baselines.py, cache_routers.py; README "Policies")
    "envoy_least_request": EnvoyLeastRequestPolicy,
    "litellm_latency": LiteLLMLatencyPolicy,
    "litellm_least_busy": LiteLLMLeastBusyPolicy,
    "cache_aware": CacheAwarePolicy,
    "llmd_scorer": LlmdScorerPolicy,
    "session_affinity": SessionAffinityPolicy,
}
ALIASES = {"power_of_two": "p2c", "jsq": "least_loaded", "rr": "round_robin",
           "linkerd": "peak_ewma", "finagle": "peak_ewma", "envoy": "envoy_least_request",
           "sglang": "cache_aware", "vllm_router": "cache_aware", "llm-d": "llmd_scorer",
           "production_stack": "session_affinity"}


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
