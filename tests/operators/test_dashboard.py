"""The dashboard: /stats figures, charts over time drawn as inline SVG, the train and save buttons."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from tests.operators.conftest import select


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_dashboard_shows_the_stats_and_charts_with_a_point_per_training_run(client, operator, train):
    from agent_app.models import MetricSample

    select(client)
    train(runs=1)
    for _ in range(5):
        select(client)
    train(runs=2)
    assert MetricSample.objects.count() == 3
    page = operator.get("/admin/dashboard/").content.decode()
    stats = client.get("/stats").json()
    assert f'id="figure-epsilon">{stats["epsilon"]:.4f}<' in page
    assert 'id="figure-model-version">v3<' in page
    assert page.count('<svg class="chart"') == 6
    assert 'class="chart empty"' not in page
    assert len(re.findall(r"<polyline class=\"series\"", page)) >= 6
    for title in ("Average reward", "Training loss", "Epsilon", "Latency by replica", "Share of traffic",
                  "Fallback and exploration rates"):
        assert title in page, title
    assert "History: 3 samples" in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # nothing loaded from another host (no CDN)


def test_history_samples_hold_latency_share_and_rates_per_replica(client, train):
    from django.conf import settings

    from agent_app.models import MetricSample

    train(runs=1)
    decisions = [select(client) for _ in range(20)]
    train(runs=1)
    sample = MetricSample.objects.order_by("-id").first()
    assert set(sample.latency_by_replica) <= set(settings.REPLICA_NAMES) and sample.latency_by_replica
    assert sum(sample.share_by_replica.values()) == pytest.approx(1.0)
    for name in settings.REPLICA_NAMES:
        assert sample.share_by_replica[name] == sum(d["replica_name"] == name for d in decisions) / 20
    assert sample.exploration_rate == sum(d["policy"] == "explore" for d in decisions) / 20
    assert sample.fallback_rate == sum(d["policy"] == "least_loaded" for d in decisions) / 20
    assert sample.avg_reward is not None and sample.loss is not None


def test_history_is_trimmed_to_the_configured_number_of_samples(db, settings):
    from agent_app.dashboard.history import record_sample
    from agent_app.models import MetricSample

    settings.DASHBOARD_HISTORY_SAMPLES = 10
    for version in range(1, 13):
        record_sample({"model_version": version, "steps_done": version, "epsilon": 0.5, "loss": 0.1})
    assert MetricSample.objects.count() == 10
    assert min(MetricSample.objects.values_list("model_version", flat=True)) == 3


def test_dashboard_without_history_says_how_it_fills(operator):
    page = operator.get("/admin/dashboard/").content.decode()
    assert page.count('class="chart empty"') == 6
    assert "a point is added after each training run" in page


def test_the_page_refreshes_its_body_in_place(operator):
    page = operator.get("/admin/dashboard/").content.decode()
    assert "setInterval" in page and "?partial=1" in page
    body = operator.get("/admin/dashboard/?partial=1").content.decode()
    assert 'id="agent-figures"' in body and "<html" not in body


def test_train_now_runs_a_training_task_and_reports_its_outcome(client, operator, fill):
    from agent_app.models import AgentState

    refused = operator.post("/admin/dashboard/train", {"iterations": "2"}, follow=True)
    assert any(m.startswith("Training refused: the replay buffer holds 0") for m in messages_of(refused))
    fill(300)  # more than one batch of the default size (256)
    done = operator.post("/admin/dashboard/train", {"iterations": "2"}, follow=True)
    assert done.redirect_chain[-1][0] == "/admin/dashboard/"
    assert any(m.startswith("Trained 2 step(s): model v1, 2 steps") for m in messages_of(done))
    assert AgentState.load().model_version == 1
    invalid = operator.post("/admin/dashboard/train", {"iterations": "0"}, follow=True)
    assert any("between 1 and 10000" in m for m in messages_of(invalid))


def test_save_now_writes_a_checkpoint_and_says_where(client, operator, train):
    from agent_app.models import Checkpoint

    train(runs=1)
    response = operator.post("/admin/dashboard/checkpoint", follow=True)
    assert any(m.startswith("Checkpoint v1 written") for m in messages_of(response))
    assert Checkpoint.objects.filter(version=1).exists()


def test_ab_comparison_is_rendered_when_the_service_has_results(operator, monkeypatch):
    from agent_app.services import stats

    results = {
        "arms": {"heuristic": {"count": 40, "latency_mean_ms": 310.0, "success_rate": 0.97},
                 "rl": {"count": 42, "latency_mean_ms": 250.5, "success_rate": 0.99}},
        "comparison": {"baseline": "heuristic", "candidate": "rl", "latency_mean_diff_ms": -59.5,
                       "latency_mean_diff_ci95_ms": [-80.0, -39.0], "candidate_is_faster": True},
    }
    monkeypatch.setattr(stats, "ab_results", lambda: results)
    page = operator.get("/admin/dashboard/").content.decode()
    assert "A/B comparison" in page and "rl minus heuristic" in page
    assert "250.5" in page and "-80 … -39" in page and "yes" in page

    monkeypatch.setattr(stats, "ab_results", lambda: {"arms": {}, "comparison": None})
    assert "A/B comparison" not in operator.get("/admin/dashboard/").content.decode()


def test_line_chart_breaks_the_line_where_a_value_is_missing():
    from agent_app.dashboard.charts import line_chart

    start = datetime(2026, 1, 1, tzinfo=UTC)
    times = [start + timedelta(minutes=i) for i in range(5)]
    chart = line_chart("t", times, {"a": [1.0, 2.0, None, 3.0, 4.0], "b": [None, None, 0.5, None, None]})
    assert chart.svg.count("<polyline") == 2 and chart.svg.count("<circle") == 1
    assert chart.legend == [("a", "#0072B2", "4"), ("b", "#E69F00", "0.5")]
    escaped = line_chart("<b>", times, {"<x>": [1.0] * 5})
    assert "<b>" not in escaped.svg and "&lt;x&gt;" in escaped.svg


def test_the_desired_replica_count_is_shown_with_its_reasoning(operator, settings):
    import time

    from agent_app.capacity import capacity
    from tests.api.test_capacity import outcomes

    assert "Off: set AUTOSCALE_TARGET_MS" in operator.get("/admin/dashboard/").content.decode()
    settings.AUTOSCALE_TARGET_MS, settings.AUTOSCALE_WINDOW_SECONDS = 1000.0, 60.0
    capacity.reset()
    now = time.time()
    for name in ("replica-1", "replica-2"):
        outcomes(now, name, per_s=4.0, latency_ms=900.0)  # busy and close to the target
    page = operator.get("/admin/dashboard/").content.decode()
    capacity.reset()
    summary = page[page.index('id="capacity"'):]
    assert "Desired replicas" in summary and "to hold" in summary
    columns = ("Utilisation", "Headroom (req/s)", "Utilisation with one more", "Utilisation with one fewer")
    for column in columns:
        assert column in summary, column


def test_a_ttft_target_without_ttft_reports_says_so_on_the_dashboard(operator, settings):
    import time

    from agent_app.capacity import capacity
    from tests.api.test_capacity import outcomes

    settings.AUTOSCALE_TARGET_MS, settings.AUTOSCALE_WINDOW_SECONDS = 1000.0, 60.0
    settings.AUTOSCALE_METRIC, settings.AUTOSCALE_PERCENTILE = "ttft", 99
    capacity.reset()
    outcomes(time.time(), "replica-1", per_s=4.0, latency_ms=900.0)  # no time to first token reported
    page = operator.get("/admin/dashboard/").content.decode()
    capacity.reset()
    summary = page[page.index('id="capacity"'):]
    assert "Waiting: replica-1 completed requests" in summary and "ttft_ms" in summary
