"""Pools in the admin and the dashboard: create, describe and delete pools; each pool's configuration,
figures, charts, buttons and admin rows are its own."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from agent_app.models import AgentConfig, AgentState, Checkpoint, ConfigChange, MetricSample, Pool
from agent_app.pools import pool_scope
from agent_app.replay import get_replay_store
from agent_app.services.lease import training_lease
from agent_app.services.pool_admin import create_pool
from tests.conftest import random_experience
from tests.operators.conftest import config_form


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


@pytest.fixture
def pools(client):
    """Pools "alpha" and "beta" beside the default one, with empty replay stores and batches of 32."""
    for name in ("alpha", "beta"):
        create_pool(name)
        get_replay_store(name).clear()
        AgentConfig.objects.update_or_create(pool=name, defaults={"batch_size": 32})
    yield client
    for name in ("alpha", "beta"):
        get_replay_store(name).clear()


def report(client, pool: str, count: int = 100, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    body = {"experiences": [random_experience(rng) for _ in range(count)], "pool": pool}
    assert client.post("/record_experience", body, format="json").status_code == 201


def train(client, pool: str, iterations: int) -> dict:
    response = client.post(f"/train?pool={pool}&batch_size=32&iterations={iterations}")
    assert response.status_code == 200, response.content
    return response.json()


# The pool admin


def test_a_pool_is_created_in_the_admin_and_its_pages_open(pools, operator):
    response = operator.post("/admin/agent_app/pool/add/", {"name": "llama-70b", "description": "us-east"},
                             follow=True)
    assert response.status_code == 200
    assert Pool.objects.get(name="llama-70b").description == "us-east"
    listing = operator.get("/admin/agent_app/pool/").content.decode()
    for name in ("default", "alpha", "beta", "llama-70b"):
        assert f">{name}</a>" in listing, name
    assert 'href="/admin/dashboard/?pool=llama-70b"' in listing
    assert operator.get("/admin/dashboard/?pool=llama-70b").status_code == 200
    assert pools.get("/stats?pool=llama-70b").status_code == 200  # the API serves it at once


def test_the_pool_list_shows_what_each_agent_has_done(pools, operator):
    report(pools, "alpha", 100)
    train(pools, "alpha", 3)
    listing = operator.get("/admin/agent_app/pool/").content.decode()
    row = re.search(r"<tr>.*?>alpha</a>.*?</tr>", listing, re.S)
    cells = re.findall(r'<td class="field-(\w+)[^"]*">(.*?)</td>', row.group(0))
    figures = dict(cells)
    assert (figures["model_version"], figures["steps_done"], figures["buffer_size"]) == ("v1", "3", "100")


@pytest.mark.parametrize("name", ["has space", "-dash-first", "x" * 64, "ünïcode"])
def test_an_invalid_pool_name_is_refused_with_the_rule(pools, operator, name):
    response = operator.post("/admin/agent_app/pool/add/", {"name": name})
    assert response.status_code == 200
    errors = " ".join(response.context["adminform"].form.errors["name"])
    assert "letters, digits" in errors or "at most 63" in errors, errors
    assert not Pool.objects.exclude(name__in=["default", "alpha", "beta"]).exists()


def test_a_pool_name_in_use_is_refused(pools, operator):
    response = operator.post("/admin/agent_app/pool/add/", {"name": "alpha"})
    assert "already exists" in " ".join(response.context["adminform"].form.errors["name"])


def test_the_description_is_edited_and_the_name_is_not(pools, operator):
    pool = Pool.objects.get(name="alpha")
    operator.post(f"/admin/agent_app/pool/{pool.pk}/change/", {"name": "renamed", "description": "A100s"})
    pool.refresh_from_db()
    assert (pool.name, pool.description) == ("alpha", "A100s")


def test_deleting_a_pool_in_the_admin_removes_it_and_its_rows(pools, operator, model_path):
    from django.contrib.admin.models import DELETION, LogEntry

    report(pools, "alpha", 100)
    report(pools, "beta", 10, seed=1)
    train(pools, "alpha", 2)
    saved = pools.post("/save_model?pool=alpha").json()
    pool = Pool.objects.get(name="alpha")

    confirm = operator.get(f"/admin/agent_app/pool/{pool.pk}/delete/").content.decode()
    assert "Are you sure" in confirm
    assert "Checkpoints, with their files: 1" in confirm  # the summary counts what goes with the pool
    assert "Experiences in the replay buffer: 100" in confirm

    response = operator.post(f"/admin/agent_app/pool/{pool.pk}/delete/", {"post": "yes"}, follow=True)
    assert any("was deleted successfully" in m for m in messages_of(response))
    assert not Pool.objects.filter(name="alpha").exists()
    for model in (AgentState, AgentConfig, Checkpoint, MetricSample):
        assert not model.objects.filter(pool="alpha").exists(), model
    assert get_replay_store("alpha").size() == 0
    assert not Path(saved["versioned_path"]).exists()
    assert ConfigChange.objects.get(pool="alpha", field="pool deleted").username == "operator"
    assert LogEntry.objects.filter(object_id=str(pool.pk), action_flag=DELETION).exists()
    assert get_replay_store("beta").size() == 10  # another pool keeps everything
    assert operator.get("/admin/dashboard/?pool=alpha").status_code == 404


def test_a_refused_deletion_is_shown_and_the_pool_stays(pools, operator):
    from django.contrib.admin.models import DELETION, LogEntry

    pool = Pool.objects.get(name="alpha")
    with pool_scope("alpha"), training_lease():  # a training run of alpha holds its lease
        response = operator.post(f"/admin/agent_app/pool/{pool.pk}/delete/", {"post": "yes"}, follow=True)
    shown = messages_of(response)
    assert any(m.startswith("Pool alpha not deleted:") for m in shown), shown
    assert not any("deleted successfully" in m for m in shown)
    assert Pool.objects.filter(name="alpha").exists()
    assert not LogEntry.objects.filter(action_flag=DELETION).exists()


def test_the_default_pool_offers_no_delete(pools, operator):
    default = Pool.objects.get(name="default")
    page = operator.get(f"/admin/agent_app/pool/{default.pk}/change/").content.decode()
    assert "deletelink" not in page
    assert operator.get(f"/admin/agent_app/pool/{default.pk}/delete/").status_code == 403
    assert operator.post(f"/admin/agent_app/pool/{default.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Pool.objects.filter(name="default").exists()
    alpha = Pool.objects.get(name="alpha")
    assert "deletelink" in operator.get(f"/admin/agent_app/pool/{alpha.pk}/change/").content.decode()


# One configuration per pool


def test_the_configuration_list_has_a_row_per_pool(pools, operator):
    AgentConfig.objects.filter(pool="beta").delete()  # a pool whose row was never made
    page = operator.get("/admin/agent_app/agentconfig/")
    assert page.status_code == 200
    assert sorted(AgentConfig.objects.values_list("pool", flat=True)) == ["alpha", "beta", "default"]
    assert page.context["cl"].result_count == 3


def test_with_a_single_pool_the_configuration_list_opens_its_form(operator):
    response = operator.get("/admin/agent_app/agentconfig/")
    assert response.status_code == 302
    assert response["Location"] == f"/admin/agent_app/agentconfig/{AgentConfig.load('default').pk}/change/"


def test_a_pools_configuration_is_saved_in_that_pool(pools, operator):
    AgentState.load("alpha")
    AgentState.objects.filter(pool="alpha").update(epsilon=0.9)
    url = f"/admin/agent_app/agentconfig/{AgentConfig.load('alpha').pk}/change/"
    page = operator.get(url)
    assert page.context["adminform"].form["epsilon"].value() == 0.9  # alpha's, not the default pool's
    assert "Agent configuration of pool alpha" in page.content.decode()

    changes = {"epsilon": "0.3", "balance_weight": "0.7"}
    response = operator.post(url, {**config_form(operator, "alpha"), **changes}, follow=True)
    assert any("epsilon 0.9 → 0.3" in m for m in messages_of(response))
    assert AgentState.load("alpha").epsilon == 0.3 and AgentState.load("default").epsilon == 1.0
    assert AgentConfig.load("alpha").balance_weight == 0.7
    assert AgentConfig.load("default").balance_weight is None
    assert set(ConfigChange.objects.values_list("pool", "field")) == {("alpha", "epsilon"),
                                                                      ("alpha", "balance_weight")}
    assert pools.get("/stats?pool=alpha").json()["epsilon"] == 0.3
    assert pools.get("/stats").json()["epsilon"] == 1.0
    assert config_form(operator)["epsilon"] == "1.0"  # the default pool's form is untouched


# The dashboard's pool


def test_the_dashboard_shows_the_chosen_pools_figures_and_history(pools, operator):
    report(pools, "alpha", 100)
    for _ in range(2):
        train(pools, "alpha", 3)
    alpha = operator.get("/admin/dashboard/?pool=alpha").content.decode()
    assert 'id="figure-model-version">v2<' in alpha and 'id="figure-steps">6<' in alpha
    assert 'id="figure-buffer">100<' in alpha
    assert "History: 2 samples" in alpha and 'aria-label="Training loss">' in alpha
    assert '<option value="alpha" selected>' in alpha and '<option value="beta">' in alpha
    assert '<input type="hidden" name="pool" value="alpha">' in alpha
    assert "?partial=1&pool=alpha" in alpha
    assert 'href="/admin/agent_app/checkpoint/?pool=alpha"' in alpha

    default = operator.get("/admin/dashboard/").content.decode()
    assert 'id="figure-model-version">v0<' in default and 'id="figure-buffer">0<' in default
    assert "History: 0 samples" in default and 'aria-label="Training loss: no data yet"' in default
    assert '<option value="default" selected>' in default
    partial = operator.get("/admin/dashboard/?partial=1&pool=alpha").content.decode()
    assert 'id="figure-steps">6<' in partial and "<html" not in partial


def test_the_pool_selector_appears_only_with_several_pools(operator):
    page = operator.get("/admin/dashboard/").content.decode()
    assert 'id="pool-select"' not in page
    assert 'id="figure-model-version">v0<' in operator.get("/admin/dashboard/?pool=default").content.decode()


@pytest.mark.parametrize("query", ["?pool=nope", "?pool=has%20space", "?partial=1&pool=nope"])
def test_an_unknown_pool_on_the_dashboard_is_a_404(pools, operator, query):
    assert operator.get(f"/admin/dashboard/{query}").status_code == 404
    assert not Pool.objects.filter(name="nope").exists()


def test_train_now_trains_the_chosen_pool_only(pools, operator):
    report(pools, "alpha", 100)
    report(pools, "beta", 100, seed=1)
    report(pools, "default", 300, seed=2)
    response = operator.post("/admin/dashboard/train", {"iterations": "4", "pool": "alpha"}, follow=True)
    assert response.redirect_chain[-1][0] == "/admin/dashboard/?pool=alpha"
    trained = "Trained 4 step(s) of pool alpha: model v1, 4 steps"
    assert any(m.startswith(trained) for m in messages_of(response))
    steps = {name: AgentState.load(name).steps_done for name in ("alpha", "beta", "default")}
    assert steps == {"alpha": 4, "beta": 0, "default": 0}
    assert MetricSample.objects.filter(pool="alpha").count() == 1 and MetricSample.objects.count() == 1
    assert operator.post("/admin/dashboard/train", {"iterations": "4", "pool": "nope"}).status_code == 404


def test_checkpoint_now_saves_the_chosen_pools_model(pools, operator):
    report(pools, "alpha", 100)
    train(pools, "alpha", 2)
    response = operator.post("/admin/dashboard/checkpoint", {"pool": "alpha"}, follow=True)
    assert response.redirect_chain[-1][0] == "/admin/dashboard/?pool=alpha"
    assert any(m.startswith("Checkpoint v1 of pool alpha written") for m in messages_of(response))
    assert list(Checkpoint.objects.values_list("pool", flat=True)) == ["alpha"]


# Per-pool rows in the admin


def test_admin_lists_show_and_filter_each_rows_pool(pools, operator):
    report(pools, "alpha", 100)
    report(pools, "beta", 100, seed=1)
    train(pools, "alpha", 2)
    train(pools, "beta", 2)
    for name in ("alpha", "beta"):
        pools.post(f"/save_model?pool={name}")
    for page in ("checkpoint", "metricsample"):
        listing = operator.get(f"/admin/agent_app/{page}/")
        assert listing.context["cl"].result_count == 2
        assert 'class="field-pool">alpha<' in listing.content.decode()
        chosen = operator.get(f"/admin/agent_app/{page}/?pool=beta").context["cl"]
        assert [row.pool for row in chosen.result_list] == ["beta"]
    operator.post(f"/admin/agent_app/agentconfig/{AgentConfig.load('beta').pk}/change/",
                  {**config_form(operator, "beta"), "epsilon": "0.5"})
    changes = operator.get("/admin/agent_app/configchange/?pool=beta").context["cl"]
    assert [(c.pool, c.field) for c in changes.result_list] == [("beta", "epsilon")]
    assert operator.get("/admin/agent_app/configchange/?pool=alpha").context["cl"].result_count == 0


def test_the_experiences_page_shows_the_chosen_pools_store(pools, operator, settings):
    report(pools, "alpha", 30)
    report(pools, "default", 5, seed=1)
    if settings.REPLAY_STORE == "database":
        assert operator.get("/admin/agent_app/experience/?pool=alpha").context["cl"].result_count == 30
        assert operator.get("/admin/agent_app/experience/?pool=default").context["cl"].result_count == 5
        return
    alpha = operator.get("/admin/agent_app/experience/?pool=alpha").content.decode()
    assert 'id="store-size">30<' in alpha and '<option value="alpha" selected>' in alpha
    assert 'id="store-size">5<' in operator.get("/admin/agent_app/experience/").content.decode()
    assert operator.get("/admin/agent_app/experience/?pool=nope").status_code == 404


def test_a_rollback_in_the_admin_publishes_in_the_checkpoints_pool(pools, operator):
    report(pools, "alpha", 100)
    train(pools, "alpha", 2)
    pools.post("/save_model?pool=alpha")
    train(pools, "alpha", 2)
    checkpoint = Checkpoint.objects.get(pool="alpha")
    response = operator.post("/admin/agent_app/checkpoint/",
                             {"action": "publish", "_selected_action": [checkpoint.pk]}, follow=True)
    assert "Checkpoint v1 of pool alpha is now served as model v3 (was v2)" in response.content.decode()
    assert AgentState.load("alpha").model_version == 3 and AgentState.load("default").model_version == 0
    assert ConfigChange.objects.get(field="serving model").pool == "alpha"
