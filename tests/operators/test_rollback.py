"""Checkpoints in the admin: publish an older one (roll back), delete one with its file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.operators.conftest import select


@pytest.fixture
def three_checkpoints(train, settings):
    """Model v1..v3, each run of 2 steps crossing a CHECKPOINT_EVERY_STEPS=2 boundary."""
    from agent_app.models import Checkpoint

    settings.CHECKPOINT_EVERY_STEPS = 2
    train(runs=3, iterations=2)
    checkpoints = list(Checkpoint.objects.order_by("version"))
    assert [c.version for c in checkpoints] == [1, 2, 3]
    return checkpoints


def act(operator, action: str, *checkpoints):
    return operator.post(
        "/admin/agent_app/checkpoint/",
        {"action": action, "_selected_action": [c.pk for c in checkpoints]},
        follow=True,
    )


def served_q_values(state: list[float]) -> np.ndarray:
    from agent_app.models import AgentState
    from agent_app.rl.inference import NumpyQNetwork, weights_from_bytes

    weights = weights_from_bytes(bytes(AgentState.load().serving_weights))
    return NumpyQNetwork(weights).q_values(np.asarray(state, dtype=np.float32))


def test_checkpoint_list_shows_version_steps_epsilon_loss_and_reward(operator, three_checkpoints):
    page = operator.get("/admin/agent_app/checkpoint/").content.decode()
    for column in ("Version", "Steps done", "Epsilon", "Loss", "Avg reward", "File on disk"):
        assert column in page, column
    assert "delete_selected" not in page  # replaced by the action that deletes the files too


def test_publishing_an_older_checkpoint_serves_it_as_a_new_model_version(client, operator, three_checkpoints):
    from agent_app.models import AgentState, ConfigChange
    from agent_app.rl.checkpoint import load_checkpoint

    first = three_checkpoints[0]
    before = AgentState.load()
    assert (before.model_version, before.steps_done) == (3, 6)

    response = act(operator, "publish", first)
    assert "Checkpoint v1 is now served as model v4 (was v3)" in response.content.decode()
    state = AgentState.load()
    assert state.model_version == 4
    assert state.steps_done == 6  # never backwards, though checkpoint v1 had 2 steps
    assert state.epsilon == before.epsilon  # the operator's exploration setting is kept
    probe = [5, 3, 7, 12, 0.28, 8.2, 0.98, 0.5, 0.4, 0.5]
    from agent_app.rl.state import normalize_state

    expected = load_checkpoint(first.path).numpy_network().q_values(normalize_state(np.asarray(probe), 3))
    np.testing.assert_allclose(served_q_values(normalize_state(np.asarray(probe), 3)), expected, rtol=1e-5)
    assert select(client)["model_version"] == 4  # the web worker serves the rolled-back model
    audit = ConfigChange.objects.get(field="serving model")
    assert (audit.old_value, audit.username) == ("v3", "operator")
    assert "checkpoint v1" in audit.new_value

    body = client.post("/train?batch_size=32&iterations=2").json()  # training continues from it
    assert (body["model_version"], body["steps_done"]) == (5, 8)


def test_publishing_needs_exactly_one_checkpoint(operator, three_checkpoints):
    from agent_app.models import AgentState

    response = act(operator, "publish", *three_checkpoints[:2])
    assert "Select exactly one checkpoint" in response.content.decode()
    assert AgentState.load().model_version == 3


def test_rollback_is_refused_while_a_trainer_holds_the_lease(operator, three_checkpoints):
    from agent_app.models import AgentState
    from agent_app.services.lease import training_lease

    with training_lease():
        response = act(operator, "publish", three_checkpoints[0])
    assert "Rollback refused" in response.content.decode()
    assert AgentState.load().model_version == 3


def test_a_checkpoint_whose_file_is_gone_is_refused_clearly(operator, three_checkpoints):
    from agent_app.models import AgentState

    Path(three_checkpoints[0].path).unlink()
    response = act(operator, "publish", three_checkpoints[0])
    assert "checkpoint v1 cannot be loaded" in response.content.decode()
    assert AgentState.load().model_version == 3


def test_deleting_checkpoints_removes_their_files_and_rows(operator, three_checkpoints, model_path):
    from agent_app.models import Checkpoint, ConfigChange
    from agent_app.rl.checkpoint import read_checkpoint

    newest = three_checkpoints[-1]
    assert read_checkpoint(model_path)["extra"]["model_version"] == 3
    response = act(operator, "delete_with_files", newest)
    assert "Deleted 1 checkpoint" in response.content.decode()
    assert not Path(newest.path).exists()
    assert not Checkpoint.objects.filter(pk=newest.pk).exists()
    # MODEL_PATH, what a fresh start loads first, no longer brings the deleted model back.
    assert read_checkpoint(model_path)["extra"]["model_version"] == 2
    assert ConfigChange.objects.filter(field="checkpoint deleted").count() == 1

    act(operator, "delete_with_files", *three_checkpoints[:2])
    assert not Checkpoint.objects.exists()
    assert not model_path.exists()
    assert not list(model_path.parent.glob("*.pth"))
