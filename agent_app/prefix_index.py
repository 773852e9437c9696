"""Which prompt-prefix blocks each replica likely holds in its KV cache: a bounded LRU set of block
hashes (rlagent_client/prefix.py) per replica, in Redis for every web worker, or in this process.

`remember` only buffers (no I/O on the request path); `flush` writes the buffer in one round trip
and is meant for the serving refresh thread. `match` is one round trip, and also counts what this
process remembered but has not written yet, so a burst of requests sharing a prefix (a system
prompt, a conversation's quick turns) sticks to one replica within a worker before the next flush.

Eviction is least recently remembered first, and within one request the tail before the head, as a
replica's cache frees blocks; a block is remembered with every request that reuses it, so a
prefix's head is never older than its tail and, the hashes being chained (each names its block and
every block before it), what remains of a prompt's chain is a prefix of it. Without Redis (the
embedded mode) each web worker has its own index, exact with one worker. A store that fails makes
`match` answer None and `flush` drop its batch, logged once per outage; nothing raises into a
request.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Container
from functools import lru_cache
from typing import Any

import redis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.retry import Retry

from agent_app.pools import DEFAULT_POOL

log = logging.getLogger(__name__)
# KEYS: replica sets; ARGV[1]: the request's hashes, comma-separated (one argument rather than 64:
# packing each argument was most of the request's cost). Per replica, how many leading hashes it
# holds, found by bisection: what a set holds of a prompt's chain is always a prefix of it (module
# docstring), so holding hash k means holding every hash before it, and a match costs at most
# 2 + log2(n) lookups per replica instead of n.
_MATCH = """
local hashes = {}
for h in string.gmatch(ARGV[1], '[^,]+') do hashes[#hashes + 1] = h end
local n, out = #hashes, {}
for i, key in ipairs(KEYS) do
  local held = 0
  if n > 0 and redis.call('ZSCORE', key, hashes[1]) then
    if redis.call('ZSCORE', key, hashes[n]) then
      held = n
    else
      local lo, hi = 1, n  -- hashes[lo] is held, hashes[hi] is not
      while hi - lo > 1 do
        local mid = math.floor((lo + hi) / 2)
        if redis.call('ZSCORE', key, hashes[mid]) then lo = mid else hi = mid end
      end
      held = lo
    end
  end
  out[i] = held
end
return out
"""
# KEYS: tick counter, replicas zset, then one set per replica. ARGV: cap, max replicas, total
# hashes, key prefix, then per replica its name and its hashes comma-joined, oldest first.
# Scores are a shared counter, so recency is comparable across replicas and workers.
_WRITE = """
local cap, max_replicas, total = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tick = redis.call('INCRBY', KEYS[1], total) - total
for i = 3, #KEYS do
  local args = {}
  for h in string.gmatch(ARGV[2 * i], '[^,]+') do
    tick = tick + 1
    args[#args + 1] = string.format('%.0f', tick)
    args[#args + 1] = h
  end
  for from = 1, #args, 2000 do
    redis.call('ZADD', KEYS[i], unpack(args, from, math.min(from + 1999, #args)))
  end
  local extra = redis.call('ZCARD', KEYS[i]) - cap
  if extra > 0 then redis.call('ZREMRANGEBYRANK', KEYS[i], 0, extra - 1) end
  redis.call('ZADD', KEYS[2], string.format('%.0f', tick), ARGV[2 * i - 1])
end
local extra = redis.call('ZCARD', KEYS[2]) - max_replicas
if extra > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[2], extra)
  for j = 1, #popped, 2 do redis.call('DEL', ARGV[4] .. popped[j]) end
end
return tick
"""
# KEYS: replicas zset. Returns {replicas, blocks}.
_COUNT = """
local names, blocks = redis.call('ZRANGE', KEYS[1], 0, -1), 0
for _, name in ipairs(names) do blocks = blocks + redis.call('ZCARD', ARGV[1] .. name) end
return {#names, blocks}
"""


def held_prefix(held: Container[str], hashes: list[str]) -> int:
    """How many of `hashes`, from the first, `held` holds, by bisection (what is held of a chain of
    hashes is a prefix of it: the module's docstring), as the Redis script counts them."""
    if not hashes or hashes[0] not in held:
        return 0
    low, high = 0, len(hashes)  # hashes[low] is held; hashes[high], past the end, is not
    while high - low > 1:
        middle = (low + high) // 2
        if hashes[middle] in held:
            low = middle
        else:
            high = middle
    return high


def prefix_names(pool: str, replicas: list[str]) -> list[str]:
    """The index's names of a pool's replicas: one index serves every pool, and two pools may both
    have a replica called "gpu-0"; the default pool's replicas keep their plain names."""
    return replicas if pool == DEFAULT_POOL else [f"{pool}/{name}" for name in replicas]


class PrefixIndex(ABC):
    """The shared behaviour: the bounds, the buffer of blocks to remember, outage bookkeeping."""

    backend = ""
    bytes_per_block = 0  # measured: what one remembered block costs the store

    def __init__(self, *, blocks_per_replica: int | None = None, max_replicas: int | None = None,
                 pending_max: int | None = None) -> None:
        self.blocks_per_replica = blocks_per_replica or settings.PREFIX_INDEX_BLOCKS_PER_REPLICA
        self.max_replicas = max_replicas or settings.PREFIX_INDEX_MAX_REPLICAS
        self.pending_max = pending_max or settings.PREFIX_INDEX_PENDING_BLOCKS
        self._lock = threading.Lock()  # request threads remember, the refresh thread flushes
        self._pending: dict[str, dict[str, None]] = {}  # replica -> hashes, oldest first
        self._writing: dict[str, dict[str, None]] = {}  # the batch a flush is writing
        self._pending_blocks = 0
        self.dropped = 0  # blocks never written: the buffer was full or the store failed

    def remember(self, replica: str, hashes: list[str]) -> None:
        """The service just sent a request with these leading block hashes to `replica`."""
        hashes = hashes[:self.blocks_per_replica]
        with self._lock:
            if self._pending_blocks + len(hashes) > self.pending_max:
                self.dropped += len(hashes)  # nobody flushes, or the store is far behind
                return
            blocks = self._pending.setdefault(replica, {})
            before = len(blocks)
            for h in reversed(hashes):  # the head last: the most recent, evicted last
                blocks.pop(h, None)
                blocks[h] = None
            self._pending_blocks += len(blocks) - before

    @property
    def pending(self) -> int:
        """Blocks remembered but not yet written."""
        return self._pending_blocks

    def flush(self) -> int:
        """Write what was remembered since the last flush; the number of blocks written."""
        with self._lock:
            batch, self._pending, self._pending_blocks = self._pending, {}, 0
            self._writing = batch  # still matched until the store has it
        if not batch:
            return 0
        blocks = sum(len(hashes) for hashes in batch.values())
        try:
            if not self._write({replica: list(hashes) for replica, hashes in batch.items()}):
                self.dropped += blocks
                return 0
        finally:
            with self._lock:
                self._writing = {}
        return blocks

    def match(self, replicas: list[str], hashes: list[str]) -> list[int] | None:
        """Per replica, how many of `hashes`, from the first, it holds; None if the store is down."""
        counts = self._match(replicas, hashes)
        if counts is None or not hashes:
            return counts
        with self._lock:
            for unwritten in (self._pending, self._writing):
                for i, replica in enumerate(replicas):
                    held = unwritten.get(replica)
                    if held and counts[i] < len(hashes):
                        counts[i] = max(counts[i], held_prefix(held, hashes))
        return counts

    def forget(self, replica: str) -> None:
        """The replica left or restarted with an empty cache."""
        with self._lock:
            self._pending_blocks -= len(self._pending.pop(replica, {}))
        self._forget(replica)

    def forget_pool(self, pool: str) -> None:
        """Every replica of a deleted pool (the default pool's replicas are never forgotten so)."""
        if pool != DEFAULT_POOL:
            start = prefix_names(pool, [""])[0]
            for replica in [r for r in self._replicas() if r.startswith(start)]:
                self.forget(replica)

    def stats(self) -> dict[str, Any]:
        counts = self._count()
        blocks = counts[1] if counts else None
        return {
            "backend": self.backend, "available": counts is not None,
            "replicas": counts[0] if counts else None, "blocks": blocks,
            "blocks_per_replica": self.blocks_per_replica, "max_replicas": self.max_replicas,
            "memory_bound_bytes": self.blocks_per_replica * self.max_replicas * self.bytes_per_block,
            "estimated_bytes": None if blocks is None else blocks * self.bytes_per_block,
            "pending": self._pending_blocks, "dropped": self.dropped,
        }

    @abstractmethod
    def _match(self, replicas: list[str], hashes: list[str]) -> list[int] | None:
        """`match` as the store answers it, without the blocks not written yet."""

    @abstractmethod
    def _write(self, batch: dict[str, list[str]]) -> bool: ...

    @abstractmethod
    def _forget(self, replica: str) -> None: ...

    @abstractmethod
    def _count(self) -> tuple[int, int] | None: ...

    @abstractmethod
    def _replicas(self) -> list[str]: ...


class MemoryPrefixIndex(PrefixIndex):
    """This process's index (no Redis): ordered dicts, least recent first."""

    backend = "memory"
    bytes_per_block = 140  # a 16-character str and its ordered-dict entry (tracemalloc)

    def __init__(self, **bounds: int | None) -> None:
        super().__init__(**bounds)
        self._sets: OrderedDict[str, OrderedDict[str, None]] = OrderedDict()
        self._store_lock = threading.Lock()

    def _match(self, replicas: list[str], hashes: list[str]) -> list[int] | None:
        with self._store_lock:
            return [held_prefix(self._sets.get(replica, {}), hashes) for replica in replicas]

    def _write(self, batch: dict[str, list[str]]) -> bool:
        with self._store_lock:
            for replica, hashes in batch.items():
                held = self._sets.setdefault(replica, OrderedDict())
                self._sets.move_to_end(replica)
                for h in hashes:
                    held[h] = None
                    held.move_to_end(h)
                while len(held) > self.blocks_per_replica:
                    held.popitem(last=False)
            while len(self._sets) > self.max_replicas:
                self._sets.popitem(last=False)
        return True

    def _forget(self, replica: str) -> None:
        with self._store_lock:
            self._sets.pop(replica, None)

    def _count(self) -> tuple[int, int] | None:
        with self._store_lock:
            return len(self._sets), sum(len(held) for held in self._sets.values())

    def _replicas(self) -> list[str]:
        with self._store_lock:
            return list(self._sets)


class RedisPrefixIndex(PrefixIndex):
    """The index every web worker shares: a sorted set per replica, scored by recency."""

    backend = "redis"
    bytes_per_block = 118  # MEMORY USAGE of a 8192-member set of 16-hex members (Redis 7.0)

    def __init__(self, url: str | None = None, *, key_prefix: str | None = None,
                 timeout_s: float | None = None, retry_after_s: float | None = None,
                 **bounds: int | None) -> None:
        super().__init__(**bounds)
        from agent_app.redis_client import KEY_PREFIX

        url = url or settings.REDIS_URL
        # Clients of its own, without redis-py's default retries (about 3 s of backoff against a dead
        # Redis): `client` answers the request path within timeout_s, `writer` the background flush.
        self.client = _client(url, timeout_s or settings.PREFIX_INDEX_TIMEOUT_SECONDS)
        self.writer = _client(url, 1.0)
        self.key_prefix = (KEY_PREFIX if key_prefix is None else key_prefix) + "prefix:"
        self._sets_prefix, self._replicas_key = self.key_prefix + "r:", self.key_prefix + "replicas"
        self.retry_after_s = (settings.PREFIX_INDEX_RETRY_SECONDS if retry_after_s is None
                              else retry_after_s)
        self._match_script, self._write_script, self._count_script = (
            self.writer.register_script(s) for s in (_MATCH, _WRITE, _COUNT))  # each call names its client
        self._down_until = 0.0  # while Redis is down, skip it rather than wait for its timeouts
        self._down = False

    def _match(self, replicas: list[str], hashes: list[str]) -> list[int] | None:
        if not hashes or not replicas:
            return [0] * len(replicas) if self._up() else None
        keys = [self._sets_prefix + r for r in replicas]
        packed = ",".join(hashes[:self.blocks_per_replica])
        counts = self._call(self._match_script, keys, [packed], self.client)
        return None if counts is None else [int(n) for n in counts]

    def _write(self, batch: dict[str, list[str]]) -> bool:
        keys = [self.key_prefix + "tick", self._replicas_key]
        args: list[Any] = [self.blocks_per_replica, self.max_replicas,
                           sum(len(h) for h in batch.values()), self._sets_prefix]
        for replica, hashes in batch.items():
            keys.append(self._sets_prefix + replica)
            args += [replica, ",".join(hashes)]
        return self._call(self._write_script, keys, args, self.writer) is not None

    def _forget(self, replica: str) -> None:
        def forget(keys: list[str], args: list[str], client: redis.Redis) -> None:
            client.pipeline().delete(keys[0]).zrem(keys[1], args[0]).execute()

        self._call(forget, [self._sets_prefix + replica, self._replicas_key], [replica], self.writer)

    def _count(self) -> tuple[int, int] | None:
        counts = self._call(self._count_script, [self._replicas_key], [self._sets_prefix], self.writer)
        return None if counts is None else (int(counts[0]), int(counts[1]))

    def _replicas(self) -> list[str]:
        def names(keys: list[str], args: list[str], client: redis.Redis) -> list[bytes]:
            return client.zrange(keys[0], 0, -1)

        found = self._call(names, [self._replicas_key], [], self.writer)
        return [name.decode() for name in found or []]

    def _up(self) -> bool:
        return time.monotonic() >= self._down_until

    def _call(self, script: Any, keys: list[str], args: list[Any], client: redis.Redis) -> Any:
        """The script's answer, or None (logged once per outage) when Redis fails."""
        if not self._up():
            return None
        try:
            answer = script(keys, args, client)
        except (redis.RedisError, OSError) as exc:
            self._down_until = time.monotonic() + self.retry_after_s
            if not self._down:
                log.warning("prefix index: Redis unavailable, routing without prefix matches: %s", exc)
            self._down = True
            return None
        if self._down:
            log.warning("prefix index: Redis answers again")
            self._down = False
        return answer


def _client(url: str, timeout_s: float) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                retry=Retry(NoBackoff(), 0), health_check_interval=30)


@lru_cache(maxsize=1)
def get_prefix_index() -> PrefixIndex:
    """This process's index: Redis when the service has one (PREFIX_INDEX_STORE overrides)."""
    return RedisPrefixIndex() if settings.PREFIX_INDEX_STORE == "redis" else MemoryPrefixIndex()
