"""The desired-replica gauge: hand-made outcome rows and latency histograms give the expected
direction on any percentile of end-to-end latency or TTFT, reports fill the histograms, the gauge has
a sample per pool with outcomes, each pool keeps its own hysteresis and may have its own target, it
is off by default and bad settings stop start-up naming them."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence

import pytest
from django.db import DatabaseError
from prometheus_client.parser import text_string_to_metric_families

from agent_app import replica_outcomes
from agent_app.capacity import EVALUATE_EVERY_SECONDS, capacity
from agent_app.models import ReplicaLatencyBin, ReplicaOutcome, ReplicaSelection
from agent_app.pools import pool_scope
from agent_app.replay.histogram import latency_bucket
from agent_app.replica_outcomes import BUCKET_SECONDS, Outcome, OutcomeTally
from agent_app.services.pool_admin import create_pool, delete_pool
from tests.api.test_named_clusters import named as cluster
from tests.api.test_named_clusters import report, select
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
             pool: str = "default", ttft_ms: float | None = None) -> None:
    """The 60 s before `now` of one replica: `per_s` requests a second, each successful one taking
    `latency_ms` (and `ttft_ms` to its first token, when given)."""
    count = round(per_s * BUCKET_SECONDS)
    failures = round(count * failure_rate)
    successes = count - failures
    history(now, replica, [latency_ms] * successes, failures=failures, pool=pool,
            ttft_ms=[] if ttft_ms is None else [ttft_ms] * successes)


def history(now: float, replica: str, latencies_ms: Sequence[float], *, failures: int = 0,
            ttft_ms: Sequence[float] = (), pool: str = "default") -> None:
    """The 60 s before `now` of one replica: in each 5 s bucket, successful requests of these
    latencies (and these times to first token) and `failures` failed ones, as the tally flushes them."""
    last = int(now // BUCKET_SECONDS)
    for bucket in range(last - 12, last):
        ReplicaOutcome.objects.create(pool=pool, bucket=bucket, replica=replica, arm="model",
                                      count=len(latencies_ms) + failures, failures=failures,
                                      latency_sum=sum(latencies_ms))
    histogram(now, replica, "e2e", latencies_ms, pool=pool)
    histogram(now, replica, "ttft", ttft_ms, pool=pool)


def histogram(now: float, replica: str, metric: str, values_ms: Sequence[float],
              pool: str = "default") -> None:
    """The 60 s before `now` of one replica's `metric` histogram: these values in each 5 s bucket."""
    last = int(now // BUCKET_SECONDS)
    ReplicaLatencyBin.objects.bulk_create(
        ReplicaLatencyBin(pool=pool, bucket=bucket, replica=replica, metric=metric, bin=index, count=n)
        for bucket in range(last - 12, last) for index, n in Counter(map(latency_bucket, values_ms)).items())


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


def test_a_tail_over_the_target_asks_for_more_replicas_at_the_99th_percentile_than_at_the_50th(settings):
    for name in NAMES:  # 50 requests per 5 s: 45 take 200 ms, 5 take 3 s (mean 480 ms)
        history(T0, name, [200.0] * 45 + [3000.0] * 5)
    median = capacity.decision(now=T0)
    settings.AUTOSCALE_PERCENTILE = 99  # a new target: its evaluation starts afresh
    tail = capacity.decision(now=T0)
    assert 200.0 <= median.estimate.observed_latency_ms <= 200.0 * 1.05  # within the 5 % bin
    assert 3000.0 <= tail.estimate.observed_latency_ms <= 3000.0 * 1.05
    assert median.recommendation == 3 and median.estimate.latency_headroom_ms > 0
    assert tail.recommendation > median.recommendation
    # The load comes from the mean either way (Little's law): only the latency read differs.
    assert tail.estimate.utilisation == pytest.approx(median.estimate.utilisation)


def test_a_ttft_target_is_met_or_not_whatever_the_end_to_end_latency(settings, store):
    settings.AUTOSCALE_METRIC = "ttft"
    settings.AUTOSCALE_REPLICA_SLOTS, settings.AUTOSCALE_BATCH_SLOWDOWN = 64, 0.0  # 30 of 64 slots busy
    create_pool("beta")
    for name in NAMES:  # the same 3 s end-to-end in both pools; the first token after 0.1 s or 1.5 s
        outcomes(T0, name, per_s=10, latency_ms=3000, ttft_ms=100)
        outcomes(T0, name, per_s=10, latency_ms=3000, ttft_ms=1500, pool="beta")
    found = capacity.decisions(now=T0)
    assert found["default"].recommendation == 3 and found["default"].estimate.latency_headroom_ms > 0
    assert found["beta"].recommendation > 3 and found["beta"].estimate.latency_headroom_ms < 0
    assert capacity.summary("default", now=T0)["metric"] == "ttft"
    settings.AUTOSCALE_METRIC = "e2e"  # 3 s end to end is over the same 1 s target
    assert capacity.decisions(now=T0 + 5)["default"].recommendation > 3


def test_a_replica_without_ttft_under_a_ttft_target_is_named_and_the_pool_has_no_sample(client, settings):
    settings.METRICS_OPEN = True
    settings.AUTOSCALE_METRIC = "ttft"
    now = time.time()
    outcomes(now, "replica-1", per_s=10, latency_ms=900, ttft_ms=100)
    outcomes(now, "replica-2", per_s=10, latency_ms=900)  # its gateway does not send ttft_ms
    outcomes(now, "replica-3", per_s=10, latency_ms=0, failure_rate=1.0)  # no TTFT expected of failures
    assert b"rlagent_desired_replicas" not in client.get("/metrics").content
    section = client.get("/stats").json()["capacity"]
    assert section["status"] == "waiting for ttft_ms reports"
    assert section["reason"].startswith("replica-2 completed requests in the last 60 s without reporting")
    assert "replica-1" not in section["reason"] and "replica-3" not in section["reason"]
    histogram(now, "replica-2", "ttft", [100.0] * 50)  # its TTFT arrives: evaluated again
    later = time.time() + EVALUATE_EVERY_SECONDS  # after the last evaluation's clock
    assert capacity.summary(now=later)["status"] == "on"
    assert set(capacity.decisions(now=later)) == {"default"}


def test_reports_fill_the_histograms_and_stats_shows_the_true_percentile(client, settings, monkeypatch):
    frozen = time.time()
    monkeypatch.setattr(replica_outcomes, "clock", lambda: frozen)  # every report in one bucket
    settings.AUTOSCALE_PERCENTILE = 90
    for i in range(1, 41):  # 250 ms to 10 s end to end, 25 ms to 1 s to the first token
        decision = select(client, cluster([0], ["gpu-0"]))  # a one-replica cluster: all go to gpu-0
        report(client, decision, [1], latency_ms=250.0 * i, ttft_ms=25.0 * i)
    section = client.get("/stats").json()["capacity"]  # the request's refresh flushes the last report
    assert 9000.0 <= section["estimate"]["observed_latency_ms"] <= 9000.0 * 1.05  # the 36th of 40
    counts = {metric: sum(ReplicaLatencyBin.objects.filter(replica="gpu-0", metric=metric)
                          .values_list("count", flat=True)) for metric in ("e2e", "ttft")}
    assert counts == {"e2e": 40, "ttft": 40}
    settings.AUTOSCALE_PERCENTILE, settings.AUTOSCALE_METRIC = 99, "ttft"
    section = client.get("/stats").json()["capacity"]
    assert (section["percentile"], section["metric"]) == (99, "ttft")
    assert 1000.0 <= section["estimate"]["observed_latency_ms"] <= 1000.0 * 1.05  # the 40th of 40


def test_a_flush_after_a_database_error_keeps_the_sums_and_the_histograms_pending(monkeypatch):
    monkeypatch.setattr(replica_outcomes, "clock", lambda: T0)
    tally = OutcomeTally()
    served = Outcome(replica="replica-1", arm="model", success=True, latency_ms=300.0, reward=0.5,
                     ttft_ms=40.0)
    tally.add([served, served])
    with monkeypatch.context() as broken:
        broken.setattr(replica_outcomes, "_add_sql", lambda *args: "INSERT INTO no_such_table VALUES (%s)")
        with pytest.raises(DatabaseError):
            tally.flush()
    assert not ReplicaOutcome.objects.exists() and not ReplicaLatencyBin.objects.exists()  # one transaction
    tally.add([served])
    tally.flush()
    tally.flush()  # nothing pending: nothing added twice
    row = ReplicaOutcome.objects.get()
    assert (row.count, row.latency_sum) == (3, 900.0)
    assert sorted(ReplicaLatencyBin.objects.values_list("metric", "bin", "count")) == [
        ("e2e", latency_bucket(300.0), 3), ("ttft", latency_bucket(40.0), 3)]


def test_pruning_removes_old_histograms_with_the_old_outcomes(monkeypatch):
    monkeypatch.setattr(replica_outcomes, "clock", lambda: T0)
    now = int(T0 // BUCKET_SECONDS)
    for bucket in (now - 13, now - 12, now - 1):  # 65 s, 60 s and 5 s old; the window is 60 s
        ReplicaLatencyBin.objects.create(bucket=bucket, replica="replica-1", metric="e2e", bin=100, count=1)
    ReplicaOutcome.objects.create(bucket=now - 10_000, replica="replica-1", count=1)  # older than any window
    OutcomeTally().flush()  # a fresh tally prunes at its first flush
    assert sorted(ReplicaLatencyBin.objects.values_list("bucket", flat=True)) == [now - 12, now - 1]
    assert not ReplicaOutcome.objects.exists()


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
    assert queries(T0 + EVALUATE_EVERY_SECONDS, 4) == one == 4  # pools, outcomes, histograms, decisions


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
    show = ("from django.conf import settings as s; "
            "print(s.AUTOSCALE_POOL_TARGETS, s.AUTOSCALE_PERCENTILE, s.AUTOSCALE_METRIC)")
    targets = '{"beta": {"target_ms": 2000, "percentile": 99, "metric": "ttft"}, "gamma": {"percentile": 95}}'
    shown = run_manage("shell", "-c", show, tmp_path=tmp_path,
                       env={"AUTOSCALE_POOL_TARGETS": targets, "AUTOSCALE_PERCENTILE": "90",
                            "AUTOSCALE_METRIC": "ttft"})
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip().splitlines()[-1] == (
        "{'beta': {'target_ms': 2000.0, 'percentile': 99, 'metric': 'ttft'}, 'gamma': {'percentile': 95}} "
        "90 ttft")


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
        ({"AUTOSCALE_PERCENTILE": "98"}, "AUTOSCALE_PERCENTILE"),
        ({"AUTOSCALE_METRIC": "itl"}, "AUTOSCALE_METRIC"),
        ({"AUTOSCALE_WINDOW_SECONDS": "5"}, "AUTOSCALE_WINDOW_SECONDS"),
        ({"AUTOSCALE_MIN_REPLICAS": "4", "AUTOSCALE_MAX_REPLICAS": "2"}, "AUTOSCALE_MAX_REPLICAS"),
        ({"AUTOSCALE_POOL_TARGETS": "beta=500"}, "AUTOSCALE_POOL_TARGETS"),
        ({"AUTOSCALE_POOL_TARGETS": '{"beta": {"target_ms": 0}}'}, "target_ms must be a number from 1"),
        ({"AUTOSCALE_POOL_TARGETS": '{"beta": {"percentile": 98}}'},
         "percentile must be one of (50, 90, 95, 99)"),
        ({"AUTOSCALE_POOL_TARGETS": '{"beta": {"percentile": true}}'}, "percentile must be one of"),
        ({"AUTOSCALE_POOL_TARGETS": '{"beta": {"metric": "itl"}}'}, "metric must be one of ('e2e', 'ttft')"),
        ({"AUTOSCALE_POOL_TARGETS": '{"no pool!": {"target_ms": 500}}'}, "invalid pool name 'no pool!'"),
        ({"AUTOSCALE_POOL_TARGETS": '{"beta": {"target": 500}}'}, "expected an object of target_ms"),
    ],
)
def test_bad_settings_stop_startup_naming_them(tmp_path, env, named):
    result = run_manage("check", env=env, tmp_path=tmp_path)
    assert result.returncode != 0
    assert named in result.stderr
