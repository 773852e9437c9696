"""The agent with the per-replica network learns a toy routing task over clusters of varying
size, and the log and per-token rewards keep a signal where the specification's saturates."""

from __future__ import annotations

import numpy as np
import pytest

from agent_app.rl.agent import DQNAgent
from agent_app.rl.config import per_replica_config
from agent_app.rl.replica_features import ReplicaFeatures, encode_context, encode_observation
from agent_app.rl.reward import RewardConfig, compute_reward, compute_rewards

MAX = 8


def _cluster(rng: np.random.Generator, n: int) -> tuple[np.ndarray, int]:
    """n replicas at random loads, one of them fast (low time per token), at a random position."""
    fast = int(rng.integers(n))
    replicas = [ReplicaFeatures(load=float(rng.integers(0, 40)), tpot_ms=20.0 if i == fast else 80.0)
                for i in range(n)]
    return encode_observation(replicas, encode_context(rng.random(7).tolist()), MAX), fast


def test_agent_finds_the_fast_replica_among_slow_ones_of_any_count() -> None:
    agent = DQNAgent(per_replica_config(MAX, hidden_sizes=(32, 32), gamma=0.0, batch_size=64,
                                        buffer_capacity=4000, device="cpu", seed=0, epsilon_decay=0.99))
    rng = np.random.default_rng(0)
    config = RewardConfig(latency_mode="log")
    for _ in range(1500):
        obs, fast = _cluster(rng, int(rng.integers(2, 7)))  # trained on 2..6 replicas
        action = agent.act(obs).action
        latency = (2000.0 if action == fast else 8000.0) * rng.uniform(0.8, 1.2)
        agent.observe(obs, action, compute_reward(latency, True, [0], config), obs, True)
        agent.train_step()
    twin = agent.numpy_network()
    for n in (2, 4, 7, 8):  # 7 and 8 were never seen in training
        draws = [_cluster(rng, n) for _ in range(100)]
        hits = np.mean([twin.greedy(obs) == fast for obs, fast in draws])
        assert hits > 0.9, f"{n} replicas: picked the fast one {hits:.0%} of the time"


def test_log_reward_keeps_ordering_where_linear_saturates() -> None:
    linear, log = RewardConfig(), RewardConfig(latency_mode="log")
    slow = [compute_reward(ms, True, [1, 1], linear) for ms in (20_000, 60_000)]
    assert slow[0] == slow[1] == -10.0  # every request over 11 s looks the same
    values = [compute_reward(ms, True, [1, 1], log) for ms in (100, 1_000, 20_000, 60_000, 3_600_000)]
    assert values == sorted(values, reverse=True) and len(set(values)) == 5
    assert values[1] == pytest.approx(1.0 - np.log(2.0))  # 1 s at the default 1 s scale
    assert values[3] == pytest.approx(1.0 - np.log1p(60.0))
    assert min(values) > -10.0 == compute_reward(100, False, [1, 1], log)  # a failure stays worst


def test_per_token_reward_takes_out_the_output_length() -> None:
    per_token = RewardConfig(latency_mode="per_token", token_latency_scale_ms=50.0)
    # 100 tokens in 5 s and 1000 tokens in 50 s are served at the same speed: same reward.
    short = compute_reward(5_000, True, [1, 1], per_token, output_tokens=100)
    long = compute_reward(50_000, True, [1, 1], per_token, output_tokens=1000)
    assert short == pytest.approx(long) == pytest.approx(1.0 - np.log(2.0))
    assert compute_reward(100_000, True, [1, 1], per_token, output_tokens=1000) < long
    # Without the token count it scores as "log".
    assert compute_reward(5_000, True, [1, 1], per_token) == pytest.approx(
        compute_reward(5_000, True, [1, 1], RewardConfig(latency_mode="log")))
    batch = compute_rewards([5_000, 50_000], [True, False], [[1, 1], [1, 1]], per_token,
                            output_tokens=[100, 1000])
    np.testing.assert_allclose(batch, [short, -10.0], rtol=1e-6)


def test_default_reward_is_still_the_specification_form() -> None:
    assert RewardConfig().latency_mode == "linear"
    assert compute_reward(265.3, True, [5, 5]) == pytest.approx(1.0 - 0.2653)
    with pytest.raises(ValueError, match="latency_mode"):
        RewardConfig(latency_mode="cubic")
