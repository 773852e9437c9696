"""Why training work was not done, as exceptions and as the JSON a Celery task returns instead.

Torch-free on purpose: the web process raises and answers these, while the work runs in the worker.
"""

from __future__ import annotations

from typing import Any


class TrainingRefused(Exception):
    """The work was not done; `status_code` is the HTTP answer, `context` goes into its body."""

    status_code = 409
    kind = "refused"

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.context = context


class TrainingBusy(TrainingRefused):
    """Another trainer holds the lease."""

    kind = "busy"


class NotEnoughExperience(TrainingRefused):
    """Fewer experiences than one batch."""

    kind = "not_enough"


class RollbackRefused(TrainingRefused):
    """The checkpoint is gone or unreadable, or a trainer holds the lease."""

    kind = "rollback"


class TrainingUnavailable(TrainingRefused):
    """The worker could not reach the database or the replay store, or the broker is down."""

    status_code = 503
    kind = "unavailable"


class TrainingTimeout(TrainingRefused):
    """The training worker did not answer in time (the task stays queued)."""

    status_code = 504
    kind = "timeout"


_BY_KIND = {cls.kind: cls for cls in (
    TrainingBusy, NotEnoughExperience, RollbackRefused, TrainingUnavailable,
)}


def as_answer(exc: TrainingRefused) -> dict[str, Any]:
    """What a task returns for a refusal: plain data, so no exception crosses the broker."""
    return {"refused": exc.kind, "detail": str(exc), "context": exc.context}


def unless_refused(outcome: dict[str, Any]) -> dict[str, Any]:
    """A task's answer as the caller wants it: the result, or its refusal raised again."""
    if "refused" not in outcome:
        return outcome
    refusal = _BY_KIND.get(outcome["refused"], TrainingRefused)
    raise refusal(outcome["detail"], **outcome.get("context", {}))
