"""Training, target-sync, checkpoint and rollback tasks for the `training` queue.

Each task calls one service function for one pool (`pool`, default: the default pool); the
service takes that pool's training lease, so a second worker, a second beat or a /train call
during a run gets a refusal at once instead of training the same model concurrently, while other
pools train on other workers. Beat's runs fan out: one task per pool with new experience.
Refusals are returned as data (JSON), not raised, so /train and the admin can answer them
clearly (services/dispatch.py turns them back into exceptions).
Only the worker imports this module (and so torch); web processes send these tasks by name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import shared_task
from celery.signals import worker_process_init, worker_ready

from agent_app.outages import OUTAGES, describe_outage
from agent_app.pools import pool_names, pool_scope
from agent_app.services import pool_admin, rollback, training
from agent_app.services.refusals import TrainingRefused, TrainingUnavailable, as_answer

log = logging.getLogger(__name__)


def _attempt(work: Callable[..., dict[str, Any]], pool: str | None = None, **kwargs: Any) -> dict[str, Any]:
    """Run a service function for `pool`; a refusal or an unreachable backend is an answer, not a
    traceback."""
    try:
        with pool_scope(pool):
            return work(**kwargs)
    except TrainingRefused as exc:
        return as_answer(exc)
    except OUTAGES as exc:
        return _unavailable(work.__name__, exc)


def _unavailable(what: str, exc: Exception) -> dict[str, Any]:
    detail = f"{what} skipped: {describe_outage(exc)}"
    log.warning(detail)
    return as_answer(TrainingUnavailable(detail))


@shared_task(name="tasks.training.train")
def train_task(batch_size: int | None, iterations: int | None, pool: str | None = None) -> dict[str, Any]:
    return _attempt(training.train, pool, batch_size=batch_size, iterations=iterations)


# Beat's tasks store no result: nobody waits for them, and the embedded result backend is files.
@shared_task(name="tasks.training.scheduled_train", ignore_result=True)
def scheduled_train_task() -> dict[str, Any]:
    """Beat's periodic run: one training task per pool with new experience, queued for whichever
    training worker is free, each training in proportion to its pool's new traffic."""
    try:
        pools = training.pools_to_train()
    except OUTAGES as exc:
        return _unavailable("train", exc)
    for pool in pools:
        scheduled_train_pool_task.delay(pool)
    return {"queued": pools}


@shared_task(name="tasks.training.scheduled_train_pool", ignore_result=True)
def scheduled_train_pool_task(pool: str) -> dict[str, Any]:
    """One pool's scheduled run, at the admin's or default batch size."""
    return train_task(None, None, pool)


@shared_task(name="tasks.training.checkpoint")
def checkpoint_task(pool: str | None = None) -> dict[str, Any]:
    return _attempt(training.save_model, pool)


@shared_task(name="tasks.training.checkpoint_if_due", ignore_result=True)
def checkpoint_if_due_task() -> dict[str, Any]:
    """Safety net: a checkpoint every CHECKPOINT_EVERY_STEPS even if a training run's write failed."""
    return _each_pool(training.checkpoint_if_due)


@shared_task(name="tasks.training.sync_target_if_due", ignore_result=True)
def sync_target_if_due_task() -> dict[str, Any]:
    """Safety net: the training loop syncs every TARGET_SYNC_STEPS; this only catches up."""
    return _each_pool(training.sync_target_if_due)


def _each_pool(work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A cheap check run for every pool in turn (each does work only where it is due)."""
    try:
        return {pool: _attempt(work, pool) for pool in pool_names()}
    except OUTAGES as exc:
        return _unavailable(work.__name__, exc)


@shared_task(name="tasks.training.publish_checkpoint")
def publish_checkpoint_task(checkpoint_id: int, username: str) -> dict[str, Any]:
    """The admin's rollback: serve an older checkpoint again as a new model version."""
    return _attempt(rollback.publish_checkpoint, checkpoint_id=checkpoint_id, username=username)


@shared_task(name="tasks.training.delete_checkpoint")
def delete_checkpoint_task(checkpoint_id: int, username: str) -> dict[str, Any]:
    return _attempt(rollback.delete_checkpoint, checkpoint_id=checkpoint_id, username=username)


@shared_task(name="tasks.training.delete_pool")
def delete_pool_task(name: str, username: str) -> dict[str, Any]:
    """Delete a pool with its data; here because its checkpoint files are the worker's."""
    try:
        return _attempt(pool_admin.delete_pool, name=name, username=username)
    except ValueError as exc:  # the default pool, or one that does not exist
        return as_answer(TrainingRefused(str(exc)))


@worker_ready.connect
def restore_on_start(**kwargs: Any) -> None:
    """A fresh database with checkpoints on disk serves each pool's newest one that loads."""
    _each_pool(training.restore_published_model)


@worker_process_init.connect
def warm_up_process(**kwargs: Any) -> None:
    training.warm_up()
