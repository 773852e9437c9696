"""What the service learns from recorded outcomes, shared by every web worker: per-replica
statistics (the features the per-replica network sees) and each routing arm's reward totals (the
gate's evidence).

A report adds to this process's tally (a dict, no query); the serving refresh flushes the tally to
`ReplicaOutcome` rows (one transaction, counters added in place) and reads the recent rows back, so
every worker sees every worker's outcomes within about SYNC_INTERVAL_SECONDS. Statistics weigh each
time bucket by its age (REPLICA_STATS_HALF_LIFE_SECONDS); the gate sums RL_GATE_WINDOW_SECONDS.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import F, Sum

from agent_app.models import ReplicaOutcome
from agent_app.pools import DEFAULT_POOL
from agent_app.rl.gate import ArmTotals
from agent_app.rl.replica_features import token_costs

BUCKET_SECONDS = 5
clock = time.time  # the buckets' wall clock (a test may stop it so no report straddles two buckets)
_SUMS = ("count", "failures", "latency_sum", "reward_sum", "reward_sq_sum", "tpot_sum", "tpot_count",
         "ttft_sum", "ttft_count")
_PRUNE_EVERY_SECONDS = 60.0
_STATS_HALF_LIVES = 8  # statistics read this many half-lives back (older buckets weigh < 0.4 %)


@dataclass(frozen=True)
class Outcome:
    """One recorded request, as the tally needs it."""

    replica: str
    arm: str  # "model", "heuristic" or "" (not decided through a decision_id)
    success: bool
    latency_ms: float
    reward: float
    ttft_ms: float | None = None
    prompt_tokens: float | None = None
    output_tokens: float | None = None
    pool: str = DEFAULT_POOL


class OutcomeTally:
    """This process's outcomes since its last flush, per (pool, bucket, replica, arm)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the request threads add, the refresh thread flushes
        self._pending: defaultdict[tuple[str, int, str, str], list[float]] = defaultdict(_zeros)
        self._pruned_at = float("-inf")

    def add(self, outcomes: list[Outcome], now: float | None = None) -> None:
        bucket = int((clock() if now is None else now) // BUCKET_SECONDS)
        with self._lock:
            for o in outcomes:
                sums = self._pending[(o.pool, bucket, o.replica, o.arm)]
                sums[0] += 1
                sums[3] += o.reward
                sums[4] += o.reward * o.reward
                if not o.success:
                    sums[1] += 1
                    continue
                sums[2] += o.latency_ms
                tpot, ttft_per_ktok = token_costs(o.latency_ms, o.ttft_ms, o.prompt_tokens, o.output_tokens)
                if tpot is not None:
                    sums[5] += tpot
                    sums[6] += 1
                if ttft_per_ktok is not None:
                    sums[7] += ttft_per_ktok
                    sums[8] += 1

    def flush(self) -> None:
        """Add the pending sums to the shared rows; on a database error they stay pending."""
        with self._lock:
            pending, self._pending = self._pending, defaultdict(_zeros)
        try:
            with transaction.atomic():
                for (pool, bucket, replica, arm), sums in pending.items():
                    deltas = {name: F(name) + value for name, value in zip(_SUMS, sums, strict=True) if value}
                    key = {"pool": pool, "bucket": bucket, "replica": replica, "arm": arm}
                    rows = ReplicaOutcome.objects.filter(**key)
                    if not rows.update(**deltas):
                        ReplicaOutcome.objects.get_or_create(**key)
                        rows.update(**deltas)
        except Exception:
            with self._lock:  # retried whole at the next refresh
                for key, sums in pending.items():
                    mine = self._pending[key]
                    for i, value in enumerate(sums):
                        mine[i] += value
            raise
        if time.monotonic() - self._pruned_at > _PRUNE_EVERY_SECONDS:
            self._pruned_at = time.monotonic()
            half_life = settings.REPLICA_STATS_HALF_LIFE_SECONDS
            kept = max(settings.RL_GATE_WINDOW_SECONDS, settings.AUTOSCALE_WINDOW_SECONDS,
                       _STATS_HALF_LIVES * half_life)
            ReplicaOutcome.objects.filter(bucket__lt=_bucket_before(kept)).delete()


def _zeros() -> list[float]:
    return [0.0] * len(_SUMS)


def _bucket_before(seconds: float) -> int:
    return int((clock() - seconds) // BUCKET_SECONDS)


def replica_statistics(pools: Collection[str], now: float | None = None) -> dict[str, dict[str, dict]]:
    """Per pool, per replica name: the learned features (latency_ms, failure_rate, tpot_ms, ttft_ms_per_ktok,
    each only once something was measured) and `requests`, the half-life-weighted outcome count."""
    now = clock() if now is None else now
    half_life = settings.REPLICA_STATS_HALF_LIFE_SECONDS
    current = now // BUCKET_SECONDS
    rows = ReplicaOutcome.objects.filter(
        pool__in=list(pools), bucket__gte=_bucket_before(_STATS_HALF_LIVES * half_life)).values(
        "pool", "replica", "bucket").annotate(**{name: Sum(name) for name in _SUMS})
    weighted: defaultdict[tuple[str, str], list[float]] = defaultdict(_zeros)
    for row in rows:
        weight = 0.5 ** (max(0.0, current - row["bucket"]) * BUCKET_SECONDS / half_life)
        sums = weighted[(row["pool"], row["replica"])]
        for i, name in enumerate(_SUMS):
            sums[i] += weight * (row[name] or 0.0)
    stats: defaultdict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    for (pool, name), s in weighted.items():
        count, failures = s[0], s[1]
        features = {"requests": count}
        if count > 0:
            features["failure_rate"] = failures / count
        if count - failures > 0:
            features["latency_ms"] = s[2] / (count - failures)
        if s[6] > 0:
            features["tpot_ms"] = s[5] / s[6]
        if s[8] > 0:
            features["ttft_ms_per_ktok"] = s[7] / s[8]
        stats[pool][name] = {key: value for key, value in features.items() if math.isfinite(value)}
    return dict(stats)


def arm_totals(pools: Collection[str]) -> dict[str, dict[str, ArmTotals]]:
    """Per pool, reward totals per deciding arm over the last RL_GATE_WINDOW_SECONDS."""
    rows = ReplicaOutcome.objects.filter(
        pool__in=list(pools), bucket__gte=_bucket_before(settings.RL_GATE_WINDOW_SECONDS)).exclude(
        arm="").values("pool", "arm").annotate(n=Sum("count"), total=Sum("reward_sum"),
                                               sq=Sum("reward_sq_sum"))
    totals: defaultdict[str, dict[str, ArmTotals]] = defaultdict(dict)
    for row in rows:
        totals[row["pool"]][row["arm"]] = ArmTotals(int(row["n"] or 0), float(row["total"] or 0.0),
                                                    float(row["sq"] or 0.0))
    return dict(totals)
