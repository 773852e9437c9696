"""Prefix-cache-aware baselines (SGLang / vLLM router cache_aware, llm-d) and their indexes."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest

from simulator.policies import make_policy
from simulator.prefix_index import BlockLru, PrefixTree
from tests.simulator.gateway_bodies import body, plain

RNG = np.random.default_rng(0)


# --- the approximate indexes --------------------------------------------------------------------

def test_prefix_tree_matches_the_longest_shared_prefix_and_counts_blocks_per_replica() -> None:
    tree = PrefixTree(3)
    tree.insert([1, 2, 3, 4], 0)
    tree.insert([1, 2, 9], 1)
    assert tree.match([1, 2, 3, 7]) == (3, [0])
    assert tree.match([1, 2, 5]) == (2, [0, 1])  # both hold it; the first to send it leads
    assert tree.match([8]) == (0, [])
    assert tree.size == [4, 3, 0] and tree.smallest_tenant() == 2


def test_prefix_tree_eviction_drops_least_recently_used_leaves_down_to_the_budget() -> None:
    tree = PrefixTree(2)
    tree.insert([1, 2, 3], 0)
    tree.insert([1, 5, 6], 0)  # more recent
    tree.insert([1, 2, 3], 1)
    tree.evict(4)
    assert tree.size == [4, 3]
    assert tree.match([1, 5, 6]) == (3, [0])
    assert tree.match([1, 2, 3]) == (3, [1])  # replica 0 lost its stale leaf, 1 kept its copy
    tree.evict(1)
    assert tree.size == [1, 1] and tree.match([1, 5]) == (1, [0, 1])


def test_block_lru_forgets_the_least_recently_routed_blocks_of_a_replica() -> None:
    index = BlockLru(3)
    index.add([1, 2, 3], 0)
    index.add([1], 0)  # refreshes 1
    index.add([4], 0)  # evicts 2
    index.add([1, 2], 1)
    assert index.match([1, 2, 5, 3]) == {0: 1, 1: 2}  # stops where no replica holds a block
    assert index.match([1, 2, 3]) == {0: 2, 1: 2}  # llm-d counts held blocks, not a contiguous run
    assert index.held(0) == 3


# --- cache_aware --------------------------------------------------------------------------------

def test_cache_aware_sends_a_shared_prefix_to_its_holder_when_load_is_balanced() -> None:
    policy = make_policy("cache_aware")
    first = policy.choose(body([0, 0, 0], hashes=[10, 11, 12, 13]), RNG)
    assert first == 0  # nothing matched: least loaded, lowest index
    assert policy.choose(body([30, 0, 0], hashes=[10, 11, 12, 99]), RNG) == 0  # 3/4 > 0.3
    assert policy.choose(body([30, 0, 0], hashes=[10, 50, 51, 52]), RNG) == 1  # 1/4: min load


def test_cache_aware_routes_to_the_least_loaded_when_load_is_imbalanced() -> None:
    policy = make_policy("cache_aware")
    policy.choose(body([0, 0, 0], hashes=[10, 11, 12]), RNG)
    assert policy.choose(body([100, 35, 40], hashes=[10, 11, 12]), RNG) == 1  # 65 > 64, 100 > 52
    assert policy.choose(body([100, 40, 45], hashes=[10, 11, 12]), RNG) == 0  # 60 <= 64: cache
    assert policy.choose(plain([100, 100, 30]), RNG) == 2  # clipped loads still qualify
    assert policy.tree.match([10, 11, 12]) == (3, [0, 1])  # imbalanced picks are indexed too


def test_cache_aware_smallest_tree_variant_sends_misses_where_the_router_sent_least() -> None:
    policy = make_policy("cache_aware", miss="smallest_tree")
    policy.choose(body([0, 0], hashes=[1, 2, 3, 4]), RNG)
    assert policy.choose(body([0, 30], hashes=[7, 8]), RNG) == 1  # tree sizes 4 vs 0
    assert policy.tree.size == [4, 2]
    with pytest.raises(ValueError, match="miss"):
        make_policy("cache_aware", miss="random")


def test_cache_aware_without_prefix_hashes_gives_each_request_unique_blocks() -> None:
    policy = make_policy("cache_aware", miss="smallest_tree")
    fields = body([0, 0], prompt_tokens=1500)  # no prefix_hashes: 3 blocks of 512 tokens
    assert [policy.choose(fields, RNG) for _ in range(4)] == [0, 1, 0, 1]
    assert policy.tree.size == [6, 6]


def test_cache_aware_evicts_each_interval_down_to_the_tree_budget() -> None:
    policy = make_policy("cache_aware", max_tree_blocks=2, eviction_interval_s=120.0)
    policy.start(SimpleNamespace(now=0.0))
    policy.choose(body([0, 0], hashes=[1, 2, 3, 4]), RNG)
    policy.context.now = 119.0
    policy.choose(body([0, 0], hashes=[7]), RNG)
    assert policy.tree.size[0] == 5  # not yet an interval
    policy.context.now = 121.0
    policy.choose(body([0, 0], hashes=[8]), RNG)  # evicts to 2 blocks, then inserts
    assert policy.tree.size[0] == 3
    assert policy.tree.match([7]) == (1, [0])  # the newer prefix survives whole
    assert policy.tree.match([1, 2, 3, 4]) == (1, [0])  # the older one lost its LRU leaves


# --- llm-d --------------------------------------------------------------------------------------

def test_llmd_scorers_normalise_queue_invert_kv_and_measure_prefix_share() -> None:
    policy = make_policy("llmd_scorer")
    policy.index.add([1, 2, 3], 2)
    parts = policy.scores(body([4, 8, 12], waiting=[0, 4, 8], kv=[0.2, 0.5, 0.9],
                               hashes=[1, 2, 3, 4]))
    assert parts[0] == pytest.approx((1.0, 0.8, 0.0))
    assert parts[1] == pytest.approx((0.5, 0.5, 0.0))
    assert parts[2] == pytest.approx((0.0, 0.1, 0.75))
    even = policy.scores(body([3, 3], waiting=[2, 2]))
    assert [p[0] for p in even] == [1.0, 1.0]  # equal queues are neutral


def test_llmd_prefix_weight_three_beats_either_load_scorer_but_not_both() -> None:
    policy = make_policy("llm-d")
    policy.index.add([1, 2], 1)
    # replica 0: shortest queue, a quarter of its KV cache free (2 + 0.5); replica 1: the prefix
    # with a full KV cache (3) -> the prefix wins; equal weights would pick replica 0
    assert policy.choose(body([0, 9], waiting=[0, 9], kv=[0.75, 1.0], hashes=[1, 2]), RNG) == 1
    # replica 0: shortest queue and emptiest KV cache (2 + 2); replica 1: the prefix (3)
    assert policy.choose(body([0, 9], waiting=[0, 9], kv=[0.0, 1.0], hashes=[1, 2]), RNG) == 0
    queue_only = make_policy("llmd_scorer", prefix_weight=0.0)
    queue_only.index.add([1, 2], 1)
    assert queue_only.choose(body([0, 9], waiting=[0, 9], kv=[0.5, 0.5], hashes=[1, 2]), RNG) == 0


def test_llmd_matches_at_most_4096_tokens_and_breaks_ties_at_random() -> None:
    policy = make_policy("llmd_scorer")
    hashes = list(range(20))
    policy.choose(body([0, 0], hashes=hashes), RNG)
    assert policy.index.held(0) + policy.index.held(1) == 8  # 8 blocks of 512 tokens
    fresh = make_policy("llmd_scorer")
    counts = Counter(fresh.choose(body([0, 0, 0]), RNG) for _ in range(300))
    assert set(counts) == {0, 1, 2}


def test_llmd_reads_the_load_as_queue_when_only_the_original_fields_are_sent() -> None:
    policy = make_policy("llmd_scorer")
    assert policy.choose(plain([7, 2, 9]), RNG) == 1
