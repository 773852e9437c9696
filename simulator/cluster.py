"""LLM replicas as vLLM runs them: a FIFO waiting queue, one prompt prefilled at a time, and
continuous batching of decodes sharing each iteration with that prefill (chunked prefill).

An iteration with ``b`` decoding sequences lasts ``(1 + alpha (b - 1)) / (base_tps * speed)``
plus, during a prefill, ``(token_budget - b) / prefill_rate``; rates are piecewise constant
between events (a fluid model of the iteration loop, simulator/README.md).
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass

from simulator.kv_cache import PrefixCache

INF = float("inf")
BLOCK_TOKENS = 512  # KV block size: Mooncake's hash_ids are per 512 tokens


@dataclass(frozen=True)
class ReplicaSpec:
    """Hardware and serving limits of one replica (one model server on one GPU node)."""

    speed: float = 1.0  # multiplier on decode (and, with prefill_speed, prefill) rates
    max_batch: int = 32  # running sequences (vLLM's max_num_seqs)
    max_backlog: int = 64  # running + waiting; beyond this the replica rejects (429)
    base_tps: float = 60.0  # decode tokens/s of one sequence alone, at speed 1
    alpha: float = 0.02  # batch slowdown of each sequence's decode
    prefill_tps: float = 12_000.0  # prompt tokens/s with nothing decoding, at speed 1
    # Prefill multiplier of the GPU generation (None: same as speed); prefill is compute-bound,
    # so generations differ more here than in decode. A run-time speed change scales both.
    prefill_speed: float | None = None
    token_budget: int = 2048  # tokens per iteration (vLLM's max_num_batched_tokens)
    kv_blocks: int = 128  # KV memory in blocks of BLOCK_TOKENS (running + cached)
    gpu: str = ""  # what the replica stands for, for reports

    def per_request_tps(self, batch: int, speed: float | None = None) -> float:
        """Decode tokens/s of each of ``batch`` sequences when no prompt is being prefilled."""
        s = self.speed if speed is None else speed
        return self.base_tps * s / (1.0 + self.alpha * (max(batch, 1) - 1))

    def prefill_rate(self, speed: float | None = None) -> float:
        """Prompt tokens/s of a prefill with nothing decoding (``speed``: the current one)."""
        base = self.speed if self.prefill_speed is None else self.prefill_speed
        return self.prefill_tps * base * (1.0 if speed is None else speed / self.speed)

    def capacity_rps(self, prompt: float, decode: float, blocks: float) -> float:
        """Requests/s at a full batch for requests of mean ``prompt`` tokens, ``decode`` decoded
        tokens (output - 1: the prefill emits the first) and ``blocks`` KV blocks, every prompt
        token prefilled: 1 / (prompt / prefill rate + decode / full-batch decode throughput).
        The full batch is max_batch, or as many such requests as the KV memory holds if fewer.
        """
        batch = max(1, min(self.max_batch, int(self.kv_blocks // max(blocks, 1.0))))
        return 1.0 / (prompt / self.prefill_rate() + decode / (batch * self.per_request_tps(batch)))


def blocks_for(tokens: int) -> int:
    return -(-tokens // BLOCK_TOKENS)


class Jobs:
    """Per-request facts every replica reads: tokens to prefill and decode, KV blocks."""

    __slots__ = ("prompt", "decode", "hashes", "anon", "blocks", "hit_blocks")

    def __init__(self, prompt: list[int], output: list[int],
                 hashes: list[tuple[int, ...]] | None) -> None:
        n = len(prompt)
        self.prompt = prompt
        self.decode = [max(0, o - 1) for o in output]
        self.hashes: list[tuple[int, ...]] = (
            [tuple(h[:int(blocks_for(p))]) for h, p in zip(hashes, prompt, strict=True)]
            if hashes is not None else [()] * n)
        self.blocks = [int(blocks_for(p + o)) for p, o in zip(prompt, output, strict=True)]
        self.anon = [b - len(h) for b, h in zip(self.blocks, self.hashes, strict=True)]
        self.hit_blocks = [0] * n  # prompt blocks found in the replica's cache


class Replica:
    """One replica's waiting queue, prefill in progress, decoding batch and KV memory."""

    __slots__ = ("index", "name", "spec", "speed", "failing", "failing_inflight", "jobs", "cache",
                 "waiting", "pf_rid", "pf_left", "pf_rate", "decoding", "vtime", "rate",
                 "last_t", "version", "next_t", "_t1", "_alpha", "_prefill", "_budget")

    def __init__(self, index: int, spec: ReplicaSpec, jobs: Jobs) -> None:
        self.index = index
        self.name = f"r{index}"
        self.spec = spec
        self.speed = spec.speed
        self.failing = False
        self.failing_inflight = 0
        self.jobs = jobs
        self.cache = PrefixCache(spec.kv_blocks)
        self.waiting: deque[int] = deque()
        self.pf_rid = -1  # the request being prefilled, -1 if none
        self.pf_left = 0.0  # its prompt tokens still to compute
        self.pf_rate = 0.0
        self.decoding: list[tuple[float, int]] = []  # heap of (finish vtime, request id)
        self.vtime = 0.0  # tokens each decoding sequence has received so far
        self.rate = 0.0  # decode tokens/s of each decoding sequence
        self.last_t = 0.0
        self.version = 0
        self.next_t = INF
        self._set_rates()

    def _set_rates(self) -> None:
        # Constants of the hot path, recomputed only when the speed changes.
        spec = self.spec
        self._t1 = 1.0 / (spec.base_tps * self.speed)  # a decode iteration of one sequence
        self._alpha = spec.alpha
        self._prefill = spec.prefill_rate(self.speed)
        self._budget = spec.token_budget

    @property
    def running(self) -> int:
        """Sequences in the running batch (prefilling or decoding), as vLLM counts them."""
        return len(self.decoding) + (self.pf_rid >= 0)

    @property
    def load(self) -> int:
        """Requests this replica holds: running + waiting (+ in-flight errors when failing)."""
        return len(self.decoding) + (self.pf_rid >= 0) + len(self.waiting) + self.failing_inflight

    def full(self) -> bool:
        return self.running + len(self.waiting) >= self.spec.max_backlog

    def fits(self, rid: int) -> bool:
        """Whether the request could ever run here (vLLM refuses a prompt beyond its memory)."""
        return self.jobs.blocks[rid] <= self.spec.kv_blocks

    def advance(self, now: float) -> None:
        """Move the decode clock and the prefill in progress to ``now``."""
        dt = now - self.last_t
        if self.decoding:
            self.vtime += dt * self.rate
        if self.pf_rid >= 0:
            self.pf_left -= dt * self.pf_rate
        self.last_t = now

    def admit(self, now: float, rid: int) -> bool:
        """Queue a routed request; it starts as soon as the batch and the memory allow.
        True when the replica's next event moved (a prefill started)."""
        self.waiting.append(rid)
        if self.pf_rid >= 0:
            return False  # a prefill runs: nothing changes until it ends
        self.advance(now)
        if not self._start_prefill():
            return False  # the batch or the KV memory is full: it waits
        self._reschedule(now)
        return True

    def step(self, now: float) -> tuple[int, list[int]]:
        """Handle what is due at ``now``: (request whose first token came out or -1, finished)."""
        dt = now - self.last_t
        self.last_t = now
        decoding, jobs = self.decoding, self.jobs
        vtime = self.vtime = self.vtime + dt * self.rate if decoding else self.vtime
        first, done = -1, []
        if self.pf_rid >= 0:
            self.pf_left -= dt * self.pf_rate
            if self.pf_left <= 1e-6:
                first, self.pf_rid = self.pf_rid, -1
                if jobs.decode[first] > 0:
                    heapq.heappush(decoding, (vtime + jobs.decode[first], first))
                else:
                    self._release(first)
                    done.append(first)
        limit = vtime + 1e-9 * (vtime if vtime > 1.0 else 1.0)
        while decoding and decoding[0][0] <= limit:
            rid = heapq.heappop(decoding)[1]
            self.cache.release(jobs.hashes[rid], jobs.anon[rid])
            done.append(rid)
        if self.pf_rid < 0 and self.waiting:
            self._start_prefill()
        self._reschedule(now)
        return first, done

    def set_speed(self, now: float, speed: float) -> None:
        self.advance(now)
        self.speed = speed
        self._set_rates()
        self._reschedule(now)

    def drop_all(self, now: float) -> list[int]:
        """Abort everything held (a crash; its cache is lost): ids, batch first."""
        self.advance(now)
        ids = [rid for _, rid in self.decoding]
        if self.pf_rid >= 0:
            ids.append(self.pf_rid)
        ids += list(self.waiting)
        self.decoding.clear()
        self.waiting.clear()
        self.pf_rid = -1
        self.cache.clear()
        self._reschedule(now)
        return ids

    def _start_prefill(self) -> bool:
        """Admit the head of the queue if the batch has a slot and its KV blocks fit (FCFS:
        a head that does not fit blocks the queue, as in vLLM)."""
        if not self.waiting or len(self.decoding) >= self.spec.max_batch:
            return False
        rid = self.waiting[0]
        jobs = self.jobs
        hits = self.cache.acquire(jobs.hashes[rid], jobs.anon[rid])
        if hits < 0:
            return False
        self.waiting.popleft()
        jobs.hit_blocks[rid] = hits
        prompt = jobs.prompt[rid]
        # At least one token is computed: the prefill must produce the first token's logits.
        cached = min(hits * BLOCK_TOKENS, prompt - 1) if prompt > 0 else 0
        self.pf_rid, self.pf_left = rid, float(prompt - cached)
        return True

    def _release(self, rid: int) -> None:
        self.cache.release(self.jobs.hashes[rid], self.jobs.anon[rid])

    def _reschedule(self, now: float) -> None:
        """Recompute rates and the time of the next prefill or decode completion."""
        self.version += 1
        b = len(self.decoding)
        nxt = INF
        if self.pf_rid >= 0:
            if b:
                chunk = self._budget - b if self._budget > b else 1
                iteration = (1.0 + self._alpha * (b - 1)) * self._t1 + chunk / self._prefill
                self.pf_rate, self.rate = chunk / iteration, 1.0 / iteration
            else:
                self.pf_rate = self._prefill
            left = self.pf_left
            nxt = now + (left if left > 0.0 else 0.0) / self.pf_rate
        elif b:
            self.rate = 1.0 / ((1.0 + self._alpha * (b - 1)) * self._t1)
        else:
            self.rate = 0.0
        if b:
            gap = self.decoding[0][0] - self.vtime
            done = now + (gap if gap > 0.0 else 0.0) / self.rate
            if done < nxt:
                nxt = done
        self.next_t = nxt
