"""The discrete-event loop: arrivals, prefill and decode completions, cluster events and policy
calls; per request it records TTFT, end-to-end latency and prefix-cache hits."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from simulator.cluster import BLOCK_TOKENS, INF, Jobs, Replica, ReplicaSpec
from simulator.signals import (
    Window,
    experience_body,
    host_signals,
    raw_state,
    replica_loads,
    select_body,
)
from simulator.workload import Workload

OK, REJECTED, ERRORED = 0, 1, 2  # outcome codes in Records.outcome
_DONE, _FAILED, _EVENT, _TICK = 0, 1, 2, 3  # heap entry kinds


@dataclass(frozen=True)
class ClusterEvent:
    """A change to one replica at ``at_s`` simulated seconds.

    kind: "speed" (speed multiplier becomes ``value``), "fail" (the replica answers every
    request with an error and drops what it holds), "recover" (it serves again), "join" (it
    becomes routable) and "leave" (it is no longer offered to the router; what it holds
    finishes: a graceful drain).
    """

    at_s: float
    kind: str
    replica: int
    value: float = 1.0


@dataclass
class Records:
    """One row per request, indexed like the workload; latency_ms is end to end."""

    arrival_s: np.ndarray
    finish_s: np.ndarray
    latency_ms: np.ndarray
    replica: np.ndarray
    outcome: np.ndarray  # OK, REJECTED or ERRORED
    ttft_ms: np.ndarray | None = None  # time to first token; NaN for a failed request
    prompt_tokens: np.ndarray | None = None
    output_tokens: np.ndarray | None = None
    hit_blocks: np.ndarray | None = None  # prompt blocks found in the replica's prefix cache

    @property
    def success(self) -> np.ndarray:
        return self.outcome == OK

    @property
    def prompt_blocks(self) -> np.ndarray:
        return -(-self.prompt_tokens // BLOCK_TOKENS)


class SimContext:
    """What a policy may ask the simulator besides the request body."""

    def __init__(self, sim: Simulation) -> None:
        self._sim = sim
        self.max_replicas = len(sim.replicas)  # every replica the run may ever offer

    @property
    def num_replicas(self) -> int:
        """Replicas offered to the router now (membership changes move it)."""
        return len(self._sim.present)

    @property
    def now(self) -> float:
        return self._sim.now

    def raw_state(self) -> list[float]:
        """The N + 7 state of the decision in progress, as the service would complete it."""
        return self._sim.current_state

    def true_speeds(self) -> list[float]:
        """Each offered replica's current capacity (requests/s at a full batch for this
        workload's mean request), 0 for a failing replica: only the oracle uses this."""
        p, d, b = self._sim.mean_request
        return [0.0 if r.failing else r.spec.capacity_rps(p, d, b) * r.speed / r.spec.speed
                for r in self._sim.offered]


