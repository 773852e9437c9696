"""The original specification's reward formula, its failure penalty, and the configurable scaling."""

from __future__ import annotations

import numpy as np
import pytest

from agent_app.rl import RewardConfig, compute_reward, compute_rewards


def test_reward_config_seed_is_the_specification_formula() -> None:
    loads = [5, 4, 7]
    expected = 1.0 - 265.3 / 1000.0 + -0.1 * np.var(loads)
    assert compute_reward(265.3, True, loads, RewardConfig.seed()) == pytest.approx(expected)


def test_a_failure_gives_minus_ten() -> None:
    assert compute_reward(100.0, False, [5, 4, 7]) == -10.0
    assert compute_reward(100.0, False, [5, 4, 7], RewardConfig.seed()) == -10.0


def test_default_scales_the_variance_to_loads_over_100() -> None:
    loads = [50, 40, 70]
    expected = 1.0 - 0.2 - 0.1 * np.var(np.array(loads) / 100.0)
    assert compute_reward(200.0, True, loads) == pytest.approx(expected)
    # The specification's raw form lets busy replicas drown the latency signal (and the failure).
    assert compute_reward(200.0, True, loads, RewardConfig.seed()) < -10.0


def test_default_clip_never_scores_a_slow_success_below_a_failure() -> None:
    assert compute_reward(60_000.0, True, [1, 1, 1]) == -10.0
    assert compute_reward(60_000.0, True, [1, 1, 1], RewardConfig.seed()) < -10.0


def test_batch_version_equals_the_scalar_one() -> None:
    rng = np.random.default_rng(0)
    latency = rng.uniform(0, 3000, 50)
    success = rng.random(50) > 0.2
    loads = rng.uniform(0, 100, (50, 4))
    for config in (RewardConfig(), RewardConfig.seed()):
        scalar = [
            compute_reward(la, s, ld, config)
            for la, s, ld in zip(latency, success, loads, strict=True)
        ]
        batch = compute_rewards(latency, success, loads, config)
        assert batch.dtype == np.float32
        np.testing.assert_allclose(batch, scalar, rtol=1e-5, atol=1e-5)


def test_weights_and_penalty_are_configuration() -> None:
    config = RewardConfig(latency_scale_ms=500.0, balance_weight=0.0, failure_penalty=-3.0)
    assert compute_reward(250.0, True, [0, 100], config) == pytest.approx(0.5)
    assert compute_reward(250.0, True, [0, 100], config) == compute_reward(
        250.0, True, [0, 0], config
    )
    assert compute_reward(250.0, False, [0, 100], config) == -3.0


def test_invalid_reward_config_names_the_field() -> None:
    with pytest.raises(ValueError, match="latency_scale_ms"):
        RewardConfig(latency_scale_ms=0)
    with pytest.raises(ValueError, match="clip_min"):
        RewardConfig(clip_min=2.0, clip_max=1.0)


def test_time_to_first_token_costs_only_when_weighted_and_reported() -> None:
    plain = RewardConfig(latency_mode="log")
    weighted = RewardConfig(latency_mode="log", ttft_weight=1.0)
    base = compute_reward(2000.0, True, [1, 2], plain, ttft_ms=1500.0)
    assert compute_reward(2000.0, True, [1, 2], weighted) == pytest.approx(base)  # nothing reported
    slow_first = compute_reward(2000.0, True, [1, 2], weighted, ttft_ms=1500.0)
    assert slow_first == pytest.approx(base - np.log1p(1.5))
    assert compute_reward(2000.0, False, [1, 2], weighted, ttft_ms=1500.0) == -10.0
    batch = compute_rewards([2000.0, 2000.0], [True, True], [[1, 2], [1, 2]], weighted,
                            ttft_ms=[1500.0, None])
    assert batch.tolist() == pytest.approx([slow_first, base])
    with pytest.raises(ValueError, match="ttft_weight"):
        RewardConfig(ttft_weight=-1.0)
