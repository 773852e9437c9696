"""The cold-start gate as the in-process DQN runs it: who routes each request (the heuristic or
the model), the reward windows each arm is judged on, and when control changed hands.

The verdict itself is the service's (``agent_app.rl.gate.decide``, or ``decide_blocks`` with
``assignment: "block"``); this module only keeps the evidence the way a long-running router must:
a sliding window of recent outcomes (or block means) per arm, so an old verdict can be overturned
when the model, or the cluster, changes. Blocks are cut from simulated time. The heuristic arm routes
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
    Verdict,
    assign_arm,
    assign_block,
    block_index,
    bounded_explore,
    decide,
    decide_blocks,
    decide_paired,
    paired_block_differences,
)
from agent_app.rl.scorer import best_replicas, near_best_replicas

# The service's RL_MODEL_CANDIDATE_MARGIN default (None: the model may choose any replica).
CANDIDATE_MARGIN = 1.0
GATE_DEFAULTS = {"window": 2000, "decide_every": 100, "heuristic": "scorer", "block_window": 100,
                 "candidate_margin": CANDIDATE_MARGIN}
HEURISTICS = ("scorer", "least_loaded")


class RoutingGate:
    """Assigns arms, collects each arm's rewards and re-decides every ``decide_every`` outcomes,
    or, with ``config.assignment == "block"``, at every block boundary.

    ``window``: the last outcomes per arm a verdict weighs. ``switches`` lists every change of
    the routing arm with the outcome count at which it happened and the evidence. ``heuristic``:
    what the heuristic arm routes with, ``"scorer"`` (the service's) or ``"least_loaded"``.
    ``candidate_margin``: when the model routes, it chooses only among the replicas the scorer
    rates within this of its best, as the service does (None: any replica).

    Block assignment: a block of ``config.block_seconds`` simulated seconds is routed by one arm
    (``assign_block``, fixed when its first request arrives); an outcome counts for the block its
    request was routed in. A block enters the verdict once a whole block length has passed since
    it ended (most of its requests have finished by then; later ones still update its mean), and
    ``block_window`` is the last blocks per arm a verdict weighs. Block numbers run on across
    simulations (``start_run``), so training and evaluation never share a block.
    """

    def __init__(self, config: GateConfig | None = None, window: int = 2000,
                 decide_every: int = 100, seed: int = 0, heuristic: str = "scorer",
                 block_window: int = 100, candidate_margin: float | None = CANDIDATE_MARGIN) -> None:
        if window < 1 or decide_every < 1:
            raise ValueError(f"window and decide_every must be >= 1, got {window}, {decide_every}")
        if block_window < 2:
            raise ValueError(f"block_window must be >= 2, got {block_window}")
        if heuristic not in HEURISTICS:
            raise ValueError(f"heuristic must be one of {HEURISTICS}, got {heuristic!r}")
        self.config = config or GateConfig()
        self.window, self.decide_every, self.heuristic = window, decide_every, heuristic
        self.candidate_margin = candidate_margin
        self.leader = HEURISTIC
        self.rng = random.Random(seed)
        self.rewards: dict[str, deque[float]] = {MODEL: deque(maxlen=window),
                                                 HEURISTIC: deque(maxlen=window)}
        self.routed = {MODEL: 0, HEURISTIC: 0}
        self.outcomes = 0
        self.switches: list[dict] = []
        self.last_verdict: dict | None = None
        # Block assignment: the block now routed and its arm, the first block of this simulation,
        # each tracked block's [arm, outcomes, reward sum], the blocks not yet settled and the
        # settled ones per arm.
        self.block_window = block_window
        self.block: int | None = None
        self.block_arm = HEURISTIC
        self._block_offset = 0
        self._tallies: dict[int, list] = {}
        self._open: deque[int] = deque()
        self._settled: dict[str, deque[int]] = {MODEL: deque(), HEURISTIC: deque()}
        self.blocks = {MODEL: 0, HEURISTIC: 0}

    @classmethod
    def from_options(cls, options: dict | None, seed: int) -> RoutingGate:
        """Build from a JSON-style dict: GateConfig fields plus ``window``, ``decide_every``,
        ``heuristic`` and ``block_window``."""
        options = {**GATE_DEFAULTS, **(options or {})}
        options.pop("enabled", None)
        window, every = int(options.pop("window")), int(options.pop("decide_every"))
        heuristic, block_window = str(options.pop("heuristic")), int(options.pop("block_window"))
        margin = options.pop("candidate_margin")
        return cls(GateConfig(**options), window, every, seed, heuristic, block_window,
                   None if margin is None else float(margin))

    @property
    def by_block(self) -> bool:
        return self.config.assignment == "block"

    def start_run(self) -> None:
        """A new simulation, its clock back at 0: the previous one has drained, so its blocks are
        complete; this one's are numbered after them."""
        if self.block is None:
            return
        self._settle(self.block + 1)
        self._block_offset = self.block + 1
        self.block = None

    def arm(self, now: float = 0.0, phase: str = "") -> str:
        """The arm that routes the next request, which arrives at simulated time ``now``."""
        if self.by_block:
            block = self._block_offset + block_index(now, self.config.block_seconds)
            if block != self.block:
                self._enter_block(block, phase)
            arm = self.block_arm
        else:
            arm = assign_arm(self.leader, self.config, self.rng)
        self.routed[arm] += 1
        return arm

    def _enter_block(self, block: int, phase: str) -> None:
        """Settle the blocks that ended a block length ago, decide on every settled block, then
        fix the new block's arm under the (possibly new) leader."""
        self._settle(block - 1)
        if self.config.paired:
            differences = paired_block_differences(self._block_means(MODEL), self._block_means(HEURISTIC),
                                                   self.leader)
            verdict = decide_paired(differences, self.leader, self.config)
        else:
            verdict = decide_blocks(self._means(MODEL), self._means(HEURISTIC), self.leader, self.config)
        self._switch_if(verdict, phase, block)
        self.block = block
        self.block_arm = assign_block(self.leader, self.config, block)
        self.blocks[self.block_arm] += 1
        self._tallies[block] = [self.block_arm, 0, 0.0]
        self._open.append(block)

    def _settle(self, before: int) -> None:
        """Move the open blocks numbered below ``before`` into their arm's window. A block's tally
        is kept while it is in a window, so late outcomes still count."""
        while self._open and self._open[0] < before:
            block = self._open.popleft()
            settled = self._settled[self._tallies[block][0]]
            settled.append(block)
            if len(settled) > self.block_window:
                del self._tallies[settled.popleft()]

    def _means(self, arm: str) -> list[float]:
        """Mean reward of each settled block of ``arm`` that has outcomes."""
        return list(self._block_means(arm).values())

    def _block_means(self, arm: str) -> dict[int, float]:
        """Per settled block of ``arm`` with outcomes, its mean reward."""
        tallies = ((b, self._tallies[b]) for b in self._settled[arm])
        return {b: total / count for b, (_, count, total) in tallies if count}

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

    def candidates(self, request_fields: dict, prefix_match: list[float] | None) -> list[int] | None:
        """The replicas the model may choose from: those the scorer rates within
        ``candidate_margin`` of its best (None: every replica)."""
        if self.candidate_margin is None:
            return None
        replicas = request_fields.get("replicas") or [
            {"load": load} for load in request_fields["replica_loads"]]
        return near_best_replicas([r["load"] for r in replicas], self.candidate_margin,
                                  running=_column(replicas, "running"), waiting=_column(replicas, "waiting"),
                                  kv_cache_usage=_column(replicas, "kv_cache_usage"),
                                  prefix_match=prefix_match)

    def explore(self, q_values: Sequence[float], epsilon: float) -> int:
        """The model arm's pick: greedy, except with probability ``epsilon`` a random replica
        among those within ``exploration_margin`` of the best Q (``bounded_explore``)."""
        if epsilon > 0 and self.rng.random() < epsilon:
            return bounded_explore(list(q_values), self.config.exploration_margin, self.rng)
        return int(np.argmax(q_values))

    def record(self, arm: str, reward: float, phase: str = "", block: int | None = None) -> None:
        """Add one outcome to ``arm``'s window, or with block assignment to the tally of the
        ``block`` its request was routed in; every ``decide_every`` outcomes of randomised
        requests, decide again."""
        self.outcomes += 1
        if self.by_block:
            tally = self._tallies.get(block)
            if tally is not None:  # None: the block has left its arm's window
                tally[1] += 1
                tally[2] += reward
            return
        self.rewards[arm].append(reward)
        if self.outcomes % self.decide_every:
            return
        self._switch_if(decide(_totals(self.rewards[MODEL]), _totals(self.rewards[HEURISTIC]),
                               self.leader, self.config), phase)

    def _switch_if(self, verdict: Verdict, phase: str, block: int | None = None) -> None:
        self.last_verdict = verdict.to_dict()
        if verdict.leader != self.leader:
            self.leader = verdict.leader
            where = {"outcomes": self.outcomes} | ({"block": block} if block is not None else {})
            self.switches.append({**where, "phase": phase, **verdict.to_dict()})

    def model_share(self) -> float:
        total = self.routed[MODEL] + self.routed[HEURISTIC]
        return self.routed[MODEL] / total if total else 0.0

    def describe(self) -> dict:
        return {"config": vars(self.config).copy() | {"window": self.window,
                                                       "decide_every": self.decide_every,
                                                       "heuristic": self.heuristic,
                                                       "block_window": self.block_window},
                "routes": self.leader, "switches": list(self.switches),
                "model_share": round(self.model_share(), 4), "routed": dict(self.routed),
                "last_verdict": self.last_verdict,
                **({"blocks": dict(self.blocks)} if self.by_block else {})}


def _column(replicas: list[dict], key: str) -> list[float | None] | None:
    """One reported signal per replica (None where a replica lacks it), or None if none has it."""
    column = [r.get(key) for r in replicas]
    return None if all(v is None for v in column) else column


def _totals(rewards: deque[float]) -> ArmTotals:
    if not rewards:
        return ArmTotals()
    arr = np.fromiter(rewards, dtype=np.float64, count=len(rewards))
    return ArmTotals(len(arr), float(arr.sum()), float(np.dot(arr, arr)))
