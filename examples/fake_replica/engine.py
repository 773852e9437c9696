"""One fake replica's scheduler in real time, as vLLM runs one: at most `max_batch` sequences run,
the rest wait in FIFO order, a prompt's cached prefix blocks skip prefill, and decode tokens are
paced one by one, each slowed by the others in the running batch.

    prefill  = (overhead + uncached_prompt_tokens * prefill_ms_per_token) * batch_factor / speed
    per token = decode_ms_per_token * batch_factor / speed,   batch_factor = 1 + contention * (running - 1)
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field

BLOCK_TOKENS = 16  # vLLM's default KV block size
WORDS_PER_BLOCK = 12  # 16 tokens at the 4-tokens-per-3-words rate of count_tokens()


@dataclass(frozen=True)
class ReplicaProfile:
    name: str
    speed: float = 1.0  # 2.0 answers twice as fast as 1.0
    overhead_ms: float = 5.0  # scheduling, before the first token
    prefill_ms_per_token: float = 0.05
    decode_ms_per_token: float = 1.0
    contention: float = 0.25  # each extra running sequence slows every running one by 25%
    failure_rate: float = 0.0  # share of requests answered with 500
    max_batch: int = 16  # running sequences at most (vLLM's max_num_seqs); the rest wait
    kv_blocks: int = 4096  # KV memory in blocks of BLOCK_TOKENS (usage and prefix cache size)
    prefix_caching: bool = True  # vLLM's automatic prefix caching
    model: str = ""  # the served model name in /v1/models and metric labels (default: name)

    @property
    def served_model(self) -> str:
        return self.model or self.name


class ReplicaFailure(Exception):
    """The replica failed this request (the profile's failure_rate)."""


def count_tokens(text: str) -> int:
    """About 4 tokens per 3 words, as for English with a BPE tokenizer."""
    return max(1, round(len(text.split()) * 4 / 3))


def prefix_block_hashes(text: str) -> list[bytes]:
    """Hashes of the prompt's full blocks, each chained to the one before (a block is reusable
    only with its whole prefix, as in vLLM's automatic prefix caching)."""
    words = text.split()
    hashes, parent = [], b""
    for start in range(0, len(words) - WORDS_PER_BLOCK + 1, WORDS_PER_BLOCK):
        block = " ".join(words[start:start + WORDS_PER_BLOCK]).encode()
        parent = hashlib.blake2b(parent + block, digest_size=16).digest()
        hashes.append(parent)
    return hashes


class PrefixCache:
    """An LRU of block hashes: a hit is a leading run of blocks already computed."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._blocks: OrderedDict[bytes, None] = OrderedDict()

    def hits(self, hashes: list[bytes]) -> int:
        n = 0
        for h in hashes:
            if h not in self._blocks:
                break
            self._blocks.move_to_end(h)
            n += 1
        return n

    def insert(self, hashes: list[bytes]) -> None:
        for h in hashes:
            self._blocks[h] = None
            self._blocks.move_to_end(h)
        while len(self._blocks) > self.capacity:
            self._blocks.popitem(last=False)

    def __len__(self) -> int:
        return len(self._blocks)


@dataclass
class Job:
    """One request as the engine sees it; `generated` grows as tokens are decoded."""

    prompt: str
    prompt_tokens: int
    max_tokens: int
    arrived: float = field(default_factory=time.monotonic)
    cached_tokens: int = 0
    generated: int = 0
    first_token_at: float | None = None


class Engine:
    """Thread-safe: each request's thread runs its own job through `generate()`."""

    def __init__(self, profile: ReplicaProfile, seed: int | None = None) -> None:
        self.profile = profile
        self._rng = random.Random(seed)
        self._cond = threading.Condition()
        self._waiting: deque[Job] = deque()
        self._running: list[Job] = []
        self.cache = PrefixCache(profile.kv_blocks)
        self.served = 0  # requests finished, failed ones included
        self.failed = 0
        self.max_running_seen = 0
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0
        self.prefix_queries_total = 0  # prompt tokens looked up in the prefix cache
        self.prefix_hits_total = 0  # of which found cached

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def in_flight(self) -> int:
        """Requests held: running + waiting."""
        with self._cond:
            return len(self._running) + len(self._waiting)

    def kv_cache_usage(self) -> float:
        """Share of KV blocks held by running sequences (prompt + tokens so far), as vLLM counts."""
        with self._cond:
            blocks = sum(-(-(job.prompt_tokens + job.generated) // BLOCK_TOKENS) for job in self._running)
        return min(1.0, blocks / self.profile.kv_blocks)

    def snapshot(self) -> dict[str, float]:
        with self._cond:
            running, waiting = len(self._running), len(self._waiting)
            tokens = sum(job.prompt_tokens + job.generated for job in self._running)
        return {"running": running, "waiting": waiting, "kv_cache_usage": self.kv_cache_usage(),
                "tokens": tokens}

    def generate(self, job: Job) -> Iterator[int]:
        """Wait for a batch slot, prefill, then yield the index of each decoded token as it is due.

        Raises ReplicaFailure after the prefill when the request fails. Closing the iterator
        early (a client that hung up) frees the slot.
        """
        self._admit(job)
        try:
            p = self.profile
            hashes = prefix_block_hashes(job.prompt) if p.prefix_caching else []
            with self._cond:
                hit_blocks = self.cache.hits(hashes)
                job.cached_tokens = min(job.prompt_tokens - 1, hit_blocks * BLOCK_TOKENS) if hit_blocks else 0
                self.prefix_queries_total += job.prompt_tokens
                self.prefix_hits_total += job.cached_tokens
                self.prompt_tokens_total += job.prompt_tokens
                fails = p.failure_rate > 0 and self._rng.random() < p.failure_rate
            uncached = job.prompt_tokens - job.cached_tokens
            prefill_ms = p.overhead_ms + uncached * p.prefill_ms_per_token
            time.sleep(prefill_ms * self._batch_factor() / p.speed / 1000)
            with self._cond:
                self.cache.insert(hashes)
            if fails:
                with self._cond:
                    self.failed += 1
                raise ReplicaFailure(f"{p.name} failed")
            due = time.monotonic()
            for index in range(job.max_tokens):
                if index:  # the prefill emits the first token; each later one costs a decode step
                    due += p.decode_ms_per_token * self._batch_factor() / p.speed / 1000
                    ahead = due - time.monotonic()
                    if ahead > 0.001:  # sleep in steps of at least 1 ms, not once per fast token
                        time.sleep(ahead)
                if index == 0:
                    job.first_token_at = time.monotonic()
                job.generated = index + 1
                yield index
        finally:
            self._release(job)

    def _batch_factor(self) -> float:
        return 1 + self.profile.contention * max(len(self._running) - 1, 0)

    def _admit(self, job: Job) -> None:
        with self._cond:
            self._waiting.append(job)
            while self._waiting[0] is not job or len(self._running) >= self.profile.max_batch:
                self._cond.wait()
            self._waiting.popleft()
            self._running.append(job)
            self.max_running_seen = max(self.max_running_seen, len(self._running))
            self._cond.notify_all()  # the next in line may fit too

    def _release(self, job: Job) -> None:
        with self._cond:
            self._running.remove(job)
            self.served += 1
            self.generation_tokens_total += job.generated
            self._cond.notify_all()
