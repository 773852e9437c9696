"""The desired-replica gauge: hand-made outcome rows give the expected direction, the gauge carries
the pool label, it is off by default and bad settings stop start-up naming them."""

from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent_app.capacity import capacity
from agent_app.models import ReplicaOutcome, ReplicaSelection
from agent_app.replica_outcomes import BUCKET_SECONDS
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
    capacity.reset()
    yield settings
    capacity.reset()


def outcomes(now: float, replica: str, per_s: float, latency_ms: float, failure_rate: float = 0.0) -> None:
    """The 60 s before `now` of one replica: `per_s` requests a second, mean latency `latency_ms`."""
    last = int(now // BUCKET_SECONDS)
    for bucket in range(last - 12, last):
        count = round(per_s * BUCKET_SECONDS)
        failures = round(count * failure_rate)
        ReplicaOutcome.objects.create(bucket=bucket, replica=replica, arm="model", count=count,
                                      failures=failures, latency_sum=(count - failures) * latency_ms)


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
    response = client.get("/metrics")
    assert response.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(response.content.decode())}
    samples = families["rlagent_desired_replicas"].samples
    assert [(s.labels, s.value) for s in samples] == [({"pool": "default"}, 3.0)]
    section = client.get("/stats").json()["capacity"]
    assert section["status"] == "on"
    assert section["recommendation"] == 3
    assert section["estimate"]["current_replicas"] == 3
    assert "req/s" in section["reason"]


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
    ],
)
def test_bad_settings_stop_startup_naming_them(tmp_path, env, named):
    result = run_manage("check", env=env, tmp_path=tmp_path)
    assert result.returncode != 0
    assert named in result.stderr
