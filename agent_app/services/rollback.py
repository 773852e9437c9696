"""Roll back: serve an older checkpoint again, published the way training publishes; delete one.

Both run in the training worker (they read checkpoints with torch; the admin sends them through
services/dispatch.py) under the training lease, so they never interleave with a training run or a
checkpoint write. A rollback is a new model version (web workers reload on a version change)
and never moves steps_done backwards; the operator's current epsilon is kept.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from django.db import transaction
from django.utils import timezone

from agent_app.models import AgentState, Checkpoint
from agent_app.pools import current_pool, model_path, pool_scope
from agent_app.rl.checkpoint import CheckpointError, copy_checkpoint, load_checkpoint, read_checkpoint
from agent_app.rl.inference import weights_to_bytes
from agent_app.services import checkpoint_health, checkpoints, operator_config, training
from agent_app.services.lease import LeaseHeld, training_lease
from agent_app.services.refusals import RollbackRefused

log = logging.getLogger(__name__)


def publish_checkpoint(*, checkpoint_id: int, username: str = "") -> dict[str, Any]:
    """Publish checkpoint `checkpoint_id` as its pool's serving model (a new model version)."""
    checkpoint = _get(checkpoint_id)
    with pool_scope(checkpoint.pool):
        return _publish(checkpoint, username)


def _publish(checkpoint: Checkpoint, username: str) -> dict[str, Any]:
    unusable = checkpoint_health.usable_or_reason(checkpoint)  # missing, damaged: refused before torch
    if unusable:
        raise RollbackRefused(f"checkpoint v{checkpoint.version} cannot be loaded: {unusable}")
    try:
        with training_lease():
            try:
                agent = load_checkpoint(checkpoint.path, expected_config=training.current_config())
            except CheckpointError as exc:
                checkpoint_health.record(checkpoint, *checkpoints.verdict_of(exc))
                raise RollbackRefused(f"checkpoint v{checkpoint.version} cannot be loaded: {exc}") from None
            AgentState.load()
            with transaction.atomic():
                state = AgentState.objects.select_for_update().get(pool=current_pool())
                previous = state.model_version
                agent.steps_done = max(agent.steps_done, state.steps_done)
                agent.epsilon = state.epsilon
                state.model_version += 1
                state.steps_done = agent.steps_done
                state.last_loss = checkpoint.loss
                state.device = agent.device
                state.serving_weights = weights_to_bytes(agent.export_numpy())
                state.trainer_state = checkpoints.agent_to_bytes(
                    agent, {"model_version": state.model_version, "rolled_back_to": checkpoint.version}
                )
                state.published_at = timezone.now()
                state.save()
    except LeaseHeld as exc:
        raise RollbackRefused(f"{exc}; the rollback was not applied") from None
    operator_config.record(
        username=username, field="serving model", old=f"v{previous}",
        new=f"v{state.model_version} (checkpoint v{checkpoint.version}, {checkpoint.steps_done} steps)",
    )
    log.info("pool %s: rolled back to checkpoint v%s, published as model v%s", checkpoint.pool,
             checkpoint.version, state.model_version)
    return {"model_version": state.model_version, "previous_version": previous,
            "checkpoint_version": checkpoint.version, "steps_done": state.steps_done}


def delete_checkpoint(*, checkpoint_id: int, username: str = "") -> dict[str, Any]:
    """Delete the row and its file; MODEL_PATH is re-pointed if it held that checkpoint."""
    checkpoint = _get(checkpoint_id)
    try:
        with pool_scope(checkpoint.pool), training_lease():
            path = Path(checkpoint.path)
            checkpoint.delete()
            path.unlink(missing_ok=True)  # one row per file: nothing else points at it
            _repoint_model_path(checkpoint)
    except LeaseHeld as exc:
        raise RollbackRefused(f"{exc}; checkpoint v{checkpoint.version} was not deleted") from None
    operator_config.record(username=username, field="checkpoint deleted",
                           old=f"v{checkpoint.version} ({checkpoint.path})", new="")
    return {"version": checkpoint.version, "path": checkpoint.path}


def _get(checkpoint_id: int) -> Checkpoint:
    checkpoint = Checkpoint.objects.filter(pk=checkpoint_id).first()
    if checkpoint is None:
        raise RollbackRefused(f"checkpoint #{checkpoint_id} no longer exists")
    return checkpoint


def _repoint_model_path(deleted: Checkpoint) -> None:
    """MODEL_PATH is what a fresh start loads first: it must not bring a deleted checkpoint back."""
    newest_copy = model_path()
    try:
        if deleted.sha256:  # MODEL_PATH is a byte copy of the newest checkpoint's file
            held = checkpoint_health.fingerprint(newest_copy)[1] == deleted.sha256
        else:
            held = read_checkpoint(newest_copy)["extra"].get("model_version") == deleted.version
    except (CheckpointError, OSError):
        return  # missing or unreadable: start-up skips it anyway
    if not held:
        return
    newest = next((c for c in checkpoints.pool_checkpoints().order_by("-created_at", "-id")
                   if not checkpoint_health.usable_or_reason(c)), None)  # never a damaged file
    if newest is None:
        newest_copy.unlink(missing_ok=True)
        return
    copy_checkpoint(newest.path, newest_copy)
