"""What the service learns from recorded outcomes, shared by every web worker: per-replica
statistics (the features the per-replica network sees) and each routing arm's reward totals (the
gate's evidence).

A report adds to this process's tally (a dict, no query); the serving refresh flushes the tally to
`ReplicaOutcome` rows (one transaction, counters added in place) and reads the recent rows back, so
every worker sees every worker's outcomes within about SYNC_INTERVAL_SECONDS. Statistics weigh each
time bucket by its age (REPLICA_STATS_HALF_LIFE_SECONDS); the gate sums RL_GATE_WINDOW_SECONDS.
The same flush adds each replica's end-to-end latencies and raw times to first token to its
`ReplicaLatencyBin` histograms, which the desired-replica gauge reads its percentiles from
(agent_app/capacity.py); they are kept for AUTOSCALE_WINDOW_SECONDS only. Under block assignment
(RL_GATE_ASSIGNMENT=block) it also adds each outcome to the `GateBlock` row of the time block its
request was decided in, not reported in (an LLM request takes seconds to minutes): the gate's
evidence, kept for RL_GATE_WINDOW_SECONDS.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Model, Sum
from django.db.models.lookups import LessThan

from agent_app.models import GateBlock, ReplicaLatencyBin, ReplicaOutcome
from agent_app.pools import DEFAULT_POOL
from agent_app.replay.histogram import latency_bucket
from agent_app.rl.gate import ArmTotals, block_index
from agent_app.rl.replica_features import token_costs

BUCKET_SECONDS = 5
clock = time.time  # the buckets' wall clock (a test may stop it so no report straddles two buckets)
_SUMS = ("count", "failures", "latency_sum", "reward_sum", "reward_sq_sum", "tpot_sum", "tpot_count",
         "ttft_sum", "ttft_count")
# A histogram row's key, then its count (the order of the tally's keys).
_BIN_KEY = ("pool", "bucket", "replica", "metric", "bin")
# A gate block row's key, then its sums (the order of the tally's keys and sums).
_BLOCK_KEY = ("pool", "seconds", "block", "arm")
_BLOCK_SUMS = ("count", "reward_sum")
_PRUNE_EVERY_SECONDS = 60.0
# Under block assignment the per-request arm totals are only shown (/stats), over this span: the
# gate's hours-long window would make every refresh sum thousands of buckets.
_SHOWN_ARM_SECONDS = 1800.0
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
    decided_at: float | None = None  # unix seconds of the decision (reported through a decision_id)


class OutcomeTally:
    """This process's outcomes since its last flush: sums per (pool, bucket, replica, arm), latency
    histogram counts per (pool, bucket, replica, metric, bin) and, under block assignment, count and
    reward sum per (pool, block seconds, block, arm) of the decision."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the request threads add, the refresh thread flushes
        self._pending: defaultdict[tuple[str, int, str, str], list[float]] = defaultdict(_zeros)
        self._bins: defaultdict[tuple[str, int, str, str, int], int] = defaultdict(int)
        self._blocks: defaultdict[tuple[str, int, int, str], list[float]] = defaultdict(_block_zeros)
        self._pruned_at = float("-inf")

    def add(self, outcomes: list[Outcome], now: float | None = None) -> None:
        bucket = int((clock() if now is None else now) // BUCKET_SECONDS)
        seconds = settings.RL_GATE_BLOCK_SECONDS if settings.RL_GATE_ASSIGNMENT == "block" else None
        with self._lock:
            for o in outcomes:
                if seconds is not None and o.arm and o.decided_at is not None:
                    block = self._blocks[(o.pool, seconds, block_index(o.decided_at, seconds), o.arm)]
                    block[0] += 1
                    block[1] += o.reward
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
        """Add the pending sums, histogram counts and gate blocks to the shared rows; on a database
        error they stay pending."""
        with self._lock:
            pending, self._pending = self._pending, defaultdict(_zeros)
            bins, self._bins = self._bins, defaultdict(int)
            blocks, self._blocks = self._blocks, defaultdict(_block_zeros)
        try:
            with transaction.atomic():
                for (pool, bucket, replica, arm), sums in pending.items():
                    deltas = {name: F(name) + value for name, value in zip(_SUMS, sums, strict=True) if value}
                    key = {"pool": pool, "bucket": bucket, "replica": replica, "arm": arm}
                    rows = ReplicaOutcome.objects.filter(**key)
                    if not rows.update(**deltas):
                        ReplicaOutcome.objects.get_or_create(**key)
                        rows.update(**deltas)
                # In key order, so two workers flushing at once lock the rows in the same order.
                with connection.cursor() as cursor:
                    if bins:
                        cursor.executemany(_add_sql(ReplicaLatencyBin, _BIN_KEY, ("count",)),
                                           [(*key, count) for key, count in sorted(bins.items())])
                    if blocks:
                        cursor.executemany(_add_sql(GateBlock, _BLOCK_KEY, _BLOCK_SUMS),
                                           [(*key, *sums) for key, sums in sorted(blocks.items())])
        except Exception:
            with self._lock:  # retried whole at the next refresh
                for key, sums in pending.items():
                    mine = self._pending[key]
                    for i, value in enumerate(sums):
                        mine[i] += value
                for key, count in bins.items():
                    self._bins[key] += count
                for key, sums in blocks.items():
                    mine = self._blocks[key]
                    for i, value in enumerate(sums):
                        mine[i] += value
            raise
        if time.monotonic() - self._pruned_at > _PRUNE_EVERY_SECONDS:
            self._pruned_at = time.monotonic()
            half_life = settings.REPLICA_STATS_HALF_LIFE_SECONDS
            kept = max(_arm_window(), settings.AUTOSCALE_WINDOW_SECONDS,
                       _STATS_HALF_LIVES * half_life)
            ReplicaOutcome.objects.filter(bucket__lt=_bucket_before(kept)).delete()
            # Only the gauge reads the histograms, over its window.
            ReplicaLatencyBin.objects.filter(bucket__lt=_bucket_before(settings.AUTOSCALE_WINDOW_SECONDS)).delete()
            # Blocks that ended before the gate window, whatever block length they were counted in.
            ended = (F("block") + 1) * F("seconds")
            GateBlock.objects.filter(LessThan(ended, clock() - settings.RL_GATE_WINDOW_SECONDS)).delete()


def _add_sql(model: type[Model], key: Sequence[str], sums: Sequence[str]) -> str:
    """One statement for many rows of ``model`` (PostgreSQL and SQLite alike): each row's ``sums``
    are added to the row of its ``key``, which is created when it is not there yet. The parameters
    of a row are its key's values, then its sums'."""
    meta, quote = model._meta, connection.ops.quote_name
    key_columns = ", ".join(quote(meta.get_field(name).column) for name in key)
    sum_columns = [quote(meta.get_field(name).column) for name in sums]
    table = quote(meta.db_table)
    added = ", ".join(f"{column} = {table}.{column} + excluded.{column}" for column in sum_columns)
    return (f"INSERT INTO {table} ({key_columns}, {', '.join(sum_columns)}) "
            f"VALUES ({', '.join(['%s'] * (len(key) + len(sums)))}) "
            f"ON CONFLICT ({key_columns}) DO UPDATE SET {added}")


def _arm_window() -> float:
    """Seconds of outcome rows the per-request arm totals read."""
    if settings.RL_GATE_ASSIGNMENT == "block":
        return min(settings.RL_GATE_WINDOW_SECONDS, _SHOWN_ARM_SECONDS)
    return settings.RL_GATE_WINDOW_SECONDS


def _zeros() -> list[float]:
    return [0.0] * len(_SUMS)


def _block_zeros() -> list[float]:
    return [0.0] * len(_BLOCK_SUMS)


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
    """Per pool, reward totals per deciding arm over the gate's window (under block assignment, over
    the last _SHOWN_ARM_SECONDS at most: the verdict reads `gate_block_means` then)."""
    rows = ReplicaOutcome.objects.filter(
        pool__in=list(pools), bucket__gte=_bucket_before(_arm_window())).exclude(
        arm="").values("pool", "arm").annotate(n=Sum("count"), total=Sum("reward_sum"),
                                               sq=Sum("reward_sq_sum"))
    totals: defaultdict[str, dict[str, ArmTotals]] = defaultdict(dict)
    for row in rows:
        totals[row["pool"]][row["arm"]] = ArmTotals(int(row["n"] or 0), float(row["total"] or 0.0),
                                                    float(row["sq"] or 0.0))
    return dict(totals)


def gate_block_means(pools: Collection[str], now: float | None = None) -> dict[str, dict[str, list[float]]]:
    """Per pool, per arm: the mean reward of each settled block over the last RL_GATE_WINDOW_SECONDS,
    in RL_GATE_BLOCK_SECONDS blocks. A block is settled once a whole further block has passed after
    its end (most of its requests have been reported by then); the current and the previous block
    never count, nor a block arm without outcomes."""
    seconds = settings.RL_GATE_BLOCK_SECONDS
    now = clock() if now is None else now
    rows = GateBlock.objects.filter(
        pool__in=list(pools), seconds=seconds, count__gte=1,
        block__gte=block_index(now - settings.RL_GATE_WINDOW_SECONDS, seconds),
        block__lte=block_index(now, seconds) - 2,
    ).order_by("block").values_list("pool", "arm", "count", "reward_sum")
    means: defaultdict[str, defaultdict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for pool, arm, count, reward_sum in rows:
        means[pool][arm].append(reward_sum / count)
    return {pool: dict(arms) for pool, arms in means.items()}
