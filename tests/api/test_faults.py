"""Faults degrade the service, never corrupt it: a dead Redis, bad checkpoint files at MODEL_PATH."""

from __future__ import annotations

import logging
import os
import pickle
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from django.conf import settings

from agent_app.models import AgentState
from agent_app.rl.checkpoint import save_checkpoint
from agent_app.rl.config import routing_config
from agent_app.services import training
from tests.conftest import SEED_EXPERIENCE, SEED_SELECT

pytestmark = pytest.mark.django_db


@pytest.fixture
def dead_redis(monkeypatch):
    """The replay store's Redis client pointed at a port where nothing listens."""
    if settings.REPLAY_STORE != "redis":
        pytest.skip("the replay store is the database (TEST_BACKENDS=embedded)")
    from agent_app.replay import get_replay_store

    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, socket_timeout=0.2)
    store = get_replay_store()
    monkeypatch.setattr("agent_app.replay.redis_store.get_redis", lambda: dead)
    monkeypatch.setattr(store, "_append", dead.register_script("return 0"))
    yield store
    monkeypatch.undo()  # Redis "comes back" before the store fixture empties it


def test_record_experience_answers_503_naming_redis_when_it_is_down(client, dead_redis):
    response = client.post("/record_experience", SEED_EXPERIENCE, format="json")
    assert response.status_code == 503
    assert "Redis replay store unavailable" in response.json()["detail"]


def test_routing_keeps_answering_when_redis_is_down(client, dead_redis):
    assert client.post("/select_replica", SEED_SELECT, format="json").status_code == 200
    ready = client.get("/ready")
    assert ready.status_code == 503 and ready.json()["replay_store"]["ok"] is False


@contextmanager
def database_down():
    """The default connection pointed at a port where no Postgres answers."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("SQLite has no server to lose (TEST_BACKENDS=embedded)")
    connection.close()
    saved, connection.settings_dict["PORT"] = connection.settings_dict["PORT"], 1
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict["PORT"] = saved


@pytest.mark.django_db(transaction=True)
def test_endpoints_that_need_the_database_answer_503_naming_it_when_it_is_down(client, fill):
    fill(100)
    assert client.post("/select_replica", SEED_SELECT, format="json").status_code == 200
    with database_down():
        # Routing and the replay store carry on from the web worker's snapshot ...
        assert client.post("/select_replica", SEED_SELECT, format="json").status_code == 200
        assert client.post("/record_experience", SEED_EXPERIENCE, format="json").status_code == 201
        # ... and what needs the database says so.
        for method, path in (("get", "/stats"), ("post", "/save_model"), ("post", "/train?iterations=1")):
            response = getattr(client, method)(path)
            assert response.status_code == 503, (path, response.content)
            assert "database unavailable: connection failed" in response.json()["detail"]
            assert response.headers["Retry-After"] == "5"
    assert client.get("/stats").status_code == 200  # and it recovers by itself


@pytest.mark.django_db(transaction=True)
def test_a_scheduled_run_without_its_backends_is_skipped_with_one_clear_line(dead_redis, caplog):
    from tasks.training import scheduled_train_task

    outcome = scheduled_train_task()
    assert outcome["refused"] == "unavailable"
    assert outcome["detail"].startswith("train skipped: Redis replay store unavailable: ")
    assert outcome["detail"] in caplog.text
    with database_down():
        assert scheduled_train_task()["detail"].startswith("train skipped: database unavailable: ")


class Payload:
    """Unpickling this runs code: a checkpoint must never be loaded with plain pickle."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_bad(kind: str, path: Path, tmp_path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    marker = tmp_path / "pwned"
    if kind == "truncated":
        from agent_app.rl.agent import DQNAgent

        save_checkpoint(DQNAgent(routing_config(3)), path)
        path.write_bytes(path.read_bytes()[:2000])
    elif kind == "other_architecture":
        from agent_app.rl.agent import DQNAgent

        save_checkpoint(DQNAgent(routing_config(5)), path)
    else:
        path.write_bytes(pickle.dumps(Payload(str(marker))))
    return marker


@pytest.mark.parametrize("kind", ["truncated", "other_architecture", "malicious_pickle"])
def test_a_bad_file_at_model_path_is_refused_and_logged(client, model_path, tmp_path, caplog, kind):
    marker = write_bad(kind, Path(model_path), tmp_path)
    with caplog.at_level(logging.ERROR):
        outcome = training.restore_published_model()
    assert outcome == {"restored": False, "reason": "no loadable checkpoint"}
    assert f"skipping checkpoint {model_path}" in caplog.text
    assert not marker.exists(), "unpickling ran code"
    assert AgentState.load().model_version == 0
    decision = client.post("/select_replica", SEED_SELECT, format="json").json()
    assert decision["policy"] in {"explore", "least_loaded"}


def test_an_older_good_checkpoint_is_used_when_the_newest_is_corrupt(client, fill, model_path, tmp_path):
    fill(100)
    client.post("/train?batch_size=64&iterations=7")
    client.post("/save_model")
    AgentState.objects.all().delete()  # a fresh database, with the models volume kept
    write_bad("truncated", Path(model_path), tmp_path)
    outcome = training.restore_published_model()
    assert outcome["restored"] is True and outcome["steps_done"] == 7
    assert outcome["path"].endswith("-v000001.pth")
    assert AgentState.load().steps_done == 7


@pytest.mark.django_db(transaction=True)
def test_an_outage_is_logged_when_it_starts_and_ends_not_once_per_request(client, caplog, monkeypatch):
    from agent_app.api import errors

    monkeypatch.setattr(errors, "_last_logged", float("-inf"))  # no report from an earlier test pending
    assert client.post("/select_replica", SEED_SELECT, format="json").status_code == 200
    caplog.clear()
    with database_down():
        for _ in range(5):
            assert client.get("/stats").status_code == 503
    client.get("/stats")

    def lines(logger: str, text: str) -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == logger and text in r.getMessage()]

    assert len(lines("agent_app.serving", "database unavailable, serving model")) == 1
    assert len(lines("agent_app.serving", "database answers again")) == 1
    assert len(lines("agent_app.api.errors", "answered 503")) == 1
    assert lines("django.request", "Service Unavailable") == []
