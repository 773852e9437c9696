"""Recording request outcomes: reward from the RL core, then one atomic append to the replay store."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from agent_app.replay import ExperienceRecord, get_replay_store
from agent_app.rl.reward import compute_reward
from agent_app.rl.state import next_state_after
from agent_app.serving import policy_cache


@dataclass(frozen=True)
class RecordOutcome:
    stored: int
    duplicates: int
    rewards: list[float]


def build_record(item: dict[str, Any]) -> ExperienceRecord:
    """A validated experience (state and action resolved) -> what the store keeps.

    next_state is the client's when sent; otherwise the decision's state with the loads the
    client reported after the request (`next_state_after`).
    """
    reward = compute_reward(
        item["latency_ms"], item["success"], item["replica_loads"], policy_cache.snapshot.reward_config
    )
    next_state = item.get("next_state") or next_state_after(item["state"], item["replica_loads"])
    return ExperienceRecord(
        state=list(item["state"]), action=item["action"], reward=reward, next_state=list(next_state),
        latency_ms=item["latency_ms"], success=item["success"], experience_id=item.get("experience_id"),
    )


def record_experiences(*, items: Iterable[dict[str, Any]]) -> RecordOutcome:
    """Store experiences all together; raises StoreUnavailable when the store does not answer."""
    policy_cache.ensure_started()
    records = [build_record(item) for item in items]
    stored = get_replay_store().add(records)
    return RecordOutcome(stored=stored, duplicates=len(records) - stored, rewards=[r.reward for r in records])
