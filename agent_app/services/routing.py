"""The hot path: choose a replica with one NumPy forward pass of the published weights.

No database query, no lock, no import: everything comes from the process's serving snapshot.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from django.conf import settings

from agent_app.decisions import encode_decision
from agent_app.rl.policy import least_loaded, softmax_confidence
from agent_app.rl.state import build_state, normalize_one, time_of_day_now
from agent_app.serving import policy_cache

_rng = random.Random()


def select_replica(
    *,
    replica_loads: Sequence[float],
    queue_depth: float,
    recent_latency_ms: float,
    current_rps: float,
    success_rate: float,
) -> dict[str, Any]:
    policy_cache.ensure_started()
    snap = policy_cache.snapshot
    n = settings.NUM_REPLICAS
    state = build_state(
        replica_loads, queue_depth, recent_latency_ms, current_rps, success_rate,
        memory=snap.memory, cpu=snap.cpu, time_of_day=time_of_day_now(),
    )
    explore = snap.exploration and _rng.random() < snap.epsilon
    fallback_reason = snap.fallback_reason
    if explore:
        action, policy = _rng.randrange(n), "explore"
    elif fallback_reason is None and snap.network is not None:
        action, policy = None, "dqn"
    else:
        action, policy = least_loaded(replica_loads), "least_loaded"
    if snap.network is not None:
        q_values = snap.network.q_values(normalize_one(state, n)).tolist()  # Python floats from here
        if action is None:
            action = q_values.index(max(q_values))  # the first best, as np.argmax
        confidence = softmax_confidence(q_values, action)
    else:
        confidence = 1.0 / n  # no model: no preference to report
    policy_cache.selections[(action, policy)] += 1  # /stats and /metrics counters, flushed off this path
    return {
        "replica_idx": action,
        "replica_name": settings.REPLICA_NAMES[action],
        "confidence": round(confidence, 6),
        "exploration": explore,
        "policy": policy,
        "fallback_reason": None if policy != "least_loaded" else fallback_reason,
        "model_version": snap.model_version,
        "decision_id": encode_decision(snap.model_version, action, state),
        "state": state,
    }
