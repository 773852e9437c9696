"""The service's DQN as an in-process policy: epsilon-greedy on the normalised state,
an experience per completion, and a few gradient steps every K experiences.

Uses the plain-Python RL core (``agent_app.rl``) exactly as the service does; the knobs
under tuning are passed as overrides, never edited in the core.
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace
from typing import Any

import numpy as np

from agent_app.rl.agent import DQNAgent
from agent_app.rl.config import per_replica_config, routing_config
from agent_app.rl.replica_features import (
    ReplicaStats,
    encode_context,
    encode_observation,
    replicas_from_body,
    with_loads,
)
from agent_app.rl.reward import RewardConfig, compute_reward
from agent_app.rl.state import StateScales, next_state_after, normalize_state
from simulator.dqn_gate import HEURISTIC, RoutingGate
from simulator.service_prefix import SERVICE_BLOCKS, SERVICE_HASHES, ServicePrefixIndex

MODES = ("train", "online", "eval")
# Measured on the simulator (docs in the report): a 256-sample batch averages out the
# heavy-tailed latency rewards; everything else is the core's default. "core" uses none.
PRESETS: dict[str, dict] = {"recommended": {"batch_size": 256}, "core": {}}


class DQNPolicy:
    """A learning router with the ``Policy`` interface plus ``set_mode`` for the runner.

    Modes: "train" explores (epsilon-greedy) and learns; "online" acts as a deployed service
    does (exploration at the epsilon it has reached, learning continues); "eval" is greedy
    and frozen. ``train_every`` experiences trigger ``steps_per_train`` gradient steps (the
    service's beat period and ``iterations``, scaled to the simulated request rate): the
    default 8 steps every 16 experiences is 0.5 gradient steps per routed request.

    ``gate`` (the per-replica network's default; a dict sets its options, ``dqn_gate``): a
    heuristic routes until the model's rewards are significantly better on the requests it was
    given, as the service's cold-start gate does; every decision, either arm's, trains it. The
    heuristic is the service's scorer (queue, KV-cache use, prefix match: ``agent_app.rl.scorer``)
    or, with ``{"heuristic": "least_loaded"}``, the former least-loaded fallback. With
    ``{"assignment": "block", "block_seconds": 30}`` one arm routes each 30 simulated seconds
    (switchback blocks, judged on block means) instead of randomised requests.

    ``prefix_match`` (the per-replica network's default; a dict sets ``blocks_per_replica``,
    ``max_hashes`` and ``scale``): each replica's share of the request's leading prefix blocks
    that the service's index says it holds, a per-replica feature as the service computes it;
    absent when the request has no ``prefix_hashes``.
    """

    name = "dqn"

    def __init__(self, train_requests: int = 10_000, seed: int = 0,
                 config_overrides: dict | None = None, reward_overrides: dict | None = None,
                 state_overrides: dict | None = None, train_every: int = 16,
                 steps_per_train: int = 8, keep_learning: bool | None = None,
                 preset: str = "recommended", gate: bool | dict | None = None,
                 prefix_match: bool | dict | None = None, curve_every: int = 250,
                 curve_window: int = 1000) -> None:
        self.train_requests = train_requests
        self.seed = seed
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
        self.config_overrides = {**PRESETS[preset], **(config_overrides or {})}
        # "network": "per_replica" picks the set network (any cluster size up to max_replicas).
        self.network = self.config_overrides.pop("network", "mlp")
        self.max_replicas = int(self.config_overrides.pop("max_replicas", 32))
        if self.network not in ("mlp", "per_replica"):
            raise ValueError(f"network must be 'mlp' or 'per_replica', got {self.network!r}")
        self.replica_stats = ReplicaStats()
        # id(state) -> (obs, names, (arm that routed it, the gate's block then) or None ungated)
        self._pending: dict[int, tuple[np.ndarray, list[str], tuple[str, int | None] | None]] = {}
        if gate is None:
            gate = self.network == "per_replica"  # the mlp's published results predate the gate
        options = gate if isinstance(gate, dict) else {"enabled": bool(gate)}
        self.gate: RoutingGate | None = None
        if options.get("enabled", True):
            if self.network != "per_replica":
                raise ValueError("the gate needs the per-replica network (network='per_replica')")
            self.gate = RoutingGate.from_options(options, seed)
        self.prefix_index, self.prefix_scale = self._prefix_options(prefix_match)
        self.reward = RewardConfig(**(reward_overrides or {}))
        self.scales = StateScales(**(state_overrides or {}))
        self.train_every, self.steps_per_train = train_every, steps_per_train
        self.keep_learning = keep_learning  # None: the runner decides (online if nonstationary)
        self.agent: DQNAgent | None = None
        self.num_replicas = 0
        self.mode = "train"
        self.seen = 0  # experiences observed, all phases
        self.trained_on = 0  # experiences stored for learning
        self.losses: list[float] = []
        self._curve_every, self._recent = curve_every, deque(maxlen=curve_window)
        self.curve: dict = {"requests": [], "latency_ms": [], "reward": [], "failure_rate": [],
                            "epsilon": [], "train_requests": train_requests, "gate_switches": []}

    # --- the Policy interface -----------------------------------------------------------

    def start(self, context: Any) -> None:
        """Bind to a simulation; the agent itself survives from the training run to eval."""
        self.context = context
        if self.prefix_index is not None:  # a new simulation's replicas start with empty caches
            self.prefix_index.clear()
        if self.gate is not None:  # a new simulation's clock starts again at 0
            self.gate.start_run()
        if self.agent is None:
            self.num_replicas = context.num_replicas
            overrides = {"seed": self.seed, "device": "cpu", **self.config_overrides}
            if self.network == "per_replica":
                self.agent = DQNAgent(per_replica_config(self.max_replicas, **overrides))
            else:
                self.agent = DQNAgent(routing_config(self.num_replicas, **overrides))
        elif self.network == "per_replica":
            if getattr(context, "max_replicas", context.num_replicas) > self.max_replicas:
                raise ValueError(f"the per-replica network sees at most {self.max_replicas} replicas")
            self.num_replicas = context.num_replicas
        elif context.num_replicas != self.num_replicas:
            raise ValueError("a trained DQNPolicy cannot change its number of replicas")

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode != "train" and self.keep_learning is not None:
            mode = "online" if self.keep_learning else "eval"
        self.mode = mode

    def choose(self, request_fields: dict, rng: np.random.Generator) -> int:
        raw = self.context.raw_state()
        if self.network == "mlp":
            return self.agent.act(self._normalise(raw), explore=self.mode != "eval").action
        hashes = (request_fields.get("request") or {}).get("prefix_hashes")
        obs, names, shares = self._observation(request_fields, raw, hashes)
        arm, gated = None, None
        if self.gate is not None:
            switches = len(self.gate.switches)
            now = self.context.now if self.gate.by_block else 0.0  # only blocks read the clock
            arm = self.gate.arm(now, self.mode)
            gated = (arm, self.gate.block)
            self._note_switches(switches)
        # The engine hands the same state list back in the experience: it keys the decision.
        self._pending[id(raw)] = (obs, names, gated)
        if arm is None:
            action = self.agent.act(obs, explore=self.mode != "eval").action
        elif arm == HEURISTIC:  # the service's fallback, from what the service knows
            action = self.gate.heuristic_choice(request_fields, shares, rng)
        else:
            q = np.asarray(self.agent.q_values(obs)[: len(names)], dtype=float)
            allowed = self.gate.candidates(request_fields, shares)
            if allowed is not None:  # the model chooses among the scorer's near-best only
                q[np.setdiff1d(np.arange(len(names)), allowed)] = -np.inf
            action = self.gate.explore(q, 0.0 if self.mode == "eval" else float(self.agent.epsilon))
        if self.prefix_index is not None:  # as the service does after every decision, any arm's
            self.prefix_index.remember(names[action], hashes)
        return action

    def observe(self, experience: dict) -> None:
        """Turn a ``record_experience`` body into a transition, as the service does."""
        reward = compute_reward(experience["latency_ms"], experience["success"],
                                experience["replica_loads"], self.reward,
                                output_tokens=experience.get("output_tokens"),
                                ttft_ms=experience.get("ttft_ms"))
        self.seen += 1
        self._track(experience, reward)
        if self.network == "per_replica":
            self._observe_per_replica(experience, reward)
            return
        if self.mode == "eval":
            return
        state = experience["state"]
        next_state = next_state_after(state, experience["replica_loads"])
        self.agent.observe(self._normalise(state), experience["action"], reward,
                           self._normalise(next_state), False)
        self._learn_tick()

    def _learn_tick(self) -> None:
        self.trained_on += 1
        if self.trained_on % self.train_every == 0:
            for _ in range(self.steps_per_train):
                result = self.agent.train_step()
                if result is not None:
                    self.losses.append(result.loss)

    # --- per-replica network ------------------------------------------------------------

    def _prefix_options(self, option: bool | dict | None) -> tuple[ServicePrefixIndex | None, float]:
        options = option if isinstance(option, dict) else {
            "enabled": self.network == "per_replica" if option is None else bool(option)}
        if not options.get("enabled", True):
            return None, 1.0
        if self.network != "per_replica":
            raise ValueError("prefix_match needs the per-replica network (network='per_replica')")
        unknown = set(options) - {"enabled", "blocks_per_replica", "max_hashes", "scale"}
        if unknown:
            raise ValueError(f"unknown prefix_match options: {', '.join(sorted(unknown))}")
        index = ServicePrefixIndex(int(options.get("blocks_per_replica", SERVICE_BLOCKS)),
                                   options.get("max_hashes", SERVICE_HASHES))
        return index, float(options.get("scale", 1.0))

    def _observation(self, body: dict, raw: list[float], hashes: list | None = None
                     ) -> tuple[np.ndarray, list[str], list[float] | None]:
        """The network's input, the replicas' names and their prefix match (None without
        hashes or without the index): the match is also what the gate's heuristic reads."""
        names, features = replicas_from_body(body, self.replica_stats)
        shares = None if self.prefix_index is None else self.prefix_index.shares(names, hashes)
        if shares is not None:
            features = [replace(f, prefix_match=s * self.prefix_scale)
                        for f, s in zip(features, shares, strict=True)]
        n = len(features)
        extras = normalize_state(raw, n, self.scales)[n:].tolist()
        request = body.get("request") or {}
        context = encode_context(extras, request.get("prompt_tokens"), request.get("max_tokens"))
        return encode_observation(features, context, self.max_replicas), names, shares

    def _observe_per_replica(self, experience: dict, reward: float) -> None:
        pending = self._pending.pop(id(experience["state"]), None)
        if pending is None:
            return  # not decided by this policy (e.g. routed before it started)
        obs, names, gated = pending
        if gated is not None:
            (arm, block), switches = gated, len(self.gate.switches)
            self.gate.record(arm, reward, self.mode, block)
            self._note_switches(switches)
        # Statistics keep updating in every mode: they are features, as the service would learn them.
        self.replica_stats.observe(names[experience["action"]], experience["success"],
                                   experience["latency_ms"], experience.get("ttft_ms"),
                                   experience.get("prompt_tokens", 0), experience.get("output_tokens", 0))
        if self.mode == "eval":
            return
        next_obs = with_loads(obs, experience["replica_loads"], self.max_replicas)
        self.agent.observe(obs, experience["action"], reward, next_obs, False)
        self._learn_tick()

    # --- helpers ------------------------------------------------------------------------

    def _note_switches(self, before: int) -> None:
        """Put the gate's switches since it had ``before`` of them on the learning curve."""
        for switch in self.gate.switches[before:]:
            self.curve["gate_switches"].append({"requests": self.seen, **switch})

    def _normalise(self, raw: list[float]) -> np.ndarray:
        return normalize_state(raw, self.num_replicas, self.scales)

    def _track(self, experience: dict, reward: float) -> None:
        ok = experience["success"]
        self._recent.append((experience["latency_ms"] if ok else np.nan, reward, not ok))
        if self.seen % self._curve_every == 0:
            add_curve_point(self.curve, self._recent, self.seen, float(self.agent.epsilon))

    def describe(self) -> dict:
        """The effective configuration (for the JSON report)."""
        return {
            "dqn_config": self.agent.config.to_dict() if self.agent else self.config_overrides,
            "network": self.network,
            "reward": self.reward.to_dict(),
            "state_scales": vars(self.scales).copy(),
            "train_every": self.train_every,
            "steps_per_train": self.steps_per_train,
            "train_requests": self.train_requests,
            **({"gate": self.gate.describe()} if self.gate is not None else {}),
            **({"prefix_match": {"blocks_per_replica": self.prefix_index.blocks_per_replica,
                                 "max_hashes": self.prefix_index.max_hashes,
                                 "scale": self.prefix_scale}}
               if self.prefix_index is not None else {}),
        }


def add_curve_point(curve: dict, recent, requests_seen: int, epsilon: float) -> None:
    """One learning-curve point from the recent (latency or NaN if failed, reward, failed) window."""
    arr = np.array(recent, dtype=float)
    latency = arr[:, 0][~np.isnan(arr[:, 0])]
    curve["requests"].append(requests_seen)
    curve["latency_ms"].append(float(latency.mean()) if latency.size else float("nan"))
    curve["reward"].append(float(arr[:, 1].mean()))
    curve["failure_rate"].append(float(arr[:, 2].mean()))
    curve["epsilon"].append(epsilon)
