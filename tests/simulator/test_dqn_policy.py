"""The in-process DQN router: trains online like the service, then routes greedily."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from simulator.dqn_policy import DQNPolicy  # noqa: E402
from simulator.runner import run_policy  # noqa: E402

SMALL = {"config_overrides": {"hidden_sizes": [32, 32], "batch_size": 64}}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # A tiny MLP called once per request: one thread is fastest, and kinder to a busy CI box.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained() -> tuple[DQNPolicy, object]:
    policy = DQNPolicy(train_requests=3000, seed=0, **SMALL)
    result = run_policy("heterogeneous", policy, 1500, seed=0)
    return policy, result


def test_dqn_trains_on_its_budget_then_evaluates_frozen(trained: tuple) -> None:
    policy, result = trained
    assert policy.mode == "eval"  # heterogeneous is stationary: greedy and frozen
    assert policy.trained_on == 3000  # one stored transition per training request
    assert policy.seen == 4500
    ticks = 3000 // policy.train_every  # the first few find fewer than batch_size stored
    assert (ticks - 4) * policy.steps_per_train <= policy.agent.steps_done == len(policy.losses)
    assert policy.agent.steps_done <= ticks * policy.steps_per_train
    assert policy.agent.epsilon < 0.1  # the specification's decay ran during training


def test_dqn_records_a_learning_curve_and_its_config(trained: tuple) -> None:
    policy, result = trained
    curve = result.curve
    assert curve["train_requests"] == 3000 and curve["requests"][-1] == 4500
    assert len(curve["latency_ms"]) == len(curve["reward"]) == len(curve["requests"])
    assert result.info["dqn_config"]["batch_size"] == 64
    assert result.info["train_every"] == 16


def test_dqn_prefers_the_fast_replica_after_training(trained: tuple) -> None:
    _, result = trained
    share = result.metrics["routed_share"]
    assert share[0] > share[2]
    assert result.metrics["failure_rate"] < 0.05


def test_dqn_keeps_learning_on_a_changing_cluster() -> None:
    policy = DQNPolicy(train_requests=500, seed=1, **SMALL)
    run_policy("outage", policy, 500, seed=1)
    assert policy.mode == "online" and policy.trained_on == 1000


def test_same_seed_same_dqn_decisions() -> None:
    runs = [run_policy("homogeneous", DQNPolicy(train_requests=400, seed=3, **SMALL), 400,
                       seed=3) for _ in range(2)]
    assert np.array_equal(runs[0].records.replica, runs[1].records.replica)


def test_unknown_mode_and_preset_are_refused() -> None:
    with pytest.raises(ValueError, match="preset"):
        DQNPolicy(preset="fast")
    with pytest.raises(ValueError, match="mode"):
        DQNPolicy().set_mode("sleep")


PER_REPLICA = {"config_overrides": {"network": "per_replica", "max_replicas": 8,
                                    "hidden_sizes": [32, 32], "batch_size": 64},
               "reward_overrides": {"latency_mode": "log"}}


def test_per_replica_dqn_learns_from_replica_signals_and_its_own_statistics() -> None:
    policy = DQNPolicy(train_requests=1500, seed=0, **PER_REPLICA)
    result = run_policy("heterogeneous", policy, 800, seed=0)
    assert policy.agent.config.network == "per_replica" and policy.trained_on == 1500
    assert not policy._pending  # every decision was matched to its experience
    learned = policy.replica_stats.get("r0")
    assert {"tpot_ms", "ttft_ms_per_ktok", "failure_rate"} <= set(learned)
    share = result.metrics["routed_share"]
    assert share[0] > share[2]
    assert result.info["network"] == "per_replica" and result.info["reward"]["latency_mode"] == "log"


def test_a_trained_per_replica_dqn_routes_a_cluster_of_another_size() -> None:
    policy = DQNPolicy(train_requests=300, seed=2, **PER_REPLICA)
    run_policy("heterogeneous", policy, 200, seed=2)  # 3 replicas
    result = run_policy("many_replicas", policy, 300, seed=2)  # 8 replicas, same weights
    assert policy.num_replicas == 8 and len(result.metrics["routed_share"]) == 8


def test_per_replica_choose_falls_back_on_replica_loads_alone() -> None:
    policy = DQNPolicy(train_requests=0, seed=0, **PER_REPLICA)

    class Context:
        num_replicas = 3

        def raw_state(self) -> list[float]:
            return [1.0, 5.0, 2.0, 0.0, 0.1, 1.0, 1.0, 0.2, 0.3, 0.5]

    policy.start(Context())
    policy.set_mode("eval")
    action = policy.choose({"replica_loads": [1, 5, 2], "queue_depth": 0, "recent_latency_ms": 100,
                            "current_rps": 1, "success_rate": 1}, np.random.default_rng(0))
    assert action in (0, 1, 2)
