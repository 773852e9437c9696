"""/metrics: parses as Prometheus text and holds every agent metric with sane values after traffic."""

from __future__ import annotations

import math

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import random_experience
from tests.operators.conftest import select

AGENT_GAUGES = (
    "rl_agent_epsilon", "rl_agent_steps_done", "rl_agent_replay_buffer_size", "rl_agent_last_loss",
    "rl_agent_avg_recent_reward", "rl_agent_model_version", "rl_agent_checkpoints",
)


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
    assert value(after, "rl_agent_epsilon") == pytest.approx(stats["epsilon"])
    assert 0 < value(after, "rl_agent_epsilon") <= 1
    assert value(after, "rl_agent_steps_done") == stats["steps_done"] == 2
    assert value(after, "rl_agent_model_version") == stats["model_version"] == trained["model_version"] == 1
    assert value(after, "rl_agent_replay_buffer_size") == stats["buffer_size"] == 120
    assert value(after, "rl_agent_avg_recent_reward") == pytest.approx(stats["avg_recent_reward"], abs=1e-5)
    assert math.isfinite(value(after, "rl_agent_last_loss")) and value(after, "rl_agent_last_loss") >= 0
    assert value(after, "rl_agent_exploration_enabled") == 1

    runs = "rl_agent_training_run_duration_seconds"
    assert value(after, runs, f"{runs}_count") - value(before, runs, f"{runs}_count") == 1
    assert value(after, runs, f"{runs}_sum") > value(before, runs, f"{runs}_sum")
    assert value(after, runs, f"{runs}_bucket", le="+Inf") == value(after, runs, f"{runs}_count")
    assert value(after, "rl_agent_checkpoints") == 1
    written = "rl_agent_checkpoints_written_total"
    assert value(after, "rl_agent_checkpoints_written", written) - value(
        before, "rl_agent_checkpoints_written", written) == 1

    assert any(name.startswith("django_http_requests") for name in after)  # django-prometheus's own


def test_metrics_before_any_training_show_unknown_values_as_nan(client):
    families = scrape(client)
    assert value(families, "rl_agent_model_version") == 0
    assert math.isnan(value(families, "rl_agent_last_loss"))
    assert math.isnan(value(families, "rl_agent_avg_recent_reward"))


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
