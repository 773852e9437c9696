"""The replica model against hand-worked cases: prefill then decode, chunked-prefill interference,
the prefix cache (hits skip prefill, LRU eviction, the memory bound) and the capacity formula."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.cluster import ReplicaSpec
from simulator.engine import ClusterEvent, Records, Simulation
from simulator.kv_cache import PrefixCache
from simulator.metrics import run_metrics
from simulator.policies import RoundRobinPolicy
from simulator.workload import Workload

# Small round numbers: 1000 prompt tokens/s, 10 decode tokens/s alone, iteration budget 101.
SPEC = ReplicaSpec(base_tps=10.0, prefill_tps=1000.0, token_budget=101, alpha=1.0,
                   max_batch=8, max_backlog=100, kv_blocks=100)


def run(arrival: list[float], prompt: list[int], output: list[int], spec: ReplicaSpec = SPEC,
        hashes: list[tuple[int, ...]] | None = None, events: tuple = ()) -> Records:
    wl = Workload(np.array(arrival, dtype=float), np.array(prompt), np.array(output),
                  duration_s=max(arrival), prefix_hashes=hashes)
    return Simulation([spec], wl, RoundRobinPolicy(), np.random.default_rng(0),
                      events=events).run()


def test_single_request_ttft_is_its_prefill_and_e2e_adds_its_decode() -> None:
    rec = run([2.0], [1500], [31])
    assert rec.ttft_ms[0] == pytest.approx(1500 / 1000 * 1000)  # prompt / prefill rate
    # the prefill emits the first token; 30 more at 10 tokens/s alone
    assert rec.latency_ms[0] == pytest.approx(1500.0 + 30 / 10 * 1000)
    assert rec.finish_s[0] == pytest.approx(2.0 + 1.5 + 3.0)


def test_two_concurrent_requests_worked_by_hand() -> None:
    # A and B arrive together with 1000-token prompts. A prefills alone: 1.0 s (TTFT_A).
    # Then B's prefill shares each iteration with A's decode: iteration = 1/10 s (decode, b=1)
    # + 100 prompt tokens / 1000 tok/s = 0.2 s, so B prefills 500 tok/s (2 s: TTFT_B = 3 s)
    # while A decodes 5 tok/s (10 of its 20 tokens). From 3 s both decode at
    # 10 / (1 + alpha) = 5 tok/s: A's last 10 tokens take 2 s (E2E_A = 5 s); B has 20 of
    # its 30 left, alone at 10 tok/s: 2 s (E2E_B = 7 s).
    rec = run([0.0, 0.0], [1000, 1000], [21, 31])
    assert rec.ttft_ms.tolist() == pytest.approx([1000.0, 3000.0])
    assert rec.latency_ms.tolist() == pytest.approx([5000.0, 7000.0])
    tpot_a = (rec.latency_ms[0] - rec.ttft_ms[0]) / 20
    assert tpot_a == pytest.approx(200.0)  # (5 s - 1 s) over its 20 decoded tokens


def test_repeated_prompt_skips_its_prefill() -> None:
    prompt = 2048  # 4 blocks of 512
    blocks = (11, 12, 13, 14)
    rec = run([0.0, 10.0], [prompt, prompt], [1, 1], hashes=[blocks, blocks])
    assert rec.ttft_ms[0] == pytest.approx(2048.0)
    # every block cached; one token is still computed to produce the first token's logits
    assert rec.ttft_ms[1] == pytest.approx(1.0)
    assert rec.hit_blocks.tolist() == [0, 4]
    assert run_metrics(rec, 1)["cache_hit_rate"] == pytest.approx(0.5)


def test_a_shared_prefix_skips_only_the_shared_blocks() -> None:
    rec = run([0.0, 10.0], [2048, 2048], [1, 1], hashes=[(1, 2, 3, 4), (1, 2, 7, 8)])
    assert rec.ttft_ms[1] == pytest.approx(1024.0)  # 2 of 4 blocks hit: 1024 tokens left
    # a match must be a prefix: a later block alone is no hit
    rec = run([0.0, 10.0], [1024, 1024], [1, 1], hashes=[(1, 2), (9, 2)])
    assert rec.ttft_ms[1] == pytest.approx(1024.0) and rec.hit_blocks[1] == 0


def test_workloads_without_hashes_share_nothing() -> None:
    rec = run([0.0, 10.0], [2048, 2048], [1, 1])
    assert rec.ttft_ms.tolist() == pytest.approx([2048.0, 2048.0])
    assert rec.hit_blocks.tolist() == [0, 0]


def test_a_crash_loses_the_cache() -> None:
    blocks = (1, 2)
    events = (ClusterEvent(5.0, "fail", 0), ClusterEvent(6.0, "recover", 0))
    rec = run([0.0, 10.0], [1024, 1024], [1, 1], hashes=[blocks, blocks], events=events)
    assert rec.ttft_ms[1] == pytest.approx(1024.0)


def test_eviction_takes_the_least_recently_used_block_first() -> None:
    cache = PrefixCache(capacity=4)
    for request in ((1, 2), (3, 4), (1, 2)):  # (1, 2) used again after (3, 4)
        assert cache.acquire(request, 0) >= 0
        cache.release(request, 0)
    assert cache.acquire((5, 6), 0) == 0  # needs two blocks: (3, 4) are the oldest
    assert [cache.cached(b) for b in (1, 2, 3, 4, 5, 6)] == [True, True, False, False, True, True]


def test_a_prompt_is_evicted_tail_first() -> None:
    cache = PrefixCache(capacity=3)
    cache.acquire((1, 2, 3), 0)
    cache.release((1, 2, 3), 0)
    cache.acquire((9,), 0)
    assert not cache.cached(3) and cache.prefix_hits((1, 2, 3)) == 2


def test_blocks_in_use_are_never_evicted_and_bound_admission() -> None:
    cache = PrefixCache(capacity=5)
    assert cache.acquire((1, 2), 2) == 0  # 2 hashed + 2 anonymous blocks in use
    assert cache.acquire((3, 4), 0) == -1  # 4 + 2 > 5: the request must wait
    assert cache.acquire((1, 2), 1) == 2  # shares the pinned prefix: 1 new block fits
    assert cache.used == 5 and cache.usage() == 1.0
    cache.release((1, 2), 1)
    cache.release((1, 2), 2)
    assert cache.used == 0 and cache.acquire((3, 4, 5, 6), 0) == 0  # 2 cached + 4 > 5: evict one
    assert cache.cached(1) and not cache.cached(2)  # the tail of the freed prompt went first


def test_memory_bounds_the_running_batch_and_refuses_what_never_fits() -> None:
    spec = ReplicaSpec(base_tps=10.0, prefill_tps=1000.0, max_batch=8, max_backlog=100,
                       kv_blocks=10)
    # 1500 + 500 tokens = 4 blocks each: only two run at once however large the batch limit.
    n = 6
    rec = run([0.0] * n + [0.0], [1500] * n + [5000], [501] * n + [1000], spec=spec)
    assert rec.outcome[-1] != 0  # 12 blocks never fit in 10: refused, as vLLM refuses it
    finish = np.sort(rec.finish_s[:n])
    assert rec.success[:n].all()
    # pairs run together: a third starts only when one of the first two ends
    starts = np.sort(rec.arrival_s[:n] + rec.ttft_ms[:n] / 1000.0)
    assert starts[2] >= finish[0] - 1e-9


def test_a_saturated_replica_completes_its_documented_capacity() -> None:
    spec = ReplicaSpec(base_tps=20.0, prefill_tps=4000.0, alpha=0.05, max_batch=16,
                       max_backlog=10**6, kv_blocks=10**6)
    n = 4000
    rec = run([0.0] * n, [800] * n, [101] * n, spec=spec)
    span = rec.finish_s.max()
    rate = n / span
    assert rate == pytest.approx(spec.capacity_rps(800.0, 100.0, 2.0), rel=0.03)


def test_capacity_uses_the_batch_the_memory_allows() -> None:
    small = ReplicaSpec(max_batch=64, kv_blocks=100)
    big = ReplicaSpec(max_batch=64, kv_blocks=10_000)
    # 10 blocks a request: 10 fit in 100 blocks, so the full batch is 10, not 64
    assert small.capacity_rps(0.0, 100.0, 10.0) == pytest.approx(
        1.0 / (100.0 / (10 * small.per_request_tps(10))))
    assert big.capacity_rps(0.0, 100.0, 10.0) > small.capacity_rps(0.0, 100.0, 10.0)
