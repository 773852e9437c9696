"""Django project for the RL Agent Service; importing it loads the Celery app."""

from rlagent_project.celery import app as celery_app

__all__ = ("celery_app",)
