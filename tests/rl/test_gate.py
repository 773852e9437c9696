"""Who routes (agent_app/rl/gate.py): the heuristic until the model is measured better, a holdout
that can hand control back, no flapping on noise, and exploration that stays near the best replica."""

from __future__ import annotations

import random

import pytest

from agent_app.rl.gate import HEURISTIC, MODEL, ArmTotals, GateConfig, assign_arm, bounded_explore, decide

CONFIG = GateConfig(min_samples=50)


def _arm(rng: random.Random, mean: float, n: int, spread: float = 1.0) -> ArmTotals:
    totals = ArmTotals()
    for _ in range(n):
        totals = totals.add(rng.gauss(mean, spread))
    return totals


def test_the_heuristic_keeps_routing_until_each_arm_has_enough_outcomes() -> None:
    rng = random.Random(0)
    verdict = decide(_arm(rng, 5.0, 49), _arm(rng, 0.0, 1000), HEURISTIC, CONFIG)
    assert verdict.leader == HEURISTIC and "50 of each" in verdict.reason


def test_a_clearly_better_model_takes_over_and_a_clearly_worse_one_hands_back() -> None:
    rng = random.Random(1)
    assert decide(_arm(rng, 1.0, 200), _arm(rng, 0.0, 2000), HEURISTIC, CONFIG).leader == MODEL
    assert decide(_arm(rng, -1.0, 200), _arm(rng, 0.0, 2000), MODEL, CONFIG).leader == HEURISTIC


def test_equal_arms_never_flip_the_current_leader() -> None:
    rng = random.Random(2)
    flips = sum(decide(_arm(rng, 0.0, 300), _arm(rng, 0.0, 300), current, CONFIG).leader != current
                for current in (MODEL, HEURISTIC) for _ in range(50))
    assert flips <= 5  # z = 2 on one side: about 2 % of equal pairs by chance


def test_the_other_arm_gets_its_configured_share() -> None:
    rng, config = random.Random(3), GateConfig(trial_fraction=0.2, holdout_fraction=0.05)
    trials = sum(assign_arm(HEURISTIC, config, rng) == MODEL for _ in range(20_000)) / 20_000
    holdouts = sum(assign_arm(MODEL, config, rng) == HEURISTIC for _ in range(20_000)) / 20_000
    assert trials == pytest.approx(0.2, abs=0.015) and holdouts == pytest.approx(0.05, abs=0.01)


def test_exploration_never_picks_a_replica_rated_far_below_the_best() -> None:
    rng = random.Random(4)
    picks = {bounded_explore([0.0, -0.2, -3.0, -0.4], 0.5, rng) for _ in range(500)}
    assert picks == {0, 1, 3}


@pytest.mark.parametrize("field, value", [("trial_fraction", 1.5), ("holdout_fraction", -0.1),
                                          ("min_samples", 0), ("z", float("nan")),
                                          ("exploration_margin", -1.0)])
def test_bad_gate_settings_are_refused_by_name(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        GateConfig(**{field: value})
