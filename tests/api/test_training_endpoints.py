"""POST /train, POST /save_model and GET /stats through the same service functions as Celery."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.conf import settings

from agent_app.models import AgentState, Checkpoint
from agent_app.rl.checkpoint import load_checkpoint
from agent_app.services.lease import training_lease

pytestmark = pytest.mark.django_db


def test_train_answers_the_specification_fields_and_publishes_a_model(client, fill):
    fill(200)
    response = client.post("/train?batch_size=64&iterations=10")
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) >= {"loss", "epsilon", "buffer_size", "steps_done"}
    assert body["steps_done"] == 10 and body["buffer_size"] == 200
    assert body["epsilon"] == pytest.approx(0.995**10)
    assert body["model_version"] == 1
    state = AgentState.load()
    assert (state.steps_done, state.model_version) == (10, 1) and state.serving_weights


def test_training_continues_across_calls_and_syncs_the_target_every_100_steps(client, fill):
    fill(200)
    for _ in range(3):
        body = client.post("/train?batch_size=32&iterations=70").json()
    assert body["steps_done"] == 210
    assert body["target_syncs"] == 2
    assert body["model_version"] == 3


def test_too_few_experiences_is_a_clear_409(client, fill):
    fill(10)
    response = client.post("/train?batch_size=64")
    assert response.status_code == 409
    body = response.json()
    assert "holds 10 experiences" in body["detail"] and body["buffer_size"] == 10
    assert AgentState.load().steps_done == 0


def test_a_second_trainer_is_refused_at_once(client, fill):
    fill(100)
    with training_lease():
        response = client.post("/train?batch_size=64")
    assert response.status_code == 409
    assert "another trainer" in response.json()["detail"]
    assert AgentState.load().steps_done == 0


def test_save_model_writes_a_loadable_checkpoint(client, fill):
    fill(100)
    client.post("/train?batch_size=64&iterations=5")
    response = client.post("/save_model")
    assert response.status_code == 200
    body = response.json()
    assert body["path"] == str(settings.MODEL_PATH)
    assert (body["version"], body["steps_done"]) == (1, 5)
    agent = load_checkpoint(body["path"])
    assert agent.steps_done == 5
    assert Path(body["versioned_path"]).exists()
    assert Checkpoint.objects.filter(version=1, steps_done=5).exists()


def test_stats_has_the_specification_fields_and_more(client, fill):
    fill(100)
    client.post("/train?batch_size=64&iterations=3")
    client.post("/select_replica", {"replica_loads": [1, 2, 3], "queue_depth": 0, "recent_latency_ms": 1,
                                    "current_rps": 1, "success_rate": 1}, format="json")
    body = client.get("/stats").json()
    assert body["steps_done"] == 3 and body["buffer_size"] == 100
    assert body["epsilon"] == pytest.approx(0.995**3)
    assert body["model_path"] == str(settings.MODEL_PATH) and body["device"] == "cpu"
    assert isinstance(body["avg_recent_reward"], float)
    assert body["model_version"] == 1 and body["exploration"] is True
    assert sum(sum(per.values()) for per in body["selections"].values()) == 1
    assert body["backends"]["replay_store"] == settings.REPLAY_STORE


def test_health_and_readiness(anonymous):
    assert anonymous.get("/health").json() == {"status": "ok"}
    body = anonymous.get("/ready").json()
    assert body["ready"] is True
    assert body["model"]["ok"] is False and body["model"]["fallback_reason"] == "no trained model yet"


def test_train_without_a_batch_size_uses_the_admin_batch_size(client, fill):
    from agent_app.models import AgentConfig

    fill(40)
    assert client.post("/train?iterations=1").status_code == 409  # 40 < the default batch of 256
    AgentConfig.objects.update_or_create(pool="default", defaults={"batch_size": 32})
    response = client.post("/train?iterations=1")
    assert response.status_code == 200, response.content


def test_scheduled_runs_train_in_proportion_to_new_traffic(client, fill, settings):
    from tasks.training import scheduled_train_task

    def scheduled_steps() -> tuple[list[str], int]:
        queued = scheduled_train_task()["queued"]  # eager in the tests: trained by now
        return queued, AgentState.load().steps_done

    settings.TRAINING_BATCH_SIZE = 32
    fill(100)
    assert scheduled_steps() == (["default"], 50)  # 0.5 steps per new experience
    fill(10, seed=1)
    assert scheduled_steps() == (["default"], 55)
    assert scheduled_steps() == ([], 55)  # nothing new: no run queued
    settings.TRAINING_MAX_ITERATIONS = 20
    fill(100, seed=2)
    assert scheduled_steps() == (["default"], 75)


def test_a_run_whose_lease_is_taken_over_publishes_nothing_and_says_so(client, fill, monkeypatch):
    from agent_app.models import TrainingLease
    from agent_app.services import lease

    fill(100)
    real_renew = lease.Lease.renew

    def taken_over(self, *, force=False):
        TrainingLease.objects.update(holder="someone-else")
        return real_renew(self, force=True)

    monkeypatch.setattr(lease.Lease, "renew", taken_over)
    response = client.post("/train?batch_size=64&iterations=3")
    assert response.status_code == 409
    assert "taken over" in response.json()["detail"]
    assert AgentState.load().model_version == 0


def test_a_run_that_spends_its_time_budget_publishes_the_steps_it_took(client, fill, settings):
    # Under load a run would pass the task's soft time limit and be killed with nothing published.
    settings.TRAINING_RUN_BUDGET_SECONDS = 0.0
    fill(100)
    body = client.post("/train?batch_size=32&iterations=50").json()
    assert (body["iterations"], body["time_limited"], body["steps_done"]) == (1, True, 1)
    assert AgentState.load().steps_done == 1
    settings.TRAINING_RUN_BUDGET_SECONDS = 60.0
    body = client.post("/train?batch_size=32&iterations=5").json()
    assert (body["iterations"], body["time_limited"], body["steps_done"]) == (5, False, 6)


def test_manage_train_takes_every_step_asked_even_when_each_run_is_cut_short(fill, settings):
    from django.core.management import call_command

    settings.TRAINING_RUN_BUDGET_SECONDS = 0.0  # every run stops after one step
    fill(100)
    call_command("train", iterations=3, chunk=3, batch_size=32, stdout=io.StringIO())
    assert AgentState.load().steps_done == 3


def test_manage_train_reports_a_loss_that_is_not_finite_instead_of_crashing(fill, monkeypatch):
    from django.core.management import call_command

    from agent_app.rl.agent import DQNAgent

    train_step = DQNAgent.train_step
    monkeypatch.setattr(DQNAgent, "train_step", lambda agent: train_step(agent)._replace(loss=float("nan")))
    fill(100)
    out = io.StringIO()
    call_command("train", iterations=2, chunk=1, batch_size=32, stdout=out)
    assert "loss not finite" in out.getvalue()  # the progress line
    assert "trained 2 steps: steps_done=2 loss=not finite" in out.getvalue()
    assert AgentState.load().last_loss is None
