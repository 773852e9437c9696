"""Memory and CPU use come from Prometheus when it answers, else from this host, never slowly twice."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from agent_app.host_metrics import CPU_QUERY, MEMORY_QUERY, HostMetrics


class FakePrometheus(BaseHTTPRequestHandler):
    """Stands in for a remote Prometheus: answers the instant-query API with fixed values."""

    values = {MEMORY_QUERY: "0.625", CPU_QUERY: "0.25"}
    queries: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's naming)
        query = parse_qs(urlparse(self.path).query)["query"][0]
        self.queries.append(query)
        body = {"status": "success", "data": {"resultType": "vector",
                                              "result": [{"metric": {}, "value": [0, self.values[query]]}]}}
        payload = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def prometheus():
    server = HTTPServer(("127.0.0.1", 0), FakePrometheus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    FakePrometheus.queries = []
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_prometheus_figures_are_used_when_it_answers(prometheus):
    metrics = HostMetrics(prometheus)
    assert metrics.read() == (0.625, 0.25)
    assert metrics.source == "prometheus"
    assert FakePrometheus.queries == [MEMORY_QUERY, CPU_QUERY]


def test_the_host_is_read_when_prometheus_does_not_answer_and_not_retried_at_once():
    metrics = HostMetrics("http://127.0.0.1:9", timeout=0.2)  # nothing listens on port 9
    memory, cpu = metrics.read()
    assert metrics.source == "host"
    assert 0.0 <= memory <= 1.0 and 0.0 <= cpu <= 1.0
    failed_at = metrics._prometheus_failed_at
    metrics.read()
    assert metrics._prometheus_failed_at == failed_at  # no second attempt within the minute


def test_an_out_of_range_answer_is_not_trusted(prometheus):
    FakePrometheus.values = {MEMORY_QUERY: "62.5", CPU_QUERY: "0.25"}  # a percentage, not a fraction
    try:
        metrics = HostMetrics(prometheus)
        metrics.read()
        assert metrics.source == "host"
    finally:
        FakePrometheus.values = {MEMORY_QUERY: "0.625", CPU_QUERY: "0.25"}
