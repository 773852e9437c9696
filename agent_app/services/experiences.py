"""Recording request outcomes: rewards from the RL core, then one atomic append to the replay store."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.conf import settings

from agent_app.metrics import count_recorded
from agent_app.replay import ExperienceRecord, get_replay_store
from agent_app.rl.reward import compute_rewards
from agent_app.serving import policy_cache


@dataclass(frozen=True)
class RecordOutcome:
    stored: int
    duplicates: int
    rewards: list[float]
    buffer_size: int  # experiences in the store after this append


def build_records(items: Sequence[dict[str, Any]]) -> list[ExperienceRecord]:
    """Validated experiences (state and action resolved) -> what the store keeps, vectorised.

    next_state is the client's when sent; otherwise the decision's state with the loads the
    client reported after the request (the RL core's `next_state_after`, for the whole batch).
    """
    n = settings.NUM_REPLICAS
    states = np.array([item["state"] for item in items], dtype=np.float64)
    loads_after = np.array([item["replica_loads"] for item in items], dtype=np.float64)
    latency = np.array([item["latency_ms"] for item in items], dtype=np.float64)
    success = np.array([item["success"] for item in items], dtype=bool)
    rewards = compute_rewards(latency, success, loads_after, policy_cache.snapshot.reward_config).tolist()
    next_states = states.copy()
    next_states[:, :n] = loads_after
    for row, item in enumerate(items):
        if item.get("next_state") is not None:
            next_states[row] = item["next_state"]
    return [
        ExperienceRecord(
            state=item["state"], action=item["action"], reward=reward, next_state=next_state,
            latency_ms=item["latency_ms"], success=item["success"], experience_id=item.get("experience_id"),
            arm=item.get("arm"),
        )
        for item, reward, next_state in zip(items, rewards, next_states.tolist(), strict=True)
    ]


def record_experiences(*, items: Sequence[dict[str, Any]]) -> RecordOutcome:
    """Store experiences all together; raises StoreUnavailable when the store does not answer."""
    policy_cache.ensure_started()
    records = build_records(items)
    stored, size = get_replay_store().add_and_size(records)
    count_recorded(stored)
    return RecordOutcome(stored=stored, duplicates=len(records) - stored, rewards=[r.reward for r in records],
                         buffer_size=size)
