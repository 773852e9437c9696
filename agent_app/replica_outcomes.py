"""What the service learns from recorded outcomes, shared by every web worker: per-replica
statistics (the features the per-replica network sees) and each routing arm's reward totals (the
gate's evidence).

A report adds to this process's tally (a dict, no query); the serving refresh flushes the tally to
`ReplicaOutcome` rows (one transaction, counters added in place) and reads the recent rows back, so
every worker sees every worker's outcomes within about SYNC_INTERVAL_SECONDS. Statistics weigh each
time bucket by its age (REPLICA_STATS_HALF_LIFE_SECONDS); the gate sums RL_GATE_WINDOW_SECONDS.
The same flush adds each replica's end-to-end latencies and raw times to first token to its
`ReplicaLatencyBin` histograms, which the desired-replica gauge reads its percentiles from
(agent_app/capacity.py); they are kept for AUTOSCALE_WINDOW_SECONDS only.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Sum

from agent_app.models import ReplicaLatencyBin, ReplicaOutcome
from agent_app.pools import DEFAULT_POOL
from agent_app.replay.histogram import latency_bucket
from agent_app.rl.gate import ArmTotals
from agent_app.rl.replica_features import token_costs

BUCKET_SECONDS = 5
clock = time.time  # the buckets' wall clock (a test may stop it so no report straddles two buckets)
_SUMS = ("count", "failures", "latency_sum", "reward_sum", "reward_sq_sum", "tpot_sum", "tpot_count",
         "ttft_sum", "ttft_count")
# A histogram row's key, then its count (the order of the tally's keys).
_BIN_FIELDS = ("pool", "bucket", "replica", "metric", "bin", "count")
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
    """This process's outcomes since its last flush: sums per (pool, bucket, replica, arm) and
    latency histogram counts per (pool, bucket, replica, metric, bin)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the request threads add, the refresh thread flushes
        self._pending: defaultdict[tuple[str, int, str, str], list[float]] = defaultdict(_zeros)
        self._bins: defaultdict[tuple[str, int, str, str, int], int] = defaultdict(int)
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
                self._bins[(o.pool, bucket, o.replica, "e2e", latency_bucket(o.latency_ms))] += 1
                if o.ttft_ms is not None:
                    self._bins[(o.pool, bucket, o.replica, "ttft", latency_bucket(o.ttft_ms))] += 1
                tpot, ttft_per_ktok = token_costs(o.latency_ms, o.ttft_ms, o.prompt_tokens, o.output_tokens)
                if tpot is not None:
                    sums[5] += tpot
                    sums[6] += 1
                if ttft_per_ktok is not None:
                    sums[7] += ttft_per_ktok
                    sums[8] += 1

    def flush(self) -> None:
        """Add the pending sums and histogram counts to the shared rows; on a database error they
        stay pending."""
        with self._lock:
            pending, self._pending = self._pending, defaultdict(_zeros)
            bins, self._bins = self._bins, defaultdict(int)
        try:
            with transaction.atomic():
                for (pool, bucket, replica, arm), sums in pending.items():
                    deltas = {name: F(name) + value for name, value in zip(_SUMS, sums, strict=True) if value}
                    key = {"pool": pool, "bucket": bucket, "replica": replica, "arm": arm}
                    rows = ReplicaOutcome.objects.filter(**key)
                    if not rows.update(**deltas):
                        ReplicaOutcome.objects.get_or_create(**key)
                        rows.update(**deltas)
                if bins:  # in key order, so two workers flushing at once lock the rows in the same order
                    added = [(*key, count) for key, count in sorted(bins.items())]
                    with connection.cursor() as cursor:
                        cursor.executemany(_add_bins_sql(), added)
        except Exception:
            with self._lock:  # retried whole at the next refresh
                for key, sums in pending.items():
                    mine = self._pending[key]
                    for i, value in enumerate(sums):
                        mine[i] += value
                for key, count in bins.items():
                    self._bins[key] += count
            raise
        if time.monotonic() - self._pruned_at > _PRUNE_EVERY_SECONDS:
            self._pruned_at = time.monotonic()
            half_life = settings.REPLICA_STATS_HALF_LIFE_SECONDS
            kept = max(settings.RL_GATE_WINDOW_SECONDS, settings.AUTOSCALE_WINDOW_SECONDS,
                       _STATS_HALF_LIVES * half_life)
            ReplicaOutcome.objects.filter(bucket__lt=_bucket_before(kept)).delete()
            # Only the gauge reads the histograms, over its window.
            ReplicaLatencyBin.objects.filter(bucket__lt=_bucket_before(settings.AUTOSCALE_WINDOW_SECONDS)).delete()


def _add_bins_sql() -> str:
    """One statement for every pending bin (PostgreSQL and SQLite alike): a bin's count is added to
    its row, which is created when it is not there yet."""
    meta, quote = ReplicaLatencyBin._meta, connection.ops.quote_name
    *key, count = (quote(meta.get_field(name).column) for name in _BIN_FIELDS)
    table, key = quote(meta.db_table), ", ".join(key)
    return (f"INSERT INTO {table} ({key}, {count}) VALUES ({', '.join(['%s'] * len(_BIN_FIELDS))}) "
            f"ON CONFLICT ({key}) DO UPDATE SET {count} = {table}.{count} + excluded.{count}")


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
