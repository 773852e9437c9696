"""The dashboard's history: one MetricSample per training run of a pool, trimmed to the newest N
per pool. Every function works on the current pool (agent_app/pools.py)."""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

from django.conf import settings
from django.db.models import QuerySet

from agent_app.models import MetricSample, ReplicaSelection
from agent_app.pools import current_pool
from agent_app.replay import StoreUnavailable, get_replay_store

log = logging.getLogger(__name__)
# Recent experiences the per-replica latency is averaged over; rewards use /stats's window.
LATENCY_WINDOW = 500
REWARD_WINDOW = 100


def record_sample(result: dict[str, Any]) -> MetricSample:
    """Sample the agent after a training run (`result` is what training.train returned)."""
    names = settings.REPLICA_NAMES
    latency: dict[str, float] = {}
    avg_reward = None
    try:
        recent = get_replay_store().recent(LATENCY_WINDOW)
    except StoreUnavailable as exc:
        log.warning("history sample without the replay store: %s", exc)
        recent = []
    if recent:
        rewards = [row["reward"] for row in recent[:REWARD_WINDOW]]
        avg_reward = sum(rewards) / len(rewards)
        by_replica: defaultdict[int, list[float]] = defaultdict(list)
        for row in recent:
            by_replica[row["action"]].append(row["latency_ms"])
        latency = {names[i]: sum(v) / len(v) for i, v in sorted(by_replica.items()) if i < len(names)}
    pool = current_pool()
    totals = {f"{r.replica_idx}:{r.policy}": r.count for r in ReplicaSelection.objects.filter(pool=pool)}
    previous = _samples().order_by("-id").values_list("selection_totals", flat=True).first()
    share, fallback_rate, exploration_rate = _rates(_delta(totals, previous or {}), names)
    sample = MetricSample.objects.create(
        pool=pool, model_version=result["model_version"], steps_done=result["steps_done"],
        epsilon=result["epsilon"],
        loss=result.get("loss"), avg_reward=avg_reward, buffer_size=result.get("buffer_size"),
        latency_by_replica=latency, share_by_replica=share, fallback_rate=fallback_rate,
        exploration_rate=exploration_rate, selection_totals=totals,
    )
    trim(settings.DASHBOARD_HISTORY_SAMPLES)
    return sample


def _delta(totals: dict[str, int], previous: dict[str, int]) -> dict[str, int]:
    """Decisions since the previous sample; the whole totals if the counters were reset."""
    delta = {key: count - previous.get(key, 0) for key, count in totals.items()}
    return totals if any(v < 0 for v in delta.values()) else delta


def _rates(delta: dict[str, int], names: list[str]) -> tuple[dict[str, float], float | None, float | None]:
    total = sum(delta.values())
    if not total:
        return {}, None, None
    per_replica: defaultdict[str, int] = defaultdict(int)
    per_policy: defaultdict[str, int] = defaultdict(int)
    for key, count in delta.items():
        idx, policy = key.split(":", 1)
        if int(idx) < len(names):
            per_replica[names[int(idx)]] += count
        per_policy[policy] += count
    share = {name: per_replica[name] / total for name in names}
    heuristic = per_policy["least_loaded"] + per_policy["scorer"]
    return share, heuristic / total, per_policy["explore"] / total


def _samples() -> QuerySet[MetricSample]:
    return MetricSample.objects.filter(pool=current_pool())


def trim(keep: int) -> None:
    boundary = list(_samples().order_by("-id").values_list("id", flat=True)[keep - 1 : keep])
    if boundary:
        _samples().filter(id__lt=boundary[0]).delete()


def samples(limit: int | None = None) -> list[MetricSample]:
    """The newest `limit` samples (all kept by default), oldest first for charting."""
    rows = list(_samples().order_by("-id")[: limit or settings.DASHBOARD_HISTORY_SAMPLES])
    rows.reverse()
    return rows
