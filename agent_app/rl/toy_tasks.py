"""Tiny built-in tasks with known answers for the self-test and the learning tests: a routing
contextual bandit and a chain MDP whose optimal policy depends on gamma."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from agent_app.rl.reward import DEFAULT_REWARD, RewardConfig, compute_reward
from agent_app.rl.state import DEFAULT_SCALES, StateScales, normalize_state


class RoutingBandit:
    """Random replica loads; routing to replica i takes base + slope * load_i ms (+ noise)
    and fails with a probability that grows once the replica is nearly saturated."""

    def __init__(
        self,
        num_replicas: int = 3,
        seed: int | None = 0,
        base_ms: float = 100.0,
        slope_ms: float = 6.0,
        noise_ms: float = 30.0,
        reward_config: RewardConfig = DEFAULT_REWARD,
        scales: StateScales = DEFAULT_SCALES,
    ) -> None:
        self.num_replicas = num_replicas
        self.rng = np.random.default_rng(seed)
        self.base_ms = base_ms
        self.slope_ms = slope_ms
        self.noise_ms = noise_ms
        self.reward_config = reward_config
        self.scales = scales

    def sample_state(self) -> np.ndarray:
        """A raw state in the specification's layout (loads 0-100, latency in seconds, rps raw...)."""
        n = self.num_replicas
        loads = self.rng.uniform(0, 100, n)
        extras = [
            self.rng.uniform(0, 100),  # queue depth
            self.rng.uniform(0.1, 1.0),  # latency (s)
            self.rng.uniform(1, 50),  # rps
            self.rng.uniform(0.9, 1.0),  # success rate
            self.rng.uniform(0, 1),  # memory
            self.rng.uniform(0, 1),  # cpu
            self.rng.uniform(0, 1),  # time of day
        ]
        return np.concatenate([loads, extras])

    def encode(self, raw: np.ndarray) -> np.ndarray:
        return normalize_state(raw, self.num_replicas, self.scales)

    def step(self, raw: np.ndarray, action: int) -> tuple[float, np.ndarray]:
        """(reward, raw next state): the chosen replica gets one more unit of load."""
        loads = raw[: self.num_replicas]
        load = loads[action]
        latency = max(1.0, self.base_ms + self.slope_ms * load + self.rng.normal(0, self.noise_ms))
        success = self.rng.random() >= max(0.0, (load - 90.0) / 100.0)
        after = loads.copy()
        after[action] = min(100.0, after[action] + 1.0)
        reward = compute_reward(latency, bool(success), after, self.reward_config)
        next_raw = raw.copy()
        next_raw[: self.num_replicas] = after
        return reward, next_raw

    def evaluate(self, policy: Callable[[np.ndarray], int], episodes: int = 500) -> float:
        """Mean reward of `policy(raw_state)` on a fixed set of states (same seed each call)."""
        saved = self.rng
        self.rng = np.random.default_rng(12345)
        try:
            total = 0.0
            for _ in range(episodes):
                raw = self.sample_state()
                total += self.step(raw, policy(raw))[0]
            return total / episodes
        finally:
            self.rng = saved


class ChainMDP:
    """States 0..length-1 (one-hot). Action 0 "stop": reward stop_reward, episode ends.
    Action 1 "advance": reward 0 and move right; advancing from the last state pays
    goal_reward and ends. Advancing is optimal only if gamma^(length-1-s) * goal > stop."""

    def __init__(self, length: int = 5, stop_reward: float = 0.5, goal_reward: float = 1.0) -> None:
        self.length = length
        self.stop_reward = stop_reward
        self.goal_reward = goal_reward
        self.n_actions = 2

    def encode(self, position: int) -> np.ndarray:
        one_hot = np.zeros(self.length, dtype=np.float32)
        one_hot[position] = 1.0
        return one_hot

    def step(self, position: int, action: int) -> tuple[float, int, bool]:
        """(reward, next position, done)."""
        if action == 0:
            return self.stop_reward, position, True
        if position == self.length - 1:
            return self.goal_reward, position, True
        return 0.0, position + 1, False

    def all_transitions(self) -> list[tuple[np.ndarray, int, float, np.ndarray, bool]]:
        """Every (state, action, reward, next_state, done) of the chain, once."""
        out = []
        for position in range(self.length):
            for action in range(self.n_actions):
                reward, nxt, done = self.step(position, action)
                out.append((self.encode(position), action, reward, self.encode(nxt), done))
        return out

    def analytic_q(self, gamma: float) -> np.ndarray:
        """Q*(s, a) by backward induction, shape (length, 2)."""
        q = np.zeros((self.length, 2))
        value_next = 0.0
        for position in range(self.length - 1, -1, -1):
            q[position, 0] = self.stop_reward
            if position == self.length - 1:
                q[position, 1] = self.goal_reward
            else:
                q[position, 1] = gamma * value_next
            value_next = q[position].max()
        return q
