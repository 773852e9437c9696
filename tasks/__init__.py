"""Celery tasks. A top-level package: the Celery app lists its modules in `imports`."""
