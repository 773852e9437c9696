"""The replay-store interface: Redis and the database implement it and pass the same tests."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from agent_app.pools import DEFAULT_POOL


class StoreUnavailable(Exception):
    """The store's backend (Redis or the database) does not answer."""


class ExperienceRecord(NamedTuple):
    """A validated experience, reward already computed; what the stores persist.

    A NamedTuple rather than a frozen dataclass: as immutable, and a batch of 1000 is built in half
    the time (a frozen dataclass sets each field through object.__setattr__).
    """

    state: list[float]
    action: int
    reward: float
    next_state: list[float]
    latency_ms: float
    success: bool
    experience_id: str | None = None
    arm: str | None = None  # A/B arm that routed the request, aggregated per arm


@dataclass(frozen=True)
class TransitionArrays:
    """Experiences read back as arrays, ready for the RL core's replay buffer. States are (B, width)
    when they all have one width, else one array each (the per-replica network's observations
    vary with the cluster's size; the trainer keeps those its network reads)."""

    states: np.ndarray | list[np.ndarray]
    actions: np.ndarray
    rewards: np.ndarray
    next_states: np.ndarray | list[np.ndarray]

    def __len__(self) -> int:
        return len(self.actions)


class ReplayStore(ABC):
    """A bounded, shared store of one pool's experiences (the oldest are dropped past `capacity`)."""

    name: str

    def __init__(self, capacity: int, state_dim: int, pool: str = DEFAULT_POOL) -> None:
        self.capacity = capacity
        self.state_dim = state_dim
        self.pool = pool

    @abstractmethod
    def add(self, records: list[ExperienceRecord]) -> int:
        """Append records atomically; returns how many were new (a known experience_id is skipped)."""

    def add_and_size(self, records: list[ExperienceRecord]) -> tuple[int, int]:
        """`add`, then how many experiences the store holds (one round trip where the store can)."""
        return self.add(records), self.size()

    @abstractmethod
    def size(self) -> int: ...

    @abstractmethod
    def read_since(self, cursor: str | None, limit: int) -> tuple[TransitionArrays, str | None]:
        """Experiences appended after `cursor` (oldest first) and the cursor to continue from."""

    @abstractmethod
    def newest_cursor(self) -> str | None:
        """The cursor of the newest experience (what `read_since` would return after reading all),
        None when the store is empty."""

    @abstractmethod
    def recent(self, count: int) -> list[dict]:
        """The newest experiences as dicts, newest first (admin samples, average reward)."""

    @abstractmethod
    def arm_totals(self) -> dict[str, dict]:
        """Per A/B arm: count, successes, latency_sum, latency_sq_sum and buckets {index: count}."""

    @abstractmethod
    def clear(self) -> None: ...

    @abstractmethod
    def ping(self) -> bool: ...

    def recent_rewards(self, count: int) -> list[float]:
        return [row["reward"] for row in self.recent(count)]

    def _arrays(self, states: list, actions: list, rewards: list, next_states: list) -> TransitionArrays:
        return TransitionArrays(
            states=_rows(states, self.state_dim),
            actions=np.asarray(actions, dtype=np.int64),
            rewards=np.asarray(rewards, dtype=np.float32),
            next_states=_rows(next_states, self.state_dim),
        )


def _rows(states: list, width: int) -> np.ndarray | list[np.ndarray]:
    if not states:
        return np.zeros((0, width), dtype=np.float32)
    if len({len(s) for s in states}) == 1:
        return np.asarray(states, dtype=np.float32)
    return [np.asarray(s, dtype=np.float32) for s in states]
