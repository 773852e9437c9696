"""Service functions: the logic, once. Views and Celery tasks are thin callers of these."""
