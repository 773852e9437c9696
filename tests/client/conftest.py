"""One live service for the whole package (web + training worker, exploration off), a trained
variant, a scriptable stand-in service for the failure cases, and clients that close themselves."""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from rlagent_client import ClientConfig, RLAgentClient
from simulator.live_service import LiveStack
from tests.live.conftest import uses_services

SELECT = {"replica_loads": [5, 3, 7], "queue_depth": 12, "recent_latency_ms": 280.5, "current_rps": 8.2,
          "success_rate": 0.98}
Behaviour = Callable[[str, str, dict[str, str], bytes], tuple[int, dict[str, str], bytes]]


class DummyService:
    """An HTTP server whose answers a test scripts with `behave` (sleep, fail, answer garbage...)."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.bodies: list[Any] = []
        self.behaviour: Behaviour = lambda method, path, headers, body: (200, {}, b"{}")
        dummy = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                dummy.hits[self.path] += 1
                if body:
                    dummy.bodies.append(json.loads(body))
                try:
                    status, headers, data = dummy.behaviour(self.command, self.path, dict(self.headers), body)
                except (BrokenPipeError, ConnectionResetError):
                    return
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting: exactly what a timeout test wants

            do_GET = do_POST = _handle

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def behave(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def answer(
    status: int = 200, body: Any = None, delay_s: float = 0.0, headers: dict | None = None
) -> Behaviour:
    """A behaviour: wait delay_s, then answer status with body (JSON unless bytes)."""
    data = body if isinstance(body, bytes) else json.dumps(body if body is not None else {}).encode()

    def behaviour(method: str, path: str, request_headers: dict[str, str], request_body: bytes):
        time.sleep(delay_s)
        return status, headers or {}, data

    return behaviour


def select_answer(replica_idx: int = 2) -> dict[str, Any]:
    """A well-formed /select_replica answer, as the service gives it."""
    return {"replica_idx": replica_idx, "replica_name": f"replica-{replica_idx + 1}", "confidence": 0.5,
            "exploration": False, "policy": "dqn", "fallback_reason": None, "model_version": 7,
            "decision_id": "x", "state": [5, 3, 7, 12, 0.28, 8.2, 0.98, 0.1, 0.2, 0.5]}


@pytest.fixture
def dummy() -> Iterator[DummyService]:
    service = DummyService()
    yield service
    service.close()


@pytest.fixture
def make_client() -> Iterator[Callable[..., RLAgentClient]]:
    """make_client(url, **config) -> an RLAgentClient closed after the test."""
    clients: list[RLAgentClient] = []

    def make(url: str, heuristic: Any = None, **config: Any) -> RLAgentClient:
        if isinstance(heuristic, str):  # a name, as RL_AGENT_HEURISTIC gives it
            config["heuristic"], heuristic = heuristic, None
        client = RLAgentClient(ClientConfig(url=url, **config), heuristic=heuristic)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close(timeout_s=2)


@pytest.fixture(scope="package")
def service(tmp_path_factory) -> Iterator[LiveStack]:
    """The service as the README starts it (web + worker), exploration off so decisions are greedy,
    the model routing as soon as it has trained (no routing gate), and the fixed network, the one
    local inference serves (tests/live/ run the production defaults)."""
    stack = LiveStack(tmp_path_factory.mktemp("client-stack"), use_services=uses_services(),
                      RL_EXPLORATION="false", RL_ROUTING_GATE="false", RL_NETWORK="mlp")
    try:
        stack.start("web")
        stack.start("worker")
        yield stack
    finally:
        stack.close()


@pytest.fixture(scope="package")
def trained_service(service: LiveStack) -> LiveStack:
    """The same service after 150 training steps (RL_MIN_TRAINING_STEPS=100): its model routes."""
    if requests.get(service.url("/model/weights"), timeout=10).headers.get("X-Model-Ready") == "true":
        return service
    rng = random.Random(3)
    experiences = []
    for i in range(600):  # latency grows with the chosen replica's load: something worth learning
        loads, action = [rng.randint(0, 30) for _ in range(3)], i % 3
        after = [load + (j == action) for j, load in enumerate(loads)]
        experiences.append({"state": [*loads, rng.randint(0, 20), 0.2, 8.2, 0.98, 0.5, 0.4, 0.5],
                            "action": action, "latency_ms": 20.0 + 25 * loads[action], "success": True,
                            "replica_loads": after})
    assert service.call("POST", "/record_experience", json={"experiences": experiences}).status_code == 201
    steps = 0
    while steps < 150:  # a run's time budget may stop it early on a busy machine: train on
        trained = service.call("POST", f"/train?batch_size=128&iterations={150 - steps}")
        assert trained.status_code == 200, trained.text
        steps, version = trained.json()["steps_done"], trained.json()["model_version"]

    def served_everywhere() -> bool:  # several calls, so both gunicorn workers are asked
        return all(requests.get(service.url("/model/weights"), timeout=5).headers.get("X-Model-Version")
                   == str(version) for _ in range(6))

    service.wait_for(served_everywhere, 30, f"web workers to serve model v{version}")
    return service


def ab_counts(stack: LiveStack) -> dict[str, int]:
    arms = stack.call("GET", "/ab_results").json()["arms"]
    return {arm: figures["count"] for arm, figures in arms.items()}
