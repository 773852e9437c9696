"""The per-replica prefix index, on the real Redis and in process alike: leading matches, LRU bounds,
forgetting, and a dead Redis that answers None and never raises."""

from __future__ import annotations

import logging
import statistics
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
from django.conf import settings

from agent_app.prefix_index import MemoryPrefixIndex, PrefixIndex, RedisPrefixIndex, get_prefix_index
from rlagent_client.prefix import prefix_hashes

H = [f"{i:016x}" for i in range(100)]  # stand-in block hashes: the index treats them as opaque


DEAD_REDIS = "redis://127.0.0.1:1/0"  # a port where nothing listens, as tests/api/test_faults.py has it


def live_redis() -> str:
    if not settings.REDIS_URL:
        pytest.skip("no Redis (TEST_BACKENDS=embedded)")
    return settings.REDIS_URL


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of the test's own, deleted afterwards."""
    prefix = f"{settings.REDIS_KEY_PREFIX}t-{uuid.uuid4().hex[:8]}:"
    yield prefix
    if settings.REDIS_URL:
        client = redis.Redis.from_url(settings.REDIS_URL)
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)


@pytest.fixture(params=["memory", "redis"])
def make_index(request, redis_prefix) -> Callable[..., PrefixIndex]:
    """make_index(**bounds) -> an empty index of the parametrized kind."""
    def make(**bounds: int) -> PrefixIndex:
        if request.param == "memory":
            return MemoryPrefixIndex(**bounds)
        return RedisPrefixIndex(live_redis(), key_prefix=redis_prefix, **bounds)
    return make


def remember(index: PrefixIndex, replica: str, hashes: list[str]) -> None:
    index.remember(replica, hashes)
    index.flush()


def test_match_counts_the_leading_hashes_each_replica_holds(make_index):
    index = make_index()
    remember(index, "a", H[:10])
    remember(index, "b", H[:4])
    assert index.match(["a", "b", "unknown"], H[:8]) == [8, 4, 0]
    assert index.match(["a"], H[:10] + ["ffffffffffffffff"] + H[11:20]) == [10]
    assert index.match(["b", "a"], []) == [0, 0]
    assert index.match([], H[:3]) == []


def test_a_match_is_the_longest_prefix_held_after_evictions(make_index):
    # Chained hashes: what a replica holds of a chain is a prefix of it (tail forgotten first), so
    # the Redis index finds the length by bisection; it must agree with a count from the head.
    index = make_index(blocks_per_replica=16)
    remember(index, "a", H[:12])
    remember(index, "a", H[:3] + H[40:48])  # another prompt sharing three blocks: H[8:12] forgotten
    assert index.match(["a"], H[:12]) == [8]
    assert index.match(["a"], H[:3] + H[40:50]) == [11]
    assert index.match(["a"], H[:2] + H[20:30]) == [2]


def test_what_waits_for_a_flush_is_matched_by_its_own_process(make_index):
    index = make_index()
    index.remember("a", H[:5])
    index.remember("a", H[:3])  # a block remembered twice waits once
    index.remember("b", H[:2])
    assert index.pending == 7 and index.match(["a", "b"], H[:5]) == [5, 2]
    assert index.flush() == 7
    assert index.pending == 0 and index.match(["a", "b"], H[:5]) == [5, 2]
    assert index.flush() == 0
    index.remember("b", H[:4])  # the store's prefix and the one waiting: the longer counts
    assert index.match(["a", "b"], H[:5]) == [5, 4]


def test_another_process_sees_the_blocks_once_flushed(redis_prefix):
    writer, reader = (RedisPrefixIndex(live_redis(), key_prefix=redis_prefix) for _ in range(2))
    writer.remember("a", H[:5])
    assert reader.match(["a"], H[:5]) == [0]
    writer.flush()
    assert reader.match(["a"], H[:5]) == [5]


def test_the_least_recently_remembered_blocks_go_first_the_tail_before_the_head(make_index):
    index = make_index(blocks_per_replica=6)
    remember(index, "a", H[:4])           # an old conversation
    remember(index, "a", H[10:14])        # a newer one: 8 blocks, 2 must go, the old one's tail
    assert index.match(["a"], H[:4]) == [2]
    assert index.match(["a"], H[10:14]) == [4]
    remember(index, "a", H[:2])           # reusing the old head makes it recent again
    remember(index, "a", H[20:23])        # 3 more: the newer conversation's tail goes
    assert index.match(["a"], H[:2]) == [2]
    assert index.match(["a"], H[10:14]) == [1]
    assert index.match(["a"], H[20:23]) == [3]
    assert index.stats()["blocks"] == 6


def test_a_request_longer_than_the_bound_keeps_its_head(make_index):
    index = make_index(blocks_per_replica=5)
    remember(index, "a", H[:12])
    assert index.match(["a"], H[:12]) == [5]


def test_forget_empties_one_replica(make_index):
    index = make_index()
    remember(index, "a", H[:5])
    remember(index, "b", H[:5])
    index.remember("a", H[5:9])  # pending blocks of a forgotten replica are not written either
    index.forget("a")
    index.flush()
    assert index.match(["a", "b"], H[:9]) == [0, 5]
    assert index.stats()["replicas"] == 1


