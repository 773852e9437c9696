"""Sending work to the training worker and waiting for its answer: the only place that does.

Training, checkpoint writes and rollbacks need torch, which web processes never import; so the
tasks are sent by name (this module never imports them) and their answers, plain JSON, come back
as results or as the refusals of services/refusals.py. Where the tasks are registered in this
process (the test settings run them eagerly), the same call runs them in-process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery.exceptions import TimeoutError as ResultTimeout
from celery.result import AsyncResult
from django.conf import settings
from kombu.exceptions import OperationalError

from agent_app.pools import DEFAULT_POOL
from agent_app.services.refusals import TrainingTimeout, TrainingUnavailable, unless_refused
from rlagent_project.celery import app

# A result in the embedded mode's file backend is polled for; 0.1 s adds little to a reply.
POLL_SECONDS = 0.1
# Every task tasks/training.py defines (a test keeps the two in step): what the admin's periodic
# task form offers, since listing Celery's registry would import the tasks, and torch with them.
WORKER_TASKS = (
    "tasks.training.train", "tasks.training.scheduled_train", "tasks.training.scheduled_train_pool",
    "tasks.training.checkpoint",
    "tasks.training.checkpoint_if_due", "tasks.training.sync_target_if_due",
    "tasks.training.publish_checkpoint", "tasks.training.delete_checkpoint", "tasks.training.delete_pool",
)


def request_training(*, iterations: int | None, batch_size: int | None = None,
                     pool: str = DEFAULT_POOL) -> dict[str, Any]:
    """A training run of the pool on the worker: the specification's loss, epsilon, buffer_size,
    steps_done, more."""
    return _run("tasks.training.train", batch_size=batch_size, iterations=iterations, pool=pool)


def request_checkpoint(pool: str = DEFAULT_POOL) -> dict[str, Any]:
    """A checkpoint of the pool's published model written now by the worker: path, version, steps_done."""
    return _run("tasks.training.checkpoint", pool=pool)


def request_rollback(*, checkpoint_id: int, username: str = "") -> dict[str, Any]:
    """Serve checkpoint `checkpoint_id` again, as a new model version (services/rollback.py)."""
    return _run("tasks.training.publish_checkpoint", checkpoint_id=checkpoint_id, username=username)


def request_checkpoint_deletion(*, checkpoint_id: int, username: str = "") -> dict[str, Any]:
    """Delete a checkpoint's row and file under the training lease (services/rollback.py)."""
    return _run("tasks.training.delete_checkpoint", checkpoint_id=checkpoint_id, username=username)


def request_pool_deletion(*, name: str, username: str = "") -> dict[str, Any]:
    """Delete a pool and its data on the worker, where its checkpoint files are (services/pool_admin.py)."""
    return _run("tasks.training.delete_pool", name=name, username=username)


def send(task_name: str, *, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None,
         **options: Any) -> str:
    """Queue a task without waiting for it (the admin's "run selected tasks"); returns its id."""
    return _queue(task_name, args, kwargs or {}, options).id


def _run(task_name: str, **kwargs: Any) -> dict[str, Any]:
    pending = _queue(task_name, (), kwargs, {})
    try:
        outcome = pending.get(timeout=settings.TRAIN_TIMEOUT_SECONDS, interval=POLL_SECONDS)
    except ResultTimeout:
        raise TrainingTimeout(
            f"the training worker did not answer within {settings.TRAIN_TIMEOUT_SECONDS:g} s; "
            "the task stays queued and will run"
        ) from None
    return unless_refused(outcome)


def _queue(task_name: str, args: Sequence[Any], kwargs: dict[str, Any],
           options: dict[str, Any]) -> AsyncResult:
    try:
        return app.signature(task_name, args=tuple(args), kwargs=kwargs).apply_async(**options)
    except OperationalError as exc:  # kombu gave up reaching the broker
        raise TrainingUnavailable(f"broker unavailable: {exc}") from None
