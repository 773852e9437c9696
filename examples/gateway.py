"""A small OpenAI-compatible proxy: POST /v1/chat/completions goes to the upstream replica the
RL agent client picks, and the outcome is reported back to the agent.

The gateway measures what the agent's state needs: in-flight requests per upstream (the replica
loads), an EWMA of latency and success, and requests per second over the last 10 s.
GET /gateway/stats shows per-replica traffic and latency and the client's counters. The prompt's
prefix block hashes (rlagent_client/prefix.py) go with each request, so the agent can tell which
replica likely caches its prefix.
"""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
from collections import deque
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from rlagent_client import Decision, RLAgentClient
from rlagent_client.prefix import chat_prefix_hashes

EWMA = 0.1  # weight of the newest request in the latency and success averages
RPS_WINDOW_S = 10.0
UPSTREAM_TIMEOUT_S = 120.0


class GatewayState:
    """Live figures per upstream, guarded by one lock (each update is a few additions)."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self._lock = threading.Lock()
        self.in_flight = [0] * len(names)
        self.latency_ms = 0.0
        self.success_rate = 1.0
        self._arrivals: deque[float] = deque()
        self.latencies: list[deque[float]] = [deque(maxlen=100_000) for _ in names]
        self.errors = [0] * len(names)
        self.decided_by: dict[str, int] = {}
        self._first = True

    def observe(self) -> tuple[list[float], float, float, float, float]:
        """(replica_loads, queue_depth, recent_latency_ms, current_rps, success_rate) now."""
        now = time.monotonic()
        with self._lock:
            self._arrivals.append(now)
            while self._arrivals and now - self._arrivals[0] > RPS_WINDOW_S:
                self._arrivals.popleft()
            rps = len(self._arrivals) / RPS_WINDOW_S
            loads = [float(n) for n in self.in_flight]
            return loads, float(sum(self.in_flight)), self.latency_ms, rps, self.success_rate

    def begin(self, index: int, decision: Decision) -> None:
        with self._lock:
            self.in_flight[index] += 1
            self.decided_by[decision.decided_by] = self.decided_by.get(decision.decided_by, 0) + 1

    def end(self, index: int, latency_ms: float, success: bool) -> list[float]:
        """Record the outcome; the loads after it, for the report."""
        with self._lock:
            self.in_flight[index] -= 1
            self.latencies[index].append(latency_ms)
            self.errors[index] += not success
            weight = 1.0 if self._first else EWMA  # the first answer sets the average
            self._first = False
            self.latency_ms = (1 - weight) * self.latency_ms + weight * latency_ms
            self.success_rate = (1 - EWMA) * self.success_rate + EWMA * float(success)
            return [float(n) for n in self.in_flight]

    def per_replica(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = []
            total = sum(len(lat) for lat in self.latencies) or 1
            for i, name in enumerate(self.names):
                values = sorted(self.latencies[i])
                rows.append({
                    "replica": name, "requests": len(values), "share": len(values) / total,
                    "errors": self.errors[i], "in_flight": self.in_flight[i],
                    "latency_mean_ms": statistics.fmean(values) if values else None,
                    "latency_p50_ms": _quantile(values, 0.50), "latency_p95_ms": _quantile(values, 0.95),
                })
            return rows


class Gateway:
    """The proxy server on 127.0.0.1 (port 0 = any free port); start() returns at once."""

    def __init__(self, upstreams: Sequence[str], client: RLAgentClient, names: Sequence[str] | None = None,
                 port: int = 0, host: str = "127.0.0.1", prefix_hashes: bool = True) -> None:
        self.upstreams = [urlsplit(url) for url in upstreams]
        self.client = client
        self.prefix_hashes = prefix_hashes
        self.state = GatewayState(names or [f"replica-{i + 1}" for i in range(len(upstreams))])
        self.server = ThreadingHTTPServer((host, port), _handler_for(self))
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), name="gateway",
                                        daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Gateway:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def stats(self) -> dict[str, Any]:
        return {"replicas": self.state.per_replica(), "decided_by": dict(self.state.decided_by),
                "client": self.client.stats()}

    def route(self, body: bytes, request_key: str | None) -> tuple[int, bytes, Decision]:
        """Pick the replica, forward, report; the upstream's status and body."""
        hashes = _chat_hashes(body) if self.prefix_hashes else []
        # With hashes the body names the replicas (the per-replica form carries the request's fields).
        extra = {"request": {"prefix_hashes": hashes}, "replica_names": self.state.names} if hashes else {}
        decision = self.client.select(*self.state.observe(), request_key=request_key, **extra)
        index = decision.replica_idx
        self.state.begin(index, decision)
        started = time.perf_counter()
        try:
            status, data = self._forward(self.upstreams[index], body)
        except (OSError, http.client.HTTPException) as exc:
            status, data = 502, json.dumps({"error": {"message": f"upstream failed: {exc}"}}).encode()
        latency_ms = (time.perf_counter() - started) * 1000
        success = 200 <= status < 300
        loads_after = self.state.end(index, latency_ms, success)
        self.client.report(decision, latency_ms, success, loads_after)
        return status, data, decision

    @staticmethod
    def _forward(upstream: Any, body: bytes) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(upstream.hostname, upstream.port or 80, timeout=UPSTREAM_TIMEOUT_S)
        try:
            conn.request("POST", upstream.path.rstrip("/") + "/v1/chat/completions", body=body,
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()


def _chat_hashes(body: bytes) -> list[str]:
    """The prefix block hashes of a chat request's messages; none for a body that is not one (the
    upstream answers it as it would without the gateway)."""
    try:
        messages = json.loads(body).get("messages")
        return chat_prefix_hashes(messages) if isinstance(messages, list) else []
    except (ValueError, AttributeError, TypeError):
        return []


def _quantile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def _handler_for(gateway: Gateway) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            if self.path.rstrip("/") != "/v1/chat/completions":
                return self._send(404, json.dumps({"error": {"message": f"no route {self.path}"}}).encode())
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            key = self.headers.get("X-Request-Key")
            if key is None:
                try:  # OpenAI's optional `user` field: a stable per-user canary split
                    user = json.loads(body).get("user")
                    key = str(user) if user is not None else None
                except (ValueError, AttributeError):
                    key = None
            status, data, decision = gateway.route(body, key)
            self._send(status, data, {
                "X-Replica": decision.replica_name, "X-Decided-By": decision.decided_by,
                "X-Policy": decision.policy, "X-Arm": decision.arm,
                "X-Decision-Reason": (decision.reason or "").encode("ascii", "replace").decode()[:200],
            })

        def do_GET(self) -> None:
            if self.path == "/health":
                return self._send(200, b'{"status": "ok"}')
            if self.path == "/gateway/stats":
                return self._send(200, json.dumps(gateway.stats()).encode())
            if self.path == "/v1/models":
                models = [{"id": name, "object": "model"} for name in gateway.state.names]
                return self._send(200, json.dumps({"object": "list", "data": models}).encode())
            self._send(404, b'{"error": {"message": "not found"}}')

        def _send(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the stdlib's name)
            pass

    return Handler
