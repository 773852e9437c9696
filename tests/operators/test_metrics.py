"""/metrics: parses as Prometheus text and holds every agent metric with sane values after traffic,
one sample per pool for what each pool has of its own."""

from __future__ import annotations

import math

import numpy as np
import pytest
import redis
from django.conf import settings
from prometheus_client.parser import text_string_to_metric_families

from agent_app.pools import pool_names
from agent_app.replay import get_replay_store
from agent_app.services.pool_admin import create_pool
from tests.conftest import random_experience
from tests.operators.conftest import select

AGENT_GAUGES = (
    "rl_agent_epsilon", "rl_agent_steps_done", "rl_agent_replay_buffer_size", "rl_agent_last_loss",
    "rl_agent_avg_recent_reward", "rl_agent_model_version", "rl_agent_checkpoints",
)
POOL_GAUGES = (*AGENT_GAUGES, "rl_agent_target_syncs", "rl_agent_exploration_enabled",
               "rl_agent_checkpoints_unusable")


# Per-pool gauges and the /stats field of the same pool they must agree with.
STATS_FIELDS = {
    "rl_agent_replay_buffer_size": "buffer_size", "rl_agent_steps_done": "steps_done",
    "rl_agent_model_version": "model_version", "rl_agent_epsilon": "epsilon",
    "rl_agent_avg_recent_reward": "avg_recent_reward",
}


def scrape(client) -> dict[str, dict[tuple, float]]:
    """Family name -> {(sample name, sorted labels): value}."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    families = {}
    for family in text_string_to_metric_families(response.content.decode()):
        families[family.name] = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}
    return families


def value(families, family: str, sample: str | None = None, **labels) -> float:
    key = (sample or family, tuple(sorted(labels.items())))
    return families[family].get(key, 0.0)


def pooled(families, gauge: str, pool: str = "default") -> float:
    """A per-pool gauge's sample for `pool` (KeyError when it has none)."""
    return families[gauge][(gauge, (("pool", pool),))]


def total(families, family: str, sample: str, **labels) -> float:
    """Sum over the samples matching `labels` (a partial label set)."""
    return sum(v for (name, lbls), v in families.get(family, {}).items()
               if name == sample and all(dict(lbls).get(k) == w for k, w in labels.items()))


