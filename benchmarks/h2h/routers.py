"""The routers compared, each behind one coroutine `send(request) -> Outcome` that streams a chat
completion and times it: vllm-router (a process), LiteLLM Routers (in this process, as a gateway
embeds them), the RL agent through LiteLLM or the example client, and client-side least-loaded."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.h2h.replica_proc import MODEL
from benchmarks.h2h.workload import Outcome, Request, prompt_text
from rlagent_client import ClientConfig, RLAgentClient
from rlagent_client.traffic import Traffic

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline: the bundled cost map
# The fake replicas stream the same word for every token; LiteLLM's guard against a model stuck in
# a loop fails a stream after 100 identical chunks. Real text never trips it; these would.
REPEATED_CHUNKS = 1_000_000
os.environ.setdefault("REPEATED_STREAMING_CHUNK_LIMIT", str(REPEATED_CHUNKS))
TIMEOUT_S = 300.0


def chat_body(request: Request, tag: str) -> dict[str, Any]:
    text = prompt_text(f"{tag}-{request.index}", request.prompt_tokens)
    return {"model": MODEL, "messages": [{"role": "user", "content": text}],
            "max_tokens": request.output_tokens, "stream": True}


async def stream_chat(http: httpx.AsyncClient, url: str, body: dict[str, Any], index: int) -> Outcome:
    """POST a streamed chat completion to `url`; the replica is the chunks' system_fingerprint."""
    start = time.perf_counter()
    ttft, replica = None, ""
    try:
        async with http.stream("POST", url, json=body) as answer:
            if answer.status_code != 200:
                await answer.aread()
                error = f"http {answer.status_code}"
                return Outcome(index, "", False, time.perf_counter() - start, None, error)
            async for line in answer.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                if ttft is None:
                    ttft = time.perf_counter() - start
                    replica = json.loads(line[6:]).get("system_fingerprint") or ""
        return Outcome(index, replica, ttft is not None, time.perf_counter() - start, ttft,
                       "" if ttft is not None else "empty stream")
    except (httpx.HTTPError, OSError) as exc:
        return Outcome(index, replica, False, time.perf_counter() - start, ttft, type(exc).__name__)


def _http() -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=200)
    return httpx.AsyncClient(timeout=httpx.Timeout(TIMEOUT_S, connect=10.0), limits=limits)


