"""The cold-start gate in the simulated DQN: the heuristic (the service's scorer, or least-loaded)
routes until the model is proven on its trial share, the switch needs significant evidence, and a
sliding window can undo it; on randomised requests or in blocks of simulated time."""

from __future__ import annotations

import numpy as np
import pytest

from agent_app.rl.gate import HEURISTIC, MODEL
from agent_app.rl.scorer import best_replicas
from simulator.dqn_gate import RoutingGate
from simulator.dqn_policy import DQNPolicy
from simulator.router_view import RouterPolicy
from simulator.runner import run_policy
from simulator.scenarios import Scenario

PER_REPLICA = {"network": "per_replica", "batch_size": 32}
TINY = Scenario("tiny_hetero", "3 replicas of three speeds at 70% load, for quick runs.",
                speeds=(1.0, 0.6, 0.3), max_batches=(8, 6, 4), utilization=0.7)


def feed(gate: RoutingGate, n: int, model_mean: float, heuristic_mean: float, seed: int = 0) -> None:
    """``n`` outcomes on the arms the gate assigns, rewards drawn around each arm's mean."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        arm = gate.arm()
        mean = model_mean if arm == MODEL else heuristic_mean
        gate.record(arm, float(rng.normal(mean, 1.0)))


def test_the_heuristic_routes_and_the_model_gets_its_trial_share_while_unproven() -> None:
    gate = RoutingGate(seed=1)
    feed(gate, 6000, model_mean=0.0, heuristic_mean=0.0)
    assert gate.leader == HEURISTIC and gate.switches == []
    assert gate.model_share() == pytest.approx(0.1, abs=0.015)


def test_no_verdict_before_enough_outcomes_of_each_arm() -> None:
    gate = RoutingGate(seed=2)
    feed(gate, 1000, model_mean=5.0, heuristic_mean=0.0)  # ~100 model outcomes: too few
    assert gate.leader == HEURISTIC


def test_a_significantly_better_model_takes_over_at_a_decision_point_and_keeps_a_holdout() -> None:
    gate = RoutingGate(seed=3)
    feed(gate, 4000, model_mean=0.5, heuristic_mean=0.0)
    assert gate.leader == MODEL and len(gate.switches) == 1
    switch = gate.switches[0]
    assert switch["outcomes"] % gate.decide_every == 0 and switch["model_lead"] > 2 * switch["stderr"]
    before = dict(gate.routed)
    feed(gate, 4000, model_mean=0.5, heuristic_mean=0.0, seed=4)
    heuristic_share = (gate.routed[HEURISTIC] - before[HEURISTIC]) / 4000
    assert heuristic_share == pytest.approx(0.05, abs=0.015)


def test_a_sliding_window_lets_a_worse_model_lose_control_again() -> None:
    gate = RoutingGate(seed=5, window=500)
    feed(gate, 4000, model_mean=0.5, heuristic_mean=0.0)
    assert gate.leader == MODEL
    feed(gate, 30_000, model_mean=-0.5, heuristic_mean=0.0, seed=6)
    assert gate.leader == HEURISTIC and [s["routes"] for s in gate.switches] == [MODEL, HEURISTIC]


def test_model_exploration_stays_within_the_margin_of_the_best_q() -> None:
    gate = RoutingGate(seed=7)
    picks = {gate.explore([0.0, -0.2, -5.0], epsilon=1.0) for _ in range(200)}
    assert picks == {0, 1}
    assert {gate.explore([0.0, -0.2, -5.0], epsilon=0.0) for _ in range(20)} == {0}


def test_the_gate_is_on_by_default_for_the_per_replica_network_only() -> None:
    assert DQNPolicy(config_overrides={"network": "per_replica"}).gate is not None
    assert DQNPolicy().gate is None
    assert DQNPolicy(config_overrides={"network": "per_replica"}, gate=False).gate is None
    with pytest.raises(ValueError, match="per-replica"):
        DQNPolicy(gate=True)


class ScorerRouter(RouterPolicy):
    """The service's scorer as a plain router, from the body's per-replica signals."""

    def choose(self, request_fields: dict, rng: np.random.Generator) -> int:
        reps = request_fields["replicas"]
        ties = best_replicas([r["load"] for r in reps], running=[r["running"] for r in reps],
                             waiting=[r["waiting"] for r in reps],
                             kv_cache_usage=[r["kv_cache_usage"] for r in reps])
        return ties[0] if len(ties) == 1 else ties[int(rng.integers(len(ties)))]


@pytest.mark.parametrize(("heuristic", "reference"), [(None, ScorerRouter()),
                                                      ("least_loaded", "least_loaded")])
def test_with_no_trial_share_the_gated_dqn_routes_exactly_as_its_heuristic(heuristic, reference) -> None:
    gate = {"trial_fraction": 0.0, **({"heuristic": heuristic} if heuristic else {})}
    policy = DQNPolicy(train_requests=0, config_overrides=PER_REPLICA, gate=gate)
    gated = run_policy(TINY, policy, 400, 0)
    plain = run_policy(TINY, reference, 400, 0)
    assert (gated.records.replica == plain.records.replica).all()
    assert policy.trained_on == 400  # every heuristic decision was a training experience
    assert gated.info["gate"]["routed"] == {MODEL: 0, HEURISTIC: 400}
    assert gated.info["gate"]["config"]["heuristic"] == (heuristic or "scorer")


def test_the_scorer_and_least_loaded_route_differently_on_a_heterogeneous_cluster() -> None:
    # The scorer reads waiting and KV use: on replicas of three speeds it is not least-loaded.
    runs = [run_policy(TINY, DQNPolicy(train_requests=0, config_overrides=PER_REPLICA,
                                       gate={"trial_fraction": 0.0, "heuristic": h}), 400, 0)
            for h in ("scorer", "least_loaded")]
    assert (runs[0].records.replica != runs[1].records.replica).any()
    with pytest.raises(ValueError, match="heuristic must be one of"):
        DQNPolicy(config_overrides=PER_REPLICA, gate={"heuristic": "p2c"})


class Context:
    num_replicas = max_replicas = 3

    def raw_state(self) -> list[float]:
        return [4.0, 3.0, 3.0, 2.0, 0.1, 1.0, 1.0, 0.2, 0.3, 0.5]


def _heuristic_pick(heuristic: str, waiting: list[int]) -> int:
    """What the heuristic arm routes a request to when r1 holds its whole prefix."""
    policy = DQNPolicy(train_requests=0, config_overrides=PER_REPLICA,
                       gate={"trial_fraction": 0.0, "heuristic": heuristic})
    policy.start(Context())
    policy.set_mode("eval")
    hashes = [11, 12, 13, 14]
    policy.prefix_index.remember("r1", hashes)
    replicas = [{"name": f"r{i}", "load": 2 + w, "running": 2, "waiting": w, "kv_cache_usage": 0.3}
                for i, w in enumerate(waiting)]
    body = {"replica_loads": [r["load"] for r in replicas], "queue_depth": 2, "recent_latency_ms": 100,
            "current_rps": 1, "success_rate": 1, "replicas": replicas,
            "request": {"prompt_tokens": 2048, "max_tokens": 50, "prefix_hashes": hashes}}
    return policy.choose(body, np.random.default_rng(0))


def test_the_scorer_arm_reads_the_service_prefix_index() -> None:
    assert _heuristic_pick("scorer", [1, 2, 1]) == 1  # close queues: the holder of the prefix
    assert _heuristic_pick("scorer", [0, 9, 0]) != 1  # a much longer queue: not the holder
    assert _heuristic_pick("least_loaded", [1, 2, 1]) != 1  # least-loaded ignores the prefix


def test_the_run_records_when_the_model_took_over() -> None:
    # A model that is always judged better: huge lead (z = 0) after a few samples.
    policy = DQNPolicy(train_requests=0, config_overrides=PER_REPLICA,
                       gate={"trial_fraction": 0.5, "min_samples": 20, "z": 0.0,
                             "decide_every": 50, "window": 100})
    result = run_policy(TINY, policy, 600, 0)
    switches = result.info["gate"]["switches"]
    assert switches and all(s["outcomes"] % 50 == 0 for s in switches)
    assert policy.curve["gate_switches"][0]["outcomes"] == switches[0]["outcomes"]


# --- block assignment (switchback) in simulated time --------------------------------------------

BLOCK = {"assignment": "block", "block_seconds": 1.0, "min_blocks": 8}
PER_BLOCK = 20  # requests per block in ``feed_blocks``


def feed_blocks(gate: RoutingGate, blocks: int, reward, start: float = 0.0, seed: int = 0) -> list[str]:
    """``PER_BLOCK`` requests a simulated second for ``blocks`` seconds from ``start``, each
    outcome recorded at once with ``reward(arm, rng)``; the arm of every request, in order."""
    rng = np.random.default_rng(seed)
    arms = []
    for i in range(blocks * PER_BLOCK):
        arm = gate.arm(start + i / PER_BLOCK)
        gate.record(arm, reward(arm, rng), block=gate.block)
        arms.append(arm)
    return arms


def means(model: float, heuristic: float):
    return lambda arm, rng: float(rng.normal(model if arm == MODEL else heuristic, 1.0))


def test_one_arm_routes_every_request_of_a_block_and_the_model_gets_its_trial_share_of_blocks() -> None:
    gate = RoutingGate.from_options(BLOCK, seed=1)
    arms = feed_blocks(gate, 300, means(0.0, 0.0))
    per_block = [set(arms[b * PER_BLOCK:(b + 1) * PER_BLOCK]) for b in range(300)]
    assert all(len(arms_in) == 1 for arms_in in per_block)
    assert gate.leader == HEURISTIC and gate.switches == []
    assert gate.blocks[MODEL] == 30 and gate.model_share() == pytest.approx(0.1)
    assert gate.describe()["blocks"] == {MODEL: 30, HEURISTIC: 270}


def test_a_model_better_on_its_blocks_takes_over_at_a_block_boundary_and_keeps_a_holdout() -> None:
    gate = RoutingGate.from_options(BLOCK, seed=2)
    feed_blocks(gate, 200, means(0.5, 0.0))
    assert gate.leader == MODEL and len(gate.switches) == 1
    switch = gate.switches[0]
    assert "block" in switch and switch["model_lead"] > 2 * switch["stderr"]
    assert "blocks" not in gate.last_verdict["reason"]  # a verdict, not "too few blocks"
    before = dict(gate.blocks)
    feed_blocks(gate, 400, means(0.5, 0.0), start=200.0)
    assert gate.blocks[HEURISTIC] - before[HEURISTIC] == pytest.approx(20, abs=1)  # 5 % of 400


def test_no_block_verdict_before_enough_blocks_of_each_arm() -> None:
    gate = RoutingGate.from_options(BLOCK, seed=3)
    feed_blocks(gate, 60, means(5.0, 0.0))  # 6 model blocks of 8
    assert gate.leader == HEURISTIC and "8 of each" in gate.last_verdict["reason"]


def test_a_worse_model_loses_control_again_on_its_block_means() -> None:
    gate = RoutingGate.from_options({**BLOCK, "block_window": 20}, seed=4)
    feed_blocks(gate, 200, means(0.5, 0.0))
    assert gate.leader == MODEL
    feed_blocks(gate, 1000, means(-0.5, 0.0), start=200.0, seed=5)
    assert gate.leader == HEURISTIC and [s["routes"] for s in gate.switches] == [MODEL, HEURISTIC]


def shared_cluster():
    """Rewards where both arms share the replicas: the model's own pick is 0.3 better than the
    heuristic's, but every request loses the model's share of the last 10 requests (half a
    block), so a model that routes everything leaves the cluster 0.7 worse off than the heuristic."""
    recent: list[str] = []

    def reward(arm: str, rng: np.random.Generator) -> float:
        recent.append(arm)
        del recent[:-10]
        share = recent.count(MODEL) / len(recent)
        return (0.3 if arm == MODEL else 0.0) - share + float(rng.normal(0.0, 0.3))
    return reward


def test_interference_fools_randomised_requests_but_not_blocks() -> None:
    by_request, reward, rng = RoutingGate(seed=6), shared_cluster(), np.random.default_rng(6)
    for _ in range(6000):
        arm = by_request.arm()
        by_request.record(arm, reward(arm, rng))
    # Its lead on a cluster the heuristic balances hands it control, which it loses once it routes.
    assert [s["routes"] for s in by_request.switches[:2]] == [MODEL, HEURISTIC]
    by_block = RoutingGate.from_options(BLOCK, seed=6)
    feed_blocks(by_block, 300, shared_cluster())
    assert by_block.switches == [] and by_block.last_verdict["model_lead"] < -0.3


def test_blocks_are_numbered_on_across_simulations() -> None:
    gate = RoutingGate.from_options(BLOCK, seed=7)
    gate.arm(0.0)
    gate.arm(5.5)
    assert gate.block == 5
    gate.start_run()  # the next simulation's clock restarts at 0
    gate.arm(0.0)
    assert gate.block == 6


def test_the_gated_dqn_routes_in_blocks_of_simulated_time() -> None:
    policy = DQNPolicy(train_requests=0, config_overrides=PER_REPLICA,
                       gate={**BLOCK, "block_seconds": 5.0, "trial_fraction": 0.5})
    result = run_policy(TINY, policy, 600, 0)
    gate = result.info["gate"]
    assert gate["config"]["assignment"] == "block" and gate["blocks"][MODEL] > 0
    assert gate["routed"][MODEL] > 0 and gate["routed"][MODEL] + gate["routed"][HEURISTIC] == 600
    assert policy.trained_on == 600


def test_the_model_arm_chooses_among_the_scorers_near_best_only() -> None:
    def picks(gate: dict) -> set[int]:
        policy = DQNPolicy(train_requests=0, config_overrides=PER_REPLICA,
                           gate={"trial_fraction": 1.0, **gate})
        policy.start(Context())
        policy.set_mode("eval")
        chosen = set()
        for kv in np.linspace(0.0, 0.9, 10):
            replicas = [{"name": f"r{i}", "load": 2 + w, "running": 2, "waiting": w, "kv_cache_usage": u}
                        for i, (w, u) in enumerate(zip([5, 0, 5], [kv, 0.9 - kv, kv], strict=True))]
            body = {"replica_loads": [r["load"] for r in replicas], "queue_depth": 2,
                    "recent_latency_ms": 100, "current_rps": 1, "success_rate": 1, "replicas": replicas}
            chosen.add(policy.choose(body, np.random.default_rng(0)))
        return chosen

    # Queues 5, 0 and 5 waiting: the scorer rates r1 at least 4 points above the others.
    assert picks({}) == {1}  # the default margin, the service's: 1 point
    assert picks({"candidate_margin": 1000.0}) <= {0, 1, 2}
