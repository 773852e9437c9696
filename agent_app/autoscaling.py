"""How many replicas of a pool's current mix hold a latency target, from one window of observations.

Pure Python and NumPy, no Django. Inputs, one window (say the last 60 s) per pool:
  `PoolWindow.arrival_rate`   requests/s arriving at the pool (admitted, queued or not yet done).
  per replica (`ReplicaWindow`):
    `completed_per_s`  requests/s that finished, failed ones included, over the time it was seen;
    `in_flight`        mean requests in progress (running + waiting); when unknown, Little's law
                       derives it from `mean_latency_ms` (L = X * W);
    `latency_ms`       end-to-end latency by percentile ({50, 90, 95, 99}: ms), `ttft_ms` the same
                       for time to first token; needed for every replica that completed requests;
    `failure_rate`     failed / finished, in [0, 1];
    `concurrency`      batch slots (vLLM's max_num_seqs), when known;
    `batch_slowdown`   how much longer a request takes per other request in its batch (below);
    `window_share`     the share of the window it was routable: less than 1 for one that joined
                       within the window.
  `LatencyTarget`: a percentile, a threshold in ms and the metric ("e2e" or "ttft").

A replica's utilisation rho and capacity mu (what it completes at rho = 1: mu = X / rho).
- With batch slots c (a batching engine: vLLM, TGI, SGLang), rho is the share of its full-batch
  throughput it delivers. Its requests run together, and each takes longer the fuller the batch:
  decode is memory-bound, so every sequence adds a little to each iteration, and every other
  request's prefill stalls the batch while it runs. A request's time in the replica is taken as
  linear in the batch it shares, W(b) = W(1) * g(b) with g(b) = 1 + s * (b - 1) (s:
  `batch_slowdown`), so a replica running b = min(L, c) requests delivers X = b / W(b) and at a
  full batch c / W(c): rho = (b / c) * g(c) / g(b). s defaults to 0.03: about 0.02 from decode
  (memory-bound: a 70B-class replica's per-sequence decode about 1.6x as slow at 32 sequences as
  alone, as simulator/ models it) and 0.01-0.015 from the others' prefills (each stalls the batch
  for its prompt's prefill: with prompts about 3x as long as outputs, prefilled about 200x as
  fast per token as one sequence decodes, 3 / 200 of a request's time alone). s = 0 is the plain
  slot count, rho = b / c, which overstates a batching engine's capacity by g(c) / g(b): with
  s = 0.03 and 32 slots, 1.9x at one request in flight and 1.14x at 75 % of the slots. To measure
  s on an engine: the mean latency at a full batch over the one alone, less one, over c - 1.
- Without slots, that of a processor-sharing queue (M/M/1-PS: L = rho / (1 - rho), so
  rho = L / (1 + L)). For a batching engine this reads a few requests in flight as a busy
  replica, so it errs towards more replicas, by a factor that grows with the pool: set the slots.

Latency. Response times in a PS queue are the zero-load ones stretched by 1 / (1 - rho), so a
replica's zero-load latency of the target percentile is S_i = p_i * (1 - rho_i) (for a batching
engine, whose latency stays flatter until its slots fill, the law is conservative). The pool's S is
the replicas' S_i averaged by completions, each replica's latency taken with its own utilisation:
a backlog on old replicas beside empty newcomers is a high p at a high rho, not a high p at the
pool's mean rho. The threshold T is met up to rho* = 1 - S / T, kept within [min_utilisation,
max_utilisation].

Sizing. The pool needs lambda / (mu_mean * rho*) replicas of the mean healthy one. mu_mean averages
the measured replicas' capacities weighted by the share of the window they were seen, and a
replica seen for a share f of it counts f of its own capacity and 1 - f of the mean (one that
joined a few seconds ago has too few completions to measure); an idle healthy replica counts as a
mean one. Replicas failing at least `failing_rate` of their requests count as zero capacity, the
others as mu * (1 - failure_rate), and the missing capacity stays in the mix (a new replica is a
mean healthy one; a broken one stays broken until it is replaced), so it is added on top.

Latency over the threshold at low utilisation: rho* falls below min_utilisation, so the latency is
the replicas' own, not queueing, and more replicas cannot fix it. The estimate then sizes for
min_utilisation, never below the current count while latency is over the threshold, and sets
`latency_bound` so an operator looks at the replicas rather than at their number.

Use: one `DesiredReplicas(target, min_replicas=..., max_replicas=...)` per pool, `evaluate(window,
at=seconds)` once per window; `Decision.recommendation` is the count to export, `Decision.estimate`
the reasoning (utilisation, headroom, raw estimate, one replica more or fewer; dataclasses.asdict).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

PERCENTILES = (50, 90, 95, 99)
METRICS = ("e2e", "ttft")
# A request's time in a batching engine grows by this share of its time alone per other request in
# its batch: decode's slowdown plus the others' prefills (the module's docstring).
DEFAULT_BATCH_SLOWDOWN = 0.03


@dataclass(frozen=True)
class ReplicaWindow:
    completed_per_s: float
    latency_ms: Mapping[int, float]
    in_flight: float | None = None
    mean_latency_ms: float | None = None
    ttft_ms: Mapping[int, float] | None = None
    failure_rate: float = 0.0
    concurrency: float | None = None
    batch_slowdown: float = DEFAULT_BATCH_SLOWDOWN  # used with `concurrency` only
    window_share: float = 1.0  # of the window it was routable; less when it joined within it


@dataclass(frozen=True)
class PoolWindow:
    arrival_rate: float
    replicas: Sequence[ReplicaWindow]
    pool: str = "default"


@dataclass(frozen=True)
class LatencyTarget:
    percentile: int = 99
    threshold_ms: float = 1000.0
    metric: str = "e2e"
    # Never aim above this utilisation (a burst needs room) nor size for less than the floor.
    max_utilisation: float = 0.85
    min_utilisation: float = 0.3
    # A replica failing this share of its requests or more serves nothing useful.
    failing_rate: float = 0.5


@dataclass(frozen=True)
class Estimate:
    pool: str
    current_replicas: int
    healthy_replicas: int
    effective_replicas: float  # healthy capacity in units of the mean healthy replica
    # None (never nan, so the whole estimate is valid JSON) while no healthy replica completed anything.
    replica_capacity_rps: float | None  # the mean healthy replica's capacity
    utilisation: float | None  # arrival rate over healthy capacity; above 1 the pool falls behind
    target_utilisation: float
    headroom_rps: float | None  # capacity at the target utilisation minus arrivals; negative: short
    observed_latency_ms: float | None
    zero_load_latency_ms: float | None  # of the target percentile: what rho* is derived from
    latency_headroom_ms: float | None  # threshold minus observed
    raw_estimate: float
    needed_replicas: int
    utilisation_one_more: float | None  # None only when capacity is unknown
    utilisation_one_fewer: float | None  # None: one fewer leaves no healthy capacity
    latency_bound: bool
    reason: str


def _number(name: str, value: float | None, *, low: float = 0.0, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be within [{low}, {high}], got {value!r}")
    return float(value)


def _check_target(target: LatencyTarget) -> None:
    if target.percentile not in PERCENTILES:
        raise ValueError(f"target.percentile must be one of {PERCENTILES}, got {target.percentile!r}")
    if target.metric not in METRICS:
        raise ValueError(f"target.metric must be one of {METRICS}, got {target.metric!r}")
    if _number("target.threshold_ms", target.threshold_ms) <= 0:
        raise ValueError("target.threshold_ms must be positive")
    _number("target.max_utilisation", target.max_utilisation, low=0.01, high=0.99)
    _number("target.min_utilisation", target.min_utilisation, low=0.01, high=target.max_utilisation)
    _number("target.failing_rate", target.failing_rate, low=0.0, high=1.0)


def _replica_columns(window: PoolWindow, target: LatencyTarget) -> np.ndarray:
    """One row per replica: completions/s, in-flight, failure rate, slots (nan), latency (nan),
    batch slowdown, window share."""
    _number("arrival_rate", window.arrival_rate)
    if not window.replicas:
        raise ValueError("replicas must list at least one replica")
    rows = []
    for i, replica in enumerate(window.replicas):
        field = f"replicas[{i}]"
        done = _number(f"{field}.completed_per_s", replica.completed_per_s)
        if replica.in_flight is not None:
            load = _number(f"{field}.in_flight", replica.in_flight)
        elif replica.mean_latency_ms is not None:
            load = done * _number(f"{field}.mean_latency_ms", replica.mean_latency_ms) / 1000.0
        else:
            raise ValueError(f"{field}.in_flight is required when mean_latency_ms is not given")
        failures = _number(f"{field}.failure_rate", replica.failure_rate, high=1.0)
        slots = math.nan
        if replica.concurrency is not None:
            slots = _number(f"{field}.concurrency", replica.concurrency, low=1.0)
        slowdown = _number(f"{field}.batch_slowdown", replica.batch_slowdown, high=10.0)
        share = _number(f"{field}.window_share", replica.window_share, high=1.0)
        name = "latency_ms" if target.metric == "e2e" else "ttft_ms"
        latencies = (replica.latency_ms if target.metric == "e2e" else replica.ttft_ms) or {}
        latency = math.nan
        if done > 0:
            latency = _number(f"{field}.{name}[{target.percentile}]", latencies.get(target.percentile))
        rows.append((done, load, failures, slots, latency, slowdown, share))
    return np.array(rows, dtype=float)


def utilisation(load: np.ndarray, slots: np.ndarray, slowdown: np.ndarray) -> np.ndarray:
    """Per replica, the share of its capacity in use at `load` requests in flight: with slots
    (not nan), of its full-batch throughput, a request taking g(b) = 1 + slowdown * (b - 1) times
    as long in a batch of b; without, a processor-sharing queue's. At most 0.99: a replica at or
    over its slots completes at its capacity."""
    batch = np.minimum(load, np.where(np.isnan(slots), 0.0, slots))
    with np.errstate(divide="ignore", invalid="ignore"):
        stretch_full = 1.0 + slowdown * (slots - 1.0)
        stretch_now = 1.0 + slowdown * np.maximum(batch - 1.0, 0.0)
        batched = batch / slots * stretch_full / stretch_now
        return np.minimum(np.where(np.isnan(slots), load / (1.0 + load), batched), 0.99)


def estimate(window: PoolWindow, target: LatencyTarget) -> Estimate:
    """The replicas needed to hold `target` under this window's traffic (see the module's model)."""
    _check_target(target)
    done, load, failures, slots, latency, slowdown, share = _replica_columns(window, target).T
    count, arrivals = len(done), float(window.arrival_rate)
    healthy = failures < target.failing_rate
    rho = utilisation(load, slots, slowdown)
    measured = healthy & (done > 0) & (rho > 1e-9) & (share > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        capacity = np.where(measured, done / rho, 0.0)
    common = dict(pool=window.pool, current_replicas=count, healthy_replicas=int(healthy.sum()))
    if not measured.any():
        # No healthy replica finished anything: with no traffic nothing is needed; with some, a
        # replica's capacity is unknown, so hold.
        raw = float(count) if arrivals > 0 else 0.0
        why = ("no healthy replica completed requests in the window: capacity unknown, holding"
               if arrivals > 0 else "no traffic")
        return Estimate(**common, effective_replicas=float(healthy.sum()), replica_capacity_rps=None,
                        utilisation=None, target_utilisation=target.max_utilisation, headroom_rps=None,
                        observed_latency_ms=None, zero_load_latency_ms=None, latency_headroom_ms=None,
                        raw_estimate=raw, needed_replicas=int(raw),
                        utilisation_one_more=None, utilisation_one_fewer=None, latency_bound=False,
                        reason=why)
    # Each measurement counts for the share of the window behind it; the rest of a replica seen
    # briefly (and all of an idle healthy one) is taken to be like the others.
    mean_capacity = float(np.average(capacity[measured], weights=share[measured]))
    seen = np.where(measured, share, 0.0)
    capacity = np.where(healthy, seen * capacity + (1.0 - seen) * mean_capacity, 0.0)
    useful = float((capacity * (1.0 - failures)).sum())
    effective = useful / mean_capacity
    broken = count - effective
    # Each replica's latency with its own utilisation, averaged by the completions behind them.
    completions = done[measured] * share[measured]
    observed = float(np.average(latency[measured], weights=completions))
    zero_load = float(np.average(latency[measured] * (1.0 - rho[measured]), weights=completions))
    ideal = 1.0 - zero_load / target.threshold_ms
    latency_bound = ideal < target.min_utilisation
    aim = min(max(ideal, target.min_utilisation), target.max_utilisation)
    raw = arrivals / (mean_capacity * aim) + broken
    reason = f"{arrivals:.3g} req/s over {effective:.3g} replicas of {mean_capacity:.3g} req/s at {aim:.0%}"
    if observed > target.threshold_ms and raw < count:
        raw = float(count)  # never shrink while over the threshold
        reason += "; latency over the threshold: not below the current count"
    if latency_bound:
        reason += "; latency over the threshold at low utilisation: more replicas cannot meet it"

    def utilisation_with(replicas: int) -> float | None:
        units = replicas - broken
        return arrivals / (units * mean_capacity) if units > 1e-9 else None

    return Estimate(
        **common, effective_replicas=effective, replica_capacity_rps=mean_capacity,
        utilisation=arrivals / useful, target_utilisation=aim,
        headroom_rps=useful * aim - arrivals, observed_latency_ms=observed, zero_load_latency_ms=zero_load,
        latency_headroom_ms=target.threshold_ms - observed, raw_estimate=raw,
        needed_replicas=max(0, math.ceil(raw - 1e-9)),  # 1e-9: 3.0000000001 is 3, not 4
        utilisation_one_more=utilisation_with(count + 1),
        utilisation_one_fewer=utilisation_with(count - 1), latency_bound=latency_bound, reason=reason,
    )


@dataclass(frozen=True)
class Decision:
    estimate: Estimate
    recommendation: int
    changed: bool
    lower_for: int  # consecutive evaluations the estimate has been below the recommendation
    reason: str


class DesiredReplicas:
    """The recommendation with hysteresis: up at once when the estimate needs more, down only after
    the estimate has stayed at least one lower for `cooldown_evaluations` evaluations and
    `cooldown_seconds`, then to the highest estimate of that stretch; always within [min, max].
    The first evaluation starts from the pool's current count: a restart never scales down at once."""

    def __init__(self, target: LatencyTarget, *, min_replicas: int = 1, max_replicas: int = 64,
                 cooldown_evaluations: int = 5, cooldown_seconds: float = 0.0) -> None:
        _check_target(target)
        for name, value, low in (("min_replicas", min_replicas, 0), ("max_replicas", max_replicas, 1),
                                 ("cooldown_evaluations", cooldown_evaluations, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer of at least {low}, got {value!r}")
        if max_replicas < min_replicas:
            raise ValueError(f"max_replicas ({max_replicas}) must not be below min_replicas ({min_replicas})")
        self.target = target
        self.min_replicas, self.max_replicas = min_replicas, max_replicas
        self.cooldown_evaluations = cooldown_evaluations
        self.cooldown_seconds = _number("cooldown_seconds", cooldown_seconds)
        self.recommendation: int | None = None
        self._lower: list[int] = []  # estimates of the current stretch below the recommendation
        self._lower_since: float | None = None
        self._last_at: float | None = None

    def _bounded(self, replicas: int) -> int:
        return min(max(replicas, self.min_replicas), self.max_replicas)

    def evaluate(self, window: PoolWindow, *, at: float | None = None) -> Decision:
        """One evaluation; `at` (seconds, any clock) is required when cooldown_seconds is set."""
        if at is not None:
            _number("at", at, low=-math.inf)
            if self._last_at is not None and at < self._last_at:
                raise ValueError(f"at went backwards: {at} after {self._last_at}")
            self._last_at = at
        elif self.cooldown_seconds > 0:
            raise ValueError("at is required when cooldown_seconds is set")
        found = estimate(window, self.target)
        previous = self.recommendation
        current = self._bounded(found.current_replicas if previous is None else previous)
        needed = self._bounded(found.needed_replicas)
        if needed >= current:
            self._lower, self._lower_since = [], None
            recommendation = needed
            why = "up at once" if needed > current else "holds"
        else:
            self._lower.append(needed)
            self._lower_since = at if self._lower_since is None else self._lower_since
            waited = 0.0 if at is None or self._lower_since is None else at - self._lower_since
            if len(self._lower) >= self.cooldown_evaluations and waited >= self.cooldown_seconds:
                recommendation, why = max(self._lower), "down after the cool-down"
                self._lower, self._lower_since = [], None
            else:
                recommendation, why = current, f"lower for {len(self._lower)} evaluation(s), cooling down"
        self.recommendation = recommendation
        before = found.current_replicas if previous is None else previous
        return Decision(estimate=found, recommendation=recommendation, changed=recommendation != before,
                        lower_for=len(self._lower), reason=f"{why}: {found.reason}")
