"""Checkpoint files are never lost: one row per file, pruning by files that load, MODEL_PATH's file
kept, damaged or missing files reported (log, /ready, admin) and never rolled back to."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.operators.test_metrics import scrape, value
from tests.operators.test_rollback import act


@pytest.fixture
def every(settings):
    """Checkpoint every 2 steps (each training run below), keep 3."""
    settings.CHECKPOINT_EVERY_STEPS = 2
    settings.CHECKPOINT_KEEP = 3
    return settings


def save(client) -> dict:
    response = client.post("/save_model")
    assert response.status_code == 200, response.content
    return response.json()


def rows() -> list:
    from agent_app.models import Checkpoint

    return list(Checkpoint.objects.order_by("version", "id"))


def assert_every_row_has_its_file(model_path: Path) -> None:
    kept = rows()
    assert len({row.path for row in kept}) == len(kept), "two rows for one file"
    for row in kept:
        assert Path(row.path).is_file(), f"row v{row.version} points at a deleted file"
    assert model_path.is_file(), "MODEL_PATH was deleted"


def truncate(path: str | Path) -> None:
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 3])


def test_six_saves_at_an_unchanged_version_keep_one_row_and_the_older_versions(client, train, every,
                                                                             model_path):
    every.CHECKPOINT_EVERY_STEPS = 1000  # only /save_model writes here
    for _ in range(3):
        train(runs=1)
        save(client)
    files_before = {row.path: Path(row.path).read_bytes() for row in rows()}
    for _ in range(6):
        body = save(client)
        assert body["version"] == 3
        assert_every_row_has_its_file(model_path)
    assert [row.version for row in rows()] == [1, 2, 3]
    assert {row.path: Path(row.path).read_bytes() for row in rows()} == files_before
    assert model_path.read_bytes() == Path(rows()[-1].path).read_bytes()  # MODEL_PATH is the newest
    assert body["versioned_path"] == rows()[-1].path


def test_training_runs_and_saves_never_leave_a_kept_row_without_its_file(client, train, every,
                                                                       model_path):
    from agent_app.services.checkpoints import versioned_files

    for _ in range(5):
        train(runs=1)  # a checkpoint at the end of each run
        assert_every_row_has_its_file(model_path)
        save(client)
        save(client)
        assert_every_row_has_its_file(model_path)
    assert [row.version for row in rows()] == [3, 4, 5]
    assert {str(p) for p in versioned_files()} == {row.path for row in rows()}  # pruned by file


def test_a_truncated_newest_checkpoint_is_reported_and_older_good_ones_are_kept(client, train, every,
                                                                              model_path, caplog):
    every.CHECKPOINT_KEEP = 2
    train(runs=2)
    v1, v2 = rows()
    truncate(v2.path)
    with caplog.at_level(logging.ERROR):
        train(runs=1)  # writes v3 and prunes: v2 does not count as a kept checkpoint
    by_version = {row.version: row for row in rows()}
    assert sorted(by_version) == [1, 2, 3]
    assert Path(v1.path).is_file()
    assert by_version[2].status == "damaged" and "truncated" in by_version[2].problem
    assert "checkpoint v2 is damaged and cannot be rolled back to" in caplog.text

    train(runs=1)  # v4 and v3 are the two good ones now: the damaged v2 and v1 go
    assert [row.version for row in rows()] == [3, 4]
    assert not Path(v2.path).exists() and not Path(v1.path).exists()


def test_a_fresh_start_prefers_a_good_older_checkpoint_to_a_truncated_newest_one(client, train, every,
                                                                                 model_path):
    from agent_app.models import AgentState
    from agent_app.services import training

    train(runs=2)
    v1, v2 = rows()
    truncate(v2.path)
    truncate(model_path)
    AgentState.objects.all().delete()  # a fresh database with the models volume and rows kept
    outcome = training.restore_published_model()
    assert outcome["restored"] is True and outcome["path"] == v1.path
    assert outcome["steps_done"] == v1.steps_done
    assert {row.version: row.status for row in rows()} == {1: "ok", 2: "damaged"}


@pytest.mark.parametrize("how", ["copy", "symlink"])
def test_the_file_model_path_holds_is_never_pruned(client, train, every, model_path, how):
    from agent_app.services import checkpoints, training

    train(runs=3)
    v1 = rows()[0]
    model_path.unlink()
    if how == "copy":
        model_path.write_bytes(Path(v1.path).read_bytes())  # an operator put v1 back at MODEL_PATH
    else:
        model_path.symlink_to(v1.path)
    every.CHECKPOINT_KEEP = 1
    checkpoints.prune(training.current_config())
    assert [row.version for row in rows()] == [1, 3]
    assert Path(v1.path).is_file() and model_path.is_file()


def test_a_database_reset_lists_the_files_and_never_overwrites_one(client, train, every, model_path):
    from agent_app.models import AgentState, Checkpoint
    from agent_app.services import training

    train(runs=2)
    written = {row.path: Path(row.path).read_bytes() for row in rows()}
    Checkpoint.objects.all().delete()
    AgentState.objects.all().delete()
    training._trainers.clear()  # a worker that starts on the reset database
    assert training.restore_published_model()["restored"] is True
    assert {row.path: row.status for row in rows()} == dict.fromkeys(written, "ok")  # rollback offers them

    train(runs=1)  # model v2 again, and a checkpoint numbered 2 again: written beside the old one
    for path, data in written.items():
        assert Path(path).read_bytes() == data
    assert [row.version for row in rows()] == [1, 2, 2]
    assert rows()[-1].path.endswith("-v000002-2.pth")


def test_the_admin_lists_damaged_and_missing_files_and_refuses_rollback_to_them(operator, train, every,
                                                                                caplog):
    from agent_app.models import AgentState

    train(runs=3)
    v1, v2, v3 = rows()
    truncate(v1.path)
    Path(v2.path).unlink()
    with caplog.at_level(logging.ERROR):
        page = operator.get("/admin/agent_app/checkpoint/").content.decode()
        operator.get("/admin/agent_app/checkpoint/")
    assert "file damaged" in page and "file missing" in page
    assert {row.version: row.status for row in rows()} == {1: "damaged", 2: "missing", 3: "ok"}
    assert caplog.text.count("checkpoint v1 is damaged") == 1  # reported when found, not per page view

    for row, why in ((v1, "damaged"), (v2, "missing")):
        response = act(operator, "publish", row).content.decode()
        assert f"checkpoint v{row.version} cannot be loaded: its file is {why}" in response
    assert AgentState.load().model_version == 3


def test_ready_reports_a_damaged_checkpoint_as_a_detail(client, train, every, model_path):
    train(runs=2)
    truncate(rows()[0].path)
    response = client.get("/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["ready"] is True
    detail = body["checkpoints"]
    assert detail["ok"] is False and detail["usable"] == 1 and detail["model_path"] == "ok"
    assert [(p["version"], p["status"]) for p in detail["problems"]] == [(1, "damaged")]
    assert value(scrape(client), "rl_agent_checkpoints_unusable", pool="default") == 1

    model_path.write_bytes(b"not a checkpoint")
    detail = client.get("/ready").json()["checkpoints"]
    assert detail["model_path"].startswith("damaged: ")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "pickle"])
def test_a_damaged_file_is_found_without_torch_even_with_nothing_recorded(tmp_path, damage):
    import pickle

    from agent_app.rl import DQNAgent, routing_config, save_checkpoint
    from agent_app.services.checkpoint_health import fingerprint, inspect_file

    path = save_checkpoint(DQNAgent(routing_config(3, hidden_sizes=(8,))), tmp_path / "a.pth")
    size, digest = fingerprint(path)
    assert inspect_file(path).status == "ok"
    assert inspect_file(path, size=size, sha256=digest).by_digest
    if damage == "truncated":
        truncate(path)
    elif damage == "garbage":
        path.write_bytes(b"\x00" * size)
    else:
        path.write_bytes(pickle.dumps({"format": "rl-agent-service/dqn"}))
    assert inspect_file(path).status == "damaged"  # a row written before sizes were recorded
    assert inspect_file(path, size=size, sha256=digest).status == "damaged"
    assert inspect_file(tmp_path / "gone.pth").status == "missing"


def test_deleting_the_newest_never_puts_a_damaged_file_at_model_path(operator, train, every, model_path):
    train(runs=3)
    v1, v2, v3 = rows()
    truncate(v2.path)
    assert "Deleted 1 checkpoint" in act(operator, "delete_with_files", v3).content.decode()
    assert model_path.read_bytes() == Path(v1.path).read_bytes()
