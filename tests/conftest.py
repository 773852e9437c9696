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


# Fixtures that start the service's processes (tests/live, tests/client) or a server for a browser.
LIVE_FIXTURES = {"live_stack_factory", "service", "trained_service", "live_server"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that uses a live fixture is `live`, wherever it is: `make test-fast` leaves it out."""
    for item in items:
        if LIVE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.live)


# The example bodies of the original specification (docs/original-specification.md).
SEED_SELECT = {
    "replica_loads": [5, 3, 7],
    "queue_depth": 12,
    "recent_latency_ms": 280.5,
    "current_rps": 8.2,
    "success_rate": 0.98,
}
SEED_EXPERIENCE = {
    "state": [5, 3, 7, 12, 0.28, 8.2, 0.98, 0.5, 0.4, 0.5],
    "action": 1,
    "latency_ms": 265.3,
    "success": True,
    "replica_loads": [5, 4, 7],
}


@pytest.fixture
def store(db):
    """The configured replay store, emptied."""
    from agent_app.replay import get_replay_store

    replay = get_replay_store()
    replay.clear()
    yield replay
    replay.clear()


@pytest.fixture
def api_key(db) -> str:
    from agent_app.api.auth import create_api_key

    return create_api_key(name="tests")[1]


@pytest.fixture(scope="session", autouse=True)
def worker_tasks() -> None:
    """Register the Celery tasks as the worker does: with CELERY_TASK_ALWAYS_EAGER (tests/settings.py)
    what /train, /save_model and the admin send then runs in the test process."""
    from rlagent_project.celery import app

    app.loader.import_default_modules()


@pytest.fixture(autouse=True)
def model_path(settings, tmp_path):
    """Each test writes checkpoints to a folder of its own."""
    settings.MODEL_PATH = tmp_path / "models" / "rl_agent.pth"
    return settings.MODEL_PATH


@pytest.fixture
def client(store, api_key):
    """An API client holding a valid key, on a fresh agent with an empty replay store."""
    from rest_framework.test import APIClient

    from agent_app import metrics
    from agent_app.services import training
    from agent_app.serving import policy_cache

    training._trainers.clear()
    # Snapshots, counts and outcomes of earlier tests are not this test's.
    policy_cache.reset()
    metrics._decisions_counted.clear()
    return APIClient(HTTP_AUTHORIZATION=f"Bearer {api_key}", SERVER_NAME="localhost")


@pytest.fixture
def anonymous(store):
    from rest_framework.test import APIClient

    return APIClient(SERVER_NAME="localhost")


def random_experience(rng, n: int = 3, **overrides) -> dict:
    loads = [float(x) for x in rng.integers(0, 100, n)]
    body = {
        "state": loads + [float(rng.integers(0, 50)), 0.3, 8.0, 0.99, 0.5, 0.4, 0.5],
        "action": int(rng.integers(n)),
        "latency_ms": float(rng.uniform(50, 900)),
        "success": bool(rng.random() > 0.05),
        "replica_loads": loads,
    }
    body.update(overrides)
    return body


@pytest.fixture
def fill(client):
    """Report `count` random experiences through the batch endpoint."""
    import numpy as np

    def report(count: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        for start in range(0, count, 500):
            batch = [random_experience(rng) for _ in range(min(500, count - start))]
            response = client.post("/record_experience", {"experiences": batch}, format="json")
            assert response.status_code == 201, response.content

    return report
