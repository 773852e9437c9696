"""Who routes (agent_app/rl/gate.py): the heuristic until the model is measured better, a holdout
that can hand control back, no flapping on noise, and exploration that stays near the best replica;
on randomised requests or in switchback time blocks."""

from __future__ import annotations

import math
import random

import pytest

from agent_app.rl.gate import (
    HEURISTIC,
    MODEL,
    ArmTotals,
    GateConfig,
    assign_arm,
    assign_block,
    block_arm,
    block_index,
    bounded_explore,
    decide,
    decide_blocks,
    decide_paired,
    paired_block_differences,
)

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


# --- block assignment (switchback): one arm routes each time block -----------------------------

BLOCKS = GateConfig(assignment="block", min_blocks=8)


@pytest.mark.parametrize("fraction", [0.1, 0.95])
def test_block_arms_come_at_the_share_evenly_spread_and_the_same_in_every_process(fraction: float) -> None:
    arms = [block_arm(b, fraction) for b in range(10_000)]
    assert arms.count(MODEL) / len(arms) == pytest.approx(fraction, abs=0.001)
    for start in range(0, 10_000, 50):  # low discrepancy: any 50 consecutive blocks hold their share
        assert abs(arms[start:start + 50].count(MODEL) - 50 * fraction) <= 2
    assert arms == [block_arm(b, fraction) for b in range(10_000)]  # a pure function of the block


def test_the_trial_blocks_stay_model_blocks_when_the_model_takes_over() -> None:
    trial = {b for b in range(5000) if assign_block(HEURISTIC, BLOCKS, b) == MODEL}
    led = {b for b in range(5000) if assign_block(MODEL, BLOCKS, b) == MODEL}
    assert len(trial) == pytest.approx(500, abs=5) and len(led) == pytest.approx(4750, abs=5)
    assert trial <= led


def test_a_block_is_the_same_for_every_moment_in_it() -> None:
    assert {block_index(t, 60.0) for t in (120.0, 150.5, 179.999)} == {2}
    assert block_index(180.0, 60.0) == 3 and block_index(1.7e9, 60.0) == 28_333_333


def test_a_block_verdict_needs_enough_blocks_of_each_arm() -> None:
    verdict = decide_blocks([1.0] * 7, [0.0] * 100, HEURISTIC, BLOCKS)
    assert verdict.leader == HEURISTIC and "8 of each" in verdict.reason and "blocks" in verdict.reason


def test_block_means_decide_with_the_same_hysteresis() -> None:
    rng = random.Random(5)
    better = [rng.gauss(0.5, 0.2) for _ in range(10)]
    worse = [rng.gauss(-0.5, 0.2) for _ in range(10)]
    baseline = [rng.gauss(0.0, 0.2) for _ in range(40)]
    assert decide_blocks(better, baseline, HEURISTIC, BLOCKS).leader == MODEL
    assert decide_blocks(worse, baseline, MODEL, BLOCKS).leader == HEURISTIC
    # A lead of 2.5 standard errors takes over (z 2), but the same deficit does not hand back (z_back 3).
    evidence = decide_blocks(better, baseline, HEURISTIC, BLOCKS)
    ahead, behind = ([m - evidence.lead + sign * 2.5 * evidence.stderr for m in better] for sign in (1, -1))
    assert decide_blocks(ahead, baseline, HEURISTIC, BLOCKS).leader == MODEL
    assert decide_blocks(behind, baseline, MODEL, BLOCKS).leader == MODEL


def test_the_block_verdict_weighs_the_spread_between_blocks_not_between_requests() -> None:
    # Ten blocks a side of 100 requests each, little noise within a block, much between blocks
    # (each block had its own cluster state): a 0.2 lead on 1 000 requests is not a proven one.
    rng = random.Random(6)
    model_blocks = [[m + rng.gauss(0, 0.05) for _ in range(100)]
                    for m in (0.2 + rng.gauss(0, 1.0) for _ in range(10))]
    heuristic_blocks = [[m + rng.gauss(0, 0.05) for _ in range(100)]
                        for m in (rng.gauss(0, 1.0) for _ in range(10))]
    means = [[sum(b) / len(b) for b in arm] for arm in (model_blocks, heuristic_blocks)]
    pooled = [ArmTotals.of(r for b in arm for r in b) for arm in (model_blocks, heuristic_blocks)]
    by_block = decide_blocks(*means, HEURISTIC, BLOCKS)
    assert by_block.leader == HEURISTIC
    assert by_block.stderr > 2.5 * decide(*pooled, HEURISTIC, CONFIG).stderr


def test_paired_differences_take_each_minority_block_against_its_neighbours() -> None:
    model = {10: 1.0, 20: 3.0, 30: 0.0}
    heuristic = {9: 0.0, 11: 0.5, 19: 2.0, 31: -1.0, 40: 5.0}  # 30 has only a later neighbour
    assert paired_block_differences(model, heuristic, HEURISTIC) == [0.75, 1.0, 1.0]
    # Once the model leads the heuristic's blocks are the minority; the sign stays model - heuristic.
    model, heuristic = {9: 1.0, 11: 2.0, 50: 9.0}, {10: 0.5}
    assert paired_block_differences(model, heuristic, MODEL) == [1.0]


def test_a_drifting_cluster_hides_a_lead_from_block_means_but_not_from_pairs() -> None:
    # The traffic drifts slowly (a sine over 600 blocks), the model's blocks are 0.1 better: block
    # means vary with the drift, neighbouring blocks share it.
    rng = random.Random(7)
    drift = {b: math.sin(b / 100) + rng.gauss(0, 0.05) for b in range(600)}
    model = {b: drift[b] + 0.1 for b in range(600) if block_arm(b, 0.1) == MODEL}
    heuristic = {b: drift[b] for b in range(600) if b not in model}
    independent = decide_blocks(list(model.values()), list(heuristic.values()), HEURISTIC, BLOCKS)
    assert independent.leader == HEURISTIC
    paired = decide_paired(paired_block_differences(model, heuristic, HEURISTIC), HEURISTIC, BLOCKS)
    assert paired.leader == MODEL and paired.lead == pytest.approx(0.1, abs=0.03)
    assert decide_paired([1.0] * 7, HEURISTIC, BLOCKS).reason == "7 paired blocks; 8 are needed"


def test_arm_totals_of_a_list_match_adding_one_at_a_time() -> None:
    values = [0.5, -1.25, 2.0, 0.0]
    one_by_one = ArmTotals()
    for v in values:
        one_by_one = one_by_one.add(v)
    assert ArmTotals.of(values) == one_by_one


@pytest.mark.parametrize("field, value", [("assignment", "minute"), ("block_seconds", 0.0),
                                          ("block_seconds", float("inf")), ("min_blocks", 1)])
def test_bad_block_settings_are_refused_by_name(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        GateConfig(**{field: value})
