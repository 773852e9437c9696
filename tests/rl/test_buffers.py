"""Uniform ring buffer and proportional prioritized replay."""

from __future__ import annotations

import numpy as np
import pytest

from agent_app.rl import PrioritizedReplayBuffer, ReplayBuffer, beta_schedule


def _fill(buffer: ReplayBuffer, count: int, offset: int = 0) -> None:
    for i in range(offset, offset + count):
        buffer.add([i, i], i % 3, float(i), [i + 1, i + 1], done=i % 5 == 0)


def test_ring_buffer_keeps_the_newest_capacity_transitions() -> None:
    buffer = ReplayBuffer(capacity=10, state_dim=2)
    _fill(buffer, 25)
    assert len(buffer) == 10
    assert sorted(buffer.rewards.tolist()) == list(map(float, range(15, 25)))
    assert np.all(buffer.steps == 1)


def test_add_batch_equals_repeated_add_including_wrap_around() -> None:
    rng = np.random.default_rng(0)
    rows = 23
    states = rng.random((rows, 4), dtype=np.float32)
    next_states = rng.random((rows, 4), dtype=np.float32)
    actions = rng.integers(0, 3, rows)
    rewards = rng.random(rows, dtype=np.float32)
    dones = (rng.random(rows) < 0.3).astype(np.float32)
    one, many = ReplayBuffer(8, 4), ReplayBuffer(8, 4)
    one.add(states[0], 0, 0.0, states[0])  # start mid-ring
    many.add(states[0], 0, 0.0, states[0])
    for i in range(rows):
        one.add(states[i], actions[i], rewards[i], next_states[i], bool(dones[i]))
    many.add_batch(states, actions, rewards, next_states, dones)
    assert len(one) == len(many) == 8
    for name in ("states", "actions", "rewards", "next_states", "dones", "steps"):
        np.testing.assert_array_equal(getattr(one, name), getattr(many, name), err_msg=name)
    assert one._pos == many._pos


def test_sample_returns_typed_arrays_of_the_batch_size() -> None:
    buffer = ReplayBuffer(100, 3)
    _fill_states = np.arange(150 * 3, dtype=np.float32).reshape(150, 3)
    buffer.add_batch(_fill_states, np.zeros(150), np.ones(150), _fill_states + 1)
    batch = buffer.sample(64, np.random.default_rng(0))
    assert batch.states.shape == batch.next_states.shape == (64, 3)
    assert batch.states.dtype == np.float32 and batch.actions.dtype == np.int64
    assert batch.rewards.shape == batch.dones.shape == (64,)
    assert batch.weights is None and batch.steps is None  # 1-step rows: the agent uses gamma
    # Rows stay aligned: next_state = state + 1 for every sampled row.
    np.testing.assert_array_equal(batch.next_states, batch.states + 1)


def test_multi_step_rows_carry_their_step_count() -> None:
    buffer = ReplayBuffer(10, 1)
    buffer.add([0.0], 0, 1.0, [1.0], steps=3)
    assert buffer.sample(4, np.random.default_rng(0)).steps.tolist() == [3.0] * 4


def test_sampling_an_empty_buffer_is_an_error() -> None:
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(4, 2).sample(2, np.random.default_rng(0))


def test_add_batch_refuses_mismatched_columns() -> None:
    with pytest.raises(ValueError, match="rewards"):
        ReplayBuffer(4, 2).add_batch(np.zeros((3, 2)), np.zeros(3), np.zeros(2), np.zeros((3, 2)))


def _prioritized(priorities: np.ndarray, alpha: float = 1.0) -> PrioritizedReplayBuffer:
    buffer = PrioritizedReplayBuffer(len(priorities), 1, alpha=alpha, eps=1e-9)
    n = len(priorities)
    buffer.add_batch(
        np.arange(n, dtype=np.float32)[:, None], np.zeros(n), np.zeros(n), np.zeros((n, 1))
    )
    buffer.update_priorities(np.arange(n), priorities)
    return buffer


def test_prioritized_samples_in_proportion_to_priority() -> None:
    priorities = np.arange(1.0, 11.0)  # P(i) = i / 55
    buffer = _prioritized(priorities)
    rng = np.random.default_rng(0)
    counts = np.zeros(10)
    draws = 0
    for _ in range(2000):
        batch = buffer.sample(64, rng, beta=0.4)
        counts += np.bincount(batch.indices, minlength=10)
        draws += 64
    expected = priorities / priorities.sum() * draws
    chi_square = float(((counts - expected) ** 2 / expected).sum())
    # 9 degrees of freedom: P(chi2 > 27.9) = 0.001. Stratification only lowers the statistic.
    assert chi_square < 27.9
    np.testing.assert_allclose(counts / draws, priorities / priorities.sum(), atol=0.005)


def test_priority_exponent_alpha_flattens_the_distribution() -> None:
    buffer = _prioritized(np.array([1.0, 4.0, 16.0]), alpha=0.5)
    np.testing.assert_allclose(buffer.probabilities(), np.array([1, 2, 4]) / 7, rtol=1e-6)


def test_importance_weights_are_normalised_by_the_batch_maximum() -> None:
    priorities = np.array([1.0, 2.0, 4.0, 8.0])
    buffer = _prioritized(priorities)
    batch = buffer.sample(64, np.random.default_rng(3), beta=0.7)
    probs = priorities[batch.indices] / priorities.sum()
    raw = (len(priorities) * probs) ** -0.7
    np.testing.assert_allclose(batch.weights, raw / raw.max(), rtol=1e-6)
    assert batch.weights.max() == pytest.approx(1.0)


def test_new_transitions_get_the_highest_priority_seen() -> None:
    buffer = _prioritized(np.array([0.5, 3.0, 1.0]))
    buffer = PrioritizedReplayBuffer(8, 1, alpha=1.0, eps=1e-9)
    buffer.add([0.0], 0, 0.0, [0.0])
    buffer.add([1.0], 0, 0.0, [0.0])
    buffer.update_priorities(np.array([0, 1]), np.array([0.5, 3.0]))
    slot = buffer.add([2.0], 0, 0.0, [0.0])
    assert buffer.tree.get(np.array([slot]))[0] == pytest.approx(3.0)


def test_beta_rises_linearly_to_one_and_stays() -> None:
    assert beta_schedule(0, 0.4, 100) == pytest.approx(0.4)
    assert beta_schedule(50, 0.4, 100) == pytest.approx(0.7)
    assert beta_schedule(100, 0.4, 100) == pytest.approx(1.0)
    assert beta_schedule(10_000, 0.4, 100) == pytest.approx(1.0)


def test_partly_filled_prioritized_buffer_only_returns_filled_slots() -> None:
    buffer = PrioritizedReplayBuffer(1000, 1)
    _fill_pairs = np.arange(10, dtype=np.float32)[:, None]
    buffer.add_batch(_fill_pairs, np.zeros(10), np.zeros(10), _fill_pairs)
    idx = buffer.sample(256, np.random.default_rng(0)).indices
    assert idx.min() >= 0 and idx.max() < 10


def test_update_priorities_refuses_non_finite_errors_and_bad_indices() -> None:
    buffer = _prioritized(np.ones(4))
    with pytest.raises(ValueError, match="finite"):
        buffer.update_priorities(np.array([0]), np.array([np.nan]))
    with pytest.raises(IndexError):
        buffer.update_priorities(np.array([7]), np.array([1.0]))
    buffer.tree.check_invariants()
