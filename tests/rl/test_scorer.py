"""The gate's heuristic: least-loaded when only loads are known; with more, a score of each
replica's queue, KV-cache headroom and prefix match that trades affinity against load."""

from __future__ import annotations

import math
import random

import pytest

from agent_app.rl.policy import least_loaded
from agent_app.rl.scorer import (
    ScorerWeights,
    best_replicas,
    heuristic_choice,
    heuristic_scores,
    near_best_replicas,
)


def test_with_loads_alone_it_is_least_loaded_choice_and_tie_breaks_alike() -> None:
    rng = random.Random(0)
    for trial in range(2000):
        n = rng.randint(1, 12)
        # Small integer loads make ties common; some runs use floats, as the service accepts them.
        loads = ([rng.randint(0, 4) for _ in range(n)] if trial % 2 else
                 [round(rng.uniform(0, 100), rng.choice([0, 1, 6])) for _ in range(n)])
        seed = rng.randrange(2**32)
        assert heuristic_choice(loads, rng=random.Random(seed)) == least_loaded(loads, random.Random(seed))
        low = min(loads)
        assert best_replicas(loads) == [i for i, x in enumerate(loads) if x == low]
    # Signals that are absent everywhere (None, or a list of None / NaN) change nothing.
    loads = [3, 1, 1, 2]
    nothing = {"running": [None] * 4, "waiting": None, "kv_cache_usage": [math.nan] * 4,
               "prefix_match": [None] * 4}
    assert best_replicas(loads, **nothing) == [1, 2]
    assert [heuristic_choice(loads, **nothing, rng=random.Random(s)) for s in range(20)] == \
           [least_loaded(loads, random.Random(s)) for s in range(20)]


def test_prefix_affinity_wins_when_queues_are_close() -> None:
    # The holder of the whole prefix has one more request waiting: it still wins.
    assert heuristic_choice([6, 5, 5], waiting=[3, 2, 2], kv_cache_usage=[0.4, 0.4, 0.4],
                            prefix_match=[1.0, 0.0, 0.0]) == 0
    # With loads alone as the queue (no waiting reported) the same holds for close loads.
    assert heuristic_choice([11, 10, 10], prefix_match=[0.0, 0.0, 0.8]) == 2
    # A longer match beats a shorter one when everything else is equal.
    assert heuristic_choice([4, 4], waiting=[1, 1], prefix_match=[0.25, 0.75]) == 1


def test_a_much_longer_queue_beats_affinity() -> None:
    assert heuristic_choice([14, 4, 5], waiting=[10, 0, 1], kv_cache_usage=[0.5, 0.5, 0.5],
                            prefix_match=[1.0, 0.0, 0.0]) == 1
    assert heuristic_choice([40, 6], prefix_match=[1.0, 0.0]) == 1  # loads as the queue
    # The crossover (queues counting the request): a full match holds at four times the shortest,
    # ties at five, loses at six.
    assert heuristic_choice([0, 0], waiting=[3, 0], prefix_match=[1.0, 0.0]) == 0
    assert best_replicas([0, 0], waiting=[4, 0], prefix_match=[1.0, 0.0]) == [0, 1]
    assert heuristic_choice([0, 0], waiting=[5, 0], prefix_match=[1.0, 0.0]) == 1


def test_a_replica_with_a_full_kv_cache_is_avoided() -> None:
    assert heuristic_choice([2, 2, 2], waiting=[0, 0, 0], kv_cache_usage=[0.99, 0.2, 0.6]) == 1
    # Fewer requests but no memory left: the emptier replica is preferred.
    assert heuristic_choice([3, 4], waiting=[0, 0], kv_cache_usage=[1.0, 0.1]) == 1
    # Over 1 (a misreport) counts as full, not as worse than full.
    assert heuristic_scores([1, 1], kv_cache_usage=[1.7, 1.0]) == heuristic_scores([1, 1],
                                                                                   kv_cache_usage=[1.0, 1.0])


def test_the_queue_is_waiting_else_load_less_running_else_the_loads() -> None:
    # Running requests do not count: 8 running and none waiting beats 1 running and 2 waiting.
    assert heuristic_choice([8, 3], waiting=[0, 2]) == 0
    assert heuristic_choice([8, 3], running=[8, 1]) == 0  # the same, from load - running
    # One replica reports neither: every replica is compared on its load.
    assert heuristic_choice([8, 3], waiting=[0, None]) == 1


def test_replicas_without_a_signal_are_scored_neutrally() -> None:
    # An unreported KV use counts as the mean of the others': between the full and the empty one.
    scores = heuristic_scores([1, 1, 1], kv_cache_usage=[0.9, None, 0.1])
    assert scores[0] < scores[1] < scores[2]
    assert scores[1] == pytest.approx(heuristic_scores([1], kv_cache_usage=[0.5])[0])
    # An unknown prefix match is no match.
    assert heuristic_choice([1, 1], prefix_match=[None, 0.5]) == 1
    with pytest.raises(ValueError, match="3 values for 2 replicas"):
        heuristic_choice([1, 1], waiting=[0, 0, 0])


def test_ties_are_broken_at_random_among_the_best_and_weights_are_configurable() -> None:
    picks = {heuristic_choice([2, 2, 5], waiting=[0, 0, 3], kv_cache_usage=[0.3, 0.3, 0.3],
                              rng=random.Random(s)) for s in range(50)}
    assert picks == {0, 1}
    prefix_heavy = ScorerWeights(queue=1.0, kv_cache=0.0, prefix=10.0)
    assert heuristic_choice([40, 6], prefix_match=[1.0, 0.0], weights=prefix_heavy) == 0


def test_the_near_best_replicas_are_those_within_the_margin_of_the_best_score() -> None:
    # Loads alone: 5 x (3 + 1) / (load + 1) = 3.33, 5 and 2.5.
    assert near_best_replicas([5, 3, 7], 1.0) == [1]
    assert near_best_replicas([5, 3, 7], 2.0) == [0, 1]
    assert near_best_replicas([5, 3, 7], 100.0) == [0, 1, 2]
    # A held prefix brings a busier replica within the margin of the shortest queue: 5 and 5.43.
    assert near_best_replicas([1, 6], 1.0, prefix_match=[0.0, 1.0]) == [0, 1]
