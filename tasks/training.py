"""Training, target-sync, checkpoint and rollback tasks for the `training` queue.

Each task calls one service function; the service takes the training lease, so a second
worker, a second beat or a /train call during a run gets a refusal at once instead of training
the same model concurrently. Refusals are returned as data (JSON), not raised, so /train and the
admin can answer them clearly (services/dispatch.py turns them back into exceptions).
Only the worker imports this module (and so torch); web processes send these tasks by name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import shared_task
from celery.signals import worker_process_init, worker_ready

from agent_app.outages import OUTAGES, describe_outage
from agent_app.services import rollback, training
from agent_app.services.refusals import TrainingRefused, TrainingUnavailable, as_answer

log = logging.getLogger(__name__)


def _attempt(work: Callable[..., dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
    """Run a service function; a refusal or an unreachable backend is an answer, not a traceback."""
    try:
        return work(**kwargs)
    except TrainingRefused as exc:
        return as_answer(exc)
    except OUTAGES as exc:
        detail = f"{work.__name__} skipped: {describe_outage(exc)}"
        log.warning(detail)
        return as_answer(TrainingUnavailable(detail))


@shared_task(name="tasks.training.train")
def train_task(batch_size: int | None, iterations: int | None) -> dict[str, Any]:
    return _attempt(training.train, batch_size=batch_size, iterations=iterations)


# Beat's tasks store no result: nobody waits for them, and the embedded result backend is files.
@shared_task(name="tasks.training.scheduled_train", ignore_result=True)
def scheduled_train_task() -> dict[str, Any]:
    """Beat's periodic run: steps in proportion to new traffic, at the admin's or default batch size."""
    return train_task(None, None)


@shared_task(name="tasks.training.checkpoint")
def checkpoint_task() -> dict[str, Any]:
    return _attempt(training.save_model)


@shared_task(name="tasks.training.checkpoint_if_due", ignore_result=True)
def checkpoint_if_due_task() -> dict[str, Any]:
    """Safety net: a checkpoint every CHECKPOINT_EVERY_STEPS even if a training run's write failed."""
    return _attempt(training.checkpoint_if_due)


@shared_task(name="tasks.training.sync_target_if_due", ignore_result=True)
def sync_target_if_due_task() -> dict[str, Any]:
    """Safety net: the training loop syncs every TARGET_SYNC_STEPS; this only catches up."""
    return _attempt(training.sync_target_if_due)


@shared_task(name="tasks.training.publish_checkpoint")
def publish_checkpoint_task(checkpoint_id: int, username: str) -> dict[str, Any]:
    """The admin's rollback: serve an older checkpoint again as a new model version."""
    return _attempt(rollback.publish_checkpoint, checkpoint_id=checkpoint_id, username=username)


@shared_task(name="tasks.training.delete_checkpoint")
def delete_checkpoint_task(checkpoint_id: int, username: str) -> dict[str, Any]:
    return _attempt(rollback.delete_checkpoint, checkpoint_id=checkpoint_id, username=username)


@worker_ready.connect
def restore_on_start(**kwargs: Any) -> None:
    """A fresh database with checkpoints on disk serves the newest one that loads."""
    training.restore_published_model()


@worker_process_init.connect
def warm_up_process(**kwargs: Any) -> None:
    training.warm_up()
