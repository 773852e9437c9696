"""The hot path: choose a replica with one NumPy forward pass of the published weights.

No database query, no lock, no import: everything comes from the process's serving snapshot.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
from django.conf import settings

from agent_app.decisions import encode_decision
from agent_app.metrics import count_decision
from agent_app.rl.state import build_state, normalize_state, time_of_day_now
from agent_app.serving import policy_cache

_rng = random.Random()


def least_loaded(replica_loads: Sequence[float]) -> int:
    """Index of the least-loaded replica, ties broken at random so no replica is favoured."""
    low = min(replica_loads)
    candidates = [i for i, load in enumerate(replica_loads) if load == low]
    return candidates[0] if len(candidates) == 1 else _rng.choice(candidates)


def softmax_confidence(q_values: np.ndarray, action: int) -> float:
    """Softmax probability of `action` over the Q-values: 1/N when they tie, near 1 when one stands out."""
    shifted = np.exp(q_values - q_values.max())
    return float(shifted[action] / shifted.sum())


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
        q_values = snap.network.q_values(normalize_state(state, n))
        if action is None:
            action = int(np.argmax(q_values))
        confidence = softmax_confidence(q_values, action)
    else:
        confidence = 1.0 / n  # no model: no preference to report
    policy_cache.selections[(action, policy)] += 1
    count_decision(action, policy)
    return {
        "replica_idx": action,
        "replica_name": settings.REPLICA_NAMES[action],
        "confidence": round(confidence, 6) if math.isfinite(confidence) else 0.0,
        "exploration": explore,
        "policy": policy,
        "fallback_reason": None if policy != "least_loaded" else fallback_reason,
        "model_version": snap.model_version,
        "decision_id": encode_decision(snap.model_version, action, state),
        "state": state,
    }