def test_the_least_recently_used_replica_is_dropped_beyond_the_cap(make_index):
    index = make_index(max_replicas=3)
    for name in ("a", "b", "c"):
        remember(index, name, H[:3])
    remember(index, "a", H[:3])  # a is recent again: b is now the oldest
    remember(index, "d", H[:3])
    assert index.match(["a", "b", "c", "d"], H[:3]) == [3, 0, 3, 3]
    assert index.stats()["replicas"] == 3


def test_stats_give_the_blocks_the_bound_and_the_estimated_memory(make_index):
    index = make_index(blocks_per_replica=100, max_replicas=4)
    remember(index, "a", H[:10])
    remember(index, "b", H[:30])
    index.remember("c", H[:5])
    stats = index.stats()
    assert stats["available"] is True
    assert (stats["replicas"], stats["blocks"], stats["pending"]) == (2, 40, 5)
    assert stats["memory_bound_bytes"] == 400 * index.bytes_per_block
    assert stats["estimated_bytes"] == 40 * index.bytes_per_block


def test_the_buffer_is_bounded_and_counts_what_it_drops(make_index):
    index = make_index(pending_max=10)
    index.remember("a", H[:8])
    index.remember("b", H[:8])  # would pass the bound: dropped whole
    assert index.pending == 8 and index.stats()["dropped"] == 8


def test_real_prompt_hashes_match_a_shared_system_prompt():
    index = MemoryPrefixIndex()
    system = "You are a careful assistant. " * 40
    remember(index, "gpu-0", prefix_hashes(system + "First question? " * 30))
    asked = prefix_hashes(system + "Another question! " * 30)
    assert index.match(["gpu-0", "gpu-1"], asked) == [len(system) // 256, 0]


def test_the_index_is_shared_by_every_worker_through_redis(redis_prefix):
    one = RedisPrefixIndex(live_redis(), key_prefix=redis_prefix)
    other = RedisPrefixIndex(live_redis(), key_prefix=redis_prefix)
    remember(one, "a", H[:7])
    assert other.match(["a"], H[:9]) == [7]


def test_a_dead_redis_answers_none_drops_what_is_remembered_and_logs_once(redis_prefix, caplog):
    index = RedisPrefixIndex(DEAD_REDIS, key_prefix=redis_prefix, retry_after_s=0)
    with caplog.at_level(logging.WARNING, logger="agent_app.prefix_index"):
        assert index.match(["a", "b"], H[:4]) is None
        index.remember("a", H[:4])
        assert index.flush() == 0
        index.forget("a")
        stats = index.stats()
        assert index.match(["a"], H[:4]) is None
    assert stats["available"] is False and stats["blocks"] is None and stats["dropped"] == 4
    assert caplog.text.count("Redis unavailable") == 1


def come_back(index: RedisPrefixIndex) -> None:
    """Redis answers again: the index's clients now reach the live one."""
    live = RedisPrefixIndex(live_redis())
    index.client, index.writer = live.client, live.writer


def test_after_a_failure_redis_is_left_alone_for_the_retry_pause(redis_prefix):
    index = RedisPrefixIndex(DEAD_REDIS, key_prefix=redis_prefix, retry_after_s=3600)
    assert index.match(["a"], H[:2]) is None
    come_back(index)
    assert index.match(["a"], H[:2]) is None  # not asked again until the pause ends
    assert index.stats()["available"] is False


def test_the_index_recovers_by_itself_when_redis_answers_again(redis_prefix, caplog):
    index = RedisPrefixIndex(DEAD_REDIS, key_prefix=redis_prefix, retry_after_s=0)
    assert index.match(["a"], H[:2]) is None
    come_back(index)
    with caplog.at_level(logging.WARNING, logger="agent_app.prefix_index"):
        remember(index, "a", H[:2])
        assert index.match(["a"], H[:2]) == [2]
    assert "Redis answers again" in caplog.text


def test_the_service_uses_redis_when_it_has_one():
    get_prefix_index.cache_clear()
    try:
        expected = RedisPrefixIndex if settings.REDIS_URL else MemoryPrefixIndex
        assert isinstance(get_prefix_index(), expected)
    finally:
        get_prefix_index.cache_clear()


def test_match_for_16_replicas_and_64_hashes_is_one_round_trip(redis_prefix, capsys):
    """Prints the median of many calls on the local Redis (a figure, not an assertion)."""
    index = RedisPrefixIndex(live_redis(), key_prefix=redis_prefix)
    replicas = [f"gpu-{i}" for i in range(16)]
    hashes = prefix_hashes("m" * 256 * 64)
    for i, name in enumerate(replicas):
        index.remember(name, hashes[:4 * i])  # 0 to 60 leading blocks held
    index.flush()
    assert index.match(replicas, hashes) == [4 * i for i in range(16)]
    times = []
    for _ in range(300):
        started = time.perf_counter()
        index.match(replicas, hashes)
        times.append(time.perf_counter() - started)
    with capsys.disabled():
        print(f"\nprefix index match, 16 replicas x 64 hashes, local Redis: median "
              f"{statistics.median(times) * 1e6:.0f} us over {len(times)} calls")
