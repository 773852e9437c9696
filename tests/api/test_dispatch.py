"""Work sent to the training worker: its answers and refusals come back as the API documents them,
a worker that does not answer is a 504 (the task stays queued), an unreachable broker a 503."""

from __future__ import annotations

import json

import pytest
from celery import Celery

from agent_app.services import dispatch
from agent_app.services.refusals import (
    NotEnoughExperience,
    RollbackRefused,
    TrainingBusy,
    TrainingRefused,
    TrainingUnavailable,
    as_answer,
    unless_refused,
)
from rlagent_project.celery import app
from rlagent_project.result_backend import FolderResultBackend


@pytest.mark.parametrize(
    ("refusal", "status"),
    [(TrainingBusy, 409), (NotEnoughExperience, 409), (RollbackRefused, 409), (TrainingUnavailable, 503)],
)
def test_a_refusal_crosses_the_broker_as_json_and_is_raised_again_as_itself(refusal, status):
    answer = json.loads(json.dumps(as_answer(refusal("the buffer holds 3", buffer_size=3))))
    with pytest.raises(refusal) as raised:
        unless_refused(answer)
    assert str(raised.value) == "the buffer holds 3" and raised.value.context == {"buffer_size": 3}
    assert raised.value.status_code == status
    assert unless_refused({"loss": 0.5, "steps_done": 3}) == {"loss": 0.5, "steps_done": 3}


def test_an_unknown_refusal_is_still_a_refusal():
    with pytest.raises(TrainingRefused, match="no"):
        unless_refused({"refused": "something new", "detail": "no"})


def test_the_admin_offers_every_task_the_worker_runs():
    registered = {name for name in app.tasks if name.startswith("tasks.")}  # tests/conftest.py loads them
    assert set(dispatch.WORKER_TASKS) == registered


@pytest.fixture
def no_eager_tasks(monkeypatch):
    """Tasks go to the real broker, as from a web process; no worker consumes them in the tests."""
    monkeypatch.setitem(app.conf, "task_always_eager", False)
    yield
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge("training")


def queued_messages() -> int:
    with app.connection_for_write() as conn:
        return conn.default_channel.queue_declare("training").message_count


def test_a_worker_that_does_not_answer_in_time_is_a_504_and_the_run_stays_queued(
    client, fill, settings, no_eager_tasks
):
    fill(100)
    settings.TRAIN_TIMEOUT_SECONDS = 1.0
    before = queued_messages()
    response = client.post("/train?batch_size=32&iterations=3")
    assert response.status_code == 504
    assert response.json()["detail"] == ("the training worker did not answer within 1 s; "
                                         "the task stays queued and will run")
    assert queued_messages() == before + 1
    assert client.post("/save_model").status_code == 504


def test_an_unreachable_broker_is_a_503_naming_it(client, monkeypatch):
    dead = Celery("dead", broker="redis://127.0.0.1:1/0", set_as_current=False)
    dead.conf.update(broker_connection_retry=False, broker_connection_max_retries=0,
                     task_publish_retry=False, result_backend=None)
    monkeypatch.setattr(dispatch, "app", dead)
    response = client.post("/train?batch_size=32&iterations=3")
    assert response.status_code == 503
    assert response.json()["detail"].startswith("broker unavailable: ")
    assert response.headers["Retry-After"] == "5"


def test_the_embedded_result_backend_makes_its_folder_and_writes_whole_results(tmp_path, no_eager_tasks):
    folder = tmp_path / "var" / "results"
    backend = FolderResultBackend(app=app, url=f"file://{folder}")
    assert folder.is_dir()
    backend.store_result("run-1", {"loss": 0.25, "steps_done": 7}, "SUCCESS")
    assert backend.get_task_meta("run-1")["result"] == {"loss": 0.25, "steps_done": 7}
    files = [p.name for p in folder.iterdir()]
    assert len(files) == 1 and files[0].endswith("celery-task-meta-run-1")  # no temporary file left
