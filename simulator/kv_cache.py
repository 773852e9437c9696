"""One replica's KV memory in blocks: pinned by running requests or cached for prefix reuse (LRU).

Follows vLLM's automatic prefix caching: a block is identified by the hash of its prefix, a
new request reuses the leading blocks it finds, and a block nobody runs stays cached until
evicted, least recently used first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence


class PrefixCache:
    """Blocks of ``capacity``: ``ref`` (hashed, in use), ``anon`` (in use, never shared) and
    ``lru`` (hashed, free but still holding their KV, oldest first)."""

    __slots__ = ("capacity", "ref", "lru", "anon")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.ref: dict[int, int] = {}  # block hash -> running requests using it
        self.lru: OrderedDict[int, None] = OrderedDict()
        self.anon = 0  # output blocks and prompts without prefix information

    @property
    def used(self) -> int:
        """Blocks held by running requests (vLLM's kv_cache_usage counts only these)."""
        return len(self.ref) + self.anon

    def usage(self) -> float:
        return self.used / self.capacity

    def cached(self, block: int) -> bool:
        return block in self.ref or block in self.lru

    def prefix_hits(self, hashes: Sequence[int]) -> int:
        """Leading blocks of ``hashes`` this replica holds: a prefix match, as in vLLM."""
        ref, lru = self.ref, self.lru
        n = 0
        for h in hashes:
            if h not in ref and h not in lru:
                break
            n += 1
        return n

    def acquire(self, hashes: Sequence[int], anon: int) -> int:
        """Pin a request's blocks, evicting free ones as needed; the prefix hits, or -1 when
        the memory cannot hold it beside the running requests (the request keeps waiting)."""
        ref, lru = self.ref, self.lru
        if not hashes:
            if len(ref) + self.anon + anon > self.capacity:
                return -1
            self._evict(len(ref) + len(lru) + self.anon + anon - self.capacity)
            self.anon += anon
            return 0
        in_lru = sum(1 for h in hashes if h in lru)
        new = sum(1 for h in hashes if h not in ref and h not in lru)
        if len(ref) + self.anon + in_lru + new + anon > self.capacity:
            return -1
        hits = self.prefix_hits(hashes)
        for h in hashes:  # pin what is cached first, so eviction cannot take it
            if h in lru:
                del lru[h]
                ref[h] = 1
            elif h in ref:
                ref[h] += 1
        self._evict(len(ref) + len(lru) + self.anon + new + anon - self.capacity)
        for h in hashes:
            if h not in ref:
                ref[h] = 1
        self.anon += anon
        return hits

    def release(self, hashes: Sequence[int], anon: int) -> None:
        """Unpin a finished request's blocks; they stay cached.

        Freed tail first, so the head of a prompt (the part other requests share) is the most
        recently used and the last to go, as vLLM frees a request's blocks in reverse order.
        """
        ref, lru = self.ref, self.lru
        for h in reversed(hashes):
            count = ref[h]
            if count == 1:
                del ref[h]
                lru[h] = None
            else:
                ref[h] = count - 1
        self.anon -= anon

    def clear(self) -> None:
        """Lose everything (the replica's process restarted)."""
        self.ref.clear()
        self.lru.clear()
        self.anon = 0

    def _evict(self, count: int) -> None:
        lru = self.lru
        for _ in range(count):
            lru.popitem(last=False)
