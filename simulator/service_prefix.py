"""The service's prefix index, in process: per replica name a bounded LRU of the prefix block hashes
sent there, and each replica's leading-match share of a request (agent_app/prefix_index.py)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence

# The service holds 8192 hashes per replica of 256 characters each (rlagent_client/prefix.py), about
# 4 characters a token: 524 288 tokens, which is 1024 of the simulator's 512-token blocks.
SERVICE_BLOCKS = 8192 * 256 // 4 // 512
# A gateway sends at most 512 hashes of 256 characters: the first 32 768 tokens, 64 blocks here.
SERVICE_HASHES = 512 * 256 // 4 // 512


class ServicePrefixIndex:
    """What the service's ``MemoryPrefixIndex`` keeps, written at once, as the web worker that
    routed a request sees it (other workers see it after the next serving refresh)."""

    def __init__(self, blocks_per_replica: int = SERVICE_BLOCKS,
                 max_hashes: int | None = SERVICE_HASHES) -> None:
        if blocks_per_replica < 1:
            raise ValueError(f"blocks_per_replica must be at least 1, got {blocks_per_replica}")
        if max_hashes is not None and max_hashes < 1:
            raise ValueError(f"max_hashes must be at least 1 or None, got {max_hashes}")
        self.blocks_per_replica = blocks_per_replica
        self.max_hashes = max_hashes
        self._sets: dict[str, OrderedDict[Hashable, None]] = {}  # least recent first

    def _sent(self, hashes: Sequence[Hashable]) -> Sequence[Hashable]:
        """The hashes a gateway would send: the first ``max_hashes`` of them."""
        return hashes if self.max_hashes is None else hashes[: self.max_hashes]

    def shares(self, names: Sequence[str], hashes: Sequence[Hashable] | None) -> list[float] | None:
        """Per replica, the share of the request's leading hashes it holds, stopping at its first
        miss (the service's ``match`` over the length sent); None without hashes."""
        if not hashes:
            return None
        sent = self._sent(hashes)
        out = []
        for name in names:
            held, n = self._sets.get(name, {}), 0
            while n < len(sent) and sent[n] in held:
                n += 1
            out.append(n / len(sent))
        return out

    def remember(self, name: str, hashes: Sequence[Hashable] | None) -> None:
        """The request went to ``name``: its hashes become that replica's most recent, the head
        last so that the tail is forgotten first, as a replica's cache frees it."""
        if not hashes:
            return
        held = self._sets.setdefault(name, OrderedDict())
        for h in reversed(self._sent(hashes)[: self.blocks_per_replica]):
            held.pop(h, None)
            held[h] = None
        while len(held) > self.blocks_per_replica:
            held.popitem(last=False)

    def held(self, name: str) -> int:
        return len(self._sets.get(name, ()))

    def forget(self, name: str) -> None:
        """The replica restarted with an empty cache."""
        self._sets.pop(name, None)

    def clear(self) -> None:
        """Every replica starts with an empty cache (a new simulated cluster)."""
        self._sets.clear()
