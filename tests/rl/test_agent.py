"""DQNAgent: decisions, the specification's epsilon schedule, target sync, clipping, Double DQN, and
equality of the optimised step with a plain PyTorch implementation."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from agent_app.rl import Batch, DQNAgent, DQNConfig, routing_config, softmax_confidence
from tests.rl.conftest import random_batch


def _config(**overrides: object) -> DQNConfig:
    base = dict(
        state_dim=4,
        n_actions=3,
        hidden_sizes=(16, 16),
        batch_size=8,
        buffer_capacity=200,
        device="cpu",
        seed=0,
    )
    return DQNConfig(**(base | overrides))


def _agent_with_data(rows: int = 50, **overrides: object) -> DQNAgent:
    agent = DQNAgent(_config(**overrides))
    batch = random_batch(np.random.default_rng(1), rows, 4, 3)
    agent.buffer.add_batch(
        batch.states, batch.actions, batch.rewards, batch.next_states, batch.dones
    )
    return agent


def _params(net: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


def test_act_returns_a_decision_with_q_values_and_softmax_confidence() -> None:
    agent = DQNAgent(routing_config(3, device="cpu", seed=0))
    decision = agent.act(np.zeros(10, dtype=np.float32), explore=False)
    assert decision.q_values.shape == (3,)
    assert decision.action == int(np.argmax(decision.q_values)) and not decision.explored
    assert 0.0 <= decision.confidence <= 1.0
    assert decision.confidence == pytest.approx(
        softmax_confidence(decision.q_values, decision.action)
    )
    assert decision.epsilon == 1.0


def test_explore_false_never_explores_and_epsilon_one_always_does() -> None:
    agent = DQNAgent(_config())
    state = np.ones(4, dtype=np.float32)
    assert not any(agent.act(state, explore=False).explored for _ in range(50))
    assert all(agent.act(state, explore=True).explored for _ in range(50))
    assert {agent.act(state).action for _ in range(200)} == {0, 1, 2}


def test_confidence_is_uniform_for_equal_q_values() -> None:
    assert softmax_confidence(np.zeros(4), 2) == pytest.approx(0.25)


def test_train_step_waits_for_a_full_batch() -> None:
    agent = DQNAgent(_config())
    for i in range(7):
        agent.observe(np.zeros(4), i % 3, 1.0, np.zeros(4))
        assert agent.train_step() is None
    agent.observe(np.zeros(4), 0, 1.0, np.zeros(4))
    result = agent.train_step()
    assert result is not None and result.steps_done == 1 and np.isfinite(result.loss)
    assert result.td_errors.shape == (8,)


def test_epsilon_follows_the_specification_formula_after_each_training_step() -> None:
    agent = _agent_with_data()
    expected = 1.0
    for _ in range(1000):
        agent.train_step()
        expected = max(0.01, expected * 0.995)
        assert agent.epsilon == expected
    assert agent.epsilon == 0.01 and agent.steps_done == 1000


def test_external_batches_follow_the_same_schedule() -> None:
    agent = DQNAgent(_config())
    rng = np.random.default_rng(0)
    for step in range(1, 4):
        agent.train_on_batch(random_batch(rng, 8, 4, 3))
        assert agent.steps_done == step
        assert agent.epsilon == pytest.approx(0.995**step)


def test_target_network_changes_exactly_every_100_gradient_steps() -> None:
    agent = _agent_with_data(target_update_interval=100)
    previous = _params(agent.target)
    changed_at = []
    for step in range(1, 351):
        agent.train_step()
        current = _params(agent.target)
        if any(not torch.equal(a, b) for a, b in zip(previous, current, strict=True)):
            changed_at.append(step)
            # A hard copy: target equals online right after the sync.
            for t, o in zip(current, _params(agent.online), strict=True):
                assert torch.equal(t, o)
        previous = current
    assert changed_at == [100, 200, 300]


def test_polyak_update_moves_target_by_tau() -> None:
    agent = _agent_with_data(target_update_interval=1, tau=0.25)
    before = _params(agent.target)
    agent.train_step()
    for old, new, online in zip(before, _params(agent.target), _params(agent.online), strict=True):
        torch.testing.assert_close(new, old + 0.25 * (online - old))


def test_gradient_clipping_bounds_the_gradient_norm() -> None:
    agent = DQNAgent(_config(max_grad_norm=1.0))
    batch = random_batch(np.random.default_rng(0), 32, 4, 3, reward_scale=1000.0)
    agent.train_on_batch(batch)
    norm = torch.linalg.vector_norm(
        torch.cat([p.grad.reshape(-1) for p in agent.online.parameters()])
    )
    assert agent.last_grad_norm > 10.0  # the raw gradient was large...
    assert float(norm) <= 1.0 + 1e-4  # ...and what Adam saw was clipped to max_grad_norm


def _constant_q_agent(double: bool) -> DQNAgent:
    """Networks whose Q-values ignore the state: online [3, 1, 2], target [10, 0, 20]."""
    agent = DQNAgent(
        DQNConfig(
            state_dim=2,
            n_actions=3,
            hidden_sizes=(4,),
            gamma=0.5,
            double_dqn=double,
            batch_size=1,
            device="cpu",
            seed=0,
        )
    )
    for net, q in ((agent.online, [3.0, 1.0, 2.0]), (agent.target, [10.0, 0.0, 20.0])):
        state = {k: torch.zeros_like(v) for k, v in net.state_dict().items()}
        state["out.bias"] = torch.tensor(q)
        net.load_state_dict(state)
    return agent


def _one_transition(*, action: int, reward: float, done: bool) -> Batch:
    zeros = np.zeros((1, 2), np.float32)
    return Batch(states=zeros, actions=np.array([action]), rewards=np.array([reward], np.float32),
                 next_states=zeros, dones=np.full(1, float(done), np.float32))


def test_double_dqn_target_evaluates_the_online_argmax_with_the_target_net() -> None:
    batch = _one_transition(action=1, reward=1.0, done=False)
    # Online argmax is action 0 (Q 3); the target's own argmax would be action 2 (Q 20).
    _, td_double = _constant_q_agent(double=True).train_on_batch(batch)
    assert td_double[0] == pytest.approx(1.0 - (1.0 + 0.5 * 10.0))
    _, td_vanilla = _constant_q_agent(double=False).train_on_batch(batch)
    assert td_vanilla[0] == pytest.approx(1.0 - (1.0 + 0.5 * 20.0))


def test_terminal_transitions_do_not_bootstrap() -> None:
    batch = _one_transition(action=0, reward=2.0, done=True)
    _, td = _constant_q_agent(double=True).train_on_batch(batch)
    assert td[0] == pytest.approx(3.0 - 2.0)


@pytest.mark.parametrize("loss", ["mse", "huber"])
def test_optimised_step_equals_a_plain_pytorch_implementation(loss: str) -> None:
    config = _config(loss=loss, gamma=0.9, max_grad_norm=0.5, target_update_interval=1000)
    agent = DQNAgent(config)
    online, target = copy.deepcopy(agent.online), copy.deepcopy(agent.target)
    optimizer = torch.optim.Adam(online.parameters(), lr=config.lr, foreach=False)
    rng = np.random.default_rng(5)
    for _ in range(5):
        batch = random_batch(rng, 16, 4, 3, reward_scale=3.0)
        agent_loss, _ = agent.train_on_batch(batch)
        s, s2 = torch.from_numpy(batch.states), torch.from_numpy(batch.next_states)
        a = torch.from_numpy(batch.actions)
        q = online(s).gather(1, a[:, None]).squeeze(1)
        with torch.no_grad():
            best = online(s2).argmax(1, keepdim=True)
            y = torch.from_numpy(batch.rewards) + 0.9 * (1 - torch.from_numpy(batch.dones)) * (
                target(s2).gather(1, best).squeeze(1)
            )
        ref_loss = F.mse_loss(q, y) if loss == "mse" else F.huber_loss(q, y)
        optimizer.zero_grad()
        ref_loss.backward()
        torch.nn.utils.clip_grad_norm_(online.parameters(), 0.5)
        optimizer.step()
        assert agent_loss == pytest.approx(float(ref_loss.detach()), rel=1e-5)
    for mine, ref in zip(agent.online.parameters(), online.parameters(), strict=True):
        torch.testing.assert_close(mine, ref, rtol=1e-5, atol=1e-6)


def test_importance_weights_scale_each_sample_loss() -> None:
    agent = DQNAgent(_config())
    batch = random_batch(np.random.default_rng(0), 8, 4, 3)
    _, td = copy.deepcopy(agent).train_on_batch(batch)
    weights = np.linspace(0.1, 1.0, 8).astype(np.float32)
    loss, _ = agent.train_on_batch(batch._replace(weights=weights))
    assert loss == pytest.approx(float(np.mean(weights * td**2)), rel=1e-5)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("states", np.full((8, 4), np.nan, np.float32), "states"),
        ("states", np.zeros((8, 5), np.float32), "states"),
        ("actions", np.full(8, 3), "actions"),
        ("actions", np.full(8, -1), "actions"),
        ("rewards", np.full(8, np.inf, np.float32), "rewards"),
        ("dones", np.full(8, 0.5, np.float32), "dones"),
        ("next_states", np.zeros((7, 4), np.float32), "next_states"),
    ],
)
def test_a_bad_external_batch_is_refused_and_changes_nothing(
    field: str, value: np.ndarray, message: str
) -> None:
    agent = DQNAgent(_config())
    before = _params(agent.online)
    batch = random_batch(np.random.default_rng(0), 8, 4, 3)._replace(**{field: value})
    with pytest.raises(ValueError, match=message):
        agent.train_on_batch(batch)
    assert agent.steps_done == 0 and agent.epsilon == 1.0
    for old, new in zip(before, _params(agent.online), strict=True):
        assert torch.equal(old, new)


def test_same_seed_trains_identically_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected_draw = torch.rand(1)
    torch.manual_seed(123)
    first, second = _agent_with_data(), _agent_with_data()
    assert torch.equal(torch.rand(1), expected_draw)
    for _ in range(20):
        assert first.train_step().loss == second.train_step().loss
    for a, b in zip(first.online.parameters(), second.online.parameters(), strict=True):
        assert torch.equal(a, b)


def test_prioritized_agent_updates_priorities_of_the_sampled_slots() -> None:
    agent = _agent_with_data(prioritized=True)
    before = agent.buffer.tree.get(np.arange(50)).copy()
    result = agent.train_step()
    after = agent.buffer.tree.get(np.arange(50))
    assert result is not None and not np.array_equal(before, after)
    agent.buffer.tree.check_invariants()


def test_n_step_agent_stores_discounted_multi_step_transitions() -> None:
    agent = DQNAgent(_config(n_step=3, gamma=0.5))
    stored = [
        agent.observe(np.full(4, i, np.float32), 0, 1.0, np.full(4, i + 1, np.float32))
        for i in range(3)
    ]
    assert stored == [0, 0, 1] and len(agent.buffer) == 1
    assert agent.buffer.rewards[0] == pytest.approx(1.75)
    assert agent.buffer.steps[0] == 3  # bootstrapped with gamma^3 at train time
    np.testing.assert_array_equal(agent.buffer.next_states[0], np.full(4, 3.0))


def test_n_step_rows_bootstrap_with_gamma_to_the_k() -> None:
    batch = Batch(
        states=np.zeros((2, 2), np.float32),
        actions=np.array([1, 1]),
        rewards=np.array([1.0, 1.0], np.float32),
        next_states=np.zeros((2, 2), np.float32),
        dones=np.zeros(2, np.float32),
        steps=np.array([1.0, 3.0], np.float32),
    )
    _, td = _constant_q_agent(double=True).train_on_batch(batch)
    np.testing.assert_allclose(td, [1.0 - (1.0 + 0.5 * 10.0), 1.0 - (1.0 + 0.125 * 10.0)])


def test_a_changed_gamma_applies_to_transitions_already_stored() -> None:
    agent = _constant_q_agent(double=True)
    agent.buffer.add([0.0, 0.0], 1, 1.0, [0.0, 0.0])
    agent.config = agent.config.replace(gamma=0.25)
    td = agent.train_step().td_errors
    assert td[0] == pytest.approx(1.0 - (1.0 + 0.25 * 10.0))


def test_reconfigure_applies_hyperparameters_and_refuses_shape_changes() -> None:
    agent = _agent_with_data()
    agent.observe(np.zeros(4), 0, 1.0, np.zeros(4))
    agent.reconfigure(agent.config.replace(lr=0.05, gamma=0.2, n_step=3))
    assert agent.optimizer.param_groups[0]["lr"] == 0.05
    assert agent.nstep is not None and agent.nstep.gamma == 0.2 and agent.config.gamma == 0.2
    with pytest.raises(ValueError, match="hidden_sizes"):
        agent.reconfigure(agent.config.replace(hidden_sizes=(8,)))


def test_observe_refuses_an_out_of_range_action() -> None:
    with pytest.raises(ValueError, match="action"):
        DQNAgent(_config()).observe(np.zeros(4), 3, 0.0, np.zeros(4))


def test_numpy_export_matches_the_agent_and_device_is_reported() -> None:
    agent = _agent_with_data()
    for _ in range(5):
        agent.train_step()
    states = np.random.default_rng(2).random((6, 4), dtype=np.float32)
    np.testing.assert_allclose(
        agent.numpy_network().q_values(states), agent.q_values(states), atol=1e-5
    )
    assert agent.device == "cpu" and agent.stats()["steps_done"] == 5
