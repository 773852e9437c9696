"""Replay buffers on preallocated NumPy arrays: a uniform ring buffer and proportional PER, both
sampled into a `Batch` of arrays with one vectorised gather per field."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from agent_app.rl.sum_tree import SumTree


class Transition(NamedTuple):
    """One experience as the service records it."""

    state: Sequence[float] | np.ndarray
    action: int
    reward: float
    next_state: Sequence[float] | np.ndarray
    done: bool = False


class Batch(NamedTuple):
    """A training batch. `steps` is k of an n-step row, bootstrapped with gamma^k (None: all 1);
    `weights` are importance-sampling weights (None: all ones); `indices` are buffer slots."""

    states: np.ndarray  # (B, state_dim) float32
    actions: np.ndarray  # (B,) int64
    rewards: np.ndarray  # (B,) float32
    next_states: np.ndarray  # (B, state_dim) float32
    dones: np.ndarray  # (B,) float32, 1.0 = terminal (no bootstrap)
    steps: np.ndarray | None = None  # (B,) float32 k >= 1
    weights: np.ndarray | None = None  # (B,) float32
    indices: np.ndarray | None = None  # (B,) int64


class ReplayBuffer:
    """Fixed-capacity ring buffer; the oldest transitions are overwritten first.

    n-step rows store k, not gamma^k: the agent raises its *current* gamma to k at train
    time, so a gamma changed by an operator applies at once to everything already stored.
    """

    def __init__(self, capacity: int, state_dim: int) -> None:
        if capacity < 1 or state_dim < 1:
            raise ValueError("capacity and state_dim must be >= 1")
        self.capacity = capacity
        self.state_dim = state_dim
        self.states = np.zeros((capacity, state_dim), dtype=np.float32)
        self.next_states = np.zeros((capacity, state_dim), dtype=np.float32)
        self.actions = np.zeros(capacity, dtype=np.int64)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.dones = np.zeros(capacity, dtype=np.float32)
        self.steps = np.ones(capacity, dtype=np.float32)
        self._pos = 0
        self._size = 0
        # Until a multi-step row arrives, batches carry steps=None and the agent uses the
        # scalar gamma: one gather and one tensor fewer per step in the common 1-step case.
        self._multi_step = False

    def __len__(self) -> int:
        return self._size

    def add(
        self,
        state: Sequence[float] | np.ndarray,
        action: int,
        reward: float,
        next_state: Sequence[float] | np.ndarray,
        done: bool = False,
        steps: int = 1,
    ) -> int:
        """Store one transition; returns the slot it went to."""
        slot = self._pos
        self.states[slot] = state
        self.next_states[slot] = next_state
        self.actions[slot] = action
        self.rewards[slot] = reward
        self.dones[slot] = float(done)
        self.steps[slot] = steps
        self._multi_step = self._multi_step or steps != 1
        self._pos = (slot + 1) % self.capacity
        self._size = min(self._size + 1, self.capacity)
        self._on_write(np.array([slot]))
        return slot

    def add_batch(
        self,
        states: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_states: np.ndarray,
        dones: np.ndarray | None = None,
        steps: np.ndarray | None = None,
    ) -> np.ndarray:
        """Store B transitions with one vectorised write per field; returns their slots.

        If B exceeds the capacity only the last `capacity` rows are kept, as a stream of
        single adds would do.
        """
        states = np.asarray(states, dtype=np.float32)
        count = states.shape[0]
        if states.ndim != 2 or states.shape[1] != self.state_dim:
            raise ValueError(f"states must have shape (B, {self.state_dim}), got {states.shape}")
        columns = {
            "next_states": np.asarray(next_states, dtype=np.float32),
            "actions": np.asarray(actions, dtype=np.int64),
            "rewards": np.asarray(rewards, dtype=np.float32),
            "dones": np.zeros(count, np.float32)
            if dones is None
            else np.asarray(dones, dtype=np.float32),
            "steps": np.ones(count, np.float32)
            if steps is None
            else np.asarray(steps, dtype=np.float32),
        }
        for name, column in columns.items():
            if column.shape[0] != count or (name == "next_states" and column.shape != states.shape):
                raise ValueError(f"{name} has shape {column.shape}, expected {count} rows")
        skipped = max(0, count - self.capacity)
        # The slots repeated single adds would leave these rows in (older rows overwritten).
        slots = (self._pos + np.arange(skipped, count)) % self.capacity
        self.states[slots] = states[skipped:]
        for name, column in columns.items():
            getattr(self, name)[slots] = column[skipped:]
        self._multi_step = self._multi_step or bool((columns["steps"] != 1).any())
        self._pos = int((self._pos + count) % self.capacity)
        self._size = min(self._size + count, self.capacity)
        self._on_write(slots)
        return slots

    def sample(self, batch_size: int, rng: np.random.Generator) -> Batch:
        """Uniform sample with replacement (as SB3 and cleanrl do)."""
        if self._size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        return self._gather(rng.integers(0, self._size, size=batch_size))

    def _gather(self, idx: np.ndarray, weights: np.ndarray | None = None) -> Batch:
        return Batch(
            states=self.states.take(idx, axis=0),
            actions=self.actions.take(idx),
            rewards=self.rewards.take(idx),
            next_states=self.next_states.take(idx, axis=0),
            dones=self.dones.take(idx),
            steps=self.steps.take(idx) if self._multi_step else None,
            weights=weights,
            indices=idx,
        )

    def _on_write(self, slots: np.ndarray) -> None:
        """Hook for subclasses that keep per-slot metadata (PER priorities)."""


def beta_schedule(step: int, beta_start: float, beta_steps: int) -> float:
    """IS exponent rising linearly from beta_start at step 0 to 1.0 at beta_steps."""
    fraction = min(1.0, max(0, step) / beta_steps)
    return beta_start + (1.0 - beta_start) * fraction


class PrioritizedReplayBuffer(ReplayBuffer):
    """Proportional prioritized replay (Schaul et al. 2016) over the same storage.

    P(i) = p_i / sum_j p_j with p_i = (|td_i| + eps)^alpha. New transitions get the largest
    priority seen so far, so each is replayed at least about once. IS weights
    w_i = (size * P(i))^-beta are divided by the batch maximum, so they only scale updates down.
    """

    def __init__(
        self,
        capacity: int,
        state_dim: int,
        alpha: float = 0.6,
        beta_start: float = 0.4,
        beta_steps: int = 10_000,
        eps: float = 1e-6,
    ) -> None:
        super().__init__(capacity, state_dim)
        self.alpha = alpha
        self.beta_start = beta_start
        self.beta_steps = beta_steps
        self.eps = eps
        self.tree = SumTree(capacity)
        self.max_priority = 1.0  # already raised to alpha
        self.sample_calls = 0

    def _on_write(self, slots: np.ndarray) -> None:
        self.tree.set_unchecked(slots, self.max_priority)

    def sample(self, batch_size: int, rng: np.random.Generator, beta: float | None = None) -> Batch:
        """Stratified proportional sample with IS weights; beta defaults to the schedule
        evaluated at the number of samples drawn so far."""
        if self._size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        if beta is None:
            beta = beta_schedule(self.sample_calls, self.beta_start, self.beta_steps)
        self.sample_calls += 1
        idx = self.tree.sample(batch_size, rng)
        # Only unfilled slots (all after the last written one) have zero priority.
        np.minimum(idx, self._size - 1, out=idx)
        # (size * p_i / total)^-beta / max_j(...) = (p_i / min_j p_j)^-beta within the batch.
        priorities = self.tree.levels[-1].take(idx)
        weights = (priorities / priorities.min()) ** (-beta)
        return self._gather(idx, weights.astype(np.float32))

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        """Set p_i = (|td_i| + eps)^alpha for sampled slots after a training step."""
        idx = np.asarray(indices, dtype=np.int64)
        errors = np.abs(np.asarray(td_errors, dtype=np.float64))
        if idx.shape != errors.shape:
            raise ValueError(f"{idx.shape[0]} indices but {errors.shape} td_errors")
        if not np.isfinite(errors).all():
            raise ValueError("td_errors must be finite (did training diverge?)")
        if idx.size and (idx.min() < 0 or idx.max() >= self._size):
            raise IndexError(f"priority index out of range [0, {self._size})")
        priorities = (errors + self.eps) ** self.alpha
        self.tree.set_unchecked(idx, priorities)  # checked above
        if priorities.size:
            self.max_priority = max(self.max_priority, float(priorities.max()))

    def probabilities(self) -> np.ndarray:
        """P(i) for every stored slot (for tests and diagnostics)."""
        leaves = self.tree.get(np.arange(self._size))
        return leaves / leaves.sum()
