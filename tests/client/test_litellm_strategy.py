"""The LiteLLM plugin with a real `litellm.Router` in front of fake replicas: the agent's pick is
the deployment LiteLLM calls, outcomes reach the service's replay store (TTFT when streamed), with
the service down LiteLLM still routes with its own choice, and model groups mapped to pools are
routed and reported in their own pool."""

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
    """route(client, groups=("llama",), **options) -> (router, strategy): a Router over the replicas
    (each group has a deployment on each, named `<replica>` for llama, `<group>-<replica>` else),
    routed by the agent."""
    installed = []

    def make(client, groups=("llama",), **options):
        def deployment(group, replica):
            name = replica.profile.name if group == "llama" else f"{group}-{replica.profile.name}"
            return {"model_name": group, "model_info": {"id": name},
                    "litellm_params": {"model": f"openai/{group}", "api_base": f"{replica.url}/v1",
                                       "api_key": "-"}}

        # Reversed: the strategy orders deployments by name itself.
        model_list = [deployment(group, r) for group in groups for r in reversed(replicas)]
        router = litellm.Router(model_list=model_list, num_retries=0)
        strategy = RLAgentRoutingStrategy(router, client, seed=3, **options).install()
        installed.append(strategy)
        return router, strategy

    yield make
    for strategy in installed:
        strategy.uninstall()


async def ask(router, requests: int, model: str = "llama") -> list[str]:
    """Send requests one at a time, every other one streamed; which replica answered each."""
    served = []
    for i in range(requests):
        if i % 2:
            chunks = [chunk async for chunk in await router.acompletion(
                model=model, messages=MESSAGES, max_tokens=5, stream=True)]
            served.append(chunks[0].system_fingerprint)
        else:
            answer = await router.acompletion(model=model, messages=MESSAGES, max_tokens=5)
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


def test_each_model_group_is_routed_and_reported_in_its_pool(route, dummy, make_client):
    dummy.behave(lambda method, path, headers, body: (
        (200, {}, json.dumps(select_answer(2)).encode()) if path == "/select_replica"
        else (201, {}, b'{"stored": 1, "duplicates": 0}')))
    client = make_client(dummy.url, api_key="k", timeout_ms=2000, report_interval_ms=60_000)
    router, strategy = route(client, groups=("llama", "mistral"), pools={"llama": "alpha"})
    LOOP.run_until_complete(ask(router, 3, "llama"))
    LOOP.run_until_complete(ask(router, 2, "mistral"))
    assert [(pick["pool"], pick["by"]) for pick in strategy.history] == [("alpha", "agent")] * 3 + [
        (None, "agent")] * 2
    assert [pick["deployment"] for pick in strategy.history][-1] == "mistral-gpu-c-2"
    client.close()  # closes the pool's client too
    selected = [body.get("pool") for body in dummy.bodies if "replica_loads" in body]
    assert selected == ["alpha"] * 3 + [None] * 2  # a group not in `pools`: the client's own pool
    reported = {body.get("pool"): len(body["experiences"]) for body in dummy.bodies if "experiences" in body}
    assert reported == {"alpha": 3, None: 2}
    with pytest.raises(ValueError, match="pool must be a pool name"):
        RLAgentRoutingStrategy(router, client, pools={"llama": "no/such name"})


def test_with_the_live_service_each_pools_outcomes_reach_its_own_buffer(route, service, make_client):
    service.manage("create_pool", "alpha")

    def buffers() -> tuple[int, int]:
        return tuple(service.call("GET", path).json()["buffer_size"] or 0
                     for path in ("/stats?pool=alpha", "/stats"))

    before = buffers()
    client = make_client(service.url(""), api_key=service.api_key, timeout_ms=2000, report_interval_ms=10)
    router, strategy = route(client, groups=("llama", "mistral"), pools={"llama": "alpha"})
    LOOP.run_until_complete(ask(router, 4, "llama"))
    LOOP.run_until_complete(ask(router, 2, "mistral"))
    assert {pick["by"] for pick in strategy.history} == {"agent"}, list(strategy.history)
    client.close()
    stats = client.stats()
    assert stats["reporter"]["stored"] == 2 and stats["pools"]["alpha"]["reporter"]["stored"] == 4, stats
    after = buffers()
    assert (after[0] - before[0], after[1] - before[1]) == (4, 2)
