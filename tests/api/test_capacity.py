"""The desired-replica gauge: hand-made outcome rows give the expected direction, the gauge has a
sample per pool with outcomes, each pool keeps its own hysteresis and may have its own target, it is
off by default and bad settings stop start-up naming them."""

from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent_app.capacity import EVALUATE_EVERY_SECONDS, capacity
from agent_app.models import ReplicaOutcome, ReplicaSelection
from agent_app.pools import pool_scope
from agent_app.replica_outcomes import BUCKET_SECONDS
from agent_app.services.pool_admin import create_pool, delete_pool
from tests.test_configuration import run_manage

T0 = 2_000_000_000.0  # on a bucket boundary, so the 60 s window is exactly 12 buckets
NAMES = ("replica-1", "replica-2", "replica-3")


@pytest.fixture(autouse=True)
def autoscale(settings, db):
    settings.AUTOSCALE_TARGET_MS = 1000.0
    settings.AUTOSCALE_WINDOW_SECONDS = 60.0
    settings.AUTOSCALE_MIN_REPLICAS = 1
    settings.AUTOSCALE_MAX_REPLICAS = 16
    settings.AUTOSCALE_COOLDOWN_SECONDS = 0.0
    settings.AUTOSCALE_POOL_TARGETS = {}
    settings.AUTOSCALE_REPLICA_SLOTS = None
    settings.AUTOSCALE_BATCH_SLOWDOWN = None
    capacity.reset()
    yield settings
    capacity.reset()


def outcomes(now: float, replica: str, per_s: float, latency_ms: float, failure_rate: float = 0.0,
             pool: str = "default") -> None:
    """The 60 s before `now` of one replica: `per_s` requests a second, mean latency `latency_ms`."""
    last = int(now // BUCKET_SECONDS)
    for bucket in range(last - 12, last):
        count = round(per_s * BUCKET_SECONDS)
        failures = round(count * failure_rate)
        ReplicaOutcome.objects.create(pool=pool, bucket=bucket, replica=replica, arm="model", count=count,
                                      failures=failures, latency_sum=(count - failures) * latency_ms)


def gauge(client) -> list[tuple[dict, float]]:
    response = client.get("/metrics")
    assert response.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(response.content.decode())}
    return [(s.labels, s.value) for s in families["rlagent_desired_replicas"].samples]


def decisions(total: int) -> None:
    ReplicaSelection.objects.update_or_create(replica_idx=0, policy="dqn", defaults={"count": total})


def test_steady_traffic_within_the_target_holds_the_current_count():
    for name in NAMES:
        outcomes(T0, name, per_s=10, latency_ms=200)
    decision = capacity.decision(now=T0)
    assert decision.recommendation == 3
    assert decision.estimate.current_replicas == 3
    assert decision.reason.startswith("holds")


def test_rising_traffic_recommends_more_replicas_at_once():
    decisions(0)
    for name in NAMES:
        outcomes(T0, name, per_s=10, latency_ms=200)
    assert capacity.decision(now=T0).recommendation == 3
    later = T0 + 60
    decisions(60 * 90)  # 90 decisions a second arrive while 60 complete: a queue is building
    for name in NAMES:
        outcomes(later, name, per_s=20, latency_ms=400)
    decision = capacity.decision(now=later)
    assert decision.recommendation > 3
    assert decision.estimate.utilisation > 1.0
    assert decision.reason.startswith("up at once")


def test_a_failing_replica_counts_as_no_capacity():
    outcomes(T0, "replica-1", per_s=10, latency_ms=200)
    outcomes(T0, "replica-2", per_s=10, latency_ms=200)
    outcomes(T0, "replica-3", per_s=10, latency_ms=0, failure_rate=1.0)
    decision = capacity.decision(now=T0)
    assert decision.estimate.healthy_replicas == 2
    assert decision.recommendation > 3


