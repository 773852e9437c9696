"""Prefix-cache-aware routers as simulator baselines: SGLang's / the vLLM router's ``cache_aware``
policy and llm-d's default scheduling profile (queue, KV-cache and prefix scorers).

Neither sees a replica's cache: each keeps its own approximate index of the prefixes it sent
where (``prefix_index.py``), keyed on ``request["prefix_hashes"]`` (512-token blocks).
"""

from __future__ import annotations

import numpy as np

from simulator.prefix_index import BlockLru, PrefixTree
from simulator.router_view import (
    BLOCK_TOKENS,
    ReplicaIds,
    RouterPolicy,
    active_requests,
    argmax_random,
    kv_cache_usage,
    prefix_hashes,
    prompt_blocks,
    waiting_requests,
)

CHARS_PER_TOKEN = 4  # llm-d's averageCharactersPerToken, to turn character budgets into blocks


class CacheAwarePolicy(RouterPolicy):
    """SGLang model gateway / vLLM router ``cache_aware`` (``src/policies/cache_aware.rs``, ``tree.rs``).

    Reads the router's in-flight count per worker and its own radix tree of what it routed.
    Imbalanced (max - min > ``balance_abs_threshold`` 64 AND max > min * ``balance_rel_threshold``
    1.5): the least loaded worker. Balanced: the longest prefix match in the tree; if matched /
    request blocks > ``cache_threshold`` (0.3) the worker holding it (the node's oldest holder,
    where Rust takes a cached or arbitrary one), else ``miss="min_load"`` the least loaded worker
    (current SGLang and vLLM router) or ``miss="smallest_tree"`` the worker whose tree is smallest
    (earlier sgl-router, and what the source's header comment still says). Either way the request
    is inserted under the chosen worker. Load ties go to the lowest index (``min_by_key``).
    Every ``eviction_interval_s`` (120 s) each worker's tree is cut to ``max_tree_blocks`` by LRU
    leaves: the default 2^26 characters at 4 characters per token is 32 768 blocks of 512 tokens.
    Blocks stand in for characters; without ``prefix_hashes`` each request gets unique blocks
    (one per 512 prompt tokens), as distinct prompts never match. The CLI defaults are used
    (0.3 / 64 / 1.5 / 120 s / 2^26), not the library struct's (0.5 / 32 / 1.1 / 30 s / 10 000).
    """

    name = "cache_aware"

    def __init__(self, cache_threshold: float = 0.3, balance_abs_threshold: float = 64,
                 balance_rel_threshold: float = 1.5, eviction_interval_s: float = 120.0,
                 max_tree_blocks: int = 2**26 // (BLOCK_TOKENS * CHARS_PER_TOKEN),
                 miss: str = "min_load") -> None:
        if miss not in ("min_load", "smallest_tree"):
            raise ValueError(f"miss must be 'min_load' or 'smallest_tree', not {miss!r}")
        self.cache_threshold = cache_threshold
        self.abs_threshold = balance_abs_threshold
        self.rel_threshold = balance_rel_threshold
        self.eviction_interval_s = eviction_interval_s
        self.max_tree_blocks = max_tree_blocks
        self.miss = miss
        self.tree: PrefixTree | None = None  # tenants are replica ids (ReplicaIds), not positions
        self.ids = ReplicaIds()
        self._last_eviction = 0.0
        self._unique = 0

    def _blocks(self, request_fields: dict) -> list[int]:
        hashes = prefix_hashes(request_fields)
        if hashes is not None:
            return hashes
        n = prompt_blocks(request_fields)
        self._unique += n
        return list(range(-self._unique, -self._unique + n))  # negative: never a trace hash

    def _maybe_evict(self) -> None:
        now = self.now()
        if self.eviction_interval_s > 0 and now - self._last_eviction >= self.eviction_interval_s:
            self.tree.evict(self.max_tree_blocks)
            self._last_eviction = now

    def choose(self, request_fields: dict, rng: np.random.Generator) -> int:
        ids = self.ids.of(request_fields)
        if self.tree is None:
            self.tree, self._last_eviction = PrefixTree(len(self.ids)), self.now()
        self.tree.grow(len(self.ids))
        self._maybe_evict()
        loads = active_requests(request_fields)
        lo, hi = min(loads), max(loads)
        blocks = self._blocks(request_fields)
        if hi - lo > self.abs_threshold and hi > lo * self.rel_threshold:
            choice = loads.index(lo)
        else:
            matched, holders = self.tree.match(blocks)
            rate = matched / len(blocks) if blocks else 0.0
            # A replica that left keeps its tree entries but is no longer a candidate.
            holders = [ids.index(t) for t in holders if t in ids]
            if rate > self.cache_threshold and holders:
                choice = holders[0]
            elif self.miss == "min_load":
                choice = loads.index(lo)
            else:
                choice = ids.index(self.tree.smallest_tenant(ids))
        self.tree.insert(blocks, ids[choice])
        return choice


