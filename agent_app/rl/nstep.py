"""n-step transitions from per-request transitions that arrive out of order from many
concurrent requests: chained per stream, in sequence order (see NStepAccumulator)."""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from agent_app.rl.buffers import Transition


class NStepTransition(NamedTuple):
    """An n-step transition ready for the replay buffer."""

    state: Sequence[float] | np.ndarray
    action: int
    reward: float
    next_state: Sequence[float] | np.ndarray
    done: bool
    discount: float  # gamma^k; the TD target is reward + discount * (1 - done) * max Q(next)
    steps: int  # k


@dataclass
class _Stream:
    pending: dict[int, Transition] = field(default_factory=dict)
    emitted: set[int] = field(default_factory=set)
    heap: list[int] = field(default_factory=list)  # every pending seq, oldest first
    newest: int | None = None
    next_auto_seq: int = 0


class NStepAccumulator:
    """Per-stream n-step chaining; `add` returns the transitions that became complete.

    Experiences reach the service from many concurrent requests and out of order. They are
    chained only within a *stream* (one client or gateway: `stream_key`) and ordered by the
    stream's *sequence number* (`seq`: a per-stream counter the gateway assigns when it asks
    for a decision; without it, arrival order is used). Transition t becomes an n-step
    transition once t, t+1, ..., t+n-1 have all arrived, or earlier if one is terminal:

        reward   = sum_{i<k} gamma^i r_{t+i}       discount = gamma^k
        next     = next_state of t+k-1             done     = done of t+k-1

    with k = n, or k = (index of the first terminal) + 1 (truncation at done). A lost report
    would block its predecessors forever, so once a stream has moved `max_delay` sequence
    numbers past t, t is emitted truncated at the first gap (k < n, bootstrapped with
    gamma^k: still a valid k-step target). Reports arriving later than that are emitted at
    once, truncated the same way. `flush()` emits everything pending (shutdown, idle streams).
    """

    def __init__(self, n: int, gamma: float, max_delay: int = 64) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        if max_delay < n:
            raise ValueError(f"max_delay ({max_delay}) must be >= n ({n})")
        self.n = n
        self.gamma = gamma
        self.max_delay = max_delay
        self._streams: dict[Hashable, _Stream] = {}

    def pending_count(self, stream_key: Hashable | None = None) -> int:
        """Transitions held (not yet emitted, or still needed by an earlier window)."""
        streams = self._streams.values() if stream_key is None else [self._streams[stream_key]]
        return sum(len(s.pending) - len(s.emitted) for s in streams)

    def add(
        self, transition: Transition, stream_key: Hashable = "default", seq: int | None = None
    ) -> list[NStepTransition]:
        """Record one transition of `stream_key` at position `seq`; return completed ones."""
        stream = self._streams.setdefault(stream_key, _Stream())
        if seq is None:
            seq = stream.next_auto_seq
        if isinstance(seq, bool) or not isinstance(seq, int | np.integer):
            raise ValueError(f"seq must be an integer, got {seq!r}")
        seq = int(seq)
        stream.next_auto_seq = max(stream.next_auto_seq, seq + 1)
        if seq in stream.pending:
            raise ValueError(f"duplicate seq {seq} for stream {stream_key!r}")
        out: list[NStepTransition] = []
        if stream.newest is not None and seq <= stream.newest - self.max_delay:
            # Too late to wait for: its window may already be gone; emit what is there.
            stream.pending[seq] = transition
            out.append(self._window(stream, seq, force=True))
            del stream.pending[seq]
            return out
        stream.pending[seq] = transition
        heapq.heappush(stream.heap, seq)
        stream.newest = seq if stream.newest is None else max(stream.newest, seq)
        # Only windows that contain `seq` can have just become complete.
        for start in range(seq - self.n + 1, seq + 1):
            if start in stream.pending and start not in stream.emitted:
                done = self._window(stream, start, force=False)
                if done is not None:
                    stream.emitted.add(start)
                    out.append(done)
        self._expire(stream, stream.newest - self.max_delay, out)
        return out

    def flush(self, stream_key: Hashable | None = None) -> list[NStepTransition]:
        """Emit every pending transition (truncated at gaps) and forget the stream(s)."""
        keys = list(self._streams) if stream_key is None else [stream_key]
        out: list[NStepTransition] = []
        for key in keys:
            stream = self._streams.pop(key, None)
            if stream is not None:
                for start in sorted(stream.pending):
                    if start not in stream.emitted:
                        out.append(self._window(stream, start, force=True))
        return out

    def _expire(self, stream: _Stream, threshold: int, out: list[NStepTransition]) -> None:
        # Entries at or below the threshold can no longer be waited for and no window that is
        # still open starts before them, so emit (if needed) and drop them.
        while stream.heap and stream.heap[0] <= threshold:
            start = heapq.heappop(stream.heap)
            if start not in stream.emitted:
                out.append(self._window(stream, start, force=True))
            stream.emitted.discard(start)
            del stream.pending[start]

    def _window(self, stream: _Stream, start: int, force: bool) -> NStepTransition | None:
        """The n-step transition starting at `start`, or None if it must still wait."""
        first = stream.pending[start]
        reward = 0.0
        factor = 1.0
        last = first
        steps = 0
        for offset in range(self.n):
            item = stream.pending.get(start + offset)
            if item is None:
                if not force:
                    return None
                break  # truncate at the gap
            reward += factor * float(item.reward)
            factor *= self.gamma
            last = item
            steps += 1
            if item.done:
                break
        return NStepTransition(
            state=first.state,
            action=int(first.action),
            reward=reward,
            next_state=last.next_state,
            done=bool(last.done),
            discount=factor,
            steps=steps,
        )
