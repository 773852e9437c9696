"""Read-only views of the shared agent state for /stats, /ready and the dashboard."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection

from agent_app.capacity import capacity
from agent_app.models import AgentState, ReplicaSelection
from agent_app.pools import current_pool, model_path
from agent_app.prefix_index import get_prefix_index
from agent_app.replay import StoreUnavailable, get_replay_store
from agent_app.rl.gate import ArmTotals
from agent_app.services import checkpoint_health
from agent_app.services.ab_testing import ab_results
from agent_app.serving import ServingSnapshot, policy_cache

log = logging.getLogger(__name__)
RECENT_REWARD_WINDOW = 100


def backends() -> dict[str, str]:
    return {
        "database": settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1],
        "replay_store": settings.REPLAY_STORE,
        "broker": settings.CELERY_BROKER_URL.split(":", 1)[0],
        "host_metrics": policy_cache.host_metrics_source,
    }


def agent_stats() -> dict[str, Any]:
    """The current pool's /stats: the original specification's fields plus model version,
    selections, exploration, backends, routing, replicas, prefix index and capacity."""
    policy_cache.ensure_started()
    pool = current_pool()
    snap = policy_cache.snapshot_for(pool)
    state = AgentState.load()
    store = get_replay_store()
    try:
        buffer_size = store.size()
        rewards = store.recent_rewards(RECENT_REWARD_WINDOW)
        avg_reward = round(sum(rewards) / len(rewards), 6) if rewards else None
        ab = ab_results()
    except StoreUnavailable as exc:
        log.warning("stats without the replay store: %s", exc)
        buffer_size, avg_reward, ab = None, None, None
    selections: dict[str, dict[str, int]] = {name: {} for name in settings.REPLICA_NAMES}
    for row in ReplicaSelection.objects.filter(pool=pool):
        if row.replica_idx < len(settings.REPLICA_NAMES):
            selections[settings.REPLICA_NAMES[row.replica_idx]][row.policy] = row.count
    return {
        "epsilon": state.epsilon,
        "steps_done": state.steps_done,
        "buffer_size": buffer_size,
        "avg_recent_reward": avg_reward,
        "device": state.device,
        "model_path": str(model_path()),
        "model_version": state.model_version,
        "exploration": snap.exploration,
        "selections": selections,
        "backends": backends(),
        "last_loss": state.last_loss,
        "target_syncs": state.target_syncs,
        "ab": ab,
        "routing": routing_summary(snap),
        "replicas": replica_summary(snap),
        "prefix_index": get_prefix_index().stats(),
        "capacity": capacity.summary(pool),
        "pool": pool,
    }


def routing_summary(snap: ServingSnapshot) -> dict[str, Any]:
    """Who routes and why: the gate's state, each arm's evidence and the network in use. Per arm, its
    per-request outcomes and mean reward; under block assignment also its settled blocks and their
    mean block reward, which the verdict compares."""
    by_block = snap.gate.assignment == "block"
    names = sorted(snap.arms.keys() | snap.block_arms.keys()) if by_block else sorted(snap.arms)
    arms = {}
    for name in names:
        totals = snap.arms.get(name, ArmTotals())
        arms[name] = {"outcomes": totals.count, "mean_reward": round(totals.mean, 6)}
        if by_block:
            blocks = snap.block_arms.get(name, ArmTotals())
            arms[name].update(blocks=blocks.count,
                              mean_block_reward=round(blocks.mean, 6) if blocks.count else None)
    return {
        "network": settings.RL_NETWORK,
        "gate": settings.RL_ROUTING_GATE,
        "routes": snap.router if settings.RL_ROUTING_GATE else "model",
        "evidence": snap.verdict.to_dict() if snap.verdict else None,
        "arms": arms,
        "assignment": snap.gate.assignment,
        "block_seconds": snap.gate.block_seconds if by_block else None,
        "trial_fraction": snap.gate.trial_fraction,
        "holdout_fraction": snap.gate.holdout_fraction,
    }


def replica_summary(snap: ServingSnapshot) -> dict[str, dict[str, float]]:
    """Per replica name: its share of the recent outcomes and what the service learned of it (the
    features the per-replica network sees), weighted towards the last REPLICA_STATS_HALF_LIFE_SECONDS."""
    stats = snap.replica_stats
    total = sum(s.get("requests", 0.0) for s in stats.values()) or 1.0
    return {name: {"share": round(s.get("requests", 0.0) / total, 4),
                   **{key: round(value, 4) for key, value in s.items()}}
            for name, s in sorted(stats.items())}


def readiness() -> dict[str, Any]:
    """Whether the model, the database, the replay store and the broker answer."""
    policy_cache.ensure_started()
    snap = policy_cache.snapshot
    checks: dict[str, Any] = {
        "model": {"ok": snap.network is not None, "version": snap.model_version,
                  "fallback_reason": snap.fallback_reason},
    }
    try:
        connection.ensure_connection()
        checks["database"] = {"ok": True}
    except DatabaseError as exc:
        checks["database"] = {"ok": False, "error": str(exc)}
    checks["replay_store"] = {"ok": get_replay_store().ping(), "backend": settings.REPLAY_STORE}
    checks["broker"] = _broker_check()
    checks["checkpoints"] = _checkpoint_check()
    # Routing works without a model (least-loaded fallback): readiness needs the stores only, and a
    # damaged checkpoint file is a detail to report, not a reason to stop serving.
    checks["ready"] = all(checks[name]["ok"] for name in ("database", "replay_store", "broker"))
    return checks


def _checkpoint_check() -> dict[str, Any]:
    try:
        return checkpoint_health.summary()
    except DatabaseError as exc:
        return {"ok": False, "error": f"checkpoints not checked: {exc}"}


def _broker_check() -> dict[str, Any]:
    from rlagent_project.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=1)
        return {"ok": True}
    except Exception as exc:  # kombu raises transport-specific errors
        return {"ok": False, "error": str(exc)}
