"""The LiteLLM plugin with a real `litellm.Router` in front of fake replicas: the agent's pick is
the deployment LiteLLM calls, outcomes reach the service's replay store (TTFT when streamed), and
with the service down LiteLLM still routes with its own choice."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline: the bundled cost map
litellm = pytest.importorskip("litellm")

from examples.fake_replica import FakeReplica, ReplicaProfile  # noqa: E402
from rlagent_client.litellm_strategy import RLAgentRoutingStrategy  # noqa: E402
from tests.client.conftest import select_answer  # noqa: E402

NAMES = ("gpu-a-0", "gpu-b-1", "gpu-c-2")
MESSAGES = [{"role": "user", "content": "say something"}]
# One event loop for every test: LiteLLM's logging worker binds to the first loop it runs on, as in
# a gateway process (a loop per test would leave later tests' callbacks unserved).
LOOP = asyncio.new_event_loop()


@pytest.fixture
def replicas():
    started = [FakeReplica(ReplicaProfile(name)).start() for name in NAMES]
    yield started
    for replica in started:
        replica.stop()


@pytest.fixture
def route(replicas):
    """route(client) -> (router, strategy): a Router over the replicas, routed by the agent."""
    installed = []

    def make(client):
        model_list = [{"model_name": "llama", "model_info": {"id": r.profile.name},
                       "litellm_params": {"model": "openai/llama", "api_base": f"{r.url}/v1", "api_key": "-"}}
                      for r in reversed(replicas)]  # the strategy orders deployments by name itself
        router = litellm.Router(model_list=model_list, num_retries=0)
        strategy = RLAgentRoutingStrategy(router, client, seed=3).install()
        installed.append(strategy)
        return router, strategy

    yield make
    for strategy in installed:
        strategy.uninstall()


async def ask(router, requests: int) -> list[str]:
    """Send requests one at a time, every other one streamed; which replica answered each."""
    served = []
    for i in range(requests):
        if i % 2:
            chunks = [chunk async for chunk in await router.acompletion(
                model="llama", messages=MESSAGES, max_tokens=5, stream=True)]
            served.append(chunks[0].system_fingerprint)
        else:
            answer = await router.acompletion(model="llama", messages=MESSAGES, max_tokens=5)
            served.append(answer.system_fingerprint)
    await asyncio.sleep(0.5)  # LiteLLM runs its success callbacks in the background
    return served


def test_litellm_calls_the_deployment_the_agent_picks_and_reports_each_outcome(route, dummy, make_client):
    dummy.behave(lambda method, path, headers, body: (
        (200, {}, json.dumps(select_answer(2)).encode()) if path == "/select_replica"
        else (201, {}, b'{"stored": 1, "duplicates": 0}')))
    client = make_client(dummy.url, api_key="k", timeout_ms=2000, report_interval_ms=10)
    router, strategy = route(client)
    served = LOOP.run_until_complete(ask(router, 6))
    served.append(router.completion(model="llama", messages=MESSAGES, max_tokens=3).system_fingerprint)
    assert served == ["gpu-c-2"] * 7  # replica_idx 2 of the deployments in name order
    assert [pick["by"] for pick in strategy.history] == ["agent"] * 7
    client.close()
    reports = [e for body in dummy.bodies if "experiences" in body for e in body["experiences"]]
    assert len(reports) == 7 and all(e["decision_id"] == "x" and e["success"] for e in reports)
    assert sum("ttft_ms" in e for e in reports) == 3  # the streamed ones
    assert all(e["ttft_ms"] <= e["latency_ms"] for e in reports if "ttft_ms" in e)
    assert {e["output_tokens"] for e in reports if "ttft_ms" not in e} <= {3, 5}
    loads = [body["replica_loads"] for body in dummy.bodies if "replica_loads" in body]
    assert loads and all(len(sent) == 3 for sent in loads)
    assert strategy.stats()["pending"] == 0 and strategy.traffic.snapshot()["in_flight"] == {}


def test_with_the_live_service_outcomes_reach_the_replay_store(route, service, make_client):
    client = make_client(service.url(""), api_key=service.api_key, timeout_ms=2000, report_interval_ms=10)
    router, strategy = route(client)
    before = service.call("GET", "/stats").json()["buffer_size"] or 0
    served = LOOP.run_until_complete(ask(router, 8))
    picks = list(strategy.history)
    assert [pick["deployment"] for pick in picks] == served  # each answered by the agent's pick
    assert {pick["by"] for pick in picks} == {"agent"}
    client.close()
    assert client.reporter.snapshot()["stored"] == 8, (client.reporter.snapshot(), strategy.stats())
    assert service.call("GET", "/stats").json()["buffer_size"] >= before + 8


def test_with_the_service_down_litellm_still_routes_with_its_own_choice(route, replicas, make_client):
    client = make_client("http://127.0.0.1:9", breaker_failures=2, report=False)
    router, strategy = route(client)
    served = LOOP.run_until_complete(ask(router, 12))
    assert len(served) == 12 and set(served) <= set(NAMES)
    assert [pick["by"] for pick in strategy.history] == ["litellm"] * 12
    reasons = [pick["reason"] for pick in strategy.history]
    assert reasons[0].startswith("error: ConnectionRefusedError") and reasons[-1] == "circuit_open"
    assert sum(r.served for r in replicas) == 12
