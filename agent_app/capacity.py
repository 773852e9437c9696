"""The desired-replica count of every pool: a pool's recent `ReplicaOutcome` rows, `ReplicaLatencyBin`
histograms and decision counts made into a `PoolWindow`, evaluated by that pool's own
`DesiredReplicas` (autoscaling.py), which keeps the pool's hysteresis.

What a pool's window holds, over the last AUTOSCALE_WINDOW_SECONDS:
- per replica seen in the rows: completions/s (failures included), failure rate, the 50th, 90th,
  95th and 99th percentiles of its successful requests' end-to-end latency and time to first token
  (read from its histograms, within their 5 % bins), and the mean latency, from which Little's law
  gives the in-flight count. A replica whose requests all failed has no latency and counts as
  broken. Its batch slots are AUTOSCALE_REPLICA_SLOTS, its batch slowdown AUTOSCALE_BATCH_SLOWDOWN
  (the estimate's default when unset); without slots the estimate reads it as a processor-sharing
  queue, which over-provisions a batching engine (autoscaling.py);
- the arrival rate: the larger of the completions/s and the decisions/s (`ReplicaSelection`
  counts, differenced between this process's evaluations), so a queue building up shows before
  its requests complete. Both assume the gateway reports every routed request's outcome.

A pool's target is AUTOSCALE_TARGET_MS, AUTOSCALE_PERCENTILE and AUTOSCALE_METRIC, each unless
AUTOSCALE_POOL_TARGETS sets it for the pool; a pool without a target_ms has no evaluator and no
gauge sample. Nor has a pool whose target is on "ttft" while a replica that completed requests in
the window has no time to first token in it (the gateway does not send ttft_ms): /stats says which.
Rows without end-to-end histograms (written before they were kept) have their mean latency stand
in for every percentile until the window has moved past them.

A pool is evaluated at most every EVALUATE_EVERY_SECONDS, when /metrics (every pool, one query per
table for all of them) or /stats (the request's pool) asks, in the web worker that answers; every
worker reads the same shared rows, so the workers' values agree up to the moment each evaluated
(Prometheus' max() over them is the value to scale on).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from django.conf import settings
from django.db.models import Sum

from agent_app.autoscaling import (
    PERCENTILES,
    Decision,
    DesiredReplicas,
    LatencyTarget,
    PoolWindow,
    ReplicaWindow,
)
from agent_app.models import ReplicaLatencyBin, ReplicaOutcome, ReplicaSelection
from agent_app.pools import current_pool, pool_names
from agent_app.replay.histogram import quantile_ms
from agent_app.replica_outcomes import BUCKET_SECONDS

EVALUATE_EVERY_SECONDS = float(BUCKET_SECONDS)  # the rows change once per bucket
COOLDOWN_EVALUATIONS = 3

# Per replica name: (requests, failures, latency sum of the successful ones) in the window.
ReplicaTotals = dict[str, tuple[float, float, float]]
# Per replica name, per metric ("e2e", "ttft"): its histogram in the window, {bin: count}.
ReplicaBins = dict[str, dict[str, dict[int, int]]]


def pool_target(pool: str) -> LatencyTarget | None:
    """The pool's latency target: AUTOSCALE_POOL_TARGETS' fields for it over the AUTOSCALE_* ones;
    None (off) when neither sets a target_ms."""
    override = settings.AUTOSCALE_POOL_TARGETS.get(pool, {})
    threshold = override.get("target_ms", settings.AUTOSCALE_TARGET_MS)
    if threshold is None:
        return None
    return LatencyTarget(percentile=override.get("percentile", settings.AUTOSCALE_PERCENTILE),
                         threshold_ms=threshold, metric=override.get("metric", settings.AUTOSCALE_METRIC))


def _any_target() -> bool:
    return settings.AUTOSCALE_TARGET_MS is not None or any(
        "target_ms" in fields for fields in settings.AUTOSCALE_POOL_TARGETS.values())


def _config(target: LatencyTarget) -> tuple[Any, ...]:
    """What an evaluator was built for: a change starts the pool's history afresh."""
    return (target, settings.AUTOSCALE_MIN_REPLICAS, settings.AUTOSCALE_MAX_REPLICAS,
            settings.AUTOSCALE_COOLDOWN_SECONDS)


