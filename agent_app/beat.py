"""Beat's scheduler: django-celery-beat's DatabaseScheduler, keeping intervals operators set."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django_celery_beat.schedulers import DatabaseScheduler

from agent_app.services.schedule import operator_interval


class OperatorScheduler(DatabaseScheduler):
    """At start, beat writes CELERY_BEAT_SCHEDULE over the database; an interval set in the admin
    (see agent_app.services.schedule) would silently revert to TRAINING_INTERVAL_SECONDS. Keep it.

    Also carries a numeric `expires` option over as `expire_seconds`: DatabaseScheduler stores
    only the latter, so the settings' "a run not started within one interval is dropped" would
    otherwise be lost.
    """

    def update_from_dict(self, mapping: dict[str, Any]) -> None:
        entries = {}
        for name, entry in mapping.items():
            options = dict(entry.get("options") or {})
            if isinstance(options.get("expires"), int | float) and "expire_seconds" not in options:
                options["expire_seconds"] = options.pop("expires")
            seconds = operator_interval(name)
            if seconds is not None:
                entry = {**entry, "schedule": timedelta(seconds=seconds)}
                options["expire_seconds"] = seconds
            entries[name] = {**entry, "options": options}
        super().update_from_dict(entries)
