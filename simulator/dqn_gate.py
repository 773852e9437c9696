"""The cold-start gate as the in-process DQN runs it: who routes each request (the heuristic or
the model), the reward windows each arm is judged on, and when control changed hands.

The verdict itself is the service's (``agent_app.rl.gate.decide``); this module only keeps the
evidence the way a long-running router must: a sliding window of recent outcomes per arm, so an
old verdict can be overturned when the model, or the cluster, changes.
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

GATE_DEFAULTS = {"window": 2000, "decide_every": 100}


class RoutingGate:
    """Assigns arms, collects each arm's rewards and re-decides every ``decide_every`` outcomes.

    ``window``: the last outcomes per arm a verdict weighs. ``switches`` lists every change of
    the routing arm with the outcome count at which it happened and the evidence.
    """

    def __init__(self, config: GateConfig | None = None, window: int = 2000,
                 decide_every: int = 100, seed: int = 0) -> None:
        if window < 1 or decide_every < 1:
            raise ValueError(f"window and decide_every must be >= 1, got {window}, {decide_every}")
        self.config = config or GateConfig()
        self.window, self.decide_every = window, decide_every
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
        """Build from a JSON-style dict: GateConfig fields plus ``window`` and ``decide_every``."""
        options = {**GATE_DEFAULTS, **(options or {})}
        options.pop("enabled", None)
        window, every = int(options.pop("window")), int(options.pop("decide_every"))
        return cls(GateConfig(**options), window, every, seed)

    def arm(self) -> str:
        """The arm that routes the next request."""
        arm = assign_arm(self.leader, self.config, self.rng)
        self.routed[arm] += 1
        return arm

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
                                                       "decide_every": self.decide_every},
                "routes": self.leader, "switches": list(self.switches),
                "model_share": round(self.model_share(), 4), "routed": dict(self.routed),
                "last_verdict": self.last_verdict}


def _totals(rewards: deque[float]) -> ArmTotals:
    if not rewards:
        return ArmTotals()
    arr = np.fromiter(rewards, dtype=np.float64, count=len(rewards))
    return ArmTotals(len(arr), float(arr.sum()), float(np.dot(arr, arr)))