def _engine() -> dict[str, float]:
    """The replicas' batch slots and slowdown, as far as the settings give them."""
    engine = {"concurrency": settings.AUTOSCALE_REPLICA_SLOTS,
              "batch_slowdown": settings.AUTOSCALE_BATCH_SLOWDOWN}
    return {name: value for name, value in engine.items() if value is not None}


def _percentiles(histogram: dict[int, int]) -> dict[int, float] | None:
    """{50, 90, 95, 99: ms} from a histogram; None when it is empty."""
    if not histogram:
        return None
    return {p: quantile_ms(histogram, p / 100) for p in PERCENTILES}


def _replica(totals: tuple[float, float, float], histograms: dict[str, dict[int, int]],
             seconds: float) -> ReplicaWindow:
    count, failures, latency_sum = totals
    successes = count - failures
    if successes <= 0:  # nothing measured: latency 0 and no load, and the failure rate marks it broken
        nothing = dict.fromkeys(PERCENTILES, 0.0)
        return ReplicaWindow(completed_per_s=count / seconds, latency_ms=nothing, ttft_ms=nothing,
                             in_flight=0.0, failure_rate=1.0 if count else 0.0, **_engine())
    mean = latency_sum / successes
    # Rows written before the histograms were kept: the mean stands in until they leave the window.
    latency = _percentiles(histograms.get("e2e", {})) or dict.fromkeys(PERCENTILES, mean)
    return ReplicaWindow(completed_per_s=count / seconds, latency_ms=latency, mean_latency_ms=mean,
                         ttft_ms=_percentiles(histograms.get("ttft", {})), failure_rate=failures / count,
                         **_engine())


def _unmeasured(target: LatencyTarget, replicas: ReplicaTotals, bins: ReplicaBins) -> str | None:
    """Why the pool cannot be evaluated against `target`: under a "ttft" target, the replicas that
    completed requests in the window without a time to first token; None when it can be."""
    if target.metric != "ttft":
        return None
    missing = sorted(name for name, (count, failures, _) in replicas.items()
                     if count > failures and not bins.get(name, {}).get("ttft"))
    if not missing:
        return None
    return (f"{', '.join(missing)} completed requests in the last {settings.AUTOSCALE_WINDOW_SECONDS:g} s "
            "without reporting ttft_ms; a target on time to first token needs it in the gateway's reports")


def _outcomes(first_bucket: int, pool: str | None) -> dict[str, ReplicaTotals]:
    """Per pool (`pool` only, or every pool when None), per replica: its totals since `first_bucket`."""
    rows = ReplicaOutcome.objects.filter(bucket__gte=first_bucket)
    if pool is not None:
        rows = rows.filter(pool=pool)
    found: defaultdict[str, ReplicaTotals] = defaultdict(dict)
    for row in rows.values("pool", "replica").annotate(
            n=Sum("count"), failed=Sum("failures"), latency=Sum("latency_sum")):
        found[row["pool"]][row["replica"]] = (float(row["n"] or 0), float(row["failed"] or 0),
                                              float(row["latency"] or 0.0))
    return found


def _bins(first_bucket: int, pool: str | None) -> dict[str, ReplicaBins]:
    """Per pool (`pool` only, or every pool when None), per replica: its histograms since `first_bucket`."""
    rows = ReplicaLatencyBin.objects.filter(bucket__gte=first_bucket)
    if pool is not None:
        rows = rows.filter(pool=pool)
    found: defaultdict[str, ReplicaBins] = defaultdict(dict)
    for row in rows.values("pool", "replica", "metric", "bin").annotate(n=Sum("count")):
        histogram = found[row["pool"]].setdefault(row["replica"], {}).setdefault(row["metric"], {})
        histogram[row["bin"]] = int(row["n"] or 0)
    return found


