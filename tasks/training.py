"""Training, target-sync and checkpoint tasks for the `training` queue.

Each task calls one service function; the service takes the training lease, so a second
worker, a second beat or a /train call during a run gets a refusal at once instead of training
the same model concurrently. Refusals are returned as data (JSON), not raised, so /train can
answer them clearly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import shared_task
from celery.signals import worker_process_init, worker_ready

from agent_app.outages import OUTAGES, describe_outage
from agent_app.services import training

log = logging.getLogger(__name__)


def _attempt(work: Callable[..., dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
    """Run a service function; a refusal or an unreachable backend is an answer, not a traceback."""
    try:
        return work(**kwargs)
    except training.TrainingRefused as exc:
        kind = "busy" if isinstance(exc, training.TrainingBusy) else "not_enough"
        return {"refused": kind, "detail": str(exc), "context": exc.context}
    except OUTAGES as exc:
        detail = f"{work.__name__} skipped: {describe_outage(exc)}"
        log.warning(detail)
        return {"refused": "unavailable", "detail": detail}


@shared_task(name="tasks.training.train")
def train_task(batch_size: int | None, iterations: int | None) -> dict[str, Any]:
    return _attempt(training.train, batch_size=batch_size, iterations=iterations)


@shared_task(name="tasks.training.scheduled_train")
def scheduled_train_task() -> dict[str, Any]:
    """Beat's periodic run: steps in proportion to new traffic, at the admin's or default batch size."""
    return train_task(None, None)


@shared_task(name="tasks.training.checkpoint")
def checkpoint_task() -> dict[str, Any]:
    return _attempt(training.save_model)


@shared_task(name="tasks.training.checkpoint_if_due")
def checkpoint_if_due_task() -> dict[str, Any]:
    """Safety net: a checkpoint every CHECKPOINT_EVERY_STEPS even if a training run's write failed."""
    return _attempt(training.checkpoint_if_due)


@shared_task(name="tasks.training.sync_target_if_due")
def sync_target_if_due_task() -> dict[str, Any]:
    """Safety net: the training loop syncs every TARGET_SYNC_STEPS; this only catches up."""
    return _attempt(training.sync_target_if_due)


@worker_ready.connect
def restore_on_start(**kwargs: Any) -> None:
    """A fresh database with checkpoints on disk serves the newest one that loads."""
    training.restore_published_model()


@worker_process_init.connect
def warm_up_process(**kwargs: Any) -> None:
    training.warm_up()
