"""Replica pools: each pool its own agent, buffer, lease, checkpoints and history; a request without
a pool is the default pool's, exactly as before; an unknown pool is a 404 naming it."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from agent_app.models import (
    AgentConfig,
    AgentState,
    Checkpoint,
    ConfigChange,
    Experience,
    GateBlock,
    Pool,
    ReplicaLatencyBin,
    ReplicaOutcome,
)
from agent_app.pools import pool_scope
from agent_app.replay import get_replay_store
from agent_app.services.lease import training_lease
from agent_app.services.pool_admin import create_pool, delete_pool
from agent_app.serving import policy_cache
from tests.conftest import SEED_EXPERIENCE, SEED_SELECT, random_experience


@pytest.fixture
def pools(client):
    """Pools "alpha" and "beta", with empty replay stores."""
    for name in ("alpha", "beta"):
        create_pool(name)
        get_replay_store(name).clear()
    yield client
    for name in ("alpha", "beta"):
        get_replay_store(name).clear()


def report(client, count: int, pool: str | None = None, seed: int = 0):
    rng = np.random.default_rng(seed)
    body = {"experiences": [random_experience(rng) for _ in range(count)]}
    if pool:
        body["pool"] = pool
    return client.post("/record_experience", body, format="json")


def test_a_request_without_a_pool_is_the_default_pools(pools):
    assert report(pools, 40).status_code == 201
    assert get_replay_store("default").size() == 40
    assert get_replay_store("alpha").size() == 0
    stats = pools.get("/stats").json()
    assert stats["pool"] == "default" and stats["buffer_size"] == 40


def test_experiences_go_to_their_pools_buffer_only(pools):
    assert report(pools, 30, "alpha").status_code == 201
    single = pools.post("/record_experience", {**SEED_EXPERIENCE, "pool": "beta"}, format="json")
    assert single.status_code == 201, single.content
    assert [get_replay_store(p).size() for p in ("default", "alpha", "beta")] == [0, 30, 1]
    assert pools.get("/stats?pool=alpha").json()["buffer_size"] == 30
    assert pools.get("/stats?pool=beta").json()["buffer_size"] == 1


def test_training_one_pool_moves_nothing_of_another(pools):
    report(pools, 200, "alpha")
    report(pools, 200, "beta", seed=1)
    before = pools.get("/stats?pool=beta").json()
    trained = pools.post("/train?pool=alpha&iterations=20&batch_size=32")
    assert trained.status_code == 200, trained.content
    alpha, beta = pools.get("/stats?pool=alpha").json(), pools.get("/stats?pool=beta").json()
    assert alpha["steps_done"] == 20 and alpha["model_version"] == 1 and alpha["epsilon"] < 1.0
    for field in ("steps_done", "model_version", "epsilon", "buffer_size"):
        assert beta[field] == before[field], field
    assert pools.get("/model/weights?pool=alpha").status_code == 200
    assert pools.get("/model/weights?pool=beta").status_code == 404  # nothing published for beta
    assert pools.get("/model/weights").status_code == 404  # nor for the default pool


def test_each_pool_routes_with_its_own_model(pools, settings):
    settings.RL_MIN_TRAINING_STEPS = 0  # 20 steps serve; and no exploration, so the model decides
    AgentConfig.objects.update_or_create(pool="alpha", defaults={"exploration_enabled": False})
    report(pools, 200, "alpha")
    pools.post("/train?pool=alpha&iterations=20&batch_size=32")
    alpha = pools.post("/select_replica", {**SEED_SELECT, "pool": "alpha"}, format="json").json()
    default = pools.post("/select_replica", SEED_SELECT, format="json").json()
    assert (alpha["model_version"], alpha["policy"]) == (1, "dqn")
    assert default["model_version"] == 0 and default["policy"] != "dqn"


@pytest.mark.parametrize("method, path, body", [
    ("post", "/select_replica", {**SEED_SELECT, "pool": "nope"}),
    ("post", "/record_experience", {**SEED_EXPERIENCE, "pool": "nope"}),
    ("post", "/record_experience", {"experiences": [SEED_EXPERIENCE], "pool": "nope"}),
    ("post", "/train?pool=nope", None),
    ("post", "/save_model?pool=nope", None),
    ("get", "/stats?pool=nope", None),
    ("get", "/ab_results?pool=nope", None),
    ("get", "/model/weights?pool=nope", None),
])
def test_an_unknown_pool_is_a_404_naming_it_and_nothing_is_stored(pools, method, path, body):
    response = getattr(pools, method)(path, body, format="json")
    assert response.status_code == 404, response.content
    assert "'nope'" in response.json()["detail"] and response.json()["pool"] == "nope"
    assert not Pool.objects.filter(name="nope").exists()
    assert not Experience.objects.filter(pool="nope").exists()
    assert get_replay_store("nope").size() == 0


@pytest.mark.parametrize("name", ["", "-starts-with-dash", "has space", "x" * 64, 42, "ünïcode"])
def test_an_invalid_pool_name_is_a_400_naming_the_field(pools, name):
    response = pools.post("/select_replica", {**SEED_SELECT, "pool": name}, format="json")
    assert response.status_code == 400
    assert "pool" in response.json()


@pytest.mark.parametrize("name", ["-starts-with-dash", "has space", "x" * 64])
def test_an_invalid_pool_parameter_is_a_400_naming_it(pools, name):
    for response in (pools.get("/stats", {"pool": name}), pools.post(f"/train?pool={name}")):
        assert response.status_code == 400 and "pool" in response.json()


def test_a_batch_reports_to_one_pool(pools):
    items = [SEED_EXPERIENCE, {**SEED_EXPERIENCE, "pool": "beta"}]
    response = pools.post("/record_experience", {"experiences": items, "pool": "alpha"}, format="json")
    assert response.status_code == 400
    assert "one batch per pool" in str(response.json()["experiences"])
    assert get_replay_store("alpha").size() == 0 and get_replay_store("beta").size() == 0


def test_pools_are_created_on_first_use_only_when_asked(pools, settings):
    settings.POOLS_AUTO_CREATE = True
    response = pools.post("/select_replica", {**SEED_SELECT, "pool": "gamma"}, format="json")
    assert response.status_code == 200
    assert Pool.objects.filter(name="gamma").exists()


def test_each_pool_trains_under_its_own_lease(pools):
    report(pools, 100, "alpha")
    report(pools, 100, "beta", seed=1)
    with pool_scope("alpha"), training_lease():
        assert pools.post("/train?pool=alpha&batch_size=32").status_code == 409
        assert pools.post("/train?pool=beta&batch_size=32").status_code == 200  # not blocked


def test_beat_queues_a_run_for_each_pool_with_new_experience_only(pools, settings):
    from tasks.training import scheduled_train_task

    settings.TRAINING_BATCH_SIZE = 32
    report(pools, 60, "alpha")
    report(pools, 60, seed=1)
    assert sorted(scheduled_train_task()["queued"]) == ["alpha", "default"]
    assert scheduled_train_task()["queued"] == []  # trained through their newest experience
    report(pools, 5, "beta", seed=2)
    assert scheduled_train_task()["queued"] == ["beta"]  # too few for a batch: refused, nothing lost
    assert AgentState.load("beta").steps_done == 0
    assert AgentState.load("alpha").steps_done > 0 and AgentState.load("default").steps_done > 0


def test_deleting_a_pool_removes_its_data_and_frees_its_name(pools, model_path):
    report(pools, 200, "alpha")
    pools.post("/train?pool=alpha&iterations=5&batch_size=32")
    saved = pools.post("/save_model?pool=alpha").json()
    assert Path(saved["versioned_path"]).is_file()
    assert Path(saved["path"]).parent == model_path.parent / "pools" / "alpha"
    report(pools, 10, "beta")
    pools.post("/select_replica", {**SEED_SELECT, "pool": "alpha"}, format="json")
    assert ReplicaLatencyBin.objects.filter(pool="alpha").exists()  # the reports' latencies, flushed
    for pool in ("alpha", "beta"):  # the routing gate's evidence
        GateBlock.objects.create(pool=pool, seconds=60, block=1, arm="model", count=1, reward_sum=0.5)

    delete_pool(name="alpha", username="ops")
    assert not Pool.objects.filter(name="alpha").exists()
    assert get_replay_store("alpha").size() == 0
    assert not Checkpoint.objects.filter(pool="alpha").exists()
    assert not AgentState.objects.filter(pool="alpha").exists()
    assert not ReplicaOutcome.objects.filter(pool="alpha").exists()
    assert not ReplicaLatencyBin.objects.filter(pool="alpha").exists()
    assert ReplicaLatencyBin.objects.filter(pool="beta").exists()
    assert list(GateBlock.objects.values_list("pool", flat=True)) == ["beta"]
    assert not Path(saved["versioned_path"]).exists()
    assert ConfigChange.objects.filter(pool="alpha", field="pool deleted").exists()
    assert get_replay_store("beta").size() == 10  # another pool keeps everything
    assert pools.get("/stats?pool=alpha").status_code == 404

    create_pool("alpha")  # the name is free again, for an empty pool
    fresh = pools.get("/stats?pool=alpha").json()
    assert (fresh["buffer_size"], fresh["steps_done"], fresh["model_version"]) == (0, 0, 0)


def test_the_default_pool_cannot_be_deleted(pools):
    with pytest.raises(ValueError, match="default pool"):
        delete_pool(name="default")
    with pytest.raises(ValueError, match="does not exist"):
        delete_pool(name="nope")


def test_pools_are_created_and_deleted_from_the_command_line(pools, capsys):
    call_command("create_pool", "llama-70b", "--description", "Llama 3 70B, us-east")
    assert Pool.objects.get(name="llama-70b").description == "Llama 3 70B, us-east"
    call_command("create_pool", "llama-70b")
    assert "exists already" in capsys.readouterr().out
    with pytest.raises(CommandError, match="invalid pool name"):
        call_command("create_pool", "bad name")
    call_command("delete_pool", "llama-70b")
    assert not Pool.objects.filter(name="llama-70b").exists()
    with pytest.raises(CommandError, match="cannot be deleted"):
        call_command("delete_pool", "default")


def test_a_web_worker_serves_at_most_pools_served_max_pools(pools, settings):
    settings.POOLS_SERVED_MAX = 1  # besides the default pool
    for name in ("alpha", "beta"):
        assert pools.post("/select_replica", {**SEED_SELECT, "pool": name}, format="json").status_code == 200
    assert set(policy_cache.snapshots) == {"default", "beta"}  # alpha, least recently used, dropped
    assert pools.post("/select_replica", {**SEED_SELECT, "pool": "alpha"}, format="json").status_code == 200
    assert "alpha" in policy_cache.snapshots  # loaded again when asked for


def test_two_pools_replicas_of_the_same_name_hold_separate_prefixes(pools, settings):
    settings.RL_NETWORK = "per_replica"
    from agent_app.prefix_index import get_prefix_index

    hashes = [uuid.uuid4().hex[:16] for _ in range(3)]
    cluster = [{"name": "gpu-0", "load": 1}, {"name": "gpu-1", "load": 1}]
    body = {"replicas": cluster, "request": {"prefix_hashes": hashes}, "queue_depth": 1,
            "recent_latency_ms": 100, "current_rps": 1, "success_rate": 1}
    chosen = pools.post("/select_replica", {**body, "pool": "alpha"}, format="json").json()["replica_name"]
    index = get_prefix_index()
    index.flush()
    assert index.match([f"alpha/{chosen}"], hashes) == [3]
    assert index.match([chosen], hashes) == [0]  # the default pool's replica of that name
    beta = pools.post("/select_replica", {**body, "pool": "beta"}, format="json").json()
    assert beta["prefix_match"]["blocks"] == 0


def test_an_operator_change_to_one_pool_leaves_the_others_alone(pools):
    from agent_app.services.operator_config import apply_changes

    with pool_scope("alpha"):
        apply_changes(username="ops", values={"epsilon": 0.3, "learning_rate": 0.01})
    assert AgentState.load("alpha").epsilon == 0.3
    assert AgentState.load("beta").epsilon == 1.0 and AgentState.load("default").epsilon == 1.0
    assert AgentConfig.load("alpha").learning_rate == 0.01
    assert AgentConfig.load("beta").learning_rate is None
    assert set(ConfigChange.objects.filter(username="ops").values_list("pool", flat=True)) == {"alpha"}


def test_a_damaged_checkpoint_of_one_pool_does_not_touch_another(pools):
    from tasks.training import restore_on_start

    report(pools, 200, "alpha")
    report(pools, 200, "beta", seed=1)
    for name in ("alpha", "beta"):
        pools.post(f"/train?pool={name}&iterations=5&batch_size=32")
        pools.post(f"/save_model?pool={name}")
    alpha_file = Path(pools.get("/stats?pool=alpha").json()["model_path"])
    alpha_file.write_bytes(b"not a checkpoint")
    beta_weights = pools.get("/model/weights?pool=beta")
    AgentState.objects.update(model_version=0, serving_weights=None, trainer_state=None)
    restore_on_start()  # a worker starting on a reset database: each pool restores its own files
    assert AgentState.load("beta").model_version == 1 and AgentState.load("alpha").model_version == 1
    assert pools.get("/model/weights?pool=beta").content == beta_weights.content


def test_a_worker_refreshes_only_the_pools_whose_model_changed(pools, monkeypatch):
    report(pools, 200, "alpha")
    for name in ("alpha", "beta"):
        pools.post("/select_replica", {**SEED_SELECT, "pool": name}, format="json")  # both served
    loaded = []
    real = type(policy_cache)._load_network
    monkeypatch.setattr(type(policy_cache), "_load_network",
                        lambda self, pool: loaded.append(pool) or real(self, pool))
    pools.post("/train?pool=alpha&iterations=5&batch_size=32")
    policy_cache.refresh()
    policy_cache.refresh()
    assert loaded == ["alpha"]


def test_with_a_fixed_number_of_steps_a_run_beat_trains_every_pool_that_holds_experience(pools, settings):
    from tasks.training import scheduled_train_task

    settings.TRAINING_BATCH_SIZE, settings.TRAINING_STEPS_PER_EXPERIENCE = 32, 0
    report(pools, 60, "alpha")
    assert scheduled_train_task()["queued"] == ["alpha"]
    assert scheduled_train_task()["queued"] == ["alpha"]  # nothing new, trained again all the same
    assert AgentState.load("alpha").steps_done == 2 * settings.TRAINING_ITERATIONS


def test_an_empty_pool_parameter_is_refused_not_read_as_absent(pools):
    answers = (pools.get("/stats?pool="), pools.post("/save_model?pool="), pools.get("/ab_results?pool="))
    for response in answers:
        assert response.status_code == 400 and "pool" in response.json()
