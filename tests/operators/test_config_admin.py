"""The agent's configuration in the admin: range-checked, effective at once everywhere, audited."""

from __future__ import annotations

import pytest

from tests.operators.conftest import save_config, select


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_epsilon_set_in_the_admin_is_what_stats_reports_and_select_replica_uses(client, operator):
    response = save_config(operator, epsilon=1.0, exploration_enabled=True)
    assert response.status_code == 200
    assert client.get("/stats").json()["epsilon"] == 1.0
    assert all(select(client)["policy"] == "explore" for _ in range(30))

    save_config(operator, epsilon_min=0.0, epsilon=0.0)
    assert client.get("/stats").json()["epsilon"] == 0.0
    assert not any(select(client)["exploration"] for _ in range(30))

    save_config(operator, epsilon=0.42, epsilon_min=0.01)
    assert client.get("/stats").json()["epsilon"] == 0.42


def test_exploration_switched_off_in_the_admin_overrides_the_environment(client, operator):
    save_config(operator, epsilon=1.0, exploration_enabled=False)
    bodies = [select(client) for _ in range(30)]
    assert not any(b["exploration"] for b in bodies)
    assert client.get("/stats").json()["exploration"] is False
    save_config(operator, exploration_enabled=None)  # back to RL_EXPLORATION (true in the tests)
    assert client.get("/stats").json()["exploration"] is True


def test_reward_weights_set_in_the_admin_score_the_next_report(client, operator):
    from tests.conftest import SEED_EXPERIENCE

    save_config(operator, failure_penalty=-5.0)
    body = client.post("/record_experience", {**SEED_EXPERIENCE, "success": False}, format="json").json()
    assert body["rewards"] == [-5.0]


def test_training_settings_set_in_the_admin_reach_the_next_training_run(client, operator):
    from agent_app.services.training import current_config

    save_config(operator, learning_rate=0.005, discount=0.5, batch_size=16, epsilon_decay=0.9)
    config = current_config()
    assert (config.lr, config.gamma, config.batch_size, config.epsilon_decay) == (0.005, 0.5, 16, 0.9)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("epsilon", 1.5, "Epsilon is a probability: between 0 and 1."),
        ("epsilon", -0.1, "Epsilon is a probability: between 0 and 1."),
        ("epsilon_min", 2, "The epsilon floor is a probability"),
        ("epsilon_decay", 0, "more than 0 and at most 1"),
        ("epsilon_decay", 1.01, "more than 0 and at most 1"),
        ("learning_rate", 0, "The learning rate must be more than 0"),
        ("discount", 1.0, "between 0 and 0.999"),
        ("batch_size", 0, "The batch size must be between 1 and"),
        ("batch_size", 100_000, "The batch size must be between 1 and"),
        ("training_interval_seconds", 0, "between 1 second and 1 day"),
        ("latency_scale_ms", 0, "The latency scale must be more than 0"),
        ("balance_weight", -1, "The balance weight must be between 0 and 100"),
        ("failure_penalty", -50, "rewards are clipped at -10"),
        ("failure_penalty", 1, "The failure penalty must be between -10 and 0"),
    ],
)
def test_out_of_range_values_are_refused_with_a_clear_message(client, operator, field, value, message):
    from agent_app.models import AgentState, ConfigChange

    before = client.get("/stats").json()
    changes = {field: value} if field == "epsilon" else {field: value, "epsilon": 0.5}  # with a valid one
    response = save_config(operator, **changes)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert field in errors, errors
    assert message in " ".join(errors[field])
    assert AgentState.load().epsilon == before["epsilon"]  # nothing was saved, not even valid fields
    assert not ConfigChange.objects.exists()


def test_epsilon_below_the_floor_is_refused(operator):
    response = save_config(operator, epsilon=0.001, epsilon_min=0.01)
    assert "below the floor" in " ".join(response.context["adminform"].form.errors["epsilon"])


