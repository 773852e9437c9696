"""The desired-replica count of every pool: a pool's recent `ReplicaOutcome` rows and decision counts
made into a `PoolWindow`, evaluated by that pool's own `DesiredReplicas` (autoscaling.py), which
keeps the pool's hysteresis.

What a pool's window holds, over the last AUTOSCALE_WINDOW_SECONDS:
- per replica seen in the rows: completions/s (failures included), failure rate, and as its
  latency the mean of its successful requests, standing in for the median (the rows keep sums,
  not histograms: for the right-skewed latencies of LLM serving the mean is at or above the
  median, so the estimate errs towards more replicas); the in-flight count follows from Little's
  law. A replica whose requests all failed has no latency and counts as broken. Its batch slots
  are AUTOSCALE_REPLICA_SLOTS, its batch slowdown AUTOSCALE_BATCH_SLOWDOWN (the estimate's default
  when unset); without slots the estimate reads it as a processor-sharing queue, which
  over-provisions a batching engine (autoscaling.py);
- the arrival rate: the larger of the completions/s and the decisions/s (`ReplicaSelection`
  counts, differenced between this process's evaluations), so a queue building up shows before
  its requests complete. Both assume the gateway reports every routed request's outcome.

A pool's target is AUTOSCALE_TARGET_MS, AUTOSCALE_PERCENTILE and AUTOSCALE_METRIC, each unless
AUTOSCALE_POOL_TARGETS sets it for the pool; a pool without a target_ms has no evaluator and no
gauge sample.

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

from agent_app.autoscaling import Decision, DesiredReplicas, LatencyTarget, PoolWindow, ReplicaWindow
from agent_app.models import ReplicaOutcome, ReplicaSelection
from agent_app.pools import current_pool, pool_names
from agent_app.replica_outcomes import BUCKET_SECONDS

EVALUATE_EVERY_SECONDS = float(BUCKET_SECONDS)  # the rows change once per bucket
COOLDOWN_EVALUATIONS = 3

# Per replica name: (requests, failures, latency sum of the successful ones) in the window.
ReplicaTotals = dict[str, tuple[float, float, float]]


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


def _replica(count: float, failures: float, latency_sum: float, seconds: float) -> ReplicaWindow:
    successes = count - failures
    if successes <= 0:  # nothing measured: latency 0 and no load, and the failure rate marks it broken
        return ReplicaWindow(completed_per_s=count / seconds, latency_ms={50: 0.0}, in_flight=0.0,
                             failure_rate=1.0 if count else 0.0, **_engine())
    mean = latency_sum / successes
    return ReplicaWindow(completed_per_s=count / seconds, latency_ms={50: mean}, mean_latency_ms=mean,
                         failure_rate=failures / count, **_engine())


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
        self.evaluated_at = float("-inf")
        self._at = float("-inf")
        self._replicas: list[str] = []  # the last replicas seen, kept through a window without traffic
        self._decisions: deque[tuple[float, int]] = deque()  # (time, decisions so far)

    def stale(self, now: float) -> bool:
        return now - self.evaluated_at >= EVALUATE_EVERY_SECONDS

    def evaluate(self, now: float, seconds: float, replicas: ReplicaTotals, decided: int) -> None:
        """One evaluation of the window of `seconds` up to `now`: the replicas' totals and the
        decisions counted so far."""
        self.evaluated_at = now
        window = self.window(now, seconds, replicas, decided)
        if window is not None:
            self._at = max(self._at, now)  # a wall clock stepped back must not stop the evaluations
            self.decision = self.desired.evaluate(window, at=self._at)

    def window(self, now: float, seconds: float, replicas: ReplicaTotals, decided: int) -> PoolWindow | None:
        """The pool over the window; None before any replica was seen."""
        self._replicas = sorted(set(self._replicas) | set(replicas))
        if not self._replicas:
            return None
        seen = [_replica(*replicas.get(name, (0.0, 0.0, 0.0)), seconds) for name in self._replicas]
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
        outcomes, decided = _outcomes(first, pool), _decisions(pool)
        for evaluator in evaluators:
            evaluator.evaluate(now, seconds, outcomes.get(evaluator.pool, {}), decided.get(evaluator.pool, 0))

    def decision(self, pool: str | None = None, *, now: float | None = None) -> Decision | None:
        """The pool's (default: the current pool's) latest `Decision`, re-evaluated when stale; None
        while it has no target or before any of its replicas was seen."""
        pool = pool or current_pool()
        now = time.time() if now is None else now
        with self._lock:
            evaluator = self._evaluator(pool)
            if evaluator is None:
                return None
            if evaluator.stale(now):
                self._evaluate([evaluator], now, pool)
            return evaluator.decision

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
        outcomes, or the recommendation and why."""
        pool = pool or current_pool()
        target = pool_target(pool)
        if target is None:
            return {"pool": pool, "status": "off"}
        decision = self.decision(pool, now=now)
        if decision is None:
            return {"pool": pool, "status": "no outcomes yet"}
        return {"pool": pool, "status": "on", "target_ms": target.threshold_ms,
                "percentile": target.percentile, "metric": target.metric,
                "window_seconds": settings.AUTOSCALE_WINDOW_SECONDS,
                "recommendation": decision.recommendation, "reason": decision.reason,
                "lower_for": decision.lower_for, "estimate": asdict(decision.estimate)}


capacity = Capacity()
