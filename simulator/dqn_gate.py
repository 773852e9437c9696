"""The cold-start gate as the in-process DQN runs it: who routes each request (the heuristic or
the model), the reward windows each arm is judged on, and when control changed hands.

The verdict itself is the service's (``agent_app.rl.gate.decide``); this module only keeps the
evidence the way a long-running router must: a sliding window of recent outcomes per arm, so an
old verdict can be overturned when the model, or the cluster, changes. The heuristic arm routes
with the service's scorer (``agent_app.rl.scorer``: queue, KV-cache use and prefix match) from
what the service would know of each replica, or with plain least-loaded for comparison.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Sequence

import numpy as np

from agent_app.rl.gate import (
    HEURISTIC,
    MODEL,
    ArmTotals,
    GateConfig,
    assign_arm,
    bounded_explore,
    decide,
)
from agent_app.rl.scorer import best_replicas

GATE_DEFAULTS = {"window": 2000, "decide_every": 100, "heuristic": "scorer"}
HEURISTICS = ("scorer", "least_loaded")


class RoutingGate:
    """Assigns arms, collects each arm's rewards and re-decides every ``decide_every`` outcomes.

    ``window``: the last outcomes per arm a verdict weighs. ``switches`` lists every change of
    the routing arm with the outcome count at which it happened and the evidence. ``heuristic``:
    what the heuristic arm routes with, ``"scorer"`` (the service's) or ``"least_loaded"``.
    """

    def __init__(self, config: GateConfig | None = None, window: int = 2000,
                 decide_every: int = 100, seed: int = 0, heuristic: str = "scorer") -> None:
        if window < 1 or decide_every < 1:
            raise ValueError(f"window and decide_every must be >= 1, got {window}, {decide_every}")
        if heuristic not in HEURISTICS:
            raise ValueError(f"heuristic must be one of {HEURISTICS}, got {heuristic!r}")
        self.config = config or GateConfig()
        self.window, self.decide_every, self.heuristic = window, decide_every, heuristic
        self.leader = HEURISTIC
        self.rng = random.Random(seed)
        self.rewards: dict[str, deque[float]] = {MODEL: deque(maxlen=window),
                                                 HEURISTIC: deque(maxlen=window)}
        self.routed = {MODEL: 0, HEURISTIC: 0}
        self.outcomes = 0
        self.switches: list[dict] = []
        self.last_verdict: dict | None = None

    @classmethod
    def from_options(cls, options: dict | None, seed: int) -> RoutingGate:
        """Build from a JSON-style dict: GateConfig fields plus ``window``, ``decide_every`` and
        ``heuristic``."""
        options = {**GATE_DEFAULTS, **(options or {})}
        options.pop("enabled", None)
        window, every = int(options.pop("window")), int(options.pop("decide_every"))
        heuristic = str(options.pop("heuristic"))
        return cls(GateConfig(**options), window, every, seed, heuristic)

    def arm(self) -> str:
        """The arm that routes the next request."""
        arm = assign_arm(self.leader, self.config, self.rng)
        self.routed[arm] += 1
        return arm

    def heuristic_choice(self, request_fields: dict, prefix_match: list[float] | None,
                         rng: np.random.Generator) -> int:
        """The heuristic arm's pick, ties broken at random with the simulation's ``rng``.

        ``"scorer"`` reads what the service is sent and knows: each replica's ``load``,
        ``running``, ``waiting`` and ``kv_cache_usage`` from the body's ``replicas``, and
        ``prefix_match`` from the service's prefix index (None without prefix hashes).
        ``"least_loaded"``: the lowest of ``replica_loads``, the service's former fallback.
        """
        if self.heuristic == "least_loaded":
            loads = request_fields["replica_loads"]
            low = min(loads)
            ties = [i for i, load in enumerate(loads) if load == low]
        else:
            replicas = request_fields.get("replicas") or [
                {"load": load} for load in request_fields["replica_loads"]]
            ties = best_replicas([r["load"] for r in replicas],
                                 running=_column(replicas, "running"),
                                 waiting=_column(replicas, "waiting"),
                                 kv_cache_usage=_column(replicas, "kv_cache_usage"),
                                 prefix_match=prefix_match)
        return ties[0] if len(ties) == 1 else ties[int(rng.integers(len(ties)))]

    def explore(self, q_values: Sequence[float], epsilon: float) -> int:
        """The model arm's pick: greedy, except with probability ``epsilon`` a random replica
        among those within ``exploration_margin`` of the best Q (``bounded_explore``)."""
        if epsilon > 0 and self.rng.random() < epsilon:
            return bounded_explore(list(q_values), self.config.exploration_margin, self.rng)
        return int(np.argmax(q_values))

    def record(self, arm: str, reward: float, phase: str = "") -> None:
        """Add one outcome to ``arm``'s window; every ``decide_every`` outcomes, decide again."""
        self.rewards[arm].append(reward)
        self.outcomes += 1
        if self.outcomes % self.decide_every:
            return
        verdict = decide(_totals(self.rewards[MODEL]), _totals(self.rewards[HEURISTIC]),
                         self.leader, self.config)
        self.last_verdict = verdict.to_dict()
        if verdict.leader != self.leader:
            self.leader = verdict.leader
            self.switches.append({"outcomes": self.outcomes, "phase": phase, **verdict.to_dict()})

    def model_share(self) -> float:
        total = self.routed[MODEL] + self.routed[HEURISTIC]
        return self.routed[MODEL] / total if total else 0.0

    def describe(self) -> dict:
        return {"config": vars(self.config).copy() | {"window": self.window,
                                                       "decide_every": self.decide_every,
                                                       "heuristic": self.heuristic},
                "routes": self.leader, "switches": list(self.switches),
                "model_share": round(self.model_share(), 4), "routed": dict(self.routed),
                "last_verdict": self.last_verdict}


def _column(replicas: list[dict], key: str) -> list[float | None] | None:
    """One reported signal per replica (None where a replica lacks it), or None if none has it."""
    column = [r.get(key) for r in replicas]
    return None if all(v is None for v in column) else column


def _totals(rewards: deque[float]) -> ArmTotals:
    if not rewards:
        return ArmTotals()
    arr = np.fromiter(rewards, dtype=np.float64, count=len(rewards))
    return ArmTotals(len(arr), float(arr.sum()), float(np.dot(arr, arr)))
