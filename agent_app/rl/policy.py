"""What a routing decision needs beside the network: the least-loaded fallback and the softmax
confidence of the chosen replica. Shared by the service's hot path and the gateway client."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import numpy as np

_rng = random.Random()


def least_loaded(replica_loads: Sequence[float], rng: random.Random | None = None) -> int:
    """Index of the least-loaded replica, ties broken at random so no replica is favoured."""
    low = min(replica_loads)
    candidates = [i for i, load in enumerate(replica_loads) if load == low]
    return candidates[0] if len(candidates) == 1 else (rng or _rng).choice(candidates)


def softmax_confidence(q_values: np.ndarray | Sequence[float], action: int) -> float:
    """Softmax probability of `action` over the Q-values (max-shifted for stability): 1/N when
    they tie, near 1 when one stands out, 0.0 when they are not finite."""
    # Plain floats: for the handful of replicas a decision weighs, math beats NumPy's per-call cost.
    values = q_values.tolist() if isinstance(q_values, np.ndarray) else list(q_values)
    best = max(values)
    try:
        weights = [math.exp(value - best) for value in values]
        confidence = weights[action] / sum(weights)
    except (ValueError, ZeroDivisionError):  # NaN or infinite Q-values
        return 0.0
    return confidence if math.isfinite(confidence) else 0.0