def _decisions(pool: str | None) -> dict[str, int]:
    """Per pool (`pool` only, or every pool when None): the decisions counted so far."""
    rows = ReplicaSelection.objects.all() if pool is None else ReplicaSelection.objects.filter(pool=pool)
    return {row["pool"]: int(row["n"] or 0) for row in rows.values("pool").annotate(n=Sum("count"))}


class PoolCapacity:
    """One pool's evaluator, its hysteresis and what it last saw."""

    def __init__(self, pool: str, target: LatencyTarget) -> None:
        self.pool = pool
        self.config = _config(target)
        self.desired = DesiredReplicas(
            target, min_replicas=settings.AUTOSCALE_MIN_REPLICAS,
            max_replicas=settings.AUTOSCALE_MAX_REPLICAS, cooldown_evaluations=COOLDOWN_EVALUATIONS,
            cooldown_seconds=settings.AUTOSCALE_COOLDOWN_SECONDS)
        self.decision: Decision | None = None
        self.unmeasured: str | None = None  # why the last evaluation could not estimate, if it could not
        self.evaluated_at = float("-inf")
        self._at = float("-inf")
        self._replicas: list[str] = []  # the last replicas seen, kept through a window without traffic
        self._decisions: deque[tuple[float, int]] = deque()  # (time, decisions so far)

    def stale(self, now: float) -> bool:
        return now - self.evaluated_at >= EVALUATE_EVERY_SECONDS

    def evaluate(self, now: float, seconds: float, replicas: ReplicaTotals, bins: ReplicaBins,
                 decided: int) -> None:
        """One evaluation of the window of `seconds` up to `now`: the replicas' totals and
        histograms and the decisions counted so far. While the target's metric is not measured,
        no decision (no gauge sample); the hysteresis resumes where it was."""
        self.evaluated_at = now
        window = self.window(now, seconds, replicas, bins, decided)
        if window is None:
            return
        self.unmeasured = _unmeasured(self.desired.target, replicas, bins)
        if self.unmeasured is not None:
            self.decision = None
            return
        self._at = max(self._at, now)  # a wall clock stepped back must not stop the evaluations
        self.decision = self.desired.evaluate(window, at=self._at)

    def window(self, now: float, seconds: float, replicas: ReplicaTotals, bins: ReplicaBins,
               decided: int) -> PoolWindow | None:
        """The pool over the window; None before any replica was seen."""
        self._replicas = sorted(set(self._replicas) | set(replicas))
        if not self._replicas:
            return None
        seen = [_replica(replicas.get(name, (0.0, 0.0, 0.0)), bins.get(name, {}), seconds)
                for name in self._replicas]
        completed = sum(r.completed_per_s for r in seen)
        return PoolWindow(arrival_rate=max(completed, self._decision_rate(now, decided)), replicas=seen,
                          pool=self.pool)

    def _decision_rate(self, now: float, total: int) -> float:
        """Decisions/s since the oldest of this process's samples within the window (0 with one)."""
        self._decisions.append((now, total))
        while len(self._decisions) > 2 and self._decisions[1][0] <= now - settings.AUTOSCALE_WINDOW_SECONDS:
            self._decisions.popleft()
        since, before = self._decisions[0]
        return max(0.0, (total - before) / (now - since)) if now > since else 0.0


