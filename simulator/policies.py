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
from simulator.router_view import ReplicaIds, active_requests


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
        self.ewma: list[float] = []  # by replica id (ReplicaIds), not position
        self.ids = ReplicaIds()

    def choose(self, request_fields: dict, rng: np.random.Generator) -> int:
        ids = self.ids.of(request_fields)
        self.ewma += [0.0] * (len(self.ids) - len(self.ewma))
        return _argmin_random([self.ewma[i] for i in ids], rng)

    def observe(self, experience: dict) -> None:
        a = self.ids.chosen(experience)
        if a is not None and a < len(self.ewma):
            self.ewma[a] += self.alpha * (experience["latency_ms"] - self.ewma[a])


class PeakEwmaPolicy(BasePolicy):
    """Peak EWMA with power of two choices, as Linkerd's proxy (tower) and Finagle balance.

    Cost of a replica = RTT estimate x (pending + 1). The estimate jumps to any RTT above it
    (peak-sensitive); otherwise it moves toward the RTT with weight 1 - exp(-dt / ``decay_s``),
    dt = time since its last update, and reading a cost decays it toward 0 the same way, so an
    idle replica looks cheaper and is probed again. Two distinct replicas are drawn at random and
    the cheaper one taken (ties: the first drawn). Every outcome is a sample, errors included (a
    fast error looks fast; Linkerd relies on failure accrual, not modelled). Defaults are
    Linkerd's (``linkerd/app/outbound/src/http/logical/profile.rs``, ``DEFAULT_EWMA``): decay
    10 s, an unseen replica starts at ``default_rtt_ms`` 30 ms; ``default_rtt_ms=None`` is
    Finagle's rule instead (an unseen replica costs 0, or a huge penalty + pending while its
    first request is outstanding).

    What is timed. In tower (``tower/src/load/peak_ewma.rs``) each request holds a ``Handle``:
    pending is the number of live handles, and dropping one records now - sent as the RTT.
    Linkerd's HTTP balancer drops it when the response body yields its first frame
    (``PendingUntilFirstData``: ``linkerd/proxy/http/src/balance.rs``,
    ``hyper-balance/src/lib.rs``), not at the response headers (tower's default
    ``CompleteOnResponse``, which Linkerd keeps for opaque TCP). A streamed completion (server-sent
    events, what gateways send) yields its first frame with the first token, so ``sample="ttft"``
    (the default) times the time to first token and counts as pending only the requests still
    waiting for it; a request without a first token (an error, or a caller that reports no
    ``ttft_ms``) is timed end to end. ``sample="e2e"`` is a non-streamed completion: its body
    comes when the whole answer is done, so RTT and pending run to the end. In the simulator the first token
    arrives through ``observe_first_token`` when it happens; without that call (hand-made bodies)
    the sample is taken from the completed request's ``ttft_ms`` and pending is the in-flight count.
    """

    name = "peak_ewma"
    _PENALTY_MS = 1e12  # Finagle: Long.MaxValue >> 16 ns
    SAMPLES = ("ttft", "e2e")

    def __init__(self, decay_s: float = 10.0, default_rtt_ms: float | None = 30.0,
                 sample: str = "ttft") -> None:
        if sample not in self.SAMPLES:
            raise ValueError(f"sample must be one of {', '.join(self.SAMPLES)}, got {sample!r}")
        self.decay_s = decay_s
        self.default_rtt_ms = default_rtt_ms
        self.sample = sample
        # Per replica id (ReplicaIds: stable across membership changes), not position.
        self.cost: list[float] = []
        self.stamp: list[float] = []
        self.pending: list[int] = []  # the proxy's own live handles per replica
        self.ids = ReplicaIds()
        # Requests not yet timed, by the identity of their decision's state list: the engine
        # hands the same list back with the first token and the completion.
        self._open: dict[int, int] = {}
        self._tracking = False
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

    def _decision_key(self) -> int | None:
        raw_state = getattr(self.context, "raw_state", None)
        return id(raw_state()) if raw_state is not None else None

    def choose(self, request_fields: dict, rng: np.random.Generator) -> int:
        now = self._now()
        ids = self.ids.of(request_fields)
        n, new = len(ids), len(self.ids) - len(self.cost)
        if new:  # a replica seen for the first time (the start, or one that joined)
            self.cost += [self.default_rtt_ms or 0.0] * new
            self.stamp += [now] * new
            self.pending += [0] * new
        key = self._decision_key()
        self._tracking = key is not None
        loads = None if self._tracking else active_requests(request_fields)
        choice = 0
        if n > 1:
            a = int(rng.integers(n))
            b = int(rng.integers(n - 1))
            b += b >= a
            ia, ib = ids[a], ids[b]
            pa, pb = (self.pending[ia], self.pending[ib]) if loads is None else (loads[a], loads[b])
            choice = a if self.load(ia, pa, now) <= self.load(ib, pb, now) else b
        if key is not None:
            self._open[key] = ids[choice]
            self.pending[ids[choice]] += 1
        return choice

    def _close(self, state: Any) -> int | None:
        """Drop the handle of a tracked request; its replica, or None if already timed."""
        i = self._open.pop(id(state), None)
        if i is not None:
            self.pending[i] -= 1
        return i

    def observe_first_token(self, event: dict) -> None:
        """A streamed request's first token (``state``, ``action``, ``ttft_ms``) as it arrives."""
        if self.sample == "ttft" and self._tracking:
            i = self._close(event["state"])
            if i is not None:
                self._update(i, event["ttft_ms"], self._now())

    def observe(self, experience: dict) -> None:
        a = self.ids.chosen(experience)
        if a is None or a >= len(self.cost):
            return
        if self._tracking and self._close(experience.get("state")) is None:
            return  # timed at its first token
        ttft = experience.get("ttft_ms") if self.sample == "ttft" else None
        self._update(a, experience["latency_ms"] if ttft is None else ttft, self._now())


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
