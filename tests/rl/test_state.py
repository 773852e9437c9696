"""State encoding: the original specification's raw vector, its order, the scales and next_state_after."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent_app.rl import (
    StateScales,
    build_state,
    feature_names,
    next_state_after,
    normalize_state,
    state_dim,
)

SEED_STATE = [5, 3, 7, 12, 0.28, 8.2, 0.98, 0.5, 0.4, 0.5]  # the original specification's example


def test_build_state_reproduces_the_specification_example() -> None:
    raw = build_state([5, 3, 7], 12, 280.5, 8.2, 0.98, memory=0.5, cpu=0.4, time_of_day=0.5)
    assert raw == pytest.approx([5, 3, 7, 12, 0.2805, 8.2, 0.98, 0.5, 0.4, 0.5])
    assert len(raw) == state_dim(3) == 10


def test_feature_names_follow_the_specification_order() -> None:
    assert feature_names(2) == [
        "load_0",
        "load_1",
        "queue_depth",
        "latency_s",
        "rps",
        "success_rate",
        "memory",
        "cpu",
        "time_of_day",
    ]


def test_normalize_maps_each_feature_with_the_documented_scale() -> None:
    x = normalize_state(SEED_STATE, 3)
    assert x.dtype == np.float32 and x.shape == (10,)
    expected = [
        0.05,
        0.03,
        0.07,
        0.12,
        0.28,
        math.log1p(8.2) / math.log1p(1000),
        0.98,
        0.5,
        0.4,
        0.5,
    ]
    np.testing.assert_allclose(x, expected, rtol=1e-6)


def test_normalize_a_batch_equals_normalizing_each_row() -> None:
    rng = np.random.default_rng(0)
    batch = rng.uniform(0, 100, (16, 12))
    rows = np.stack([normalize_state(row, 5) for row in batch])
    np.testing.assert_array_equal(normalize_state(batch, 5), rows)
    assert normalize_state(batch, 5).shape == (16, 12)


def test_normalize_does_not_modify_its_input() -> None:
    raw = np.array(SEED_STATE, dtype=np.float32)
    copy = raw.copy()
    normalize_state(raw, 3)
    np.testing.assert_array_equal(raw, copy)


def test_normalize_clips_absurd_readings() -> None:
    raw = [1e9, 0, 0, 0, 0, 0, 1, 0, 0, 0]
    assert normalize_state(raw, 3, StateScales(clip=10.0))[0] == 10.0


def test_normalize_refuses_a_state_of_the_wrong_length() -> None:
    with pytest.raises(ValueError, match="10 values"):
        normalize_state(SEED_STATE[:-1], 3)


def test_linear_rps_scale_is_available() -> None:
    x = normalize_state(SEED_STATE, 3, StateScales(rps_log=False, rps_scale=100.0))
    assert x[5] == pytest.approx(0.082)


def test_next_state_after_replaces_only_the_loads() -> None:
    assert next_state_after(SEED_STATE, [5, 4, 7]) == [5, 4, 7, *SEED_STATE[3:]]


def test_next_state_after_refuses_a_different_number_of_replicas() -> None:
    with pytest.raises(ValueError, match="3 replicas"):
        next_state_after(SEED_STATE, [1, 2])


def test_invalid_scale_names_the_field() -> None:
    with pytest.raises(ValueError, match="load_scale"):
        StateScales(load_scale=0)