class Capacity:
    """Every pool's recommendation, each re-evaluated when older than EVALUATE_EVERY_SECONDS."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # a scrape and a /stats request may ask at once
        self.reset()

    def reset(self) -> None:
        """Forget the history: a pool's next evaluation starts from its current count."""
        self._pools: dict[str, PoolCapacity] = {}

    def _evaluator(self, pool: str) -> PoolCapacity | None:
        """The pool's evaluator, a fresh one when its target or the limits changed (settings in
        tests); None while the pool has no target."""
        target = pool_target(pool)
        if target is None:
            self._pools.pop(pool, None)
            return None
        evaluator = self._pools.get(pool)
        if evaluator is None or evaluator.config != _config(target):
            evaluator = self._pools[pool] = PoolCapacity(pool, target)
        return evaluator

    @staticmethod
    def _evaluate(evaluators: Iterable[PoolCapacity], now: float, pool: str | None) -> None:
        """Evaluate these pools' evaluators on rows read once (`pool` only, or every pool's)."""
        first = int((now - settings.AUTOSCALE_WINDOW_SECONDS) // BUCKET_SECONDS)
        seconds = max(now - first * BUCKET_SECONDS, 1.0)  # from the first bucket's start to now
        outcomes, bins, decided = _outcomes(first, pool), _bins(first, pool), _decisions(pool)
        for evaluator in evaluators:
            evaluator.evaluate(now, seconds, outcomes.get(evaluator.pool, {}), bins.get(evaluator.pool, {}),
                               decided.get(evaluator.pool, 0))

    def decision(self, pool: str | None = None, *, now: float | None = None) -> Decision | None:
        """The pool's (default: the current pool's) latest `Decision`, re-evaluated when stale; None
        while it has no target, before any of its replicas was seen, or while a "ttft" target has no
        time to first token to read (`summary` says which replicas)."""
        return self._latest(pool or current_pool(), now)[0]

    def _latest(self, pool: str, now: float | None) -> tuple[Decision | None, str | None]:
        """The pool's latest decision, re-evaluated when stale, and why it has none while its
        target's metric is not measured (None otherwise)."""
        now = time.time() if now is None else now
        with self._lock:
            evaluator = self._evaluator(pool)
            if evaluator is None:
                return None, None
            if evaluator.stale(now):
                self._evaluate([evaluator], now, pool)
            return evaluator.decision, evaluator.unmeasured

    def decisions(self, *, now: float | None = None) -> dict[str, Decision]:
        """Every pool with a target and outcomes seen: the gauge's samples. Stale pools are
        evaluated together, on one query per table; a deleted pool's evaluator goes with it."""
        if not _any_target():
            return {}
        now = time.time() if now is None else now
        with self._lock:
            pools = pool_names()
            for gone in set(self._pools) - set(pools):
                del self._pools[gone]
            evaluators = [e for e in map(self._evaluator, pools) if e is not None]
            stale = [e for e in evaluators if e.stale(now)]
            if stale:
                self._evaluate(stale, now, None)
            return {e.pool: e.decision for e in evaluators if e.decision is not None}

    def summary(self, pool: str | None = None, *, now: float | None = None) -> dict[str, Any]:
        """The /stats `capacity` section of the pool (default: the current pool): off, waiting for
        outcomes or for the TTFT a "ttft" target needs, or the recommendation and why."""
        pool = pool or current_pool()
        target = pool_target(pool)
        if target is None:
            return {"pool": pool, "status": "off"}
        decision, unmeasured = self._latest(pool, now)
        if unmeasured is not None:
            return {"pool": pool, "status": "waiting for ttft_ms reports", "target_ms": target.threshold_ms,
                    "percentile": target.percentile, "metric": target.metric, "reason": unmeasured}
        if decision is None:
            return {"pool": pool, "status": "no outcomes yet"}
        return {"pool": pool, "status": "on", "target_ms": target.threshold_ms,
                "percentile": target.percentile, "metric": target.metric,
                "window_seconds": settings.AUTOSCALE_WINDOW_SECONDS,
                "recommendation": decision.recommendation, "reason": decision.reason,
                "lower_for": decision.lower_for, "estimate": asdict(decision.estimate)}


capacity = Capacity()
