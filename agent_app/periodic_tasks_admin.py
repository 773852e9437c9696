"""Beat's periodic tasks in the admin: django-celery-beat's pages, minus their habit of importing
every task module (ours load torch, which web workers never do). Task names come from dispatch."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest
from django_celery_beat import admin as beat_admin
from django_celery_beat.models import PeriodicTask

from agent_app.services import dispatch
from agent_app.services.refusals import TrainingUnavailable


class KnownTaskSelect(beat_admin.TaskSelectWidget):
    """The tasks the training worker runs, by name, without importing them to list the registry."""

    def tasks_as_choices(self) -> tuple[tuple[str, str], ...]:
        return (("", ""), *((name, name) for name in sorted(dispatch.WORKER_TASKS)))


class KnownTaskChoiceField(beat_admin.TaskChoiceField):
    widget = KnownTaskSelect


class PeriodicTaskForm(beat_admin.PeriodicTaskForm):
    regtask = KnownTaskChoiceField(label="Task (registered)", required=False)


admin.site.unregister(PeriodicTask)


@admin.register(PeriodicTask)
class PeriodicTaskAdmin(beat_admin.PeriodicTaskAdmin):
    form = PeriodicTaskForm

    @admin.action(description="Run selected tasks")
    def run_tasks(self, request: HttpRequest, queryset: Any) -> None:
        """Queue each task now, by name, with its arguments, queue and periodic task name."""
        sent = 0
        for task in queryset:
            options: dict[str, Any] = {"headers": {"periodic_task_name": task.name}}
            if task.queue:
                options["queue"] = task.queue
            try:
                dispatch.send(task.task, args=json.loads(task.args or "[]"),
                              kwargs=json.loads(task.kwargs or "{}"), **options)
            except TrainingUnavailable as exc:
                messages.error(request, f"{task.name} not run: {exc}.")
                continue
            sent += 1
        if sent:
            messages.success(request, f"{sent} task(s) queued for the worker.")
