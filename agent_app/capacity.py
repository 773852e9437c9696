"""The desired-replica count of the default pool: the recent `ReplicaOutcome` rows and decision
counts made into a `PoolWindow`, evaluated by one process-wide `DesiredReplicas` (autoscaling.py).

What the window holds, over the last AUTOSCALE_WINDOW_SECONDS:
- per replica seen in the rows: completions/s (failures included), failure rate, and as its
  latency the mean of its successful requests, standing in for the median (the rows keep sums,
  not histograms: for the right-skewed latencies of LLM serving the mean is at or above the
  median, so the estimate errs towards more replicas); the in-flight count follows from Little's
  law. A replica whose requests all failed has no latency and counts as broken;
- the arrival rate: the larger of the completions/s and the decisions/s (`ReplicaSelection`
  counts, differenced between this process's evaluations), so a queue building up shows before
  its requests complete. Both assume the gateway reports every routed request's outcome.

Evaluated at most every EVALUATE_EVERY_SECONDS, when /metrics or /stats asks, in the web worker
that answers; every worker reads the same shared rows, so the workers' values agree up to the
moment each evaluated (Prometheus' max() over them is the value to scale on).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import asdict
from typing import Any

from django.conf import settings
from django.db.models import Sum

from agent_app.autoscaling import DesiredReplicas, LatencyTarget, PoolWindow, ReplicaWindow
from agent_app.models import ReplicaOutcome, ReplicaSelection
from agent_app.replica_outcomes import BUCKET_SECONDS

POOL = "default"
EVALUATE_EVERY_SECONDS = float(BUCKET_SECONDS)  # the rows change once per bucket
COOLDOWN_EVALUATIONS = 3


def enabled() -> bool:
    return settings.AUTOSCALE_TARGET_MS is not None


def _target() -> LatencyTarget:
    return LatencyTarget(percentile=settings.AUTOSCALE_PERCENTILE, threshold_ms=settings.AUTOSCALE_TARGET_MS,
                         metric=settings.AUTOSCALE_METRIC)


def _replica(count: float, failures: float, latency_sum: float, seconds: float) -> ReplicaWindow:
    successes = count - failures
    if successes <= 0:  # nothing measured: latency 0 and no load, and the failure rate marks it broken
        return ReplicaWindow(completed_per_s=count / seconds, latency_ms={50: 0.0}, in_flight=0.0,
                             failure_rate=1.0 if count else 0.0)
    mean = latency_sum / successes
    return ReplicaWindow(completed_per_s=count / seconds, latency_ms={50: mean}, mean_latency_ms=mean,
                         failure_rate=failures / count)


class Capacity:
    """One pool's recommendation, re-evaluated when older than EVALUATE_EVERY_SECONDS."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # a scrape and a /stats request may ask at once
        self.reset()

    def reset(self) -> None:
        """Forget the history: the next evaluation starts from the pool's current count."""
        self._desired: DesiredReplicas | None = None
        self._config: tuple[Any, ...] | None = None
        self._decision: Any = None
        self._evaluated_at = float("-inf")
        self._at = float("-inf")
        self._replicas: list[str] = []  # the last replicas seen, kept through a window without traffic
        self._decisions: deque[tuple[float, int]] = deque()  # (time, decisions so far)

    def _configured(self) -> DesiredReplicas:
        config = (settings.AUTOSCALE_TARGET_MS, settings.AUTOSCALE_PERCENTILE, settings.AUTOSCALE_METRIC,
                  settings.AUTOSCALE_MIN_REPLICAS, settings.AUTOSCALE_MAX_REPLICAS,
                  settings.AUTOSCALE_COOLDOWN_SECONDS)
        if self._desired is None or config != self._config:  # settings changed (tests): start afresh
            self._desired = DesiredReplicas(
                _target(), min_replicas=settings.AUTOSCALE_MIN_REPLICAS,
                max_replicas=settings.AUTOSCALE_MAX_REPLICAS, cooldown_evaluations=COOLDOWN_EVALUATIONS,
                cooldown_seconds=settings.AUTOSCALE_COOLDOWN_SECONDS)
            self._config, self._decision, self._evaluated_at = config, None, float("-inf")
            self._replicas, self._decisions = [], deque()
        return self._desired

    def window(self, now: float) -> PoolWindow | None:
        """The pool over the last AUTOSCALE_WINDOW_SECONDS; None before any replica was seen."""
        first = int((now - settings.AUTOSCALE_WINDOW_SECONDS) // BUCKET_SECONDS)
        seconds = max(now - first * BUCKET_SECONDS, 1.0)  # from the first bucket's start to now
        rows = {row["replica"]: row for row in ReplicaOutcome.objects.filter(bucket__gte=first).values(
            "replica").annotate(n=Sum("count"), failed=Sum("failures"), latency=Sum("latency_sum"))}
        self._replicas = sorted(set(self._replicas) | set(rows))
        if not self._replicas:
            return None
        replicas = []
        for name in self._replicas:
            row = rows.get(name, {})
            replicas.append(_replica(float(row.get("n") or 0), float(row.get("failed") or 0),
                                     float(row.get("latency") or 0.0), seconds))
        completed = sum(r.completed_per_s for r in replicas)
        return PoolWindow(arrival_rate=max(completed, self._decision_rate(now)), replicas=replicas, pool=POOL)

    def _decision_rate(self, now: float) -> float:
        """Decisions/s since the oldest of this process's samples within the window (0 with one)."""
        total = int(ReplicaSelection.objects.aggregate(n=Sum("count"))["n"] or 0)
        self._decisions.append((now, total))
        while len(self._decisions) > 2 and self._decisions[1][0] <= now - settings.AUTOSCALE_WINDOW_SECONDS:
            self._decisions.popleft()
        since, before = self._decisions[0]
        return max(0.0, (total - before) / (now - since)) if now > since else 0.0

    def decision(self, now: float | None = None) -> Any:
        """The latest `Decision` (None while off or before any replica was seen), re-evaluated when stale."""
        if not enabled():
            return None
        now = time.time() if now is None else now
        with self._lock:
            desired = self._configured()
            if now - self._evaluated_at < EVALUATE_EVERY_SECONDS:
                return self._decision
            self._evaluated_at = now
            window = self.window(now)
            if window is not None:
                self._at = max(self._at, now)  # a wall clock stepped back must not stop the evaluations
                self._decision = desired.evaluate(window, at=self._at)
            return self._decision

    def summary(self, now: float | None = None) -> dict[str, Any]:
        """The /stats `capacity` section: off, waiting for outcomes, or the recommendation and why."""
        if not enabled():
            return {"pool": POOL, "status": "off"}
        decision = self.decision(now)
        if decision is None:
            return {"pool": POOL, "status": "no outcomes yet"}
        return {"pool": POOL, "status": "on", "target_ms": settings.AUTOSCALE_TARGET_MS,
                "percentile": settings.AUTOSCALE_PERCENTILE, "metric": settings.AUTOSCALE_METRIC,
                "window_seconds": settings.AUTOSCALE_WINDOW_SECONDS,
                "recommendation": decision.recommendation, "reason": decision.reason,
                "lower_for": decision.lower_for, "estimate": asdict(decision.estimate)}


capacity = Capacity()
