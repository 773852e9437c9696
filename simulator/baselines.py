"""Routers people run in front of LLM replicas, as simulator baselines: Envoy, LiteLLM, vLLM
production-stack. Each docstring says what it reproduces, what it reads and where the semantics
come from; the cache-aware routers are in ``cache_routers.py``, peak EWMA in ``policies.py``.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
from collections import deque
from collections.abc import Sequence

import numpy as np

from simulator.router_view import (
    ReplicaIds,
    RouterPolicy,
    active_requests,
    prefix_hashes,
    replica_names,
    request_of,
)


class EnvoyLeastRequestPolicy(RouterPolicy):
    """Envoy's ``LEAST_REQUEST`` load balancer (``least_request_lb.cc``, ``LeastRequest`` proto).

    Reads active requests per host (Envoy's own ``rq_active``). All weights equal (Envoy's default
    weight 1, the simulator's case): ``choice_count`` (2) hosts drawn uniformly *with replacement*;
    a later draw replaces the candidate only with strictly fewer active requests, so a tie keeps
    the first draw, and the busiest host wins when every draw hits it (1/9 of picks among three).
    Unequal ``weights``: earliest-deadline-first on weight / (active + 1) ** active_request_bias
    (bias 1.0), the picked host requeued with its weight at pick time, the schedule started at a
    random offset. Health checks, outlier detection, slow start and locality are not modelled.
    """

    name = "envoy_least_request"

    def __init__(self, choice_count: int = 2, weights: Sequence[float] | None = None,
                 active_request_bias: float = 1.0) -> None:
        if choice_count < 1:
            raise ValueError("choice_count must be at least 1")
        self.choice_count = choice_count
        self.weights = list(weights) if weights is not None else None
        self.bias = active_request_bias
        self._edf: list[tuple[float, int, int]] = []  # (deadline, order, host)
        self._clock, self._order = 0.0, 0

    def choose(self, request_fields: dict, rng: np.random.Generator) -> int:
        active = active_requests(request_fields)
        n = len(active)
        if self.weights is None or len(set(self.weights)) <= 1:
            best = int(rng.integers(n))
            for _ in range(self.choice_count - 1):
                drawn = int(rng.integers(n))
                if active[drawn] < active[best]:
                    best = drawn
            return best
        if len(self.weights) != n:
            raise ValueError(f"{len(self.weights)} weights for {n} replicas")
        if not self._edf:
            for host in range(n):
                self._push(host, active)
            for _ in range(int(rng.integers(n))):
                self._pick(active)
        return self._pick(active)

    def _push(self, host: int, active: list[float]) -> None:
        weight = self.weights[host] / (active[host] + 1.0) ** self.bias
        self._order += 1
        heapq.heappush(self._edf, (self._clock + 1.0 / weight, self._order, host))

    def _pick(self, active: list[float]) -> int:
        self._clock, _, host = heapq.heappop(self._edf)
        self._push(host, active)
        return host


class LiteLLMLatencyPolicy(RouterPolicy):
    """LiteLLM Router ``latency-based-routing`` (``litellm/router_strategy/lowest_latency.py``).

    On each success it stores the latency per completion token (seconds / output tokens), or the
    time to first token per completion token when ``stream``; a deployment never seen averages 0,
    so it is tried first. The list holds ``max_latency_list_size`` (10) values, but a full list
    keeps its first nine and overwrites only the last slot (LiteLLM's own update rule), so the
    average is anchored to the earliest samples. The pick is uniform among deployments within
    ``lowest_latency_buffer`` (0: exact ties only) of the lowest average. Only ``litellm.Timeout``
    failures are recorded (a 1000 s penalty); the simulator has no timeouts, so failures are not.
    Not modelled: the 1 h TTL of the map (reset on every success) and tpm/rpm limits (none set).
    """

    name = "litellm_latency"

    def __init__(self, lowest_latency_buffer: float = 0.0, max_latency_list_size: int = 10,
                 stream: bool = False) -> None:
        self.buffer = lowest_latency_buffer
        self.size = max_latency_list_size
        self.stream = stream
        self.latency: dict[int, list[float]] = {}  # by replica id (ReplicaIds), not position
        self.ttft: dict[int, list[float]] = {}
        self.ids = ReplicaIds()

    def average(self, replica: int) -> float:
        lat = self.latency.get(replica)
        if not lat:
            return 0.0
        values = self.ttft.get(replica) if self.stream and self.ttft.get(replica) else lat
        return sum(values) / len(lat)  # LiteLLM divides by the latency list's length

    def choose(self, request_fields: dict, rng: np.random.Generator) -> int:
        avg = [self.average(i) for i in self.ids.of(request_fields)]
        lowest = min(avg)
        near = [i for i, v in enumerate(avg) if v <= lowest + self.buffer * lowest]
        return near[int(rng.integers(len(near)))]

    def _record(self, store: dict[int, list[float]], replica: int, value: float) -> None:
        values = store.setdefault(replica, [])
        if len(values) < self.size:
            values.append(value)
        else:
            values[self.size - 1:] = [value]

    def observe(self, experience: dict) -> None:
        if not experience["success"]:
            return
        tokens = experience.get("output_tokens")
        if tokens == 0:
            return  # LiteLLM's division fails and its handler drops the sample
        per = 1.0 / tokens if tokens else 1.0  # older callers: seconds, not per token
        a = self.ids.chosen(experience)
        if a is None:
            return
        self._record(self.latency, a, experience["latency_ms"] / 1000.0 * per)
        if self.stream and experience.get("ttft_ms") is not None:
            self._record(self.ttft, a, experience["ttft_ms"] / 1000.0 * per)


class LiteLLMLeastBusyPolicy(RouterPolicy):
    """LiteLLM Router ``least-busy`` (``litellm/router_strategy/least_busy.py``).

    The router counts its own in-flight requests per deployment: +1 just before the call, -1 on
    success or failure (here: +1 in ``choose``, -1 in ``observe``, which the engine calls once per
    routed request). It picks the first deployment with the fewest, in the order deployments were
    first used; no randomness, so ties always go to the lowest index.
    """

    name = "litellm_least_busy"

    def __init__(self) -> None:
        self.in_flight: list[int] = []  # by replica id (ReplicaIds), not position
        self.ids = ReplicaIds()

    def choose(self, request_fields: dict, rng: np.random.Generator) -> int:
        ids = self.ids.of(request_fields)
        self.in_flight += [0] * (len(self.ids) - len(self.in_flight))
        counts = [self.in_flight[i] for i in ids]
        choice = counts.index(min(counts))
        self.in_flight[ids[choice]] += 1
        return choice

    def observe(self, experience: dict) -> None:
        a = self.ids.chosen(experience)
        if a is not None and a < len(self.in_flight):
            self.in_flight[a] -= 1


def _md5(text: str) -> int:
    return int.from_bytes(hashlib.md5(text.encode()).digest(), "big")


class SessionAffinityPolicy(RouterPolicy):
    """vLLM production-stack ``SessionRouter`` (``src/vllm_router/routers/routing_logic.py``).

    A consistent-hash ring of the replicas (uhashring's default: md5, 160 points per node) maps a
    session key to a replica: sticky, and adding or removing a replica moves only its share. The
    key is ``request["session_id"]`` when the workload has one; traces without it (Mooncake) use
    the first prefix hash, so requests sharing a first 512-token block (a system prompt) share a
    replica. Without either, production-stack routes to the replica with the lowest request rate
    over its 60 s stats window (an idle one first, lowest index on ties).
    """

    name = "session_affinity"

    def __init__(self, points_per_replica: int = 160, qps_window_s: float = 60.0) -> None:
        self.points_per_replica = points_per_replica
        self.qps_window_s = qps_window_s
        self._names: list[str] = []
        self._ring: list[int] = []
        self._owners: list[int] = []
        self._arrivals: dict[str, deque[float]] = {}  # by name: survives a membership change

    def _build(self, names: list[str]) -> None:
        points = sorted((_md5(f"{name}-{k}"), i) for i, name in enumerate(names)
                        for k in range(self.points_per_replica))
        self._ring = [p for p, _ in points]
        self._owners = [i for _, i in points]
        self._names = names
        for name in names:
            self._arrivals.setdefault(name, deque())

    def session_key(self, request_fields: dict) -> str | None:
        session = request_of(request_fields).get("session_id")
        if session is not None:
            return str(session)
        hashes = prefix_hashes(request_fields)
        return str(hashes[0]) if hashes else None

    def replica_for(self, key: str) -> int:
        pos = bisect.bisect_left(self._ring, _md5(key))
        return self._owners[pos % len(self._ring)]

    def _lowest_rate(self, now: float) -> int:
        rates = []
        for i, name in enumerate(self._names):
            seen = self._arrivals[name]
            if not seen:
                return i
            while seen and seen[0] < now - self.qps_window_s:
                seen.popleft()
            rates.append(len(seen))
        return rates.index(min(rates))

    def choose(self, request_fields: dict, rng: np.random.Generator) -> int:
        names = replica_names(request_fields)
        if names != self._names:
            self._build(names)
        key = self.session_key(request_fields)
        now = self.now()
        choice = self._lowest_rate(now) if key is None else self.replica_for(key)
        self._arrivals[names[choice]].append(now)
        return choice
