"""Beat's periodic tasks in the admin offer the worker's tasks by name and run them on the worker."""

from __future__ import annotations

from agent_app.services import dispatch


def test_the_task_form_offers_every_task_the_worker_runs(operator):
    page = operator.get("/admin/django_celery_beat/periodictask/add/").content.decode()
    for name in dispatch.WORKER_TASKS:
        assert f'<option value="{name}">' in page, name


def test_run_selected_tasks_sends_them_to_the_worker_by_name(operator, fill):
    from agent_app.models import AgentConfig, AgentState
    from agent_app.services.schedule import set_training_interval

    fill(100)
    AgentConfig.objects.update_or_create(pool="default", defaults={"batch_size": 32})
    task = set_training_interval(60, username="operator")  # beat's "train": tasks.training.scheduled_train
    response = operator.post("/admin/django_celery_beat/periodictask/",
                             {"action": "run_tasks", "_selected_action": [task.pk]}, follow=True)
    assert "1 task(s) queued for the worker." in response.content.decode()
    # The tests run tasks eagerly, so the scheduled run has trained by now (0.5 steps per experience).
    assert AgentState.load().steps_done == 50