class LlmdScorerPolicy(RouterPolicy):
    """llm-d's endpoint picker with its built-in default profile (llm-d-router, formerly
    llm-d-inference-scheduler, ``pkg/epp/config/loader/defaults.go`` at commit 520af47, May 2026;
    the same weights as the Gateway API Inference Extension's default and llm-d's guides).

    score = 2 * queue + 2 * kv_cache + 3 * prefix, each scorer clipped to [0, 1]:
    queue = (max_waiting - waiting) / (max_waiting - min_waiting), 1 for all when equal
    (``vllm:num_requests_waiting``; the load when only ``replica_loads`` is sent);
    kv_cache = 1 - ``vllm:kv_cache_usage_perc`` (0 usage for all when not sent);
    prefix = matched / total blocks from the approximate prefix producer: an LRU of block hashes
    per replica, filled with what was routed there, capacity 31 250 blocks of 16 tokens (500 000
    tokens: 976 of our 512-token blocks), matching at most 256 x 16 = 4 096 tokens (8 blocks).
    The max-score picker shuffles, then takes the highest: ties are broken at random. Metrics are
    read fresh here, not scraped every 50 ms; flow control / saturation admission is not modelled.
    """

    name = "llmd_scorer"

    def __init__(self, queue_weight: float = 2.0, kv_cache_weight: float = 2.0,
                 prefix_weight: float = 3.0, max_prefix_tokens: int = 256 * 16,
                 lru_capacity_tokens: int = 31_250 * 16) -> None:
        self.weights = (queue_weight, kv_cache_weight, prefix_weight)
        self.max_blocks = max(1, max_prefix_tokens // BLOCK_TOKENS)
        self.index = BlockLru(max(1, lru_capacity_tokens // BLOCK_TOKENS))  # by replica id
        self.ids = ReplicaIds()

    def scores(self, request_fields: dict) -> list[tuple[float, float, float]]:
        """(queue, kv_cache, prefix) per replica, before weighting."""
        ids = self.ids.of(request_fields)
        waiting = waiting_requests(request_fields)
        lo, hi = min(waiting), max(waiting)
        queue = [1.0 if hi == lo else (hi - w) / (hi - lo) for w in waiting]
        kv = [1.0 - u for u in kv_cache_usage(request_fields)]
        blocks = (prefix_hashes(request_fields) or [])[: self.max_blocks]
        hits = self.index.match(blocks)
        prefix = [hits.get(i, 0) / len(blocks) if blocks else 0.0 for i in ids]
        return list(zip(queue, kv, prefix, strict=True))

    def choose(self, request_fields: dict, rng: np.random.Generator) -> int:
        total = [sum(w * min(1.0, max(0.0, s)) for w, s in zip(self.weights, parts, strict=True))
                 for parts in self.scores(request_fields)]
        choice = argmax_random(total, rng)
        blocks = (prefix_hashes(request_fields) or [])[: self.max_blocks]
        self.index.add(blocks, self.ids.of(request_fields)[choice])
        return choice
