"""The Celery application: configured from Django settings (CELERY_* names)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rlagent_project.settings")

# tasks/ is a top-level package, which autodiscover_tasks() would not find: `include` names it.
# Only the worker and beat import it (it loads torch); web processes send its tasks by name.
app = Celery("rlagent_project", include=["tasks.training"])
app.config_from_object("django.conf:settings", namespace="CELERY")
