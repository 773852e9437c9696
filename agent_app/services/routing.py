"""The hot path: choose a replica with one NumPy forward pass of the published weights.

No database query, no lock, no import: everything comes from the process's serving snapshot.
A cluster arrives as the original body (positional `replica_loads`, NUM_REPLICAS replicas named by
REPLICA_NAMES) or as named `replicas` with optional signals and request features.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from django.conf import settings

from agent_app.decisions import encode_decision
from agent_app.pools import DEFAULT_POOL
from agent_app.prefix_index import get_prefix_index, prefix_names
from agent_app.rl.gate import HEURISTIC, MODEL, assign_arm, assign_block, block_index, bounded_explore
from agent_app.rl.policy import least_loaded, softmax_confidence
from agent_app.rl.replica_features import (
    compact_observation,
    encode_context,
    encode_rows,
)
from agent_app.rl.scorer import heuristic_choice, near_best_replicas
from agent_app.rl.state import build_state, normalize_one, time_of_day_now
from agent_app.serving import ServingSnapshot, policy_cache

_rng = random.Random()
clock = time.time  # the decision's time and so its gate block (a test may stop it)
REPORTED_SIGNALS = ("running", "waiting", "kv_cache_usage")
HEURISTIC_POLICIES = ("least_loaded", "scorer")  # the heuristic decided (the response says why)


def select_replica(
    *,
    queue_depth: float,
    recent_latency_ms: float,
    current_rps: float,
    success_rate: float,
    replica_loads: Sequence[float] | None = None,
    replicas: Sequence[dict] | None = None,
    request: dict | None = None,
    pool: str = DEFAULT_POOL,
) -> dict[str, Any]:
    policy_cache.ensure_started()
    snap = policy_cache.snapshot_for(pool)  # PoolNotFound for a pool that does not exist
    named = replicas is not None
    names = [r["name"] for r in replicas] if named else settings.REPLICA_NAMES
    loads = [r["load"] for r in replicas] if named else replica_loads
    n, request = len(loads), request or {}
    state = build_state(
        loads, queue_depth, recent_latency_ms, current_rps, success_rate,
        memory=snap.memory, cpu=snap.cpu, time_of_day=time_of_day_now(),
    )
    # What the replay learns from: the configured network's view of this decision.
    hashes, matches = request.get("prefix_hashes"), None
    if settings.RL_NETWORK == "mlp":
        observation, rows, context = state, None, None
    else:
        if hashes:  # how much of this request's prefix each replica likely holds: one round trip
            matches = get_prefix_index().match(prefix_names(pool, names), hashes)
        rows, context = _observation(state, names, replicas, request, snap, matches)
        observation = compact_observation(rows, context)
    reason = snap.fallback_reason or _unservable(snap, n)
    q_values = None
    if reason is None and snap.network is not None:  # its kind is RL_NETWORK's (serving.py)
        net = snap.network
        q = net.q_values(normalize_one(state, n)) if rows is None else net.score(rows, context)
        q_values = q.tolist()  # Python floats from here

    # One reading for the arm and the decision id: a decision at a block boundary is filed in the
    # block that chose its arm.
    now = clock()
    arm = HEURISTIC
    if q_values is not None:
        arm = _gate_arm(snap, now) if settings.RL_ROUTING_GATE else MODEL
    explore = arm == MODEL or not settings.RL_ROUTING_GATE  # without the gate, as the specification has it
    explore = explore and snap.exploration and _rng.random() < snap.epsilon
    choices = q_values
    if arm == MODEL and settings.RL_ROUTING_GATE:  # the model refines the heuristic's near-best
        choices = _near_best_only(q_values, loads, replicas, request, matches)
    if explore:
        near = q_values is not None and settings.RL_ROUTING_GATE
        action = bounded_explore(choices, snap.gate.exploration_margin, _rng) if near else _rng.randrange(n)
        policy = "explore"
    elif arm == MODEL:
        action, policy = choices.index(max(choices)), "dqn"  # the first best, as np.argmax
    else:
        action, policy = _heuristic(loads, replicas, request, matches)
        reason = reason or (snap.gate_reason if snap.router == HEURISTIC else snap.holdout_reason)
    confidence = softmax_confidence(q_values, action) if q_values is not None else 1.0 / n
    # /stats and /metrics counters, flushed off this path.
    policy_cache.selections[(pool, names[action] if named else action, policy)] += 1
    if hashes and rows is not None:
        # Buffered; the serving refresh writes it.
        get_prefix_index().remember(prefix_names(pool, [names[action]])[0], hashes)
    return {
        "replica_idx": action,
        "replica_name": names[action],
        "confidence": round(confidence, 6),
        "exploration": explore,
        "policy": policy,
        "fallback_reason": reason if policy in HEURISTIC_POLICIES else None,
        "model_version": snap.model_version,
        "decision_id": encode_decision(snap.model_version, action, observation,
                                       arm=arm if settings.RL_ROUTING_GATE else "", replica=names[action],
                                       prompt_tokens=request.get("prompt_tokens"), decided_at=now),
        "state": state,
        "prefix_match": _prefix_match(hashes, matches, action) if rows is not None else None,
    }


def _gate_arm(snap: ServingSnapshot, now: float) -> str:
    """The arm that routes a request decided at ``now``: its block's arm under block assignment
    (the same in every web worker), else a random draw at the gate's shares."""
    gate = snap.gate
    if gate.assignment == "block":
        return assign_block(snap.router, gate, block_index(now, gate.block_seconds))
    return assign_arm(snap.router, gate, _rng)