@pytest.mark.parametrize(("slots", "slowdown", "capacity_rps"), [
    (None, None, 15.0),  # 2 in flight read as a processor-sharing queue: 2/3 busy
    (32, None, 10.0 / (2 / 32 * 1.93 / 1.03)),  # 2 of 32 slots, the default slowdown 0.03
    (32, 0.0, 160.0),  # 2 of 32 slots: 1/16 busy
])
def test_batch_slots_and_slowdown_come_from_the_settings(settings, slots, slowdown, capacity_rps):
    settings.AUTOSCALE_REPLICA_SLOTS = slots
    settings.AUTOSCALE_BATCH_SLOWDOWN = slowdown
    for name in NAMES:
        outcomes(T0, name, per_s=10, latency_ms=200)  # Little's law: 2 in flight
    assert capacity.decision(now=T0).estimate.replica_capacity_rps == pytest.approx(capacity_rps)


def test_falling_traffic_goes_down_only_after_the_cool_down():
    for name in NAMES:
        outcomes(T0, name, per_s=1, latency_ms=200)
    seen = [capacity.decision(now=T0 + 5 * i).recommendation for i in range(3)]
    assert seen == [3, 3, 1]


def test_evaluates_at_most_every_few_seconds():
    for name in NAMES:
        outcomes(T0, name, per_s=10, latency_ms=200)
    first = capacity.decision(now=T0)
    ReplicaOutcome.objects.all().delete()
    assert capacity.decision(now=T0 + 1) is first


def test_the_gauge_has_the_pool_label_and_stats_shows_the_reasoning(client, settings, store):
    settings.METRICS_OPEN = True
    now = time.time()
    for name in NAMES:
        outcomes(now, name, per_s=10, latency_ms=200)
    assert gauge(client) == [({"pool": "default"}, 3.0)]
    section = client.get("/stats").json()["capacity"]
    assert section["status"] == "on"
    assert section["recommendation"] == 3
    assert section["estimate"]["current_replicas"] == 3
    assert "req/s" in section["reason"]


def test_each_pool_has_its_sample_and_stats_shows_the_requested_pools(client, settings, store):
    settings.METRICS_OPEN = True
    create_pool("beta")
    now = time.time()
    for name in NAMES:
        outcomes(now, name, per_s=10, latency_ms=200)
    for name in NAMES[:2]:  # beta: two replicas, each twice as busy and slower
        outcomes(now, name, per_s=20, latency_ms=400, pool="beta")
    beta = capacity.decision("beta", now=now).recommendation
    assert beta > 2
    assert gauge(client) == [({"pool": "default"}, 3.0), ({"pool": "beta"}, float(beta))]
    section = client.get("/stats?pool=beta").json()["capacity"]
    assert section["pool"] == "beta" and section["recommendation"] == beta
    assert section["estimate"]["current_replicas"] == 2
    assert client.get("/stats").json()["capacity"]["pool"] == "default"
    with pool_scope("beta"):  # the current pool is the one summarised by default
        assert capacity.summary(now=now)["recommendation"] == beta


def test_each_pool_keeps_its_own_hysteresis_and_a_deleted_pool_goes(store):
    create_pool("beta")
    for name in NAMES:
        outcomes(T0, name, per_s=10, latency_ms=200)
        outcomes(T0, name, per_s=1, latency_ms=200, pool="beta")  # beta's traffic has fallen
    outcomes(T0, "replica-4", per_s=1, latency_ms=200, pool="beta")
    seen = [capacity.decisions(now=T0 + 5 * i) for i in range(3)]
    assert [{pool: d.recommendation for pool, d in found.items()} for found in seen] == [
        {"default": 3, "beta": 4}, {"default": 3, "beta": 4}, {"default": 3, "beta": 1}]
    delete_pool(name="beta")
    assert set(capacity.decisions(now=T0 + 15)) == {"default"}


def test_the_gauge_reads_every_pool_in_the_same_queries(store):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def queries(now: float, pools: int) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert len(capacity.decisions(now=now)) == pools
        return len(captured)

    outcomes(T0, "replica-1", per_s=10, latency_ms=200)
    one = queries(T0, 1)
    for pool in ("beta", "gamma", "delta"):
        create_pool(pool)
        outcomes(T0, "replica-1", per_s=10, latency_ms=200, pool=pool)
    assert queries(T0 + EVALUATE_EVERY_SECONDS, 4) == one == 3  # the pools, the outcomes, the decisions