def test_every_change_is_audited_with_who_when_and_the_old_and_new_values(operator):
    from agent_app.models import ConfigChange

    response = save_config(operator, epsilon=0.3, balance_weight=0.5, training_interval_seconds=20)
    assert any("epsilon 1.0 → 0.3" in m for m in messages_of(response))
    changes = {c.field: c for c in ConfigChange.objects.all()}
    assert set(changes) == {"epsilon", "balance_weight", "training_interval_seconds"}
    assert (changes["epsilon"].old_value, changes["epsilon"].new_value) == ("1.0", "0.3")
    assert (changes["balance_weight"].old_value, changes["balance_weight"].new_value) == ("default", "0.5")
    assert changes["training_interval_seconds"].new_value == "20"
    assert all(c.username == "operator" and c.changed_at for c in changes.values())

    save_config(operator)  # saved without changes: nothing to audit
    assert ConfigChange.objects.count() == 3
    page = operator.get("/admin/agent_app/configchange/").content.decode()
    assert "balance_weight" in page and "operator" in page


def test_the_audit_log_is_read_only(operator):
    from agent_app.models import ConfigChange

    save_config(operator, epsilon=0.3)
    change = ConfigChange.objects.get()
    assert operator.get("/admin/agent_app/configchange/add/").status_code == 403
    page = operator.get(f"/admin/agent_app/configchange/{change.pk}/change/")
    assert page.status_code == 200 and b'name="_save"' not in page.content
    operator.post(f"/admin/agent_app/configchange/{change.pk}/change/", {"new_value": "0.9"})
    assert operator.post(f"/admin/agent_app/configchange/{change.pk}/delete/").status_code == 403
    change.refresh_from_db()
    assert change.new_value == "0.3"


def test_a_form_opened_before_training_moved_epsilon_does_not_put_the_old_value_back(operator):
    from agent_app.models import AgentConfig, AgentState
    from tests.operators.conftest import config_form

    stale = config_form(operator)  # epsilon 1.0 as the operator saw it
    AgentState.objects.filter(pool="default").update(epsilon=0.8)  # the trainer decays it meanwhile
    stale["balance_weight"] = "0.2"
    operator.post(f"/admin/agent_app/agentconfig/{AgentConfig.load().pk}/change/", stale)
    assert AgentState.load().epsilon == 0.8
    assert AgentConfig.load().balance_weight == 0.2


def beat_starts(monkeypatch) -> None:
    """What beat does when it starts: re-apply CELERY_BEAT_SCHEDULE to the database."""
    from agent_app.beat import OperatorScheduler
    from rlagent_project.celery import app

    # The scheduler closes "old" connections, which would close the test's own transaction.
    monkeypatch.setattr("django_celery_beat.schedulers.close_old_connections", lambda: None)
    scheduler = OperatorScheduler(app=app, lazy=True)
    scheduler._finalize.cancel()  # no sync (and connection closing) when it is garbage-collected
    scheduler.setup_schedule()


def test_training_interval_edits_beat_and_survives_a_beat_restart(operator, settings, monkeypatch):
    from django_celery_beat.models import PeriodicTask

    save_config(operator, training_interval_seconds=15)
    task = PeriodicTask.objects.get(name="train")
    assert (task.interval.every, task.interval.period, task.expire_seconds) == (15, "seconds", 15)
    assert task.task == "tasks.training.scheduled_train"

    beat_starts(monkeypatch)
    task.refresh_from_db()
    assert task.interval.every == 15
    others = PeriodicTask.objects.get(name="sync-target-if-due")
    assert others.interval.every == settings.TRAINING_INTERVAL_SECONDS
    assert others.expire_seconds == settings.TRAINING_INTERVAL_SECONDS  # the settings' `expires` kept

    PeriodicTask.objects.filter(name="train").update(description="")  # no operator's mark: settings win
    beat_starts(monkeypatch)
    assert PeriodicTask.objects.get(name="train").interval.every == settings.TRAINING_INTERVAL_SECONDS
