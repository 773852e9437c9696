"""The Celery application: configured from Django settings (CELERY_* names)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rlagent_project.settings")

app = Celery("rlagent_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
# tasks/ is a top-level package, which autodiscover_tasks() would not find: list it explicitly.
app.conf.imports = ("tasks.training",)