def test_a_pool_may_have_its_own_target(settings, store):
    settings.AUTOSCALE_POOL_TARGETS = {"beta": {"target_ms": 100.0}}
    create_pool("beta")
    for pool in ("default", "beta"):  # the same traffic in both
        for name in NAMES:
            outcomes(T0, name, per_s=10, latency_ms=200, pool=pool)
    found = capacity.decisions(now=T0)
    assert found["default"].recommendation == 3
    assert found["beta"].recommendation > 3  # 200 ms at 2/3 utilisation: 100 ms needs far less load
    assert capacity.summary("beta", now=T0)["target_ms"] == 100.0
    assert capacity.summary("default", now=T0)["target_ms"] == 1000.0
    settings.AUTOSCALE_TARGET_MS = None  # off for the pools without their own target
    assert set(capacity.decisions(now=T0 + 5)) == {"beta"}
    assert capacity.summary("default", now=T0 + 5) == {"pool": "default", "status": "off"}
    assert capacity.summary("beta", now=T0 + 5)["status"] == "on"


def test_pool_targets_are_read_from_the_environment(tmp_path):
    show = "from django.conf import settings as s; print(s.AUTOSCALE_POOL_TARGETS)"
    shown = run_manage("shell", "-c", show, tmp_path=tmp_path,
                       env={"AUTOSCALE_POOL_TARGETS": '{"beta": {"target_ms": 250, "metric": "e2e"}}'})
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip().splitlines()[-1] == "{'beta': {'target_ms': 250.0, 'metric': 'e2e'}}"


def test_off_by_default(client, settings, store, tmp_path):
    shown = run_manage("shell", "-c", "from django.conf import settings as s; print(s.AUTOSCALE_TARGET_MS)",
                       env={}, tmp_path=tmp_path)
    assert shown.stdout.strip().splitlines()[-1] == "None", shown.stderr
    settings.AUTOSCALE_TARGET_MS = None
    settings.METRICS_OPEN = True
    for name in NAMES:
        outcomes(time.time(), name, per_s=10, latency_ms=200)
    assert b"rlagent_desired_replicas" not in client.get("/metrics").content
    assert client.get("/stats").json()["capacity"] == {"pool": "default", "status": "off"}


def test_no_outcomes_yet_means_no_gauge(client, settings):
    settings.METRICS_OPEN = True
    assert b"rlagent_desired_replicas" not in client.get("/metrics").content
    assert capacity.summary(now=T0)["status"] == "no outcomes yet"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"AUTOSCALE_TARGET_MS": "-5"}, "AUTOSCALE_TARGET_MS"),
        ({"AUTOSCALE_TARGET_MS": "fast"}, "AUTOSCALE_TARGET_MS"),
        ({"AUTOSCALE_PERCENTILE": "99"}, "AUTOSCALE_PERCENTILE"),
        ({"AUTOSCALE_METRIC": "ttft"}, "AUTOSCALE_METRIC"),
        ({"AUTOSCALE_WINDOW_SECONDS": "5"}, "AUTOSCALE_WINDOW_SECONDS"),
        ({"AUTOSCALE_MIN_REPLICAS": "4", "AUTOSCALE_MAX_REPLICAS": "2"}, "AUTOSCALE_MAX_REPLICAS"),
        ({"AUTOSCALE_POOL_TARGETS": "beta=500"}, "AUTOSCALE_POOL_TARGETS"),
        ({"AUTOSCALE_POOL_TARGETS": '{"beta": {"target_ms": 0}}'}, "target_ms must be a number from 1"),
        ({"AUTOSCALE_POOL_TARGETS": '{"beta": {"percentile": 99}}'}, "percentile must be one of (50,)"),
        ({"AUTOSCALE_POOL_TARGETS": '{"beta": {"metric": "ttft"}}'}, "metric must be one of ('e2e',)"),
        ({"AUTOSCALE_POOL_TARGETS": '{"no pool!": {"target_ms": 500}}'}, "invalid pool name 'no pool!'"),
        ({"AUTOSCALE_POOL_TARGETS": '{"beta": {"target": 500}}'}, "expected an object of target_ms"),
    ],
)
def test_bad_settings_stop_startup_naming_them(tmp_path, env, named):
    result = run_manage("check", env=env, tmp_path=tmp_path)
    assert result.returncode != 0
    assert named in result.stderr
