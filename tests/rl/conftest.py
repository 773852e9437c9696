"""Fixtures for the RL core tests: one torch thread (determinism, no oversubscription)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from agent_app.rl import Batch


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def random_batch(
    rng: np.random.Generator, rows: int, state_dim: int, n_actions: int, reward_scale: float = 1.0
) -> Batch:
    """A batch of random transitions in the agent's input format."""
    return Batch(
        states=rng.random((rows, state_dim), dtype=np.float32),
        actions=rng.integers(0, n_actions, rows),
        rewards=(rng.standard_normal(rows) * reward_scale).astype(np.float32),
        next_states=rng.random((rows, state_dim), dtype=np.float32),
        dones=(rng.random(rows) < 0.1).astype(np.float32),
    )
