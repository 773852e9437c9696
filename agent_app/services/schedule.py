"""The training interval: django-celery-beat's PeriodicTask "train", edited from the admin.

Beat re-applies CELERY_BEAT_SCHEDULE when it starts; agent_app.beat.OperatorScheduler keeps an
interval an operator set (marked in the task's description) over TRAINING_INTERVAL_SECONDS.
"""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

TRAIN_TASK = "train"
OPERATOR_NOTE = "Interval set by an operator in the admin"
_PERIOD_SECONDS = {
    IntervalSchedule.DAYS: 86400.0, IntervalSchedule.HOURS: 3600.0, IntervalSchedule.MINUTES: 60.0,
    IntervalSchedule.SECONDS: 1.0, IntervalSchedule.MICROSECONDS: 1e-6,
}


def interval_seconds(interval: IntervalSchedule) -> float:
    return interval.every * _PERIOD_SECONDS[interval.period]


def operator_interval(name: str) -> float | None:
    """The interval an operator set for periodic task `name`, if one did."""
    task = (PeriodicTask.objects.filter(name=name, description__startswith=OPERATOR_NOTE)
            .select_related("interval").first())
    return interval_seconds(task.interval) if task and task.interval else None


def training_interval_seconds() -> int:
    """Seconds between scheduled training runs: beat's "train" task, else the setting."""
    task = PeriodicTask.objects.filter(name=TRAIN_TASK).select_related("interval").first()
    if task and task.interval:
        return round(interval_seconds(task.interval))
    return round(settings.TRAINING_INTERVAL_SECONDS)


def set_training_interval(seconds: int, *, username: str) -> PeriodicTask:
    """Point the "train" task at an interval of `seconds`; beat picks the change up within seconds."""
    interval = IntervalSchedule.objects.filter(every=seconds, period=IntervalSchedule.SECONDS).first()
    interval = interval or IntervalSchedule.objects.create(every=seconds, period=IntervalSchedule.SECONDS)
    task, _ = PeriodicTask.objects.update_or_create(
        name=TRAIN_TASK,
        defaults={
            "task": settings.CELERY_BEAT_SCHEDULE[TRAIN_TASK]["task"],
            "interval": interval, "crontab": None, "solar": None, "clocked": None,
            "expires": None, "expire_seconds": seconds,  # a run not started within one interval is dropped
            "description": f"{OPERATOR_NOTE} ({username}, {timezone.now():%Y-%m-%d %H:%M} UTC); "
                           "beat keeps it over TRAINING_INTERVAL_SECONDS.",
        },
    )
    return task
