"""Benchmark settings: the service's own settings plus a constant reference endpoint."""

from rlagent_project.settings import *  # noqa: F403

ROOT_URLCONF = "benchmarks.api.urls"
