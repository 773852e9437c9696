"""Shared fixtures; the report header says which backends the suite ran on."""

from __future__ import annotations

import pytest


def pytest_report_header(config: pytest.Config) -> list[str]:
    from django.conf import settings

    engine = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    redis = settings.REDIS_URL or "none"
    return [
        f"backends: database={engine} replay_store={settings.REPLAY_STORE} redis={redis} "
        f"broker={settings.CELERY_BROKER_URL.split(':', 1)[0]}",
    ]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in pytest_report_header(terminalreporter.config):
        terminalreporter.write_line(f"Ran on {line}", bold=True)
