"""LLM replicas with continuous batching, simulated as processor sharing in virtual time.

Every request in a replica's batch progresses at the same per-request token rate, which
falls as the batch grows: rate(b) = base_tps * speed / (1 + alpha * (b - 1)).
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass

INF = float("inf")


@dataclass(frozen=True)
class ReplicaSpec:
    """Hardware and serving limits of one replica."""

    speed: float = 1.0  # multiplier on base_tps: GPU generation, model parallelism
    max_batch: int = 32  # concurrent sequences in the running batch (KV-cache bound)
    max_backlog: int = 64  # running + waiting; beyond this the replica rejects (429)
    base_tps: float = 60.0  # decode tokens/s of one sequence alone, at speed 1
    alpha: float = 0.02  # batch slowdown; decode is memory-bound, so batching is cheap
    prefill_ratio: float = 50.0  # a prompt token costs 1/prefill_ratio of a decode token
    kv_tokens: int = 65_536  # KV-cache capacity, for the memory signal

    def per_request_tps(self, batch: int, speed: float | None = None) -> float:
        """Decode speed of each sequence when ``batch`` sequences share the replica."""
        s = self.speed if speed is None else speed
        return self.base_tps * s / (1.0 + self.alpha * (max(batch, 1) - 1))

    def capacity_rps(self, mean_work: float) -> float:
        """Requests/s the replica completes at a full batch, for ``mean_work`` tokens each."""
        return self.max_batch * self.per_request_tps(self.max_batch) / mean_work

    def work(self, prompt_tokens: float, output_tokens: float) -> float:
        """A request's cost in decode-token units (prefill counted at its cheaper rate)."""
        return output_tokens + prompt_tokens / self.prefill_ratio


class Replica:
    """One replica's running batch, waiting queue and virtual clock."""

    __slots__ = ("index", "spec", "speed", "failing", "vtime", "last_t", "rate", "active",
                 "queue", "version", "next_t", "kv_used", "failing_inflight")

    def __init__(self, index: int, spec: ReplicaSpec) -> None:
        self.index = index
        self.spec = spec
        self.speed = spec.speed
        self.failing = False
        self.vtime = 0.0  # tokens each running sequence has received so far
        self.last_t = 0.0
        self.rate = 0.0
        self.active: list[tuple[float, int]] = []  # heap of (finish vtime, request id)
        self.queue: deque[tuple[int, float, int]] = deque()  # (request id, work, kv)
        self.version = 0
        self.next_t = INF
        self.kv_used = 0
        self.failing_inflight = 0

    @property
    def load(self) -> int:
        """Requests this replica holds: running + waiting (+ in-flight errors when failing)."""
        return len(self.active) + len(self.queue) + self.failing_inflight

    def advance(self, now: float) -> None:
        """Move the virtual clock to ``now`` at the current per-request rate."""
        if self.active:
            self.vtime += (now - self.last_t) * self.rate
        self.last_t = now

    def full(self) -> bool:
        return len(self.active) + len(self.queue) >= self.spec.max_backlog

    def admit(self, now: float, rid: int, work: float, kv: int) -> None:
        """Add a request: into the batch if there is room, else to the waiting queue."""
        self.advance(now)
        if len(self.active) < self.spec.max_batch:
            heapq.heappush(self.active, (self.vtime + work, rid))
            self.kv_used += kv
        else:
            self.queue.append((rid, work, kv))
        self._reschedule(now)

    def pop_finished(self, now: float, kv_of: list[int]) -> list[int]:
        """Complete every sequence whose work is done; refill the batch from the queue."""
        self.advance(now)
        done: list[int] = []
        eps = 1e-9 * max(1.0, self.vtime)
        while self.active and self.active[0][0] <= self.vtime + eps:
            rid = heapq.heappop(self.active)[1]
            self.kv_used -= kv_of[rid]
            done.append(rid)
        while self.queue and len(self.active) < self.spec.max_batch:
            rid, work, kv = self.queue.popleft()
            heapq.heappush(self.active, (self.vtime + work, rid))
            self.kv_used += kv
        self._reschedule(now)
        return done

    def set_speed(self, now: float, speed: float) -> None:
        self.advance(now)
        self.speed = speed
        self._reschedule(now)

    def drop_all(self, now: float) -> list[int]:
        """Abort everything held (a crash): returns the request ids, batch first."""
        self.advance(now)
        ids = [rid for _, rid in self.active] + [rid for rid, _, _ in self.queue]
        self.active.clear()
        self.queue.clear()
        self.kv_used = 0
        self._reschedule(now)
        return ids

    def _reschedule(self, now: float) -> None:
        """Recompute the rate and the time of the next completion; stale events die."""
        self.version += 1
        if not self.active:
            self.rate = 0.0
            self.next_t = INF
            return
        self.rate = self.spec.per_request_tps(len(self.active), self.speed)
        self.next_t = now + max(0.0, self.active[0][0] - self.vtime) / self.rate
