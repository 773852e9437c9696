"""Routers' approximate indexes of which replica holds which prompt prefix, built only from what
they routed: SGLang/vLLM-router's multi-tenant radix tree and llm-d's per-replica LRU of blocks.

Both work on prefix block hashes (``request["prefix_hashes"]``), not on characters or 16-token
blocks as the real ones do; a node of the tree is one block.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Sequence


class _Node:
    __slots__ = ("block", "parent", "children", "tenants")

    def __init__(self, block: int | None, parent: _Node | None) -> None:
        self.block = block
        self.parent = parent
        self.children: dict[int, _Node] = {}
        self.tenants: dict[int, int] = {}  # tenant -> last access tick, in order of arrival


class PrefixTree:
    """The union of one radix tree per tenant (replica), as in SGLang's router ``tree.rs``.

    ``insert`` marks every node on the path with the tenant and a fresh tick; ``match`` walks the
    union tree as deep as the request's blocks go; ``evict`` removes a tenant's least recently
    used leaves until it holds at most ``max_blocks`` blocks.
    """

    def __init__(self, num_tenants: int) -> None:
        self.root = _Node(None, None)
        self.size = [0] * num_tenants  # blocks held per tenant
        self._tick = 0

    @property
    def num_tenants(self) -> int:
        return len(self.size)

    def grow(self, num_tenants: int) -> None:
        """Make room for tenants up to ``num_tenants`` (a replica that joined starts empty)."""
        self.size += [0] * (num_tenants - len(self.size))

    def insert(self, blocks: Sequence[int], tenant: int) -> None:
        self._tick += 1
        node = self.root
        for block in blocks:
            child = node.children.get(block)
            if child is None:
                child = node.children[block] = _Node(block, node)
            if tenant not in child.tenants:
                self.size[tenant] += 1
            child.tenants[tenant] = self._tick
            node = child

    def match(self, blocks: Sequence[int]) -> tuple[int, list[int]]:
        """(blocks matched, tenants holding that whole prefix, oldest holder first)."""
        node, depth = self.root, 0
        for block in blocks:
            child = node.children.get(block)
            if child is None:
                break
            node, depth = child, depth + 1
        return depth, (list(node.tenants) if depth else [])

    def smallest_tenant(self, among: Sequence[int] | None = None) -> int:
        """The tenant holding the fewest blocks (of ``among`` when given; first on ties)."""
        tenants = range(len(self.size)) if among is None else among
        return min(tenants, key=self.size.__getitem__)

    def _leaves(self, tenant: int) -> list[tuple[int, int, _Node]]:
        leaves, stack, seq = [], [self.root], 0
        while stack:
            node = stack.pop()
            stack.extend(node.children.values())
            if node is not self.root and tenant in node.tenants and not any(
                    tenant in c.tenants for c in node.children.values()):
                seq += 1
                leaves.append((node.tenants[tenant], seq, node))
        return leaves

    def evict(self, max_blocks: int) -> None:
        for tenant in range(self.num_tenants):
            if self.size[tenant] <= max_blocks:
                continue
            heap = self._leaves(tenant)
            heapq.heapify(heap)
            seq = len(heap)
            while heap and self.size[tenant] > max_blocks:
                _, _, node = heapq.heappop(heap)
                del node.tenants[tenant]
                self.size[tenant] -= 1
                parent = node.parent
                if not node.tenants and not node.children:
                    del parent.children[node.block]
                if parent is not self.root and tenant in parent.tenants and not any(
                        tenant in c.tenants for c in parent.children.values()):
                    seq += 1
                    heapq.heappush(heap, (parent.tenants[tenant], seq, parent))


class BlockLru:
    """llm-d's approximate prefix indexer: an LRU of block hashes per replica, capacity in blocks,
    and the reverse map block -> replicas that may hold it (dropped on eviction)."""

    def __init__(self, capacity_blocks: int) -> None:
        if capacity_blocks < 1:
            raise ValueError("capacity_blocks must be at least 1")
        self.capacity = capacity_blocks
        self._lru: dict[int, OrderedDict[int, None]] = {}
        self._holders: dict[int, set[int]] = {}

    def add(self, blocks: Sequence[int], replica: int) -> None:
        lru = self._lru.setdefault(replica, OrderedDict())
        for block in blocks:
            if block in lru:
                lru.move_to_end(block)
            else:
                lru[block] = None
                if len(lru) > self.capacity:
                    old, _ = lru.popitem(last=False)
                    holders = self._holders[old]
                    holders.discard(replica)
                    if not holders:
                        del self._holders[old]
            self._holders.setdefault(block, set()).add(replica)

    def match(self, blocks: Sequence[int]) -> dict[int, int]:
        """Per replica, how many of the request's leading blocks it holds; the walk stops at the
        first block no replica holds (llm-d's ``matchLongestPrefix``)."""
        hits: dict[int, int] = {}
        for block in blocks:
            holders = self._holders.get(block)
            if not holders:
                break
            for replica in holders:
                hits[replica] = hits.get(replica, 0) + 1
        return hits

    def held(self, replica: int) -> int:
        return len(self._lru.get(replica, ()))
