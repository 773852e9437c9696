"""Who may see what: staff see the admin and the dashboard; anonymous users and non-staff are refused."""

from __future__ import annotations

import pytest

from tests.operators.conftest import logged_in

# "{config}" stands for the default pool's configuration row, whatever primary key it was given.
OPERATOR_PAGES = [
    "/admin/",
    "/admin/dashboard/",
    "/admin/agent_app/agentconfig/{config}/change/",
    "/admin/agent_app/pool/",
    "/admin/agent_app/pool/add/",
    "/admin/agent_app/metricsample/",
    "/admin/agent_app/configchange/",
    "/admin/agent_app/checkpoint/",
    "/admin/agent_app/experience/",
    "/admin/agent_app/apikey/",
    "/admin/agent_app/apikey/add/",
    "/admin/django_celery_beat/periodictask/",
    "/admin/django_celery_beat/intervalschedule/",
]


@pytest.mark.parametrize("path", OPERATOR_PAGES)
def test_staff_see_every_operator_page(operator, path):
    from agent_app.models import AgentConfig

    response = operator.get(path.format(config=AgentConfig.load("default").pk))
    assert response.status_code == 200, (path, response.status_code)


def test_the_configuration_of_a_pool_is_found_by_its_name(operator):
    from agent_app.models import AgentConfig

    response = operator.get("/admin/agent_app/agentconfig/pool/default/")
    assert response.status_code == 302
    assert response["Location"] == f"/admin/agent_app/agentconfig/{AgentConfig.load('default').pk}/change/"
    assert operator.get("/admin/agent_app/agentconfig/pool/nope/").status_code == 404


def test_admin_index_links_the_dashboard_and_the_beat_schedule(operator):
    page = operator.get("/admin/").content.decode()
    assert 'href="/admin/dashboard/"' in page
    assert "Periodic tasks" in page
    for model in ("Agent configuration", "Configuration changes", "Checkpoints", "Experiences", "API keys",
                  "Pools"):
        assert model in page, model


@pytest.mark.parametrize("path", ["/admin/", "/admin/dashboard/", "/admin/agent_app/agentconfig/1/change/",
                                  "/admin/agent_app/pool/"])
def test_anonymous_users_are_sent_to_the_login_page(anonymous, path):
    from django.test import Client

    response = Client(SERVER_NAME="localhost").get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


@pytest.mark.parametrize("path", ["/admin/", "/admin/dashboard/", "/admin/agent_app/checkpoint/"])
def test_users_who_are_not_staff_are_refused(plain_user, store, path):
    response = logged_in(plain_user).get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_dashboard_buttons_need_the_change_permission(viewer, store):
    assert viewer.get("/admin/dashboard/").status_code == 200
    assert viewer.post("/admin/dashboard/train").status_code == 403
    assert viewer.post("/admin/dashboard/checkpoint").status_code == 403


def test_anonymous_users_cannot_train_from_the_dashboard(anonymous):
    from django.test import Client

    response = Client(SERVER_NAME="localhost").post("/admin/dashboard/train")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


def test_metrics_are_refused_without_credentials(anonymous, plain_user):
    response = anonymous.get("/metrics")
    assert response.status_code == 401
    assert "API key" in response.content.decode()
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert logged_in(plain_user).get("/metrics").status_code == 401
    assert anonymous.get("/metrics", HTTP_AUTHORIZATION="Bearer rlk_not-a-key").status_code == 401


def test_metrics_answer_staff_an_api_key_or_everyone_when_open(anonymous, operator, api_key, settings):
    assert operator.get("/metrics").status_code == 200
    assert anonymous.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {api_key}").status_code == 200
    assert anonymous.get("/metrics", HTTP_X_API_KEY=api_key).status_code == 200
    settings.METRICS_OPEN = True
    assert anonymous.get("/metrics").status_code == 200