def test_metrics_hold_every_agent_metric_with_sane_values_after_traffic(client, settings):
    settings.CHECKPOINT_EVERY_STEPS = 2
    before = scrape(client)
    decisions = [select(client) for _ in range(25)]
    rng = np.random.default_rng(1)
    batch = [random_experience(rng) for _ in range(120)]
    assert client.post("/record_experience", {"experiences": batch}, format="json").status_code == 201
    bad = [random_experience(rng) for _ in range(3)]
    bad[1]["latency_ms"] = "slow"
    assert client.post("/record_experience", {"experiences": bad}, format="json").status_code == 400
    trained = client.post("/train?batch_size=32&iterations=2").json()
    after = scrape(client)
    stats = client.get("/stats").json()

    delta = total(after, "rl_agent_decisions", "rl_agent_decisions_total") - total(
        before, "rl_agent_decisions", "rl_agent_decisions_total")
    assert delta == 25
    for policy in ("explore", "least_loaded"):
        counted = total(after, "rl_agent_decisions", "rl_agent_decisions_total", policy=policy) - total(
            before, "rl_agent_decisions", "rl_agent_decisions_total", policy=policy)
        assert counted == sum(d["policy"] == policy for d in decisions), policy
    by_replica = {d["replica_name"] for d in decisions}
    for name in by_replica:
        assert total(after, "rl_agent_decisions", "rl_agent_decisions_total", replica=name) >= 1

    recorded = "rl_agent_experiences_recorded_total"
    rejected = "rl_agent_experiences_rejected_total"
    assert value(after, "rl_agent_experiences_recorded", recorded) - value(
        before, "rl_agent_experiences_recorded", recorded) == 120
    assert value(after, "rl_agent_experiences_rejected", rejected) - value(
        before, "rl_agent_experiences_rejected", rejected) == 3

    for name in AGENT_GAUGES:
        assert name in after, name
    assert pooled(after, "rl_agent_epsilon") == pytest.approx(stats["epsilon"])
    assert 0 < pooled(after, "rl_agent_epsilon") <= 1
    assert pooled(after, "rl_agent_steps_done") == stats["steps_done"] == 2
    assert pooled(after, "rl_agent_model_version") == stats["model_version"] == trained["model_version"] == 1
    assert pooled(after, "rl_agent_replay_buffer_size") == stats["buffer_size"] == 120
    assert pooled(after, "rl_agent_avg_recent_reward") == pytest.approx(stats["avg_recent_reward"], abs=1e-5)
    assert math.isfinite(pooled(after, "rl_agent_last_loss")) and pooled(after, "rl_agent_last_loss") >= 0
    assert pooled(after, "rl_agent_exploration_enabled") == 1

    runs = "rl_agent_training_run_duration_seconds"
    assert value(after, runs, f"{runs}_count") - value(before, runs, f"{runs}_count") == 1
    assert value(after, runs, f"{runs}_sum") > value(before, runs, f"{runs}_sum")
    assert value(after, runs, f"{runs}_bucket", le="+Inf") == value(after, runs, f"{runs}_count")
    assert pooled(after, "rl_agent_checkpoints") == 1
    written = "rl_agent_checkpoints_written_total"
    assert value(after, "rl_agent_checkpoints_written", written) - value(
        before, "rl_agent_checkpoints_written", written) == 1

    assert any(name.startswith("django_http_requests") for name in after)  # django-prometheus's own


def test_metrics_before_any_training_show_unknown_values_as_nan(client):
    families = scrape(client)
    assert pooled(families, "rl_agent_model_version") == 0
    assert math.isnan(pooled(families, "rl_agent_last_loss"))
    assert math.isnan(pooled(families, "rl_agent_avg_recent_reward"))


@pytest.fixture
def beta(client):
    """A second pool, "beta", with an empty replay store."""
    create_pool("beta")
    get_replay_store("beta").clear()
    yield "beta"
    get_replay_store("beta").clear()