class Simulation:
    """Runs one workload through one policy on a cluster of replicas."""

    def __init__(self, specs: Sequence[ReplicaSpec], workload: Workload, policy: object,
                 rng: np.random.Generator, events: Sequence[ClusterEvent] = (),
                 window_s: float = 60.0, day_s: float = 1800.0, day_phase: float = 0.0,
                 fail_ms: float = 50.0, reject_ms: float = 5.0,
                 absent: Sequence[int] = (), tick_s: float = 0.0,
                 on_tick: Callable[[Simulation], None] | None = None) -> None:
        """``on_tick(sim)`` runs every ``tick_s`` simulated seconds until the last arrival: a
        controller reads the cluster there and may ``schedule`` membership changes."""
        if on_tick is not None and not tick_s > 0:
            raise ValueError(f"tick_s must be positive with on_tick, got {tick_s!r}")
        self.workload, self.policy, self.rng = workload, policy, rng
        self.tick_s, self.on_tick = tick_s, on_tick
        self._prompt = workload.prompt_tokens.tolist()
        self._output = workload.output_tokens.tolist()
        self.jobs = Jobs(self._prompt, self._output, workload.prefix_hashes)
        self.replicas = [Replica(i, s, self.jobs) for i, s in enumerate(specs)]
        # The replicas offered to the router, in index order; ``absent`` ones join by an event.
        # A decision's list is kept per request (one shared tuple per membership) so its
        # experience reports the loads of the same replicas the policy chose among.
        self.present: tuple[int, ...] = tuple(i for i in range(len(specs)) if i not in set(absent))
        if not self.present:
            raise ValueError("at least one replica must be present at the start")
        self.offered = [self.replicas[i] for i in self.present]
        n = len(workload)
        self.mean_request = (
            float(workload.prompt_tokens.mean()) if n else 0.0,
            float(np.mean(self.jobs.decode)) if n else 0.0,
            float(np.mean(self.jobs.blocks)) if n else 1.0,
        )
        self.events = sorted(events, key=lambda e: e.at_s)
        self.window = Window(window_s)
        self.day_s, self.day_phase = day_s, day_phase
        self.fail_s, self.reject_s = fail_ms / 1000.0, reject_ms / 1000.0
        self.now = 0.0
        self.current_state: list[float] = []
        self._arrival = workload.arrival_s.tolist()
        self._hashes = workload.prefix_hashes
        self._ttft: list[float | None] = [None] * n
        self._states: list[list[float] | None] = [None] * n
        self._decided: list[tuple[int, ...] | None] = [None] * n  # the list each choice indexed
        self._action: list[int] = [-1] * n  # the index the policy returned into that list
        self._heap: list[tuple] = []
        self._seq = 0
        self._started = False
        self.records = Records(
            arrival_s=workload.arrival_s.copy(), finish_s=np.full(n, np.nan),
            latency_ms=np.full(n, np.nan), replica=np.full(n, -1, dtype=np.int16),
            outcome=np.zeros(n, dtype=np.int8), ttft_ms=np.full(n, np.nan),
            prompt_tokens=workload.prompt_tokens.copy(), output_tokens=workload.output_tokens.copy(),
            hit_blocks=np.zeros(n, dtype=np.int32),
        )
        self._observe = getattr(policy, "observe", None)
        # A streaming proxy sees each first token as it arrives (Linkerd times its first byte).
        self._first_token = getattr(policy, "observe_first_token", None)
        self.context = SimContext(self)

    def _push(self, t: float, kind: int, a: int, b: int) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, a, b))

    def _push_replica(self, r: Replica) -> None:
        if r.next_t < INF:
            self._push(r.next_t, _DONE, r.index, r.version)

    def schedule(self, event: ClusterEvent) -> None:
        """Add a cluster event to the run (a controller's join or leave), now or later."""
        if event.at_s < self.now:
            raise ValueError(f"event at {event.at_s} s is in the past (now {self.now} s)")
        self.events.append(event)
        if self._started:  # before the run, run() queues it with the others
            self._push(event.at_s, _EVENT, len(self.events) - 1, 0)

    def run(self, progress: Callable[[float], None] | None = None) -> Records:
        """Simulate every request to completion; ``progress`` gets the fraction routed."""
        start = getattr(self.policy, "start", None)
        if start is not None:
            start(self.context)
        self._started = True
        for k, ev in enumerate(self.events):
            self._push(ev.at_s, _EVENT, k, 0)
        if self.on_tick is not None:
            self._push(self.tick_s, _TICK, 1, 0)
        heap, arrival = self._heap, self._arrival
        n = len(arrival)
        step = max(1, n // 100)
        for i in range(n):
            t = arrival[i]
            while heap and heap[0][0] <= t:
                self._process(heapq.heappop(heap))
            self.now = t
            self._route(i, t)
            if progress is not None and (i + 1) % step == 0:
                progress((i + 1) / n)
        while heap:
            self._process(heapq.heappop(heap))
        return self.records

    def _route(self, rid: int, t: float) -> None:
        offered = self.offered
        self.window.arrival(t)
        request = {"prompt_tokens": self._prompt[rid], "max_tokens": self._output[rid]}
        if self._hashes is not None:
            request["prefix_hashes"] = self._hashes[rid]
        body = select_body(offered, self.window, t, request)
        state = raw_state(body, host_signals(offered, t, self.day_s, self.day_phase))
        self.current_state = state
        self._states[rid] = state
        action = int(self.policy.choose(body, self.rng))
        if not 0 <= action < len(offered):
            raise ValueError(f"policy chose replica {action} of {len(offered)}")
        self._decided[rid], self._action[rid] = self.present, action
        r = offered[action]
        self.records.replica[rid] = r.index
        if r.failing:
            r.failing_inflight += 1
            self._push(t + self.fail_s, _FAILED, rid, 1)
        elif r.full() or not r.fits(rid):
            self._push(t + self.reject_s, _FAILED, rid, 0)
        elif r.admit(t, rid):
            self._push_replica(r)

    def _process(self, entry: tuple) -> None:
        t, _, kind, a, b = entry
        self.now = t
        if kind == _DONE:
            r = self.replicas[a]
            if b != r.version:
                return  # superseded by a later reschedule
            first, done = r.step(t)
            if first >= 0:
                ttft = self._ttft[first] = (t - self._arrival[first]) * 1000.0
                if self._first_token is not None:
                    self._first_token({"state": self._states[first],
                                       "action": self._action[first], "ttft_ms": ttft})
            for rid in done:
                self._finish(rid, t, OK)
            self._push_replica(r)
        elif kind == _FAILED:
            if b:
                self.replicas[self.records.replica[a]].failing_inflight -= 1
            self._finish(a, t, ERRORED if b else REJECTED)
        elif kind == _TICK:
            self.on_tick(self)
            after = (a + 1) * self.tick_s  # tick a is at a * tick_s: no drift from summing
            if self._arrival and after <= self._arrival[-1]:
                self._push(after, _TICK, a + 1, 0)
        else:
            self._apply(self.events[a], t)

    def _apply(self, ev: ClusterEvent, t: float) -> None:
        r = self.replicas[ev.replica]
        if ev.kind == "speed":
            r.set_speed(t, ev.value)
            self._push_replica(r)
        elif ev.kind == "fail":
            r.failing = True
            for rid in r.drop_all(t):
                self._finish(rid, t, ERRORED)
        elif ev.kind == "recover":
            r.failing = False
        elif ev.kind in ("join", "leave"):
            members = set(self.present)
            if ev.kind == "join":
                members.add(r.index)
            else:
                members.discard(r.index)
            if not members:
                raise ValueError(f"replica {r.index} cannot leave: it is the last one")
            self.present = tuple(sorted(members))
            self.offered = [self.replicas[i] for i in self.present]
        else:
            raise ValueError(f"unknown cluster event {ev.kind!r}")

    def _finish(self, rid: int, t: float, outcome: int) -> None:
        rec = self.records
        latency = (t - self._arrival[rid]) * 1000.0
        rec.finish_s[rid] = t
        rec.latency_ms[rid] = latency
        rec.outcome[rid] = outcome
        ok = outcome == OK
        ttft = self._ttft[rid] if ok else None
        if ok:
            rec.ttft_ms[rid] = ttft
            rec.hit_blocks[rid] = self.jobs.hit_blocks[rid]
        self.window.completion(t, latency, ok)
        state, self._states[rid] = self._states[rid], None
        decided, self._decided[rid] = self._decided[rid], None
        if self._observe is not None:
            # Loads after, of the replicas the decision chose among (a left one still drains).
            loads = replica_loads([self.replicas[i] for i in decided])
            self._observe(experience_body(state, self._action[rid], latency, ok, loads,
                                          ttft, self._prompt[rid], self._output[rid],
                                          replica_name=self.replicas[rec.replica[rid]].name))
