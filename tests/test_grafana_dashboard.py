"""The Grafana dashboard imports as JSON with Prometheus datasource and pool variables, every metric
its queries read is one the service's /metrics exports (scraped after real traffic), and every query
of a per-pool metric keeps to the pools chosen."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import SEED_EXPERIENCE, SEED_SELECT

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "rlagent-dashboard.json"
# PromQL words that look like metric names: aggregations' clauses, set operators and modifiers.
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                "offset", "inf", "nan"}
IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?")
POOL_FILTER = 'pool=~"$pool"'
SERVICE_WIDE = "every pool together"  # in the title of the rows whose panels cannot filter by pool


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers that are not functions (followed by
    '('), label matchers ({...}), grouping labels (by/without/on/ignoring (...)), ranges or strings."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors, [$__rate_interval]
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\$\w+", " ", expr)  # Grafana variables
    names = set()
    for match in IDENTIFIER.finditer(expr):
        rest = expr[match.end():].lstrip()
        before = expr[:match.start()]
        if rest.startswith("(") or match.group() in PROMQL_WORDS or before[-1:].isdigit():
            continue
        names.add(match.group())
    return names


def selectors(expr: str) -> list[tuple[str, str]]:
    """(metric name, label matchers) of every selector in a PromQL expression."""
    names = metric_names(expr)
    return [(m.group(1), m.group(2) or "") for m in SELECTOR.finditer(expr) if m.group(1) in names]


def panels(dashboard: dict) -> list[dict]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))  # collapsed rows hold theirs
    return found


def queries(dashboard: dict) -> list[str]:
    return [target["expr"] for panel in panels(dashboard) for target in panel.get("targets", [])]


def row_of_each_panel(dashboard: dict) -> dict[int, str]:
    """Panel id -> the title of the row it sits under (rows are expanded: their panels follow them)."""
    rows, row = {}, ""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            row = panel["title"]
            assert not panel.get("panels"), f"row {row!r} is collapsed"
        else:
            rows[panel["id"]] = row
    return rows


def scrape_after_traffic(client, settings) -> list:
    """Every sample /metrics exports after a decision, a report and an outcome the capacity gauge reads."""
    from agent_app.capacity import capacity
    from agent_app.models import ReplicaOutcome
    from agent_app.replica_outcomes import BUCKET_SECONDS

    settings.METRICS_OPEN = True
    settings.AUTOSCALE_TARGET_MS = 1000.0
    capacity.reset()
    assert client.post("/select_replica", SEED_SELECT, format="json").status_code == 200
    assert client.post("/record_experience", SEED_EXPERIENCE, format="json").status_code == 201
    last_bucket = int(time.time() // BUCKET_SECONDS) - 1
    ReplicaOutcome.objects.create(bucket=last_bucket, replica="replica-1", count=10, latency_sum=2000.0)
    response = client.get("/metrics")
    capacity.reset()
    assert response.status_code == 200
    return [sample for family in text_string_to_metric_families(response.content.decode())
            for sample in family.samples]


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def test_metric_names_are_read_from_promql_without_functions_labels_or_variables():
    expr = ('histogram_quantile(0.99, sum by (le, view) (rate(a_bucket{view="x", le!="1"}'
            '[$__rate_interval]))) / ignoring(replica) group_left sum(rate(b_total[5m])) * 60'
            ' + max(c) offset 1h')
    assert metric_names(expr) == {"a_bucket", "b_total", "c"}


def test_selectors_are_read_with_their_label_matchers():
    expr = ('sum by (pool) (rate(a_total{pool=~"$pool", policy="x"}[$__rate_interval])) / '
            'ignoring(replica) group_left sum(b)')
    assert selectors(expr) == [("a_total", '{pool=~"$pool", policy="x"}'), ("b", "")]


def test_the_dashboard_has_panels_with_queries_on_prometheus_datasource_and_pool_variables(dashboard):
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    source = variables["datasource"]
    assert source["type"] == "datasource" and source["query"] == "prometheus"
    pool = variables["pool"]
    assert pool["type"] == "query" and pool["datasource"]["uid"] == "${datasource}"
    assert pool["query"] == pool["definition"] == "label_values(rl_agent_model_version, pool)"
    assert pool["multi"] and pool["includeAll"]
    graphs = [p for p in panels(dashboard) if p["type"] != "row"]
    assert len(graphs) >= 15
    for panel in graphs:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]
    assert len({p["id"] for p in panels(dashboard)}) == len(panels(dashboard))  # Grafana needs unique ids


def test_the_dashboard_covers_what_operators_watch(dashboard):
    read = set().union(*(metric_names(q) for q in queries(dashboard)))
    for name in ("rl_agent_decisions_total", "rl_agent_experiences_recorded_total", "rl_agent_epsilon",
                 "rl_agent_model_version", "rl_agent_last_loss", "rl_agent_replay_buffer_size",
                 "rl_agent_training_run_duration_seconds_count",
                 "django_http_requests_latency_seconds_by_view_method_bucket"):
        assert name in read, name
    exprs = " ".join(queries(dashboard))
    # the heuristic's and exploration's rates
    assert 'policy=~"least_loaded|scorer"' in exprs and 'policy="explore"' in exprs


def test_every_metric_a_query_reads_is_exported_by_the_service(dashboard, client, settings):
    samples = scrape_after_traffic(client, settings)
    exported = {sample.name for sample in samples}
    views = {sample.labels["view"] for sample in samples if "view" in sample.labels}
    for expr in queries(dashboard):
        missing = metric_names(expr) - exported
        assert not missing, f"{expr!r} reads {sorted(missing)}, which /metrics does not export"
        for view in re.findall(r'view="([^"]+)"', expr):  # django-prometheus labels views by URL name
            assert view in views, f"{expr!r}: no view {view!r} in {sorted(views)}"


def test_every_query_of_a_per_pool_metric_keeps_to_the_pools_chosen(dashboard, client, settings):
    per_pool = {sample.name for sample in scrape_after_traffic(client, settings) if "pool" in sample.labels}
    assert {"rl_agent_model_version", "rl_agent_decisions_total", "rlagent_desired_replicas"} <= per_pool
    rows = row_of_each_panel(dashboard)
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            read = selectors(target["expr"])
            for name, matchers in read:
                if name in per_pool:
                    assert POOL_FILTER in matchers, f"{panel['title']!r}: {name} without {POOL_FILTER}"
            if not any(name in per_pool for name, _ in read):  # only service-wide figures: said so
                assert SERVICE_WIDE in rows[panel["id"]].lower(), (
                    f"{panel['title']!r} reads no per-pool metric but sits in row {rows[panel['id']]!r}")
            else:
                assert SERVICE_WIDE not in rows[panel["id"]].lower(), panel["title"]