def _heuristic(loads: Sequence[float], replicas: Sequence[dict] | None, request: dict,
               matches: list[int] | None) -> tuple[int, str]:
    """The heuristic's choice and its name: the scorer (agent_app/rl/scorer.py) when the gateway
    reported queues or KV use or the request's prefix was matched, else least-loaded (which the
    scorer is, on loads alone)."""
    signals = _scorer_signals(replicas, request, matches)
    if settings.RL_HEURISTIC == "least_loaded" or not signals:
        return least_loaded(loads), "least_loaded"
    return heuristic_choice(loads, **signals, rng=_rng), "scorer"


def _near_best_only(q_values: list[float], loads: Sequence[float], replicas: Sequence[dict] | None,
                    request: dict, matches: list[int] | None) -> list[float]:
    """The Q-values with -inf for every replica the scorer rates more than RL_MODEL_CANDIDATE_MARGIN
    below its best: the model chooses among the heuristic's near-best (docs/design.md, decision 14)."""
    allowed = set(near_best_replicas(loads, settings.RL_MODEL_CANDIDATE_MARGIN,
                                     **_scorer_signals(replicas, request, matches)))
    return [q if i in allowed else -math.inf for i, q in enumerate(q_values)]


def _scorer_signals(replicas: Sequence[dict] | None, request: dict,
                    matches: list[int] | None) -> dict[str, list]:
    """What the scorer reads besides the loads: the reported signals and the prefix match shares."""
    signals = {key: [r.get(key) for r in replicas] for key in REPORTED_SIGNALS
               if any(key in r for r in replicas)} if replicas is not None else {}
    if matches is not None:
        signals["prefix_match"] = [m / len(request["prefix_hashes"]) for m in matches]
    return signals


def _prefix_match(hashes: list[str] | None, matches: list[int] | None, action: int) -> dict | None:
    """What the chosen replica was expected to hold of the request's prefix, or why it is unknown."""
    if not hashes:
        return None
    if matches is None:
        return {"blocks": None, "of": len(hashes), "reason": "the prefix index did not answer; "
                                                              "routed without it"}
    return {"blocks": matches[action], "of": len(hashes)}


def _unservable(snap: ServingSnapshot, n: int) -> str | None:
    """Why the published network cannot score a cluster of n replicas, if it cannot."""
    if snap.network is None:
        return None
    if snap.network_kind == "mlp" and n != snap.network.n_actions:
        return f"model v{snap.model_version} scores {snap.network.n_actions} replicas; this cluster has {n}"
    if snap.network_kind == "per_replica" and n > settings.MAX_REPLICAS:
        return f"the cluster has {n} replicas, more than MAX_REPLICAS={settings.MAX_REPLICAS}"
    return None


def _observation(state: list[float], names: Sequence[str], replicas: Sequence[dict] | None,
                 request: dict, snap: ServingSnapshot,
                 matches: list[int] | None) -> tuple[np.ndarray, list[float]]:
    """The per-replica network's input: a row per replica (reported signals and learned statistics)
    and the context (the specification's cluster features and the request's token counts)."""
    n = len(names)
    signals: dict[str, list[float | None]] = {}
    if replicas is not None:
        for key in REPORTED_SIGNALS:
            if any(key in r for r in replicas):
                signals[key] = [r.get(key) for r in replicas]
    if matches is not None:
        signals["prefix_match"] = [m / len(request["prefix_hashes"]) for m in matches]
    # What the service learned of each replica: tabled once per refresh, looked up here by name.
    rows = encode_rows(state[:n], signals, names, snap.replica_stats)
    # Only the cluster features (after one load, to keep the layout): their scales do not depend on n.
    extras = normalize_one(state[n - 1:], 1)[1:]
    context = encode_context(extras, request.get("prompt_tokens"), request.get("max_tokens"))
    return rows, context