def report(client, count: int, pool: str | None = None, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    body: dict = {"experiences": [random_experience(rng) for _ in range(count)]}
    if pool:
        body["pool"] = pool
    response = client.post("/record_experience", body, format="json")
    assert response.status_code == 201, response.content


def test_each_pool_has_its_own_sample_of_every_pool_gauge(client, beta, settings):
    from agent_app.models import AgentConfig, Checkpoint

    settings.CHECKPOINT_EVERY_STEPS = 3
    decided = "rl_agent_decisions_total"
    before = total(scrape(client), "rl_agent_decisions", decided, pool=beta)
    report(client, 40)
    report(client, 150, beta, seed=1)
    select(client, pool=beta)
    trained = client.post(f"/train?pool={beta}&batch_size=32&iterations=3")
    assert trained.status_code == 200, trained.content
    AgentConfig.objects.update_or_create(pool=beta, defaults={"exploration_enabled": False})
    Checkpoint.objects.filter(pool=beta).update(status=Checkpoint.MISSING)
    families = scrape(client)

    for name in POOL_GAUGES:  # exactly one sample per pool
        assert sorted(dict(labels)["pool"] for _, labels in families[name]) == [beta, "default"], name
    for pool in ("default", beta):  # the figures /stats shows for the same pool
        stats = client.get(f"/stats?pool={pool}").json()
        for gauge, field in STATS_FIELDS.items():
            assert pooled(families, gauge, pool) == pytest.approx(stats[field], abs=1e-5), (pool, gauge)

    def both(gauge: str) -> list[float]:
        return [pooled(families, gauge, pool) for pool in ("default", beta)]

    assert both("rl_agent_replay_buffer_size") == [40, 150]
    assert both("rl_agent_model_version") == [0, trained.json()["model_version"]] == [0, 1]
    assert both("rl_agent_steps_done") == [0, 3]
    assert both("rl_agent_epsilon")[0] == 1.0 > both("rl_agent_epsilon")[1]
    loss = both("rl_agent_last_loss")
    assert math.isnan(loss[0]) and loss[1] >= 0
    assert both("rl_agent_exploration_enabled") == [1, 0]
    assert both("rl_agent_checkpoints") == [0, 1]
    assert both("rl_agent_checkpoints_unusable") == [0, 1]
    assert total(families, "rl_agent_decisions", decided, pool=beta) - before == 1


def test_a_pool_whose_replay_store_does_not_answer_has_nan_for_it_alone(client, beta, monkeypatch, caplog):
    if settings.REPLAY_STORE != "redis":
        pytest.skip("the replay store is the database (TEST_BACKENDS=embedded)")
    from agent_app.replay.redis_store import RedisReplayStore

    report(client, 40)
    report(client, 30, beta, seed=1)
    # Pool beta's store alone talks to a port where nothing listens; the default pool's Redis answers.
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, socket_timeout=0.2)
    with monkeypatch.context() as patch:  # undone before the fixture empties the store
        patch.setattr(get_replay_store(beta), "_call",
                      lambda method, *args: RedisReplayStore._call(getattr(dead, method.__name__), *args))
        families = scrape(client)
    assert math.isnan(pooled(families, "rl_agent_replay_buffer_size", beta))
    assert math.isnan(pooled(families, "rl_agent_avg_recent_reward", beta))
    assert pooled(families, "rl_agent_model_version", beta) == 0  # the pool's other figures still export
    assert pooled(families, "rl_agent_replay_buffer_size") == 40
    assert math.isfinite(pooled(families, "rl_agent_avg_recent_reward"))
    assert "replay store of pool(s) beta" in caplog.text


def test_the_state_is_read_in_the_same_queries_whatever_the_number_of_pools(client, beta):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from agent_app.metrics import AgentStateCollector

    def queries() -> int:
        """Queries of the state (the database replay store of the embedded mode reads each pool's own
        experiences, as its Redis store makes a call per pool)."""
        with CaptureQueriesContext(connection) as captured:
            families = list(AgentStateCollector().collect())
        assert len(families[0].samples) == len(pool_names())
        return sum("agent_app_experience" not in query["sql"] for query in captured.captured_queries)

    queries()  # the first scrape creates the trainer counters' row
    few = queries()
    for name in ("gamma", "delta", "epsilon"):
        create_pool(name)
    assert queries() == few


def test_a_failed_state_read_still_serves_the_process_metrics(client, monkeypatch):
    from agent_app import metrics

    def broken(self):
        raise RuntimeError("database down")
        yield  # pragma: no cover

    monkeypatch.setattr(metrics.AgentStateCollector, "collect", broken)
    families = scrape(client)
    assert "rl_agent_decisions" in families
    assert "rl_agent_epsilon" not in families


def test_training_run_durations_fall_in_the_right_buckets(db):
    from agent_app import metrics
    from agent_app.models import TrainerCounters

    for seconds in (0.01, 0.3, 0.3, 100.0):
        metrics.observe_training_seconds(seconds)
    histogram = metrics.AgentStateCollector._durations(TrainerCounters.load())
    buckets = {s.labels["le"]: s.value for s in histogram.samples if s.name.endswith("_bucket")}
    assert [buckets[le] for le in ("0.05", "0.25", "0.5", "60.0", "+Inf")] == [1, 1, 3, 3, 4]
    count = next(s.value for s in histogram.samples if s.name.endswith("_count"))
    assert count == 4
