"""Recording request outcomes: rewards from the RL core, then one atomic append to the replay store."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.conf import settings

from agent_app.metrics import count_recorded
from agent_app.pools import DEFAULT_POOL
from agent_app.replay import ExperienceRecord, get_replay_store
from agent_app.replica_outcomes import Outcome
from agent_app.rl.replica_features import (
    LEARNED_REPLICA,
    compact_with_loads,
    encode_context,
    encode_rows,
    is_compact,
)
from agent_app.rl.reward import RewardConfig, compute_rewards
from agent_app.rl.state import next_state_after, normalize_state
from agent_app.serving import ServingSnapshot, policy_cache


@dataclass(frozen=True)
class RecordOutcome:
    stored: int
    duplicates: int
    rewards: list[float]
    buffer_size: int  # experiences in the store after this append


def build_records(items: Sequence[dict[str, Any]], snap: ServingSnapshot) -> list[ExperienceRecord]:
    """Validated experiences (state and action resolved) -> what the store keeps.

    The state kept is the configured network's input: the raw N + 7 state for the fixed network, a
    compact per-replica observation for the per-replica one (a state-and-action report is turned
    into one here, with what the service knows of each replica now). next_state is the client's when
    sent; otherwise the same state with the loads the client reported after the request.
    """
    rewards = _rewards(items, snap.reward_config)
    raw = [row for row, item in enumerate(items) if not is_compact(item["state"])]
    converted = _as_observations(items, raw, snap) if settings.RL_NETWORK == "per_replica" else {}
    records = []
    for row, (item, reward) in enumerate(zip(items, rewards, strict=True)):
        state, loads = item["state"], item["replica_loads"]
        if row in converted:
            state, next_state = converted[row]
        elif is_compact(state):
            next_state = compact_with_loads(state, loads)
        else:
            next_state = item.get("next_state") or next_state_after(state, loads)
        records.append(ExperienceRecord(
            state=state, action=item["action"], reward=reward, next_state=next_state,
            latency_ms=item["latency_ms"], success=item["success"], experience_id=item.get("experience_id"),
            arm=item.get("arm"),
        ))
    return records


def _rewards(items: Sequence[dict[str, Any]], config: RewardConfig) -> list[float]:
    """Rewards of the whole batch in one NumPy pass per cluster size."""
    rewards = [0.0] * len(items)
    by_size: dict[int, list[int]] = {}
    for row, item in enumerate(items):
        by_size.setdefault(len(item["replica_loads"]), []).append(row)
    for rows in by_size.values():
        tokens = [items[row].get("output_tokens") for row in rows]
        ttft = [items[row].get("ttft_ms") for row in rows]
        values = compute_rewards(
            np.array([items[row]["latency_ms"] for row in rows], dtype=np.float64),
            np.array([items[row]["success"] for row in rows], dtype=bool),
            np.array([items[row]["replica_loads"] for row in rows], dtype=np.float64), config,
            output_tokens=None if None in tokens else tokens, ttft_ms=ttft,
        ).tolist()
        for row, value in zip(rows, values, strict=True):
            rewards[row] = value
    return rewards


def _as_observations(items: Sequence[dict[str, Any]], rows: list[int],
                     snap: ServingSnapshot) -> dict[int, tuple[list, list]]:
    """Raw N + 7 states over REPLICA_NAMES (reports in the original form) as the per-replica
    network's observations, (state, next state) by row, for the whole batch at once: every replica
    row is what the service knows of that replica now, with the report's load."""
    if not rows:
        return {}
    names = settings.REPLICA_NAMES
    n = len(names)
    learned = [snap.replica_stats.get(name, {}) for name in names]
    template = encode_rows([0.0] * n, {key: [s.get(key) for s in learned] for key in LEARNED_REPLICA})

    def observations(states: np.ndarray) -> list[list[float]]:
        replica_rows = np.repeat(template[None], len(states), axis=0)
        replica_rows[:, :, 0] = encode_rows(states[:, :n].ravel(), {})[:, 0].reshape(len(states), n)
        contexts = [encode_context(extras) for extras in normalize_state(states, n)[:, n:].tolist()]
        return np.concatenate([np.full((len(states), 1), -float(n)), replica_rows.reshape(len(states), -1),
                               np.asarray(contexts)], axis=1).tolist()

    states = np.array([items[row]["state"] for row in rows], dtype=np.float32)
    nexts = states.copy()
    nexts[:, :n] = [items[row]["replica_loads"] for row in rows]
    for i, row in enumerate(rows):
        if items[row].get("next_state") is not None:
            nexts[i] = items[row]["next_state"]
    return dict(zip(rows, zip(observations(states), observations(nexts), strict=True), strict=True))


def _outcomes(items: Sequence[dict[str, Any]], rewards: Sequence[float], pool: str) -> list[Outcome]:
    return [Outcome(replica=item["replica"], arm=item.get("routed_by", ""), success=item["success"],
                    latency_ms=item["latency_ms"], reward=reward, ttft_ms=item.get("ttft_ms"),
                    prompt_tokens=item.get("prompt_tokens"), output_tokens=item.get("output_tokens"),
                    pool=pool, decided_at=item.get("decided_at"))
            for item, reward in zip(items, rewards, strict=True)]


def record_experiences(*, items: Sequence[dict[str, Any]], pool: str = DEFAULT_POOL) -> RecordOutcome:
    """Store experiences all together in the pool's replay store; raises StoreUnavailable when the
    store does not answer, PoolNotFound (before storing anything) when the pool does not exist."""
    policy_cache.ensure_started()
    records = build_records(items, policy_cache.snapshot_for(pool))
    stored, size = get_replay_store(pool).add_and_size(records)
    count_recorded(stored)
    # What the model sees of each replica and the gate's evidence (shared at the next refresh).
    policy_cache.outcomes.add(_outcomes(items, [r.reward for r in records], pool))
    return RecordOutcome(stored=stored, duplicates=len(records) - stored, rewards=[r.reward for r in records],
                         buffer_size=size)