class VllmRouter:
    """The vLLM project's router (`vllm-router`, Rust) as its own process in front of the replicas."""

    def __init__(self, binary: str, policy: str, urls: list[str], port: int, metrics_port: int, log: Path
                 ) -> None:
        self.name = f"vllm-router {policy}"
        self.cmd = [binary, "--host", "127.0.0.1", "--port", str(port), "--policy", policy,
                    "--prometheus-port", str(metrics_port), "--request-timeout-secs", str(int(TIMEOUT_S)),
                    "--log-level", "warning", "--worker-urls", *urls]
        self.url = f"http://127.0.0.1:{port}/v1/chat/completions"
        self.log = log

    async def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        self.http = _http()
        deadline = time.monotonic() + 60
        health = self.url.replace("/v1/chat/completions", "/health")
        while time.monotonic() < deadline:
            try:
                if (await self.http.get(health)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                break
            await asyncio.sleep(0.25)
        raise RuntimeError(f"{self.name} did not start: see {self.log}")

    async def send(self, request: Request, tag: str) -> Outcome:
        return await stream_chat(self.http, self.url, chat_body(request, tag), request.index)

    async def close(self) -> None:
        await self.http.aclose()
        self.proc.terminate()
        self.proc.wait(timeout=20)


def model_list(names: list[str], urls: list[str]) -> list[dict[str, Any]]:
    return [{"model_name": MODEL, "model_info": {"id": name},
             "litellm_params": {"model": f"openai/{MODEL}", "api_base": f"{url}/v1", "api_key": "-"}}
            for name, url in zip(names, urls, strict=True)]


class LiteLLMRouter:
    """A `litellm.Router` with a built-in strategy, or with the RL agent's plugin (`client`)."""

    def __init__(self, names: list[str], urls: list[str], strategy: str,
                 client: RLAgentClient | None = None) -> None:
        self.name = "litellm + rl-agent plugin" if client else f"litellm {strategy}"
        self.names, self.urls, self.strategy_name, self.client = names, urls, strategy, client

    async def start(self) -> None:
        import litellm

        litellm.REPEATED_STREAMING_CHUNK_LIMIT = REPEATED_CHUNKS
        self.router = litellm.Router(model_list=model_list(self.names, self.urls), num_retries=0,
                                     routing_strategy=self.strategy_name, timeout=TIMEOUT_S)
        self.plugin = None
        if self.client is not None:
            from rlagent_client.litellm_strategy import RLAgentRoutingStrategy

            self.plugin = RLAgentRoutingStrategy(self.router, self.client, send_request_size=True).install()

    async def send(self, request: Request, tag: str) -> Outcome:
        body = chat_body(request, tag)
        start = time.perf_counter()
        ttft, replica = None, ""
        try:
            stream = await self.router.acompletion(model=MODEL, messages=body["messages"],
                                                   max_tokens=request.output_tokens, stream=True)
            async for chunk in stream:
                if ttft is None:
                    ttft = time.perf_counter() - start
                    replica = getattr(chunk, "system_fingerprint", None) or ""
            return Outcome(request.index, replica, ttft is not None, time.perf_counter() - start, ttft)
        except Exception as exc:  # noqa: BLE001 (LiteLLM maps every failure to its own exceptions)
            elapsed = time.perf_counter() - start
            return Outcome(request.index, replica, False, elapsed, ttft, type(exc).__name__)

    def picks(self) -> dict[str, int]:
        return dict(self.plugin.stats()["picks"]) if self.plugin else {}

    async def close(self) -> None:
        await asyncio.sleep(1.0)  # LiteLLM runs its success callbacks in the background
        if self.plugin is not None:
            self.plugin.uninstall()


class ClientRouter:
    """Direct to the replicas, picked in-process: by the example client asking the service (named
    body, request size and scraped vLLM metrics), or by least-loaded on the requests in flight."""

    def __init__(self, names: list[str], urls: list[str], client: RLAgentClient | None = None) -> None:
        self.name = "client + service (named body)" if client else "client least-loaded"
        self.names, self.urls, self.client = names, urls, client
        self.decided: dict[str, int] = {}

    async def start(self) -> None:
        self.traffic = Traffic()
        self.http = _http()

    def _pick(self, request: Request) -> tuple[int, Any, list[float]]:
        loads, queue_depth, latency_ms, rps, success_rate = self.traffic.observe(self.names)
        if self.client is None:
            return min(range(len(loads)), key=loads.__getitem__), None, loads
        decision = self.client.select(loads, queue_depth, latency_ms, rps, success_rate,
                                      replica_names=self.names,
                                      request={"prompt_tokens": request.prompt_tokens,
                                               "max_tokens": request.output_tokens})
        # The reason's first clause: the gate's reason goes on to quote counts that change per call.
        reason = None if decision.reason is None else decision.reason.split(":", 1)[0]
        key = decision.decided_by if reason is None else f"{decision.decided_by}: {reason}"
        self.decided[key] = self.decided.get(key, 0) + 1
        return decision.replica_idx, decision, loads

    async def send(self, request: Request, tag: str) -> Outcome:
        if self.client is None:
            index, decision, _ = self._pick(request)
        else:  # the client blocks up to its timeout: off the event loop
            index, decision, _ = await asyncio.to_thread(self._pick, request)
        name = self.names[index]
        self.traffic.begin(name)
        outcome = await stream_chat(self.http, f"{self.urls[index]}/v1/chat/completions",
                                    chat_body(request, tag), request.index)
        loads_after = self.traffic.end(name, self.names, outcome.latency_s * 1000, outcome.ok)
        if decision is not None:
            ttft_ms = None if outcome.ttft_s is None else outcome.ttft_s * 1000
            self.client.report(decision, outcome.latency_s * 1000, outcome.ok, loads_after, ttft_ms=ttft_ms,
                               output_tokens=request.output_tokens if outcome.ok else None)
        return outcome

    def picks(self) -> dict[str, int]:
        return dict(self.decided)

    async def close(self) -> None:
        await self.http.aclose()


def agent_client(url: str, api_key: str, names: list[str], urls: list[str], timeout_ms: float
                 ) -> RLAgentClient:
    """The example client as a gateway runs it against the service, scraping the replicas' metrics."""
    return RLAgentClient(ClientConfig(url=url, api_key=api_key, mode="rl", timeout_ms=timeout_ms,
                                      replica_names=tuple(names), replica_metrics=True,
                                      replica_urls=tuple(urls), report_interval_ms=100))
