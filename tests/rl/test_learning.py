"""The learner learns: a contextual bandit, a chain whose answer depends on gamma (analytic
Q-values), an online control run on that chain, and the built-in self-test."""

from __future__ import annotations

import numpy as np
import pytest

from agent_app.rl import DQNAgent, DQNConfig
from agent_app.rl.__main__ import chain_agent
from agent_app.rl.__main__ import main as self_test
from agent_app.rl.toy_tasks import ChainMDP


def test_greedy_policy_finds_the_best_action_of_each_context() -> None:
    best = [2, 0, 1, 2, 1]
    contexts = np.eye(len(best), dtype=np.float32)
    agent = DQNAgent(
        DQNConfig(
            state_dim=5,
            n_actions=3,
            hidden_sizes=(32,),
            gamma=0.0,
            batch_size=32,
            buffer_capacity=2000,
            device="cpu",
            seed=0,
        )
    )
    rng = np.random.default_rng(0)
    for _ in range(800):
        context = int(rng.integers(len(best)))
        action = agent.act(contexts[context]).action
        reward = (1.0 if action == best[context] else 0.0) + rng.normal(0, 0.1)
        agent.observe(contexts[context], action, reward, contexts[context])
        agent.train_step()
    assert [agent.greedy(c) for c in contexts] == best
    q = agent.q_values(contexts)
    np.testing.assert_allclose(q[np.arange(5), best], 1.0, atol=0.15)


@pytest.mark.parametrize("gamma", [0.9, 0.6])
def test_chain_q_values_converge_to_the_analytic_ones(gamma: float) -> None:
    chain = ChainMDP(length=5)
    agent = chain_agent(gamma)
    for _ in range(10):
        for transition in chain.all_transitions():
            agent.observe(*transition)
    for _ in range(1500):
        agent.train_step()
    q = agent.q_values(np.eye(5, dtype=np.float32))
    np.testing.assert_allclose(q, chain.analytic_q(gamma), atol=0.05)


def test_discount_changes_the_optimal_chain_policy() -> None:
    chain = ChainMDP(length=5)
    far = chain.analytic_q(0.9).argmax(axis=1)
    near = chain.analytic_q(0.6).argmax(axis=1)
    assert far.tolist() == [1, 1, 1, 1, 1]  # patient: walk to the goal
    assert near.tolist() == [0, 0, 0, 1, 1]  # impatient: stop early unless the goal is close


def test_online_epsilon_greedy_control_learns_the_chain() -> None:
    # Episodes start at a random position ("exploring starts"): with the specification's fast epsilon
    # decay, epsilon-greedy from state 0 alone rarely walks the whole chain (the textbook
    # deep-exploration failure), which would test luck rather than the learner.
    chain = ChainMDP(length=5)
    agent = chain_agent(0.9, seed=1)
    rng = np.random.default_rng(1)
    while agent.steps_done < 1500:
        position, done = int(rng.integers(chain.length)), False
        while not done:
            action = agent.act(chain.encode(position)).action
            reward, nxt, done = chain.step(position, action)
            agent.observe(chain.encode(position), action, reward, chain.encode(nxt), done)
            agent.train_step()
            position = nxt
    policy = [agent.greedy(chain.encode(s)) for s in range(5)]
    assert policy == [1, 1, 1, 1, 1]
    q = agent.q_values(np.eye(5, dtype=np.float32))
    np.testing.assert_allclose(q.max(axis=1), chain.analytic_q(0.9).max(axis=1), atol=0.1)


def test_self_test_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert self_test(["--steps", "1000"]) == 0
    out = capsys.readouterr().out
    assert "loss fell" in out and "greedy DQN" in out and "PASSED" in out
