"""The fake replicas speak vLLM: streamed answers as server-sent events, the OpenAI shapes, vLLM's
Prometheus metrics, a batch limit with a FIFO queue behind it, and a prefix cache."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.parser import text_string_to_metric_families

from examples.fake_replica import FakeReplica, ReplicaProfile

SYSTEM = " ".join(f"rule{i}" for i in range(240))  # a long shared system prompt: 20 cached blocks


@pytest.fixture
def start() -> Iterator:
    started: list[FakeReplica] = []

    def make(**profile) -> FakeReplica:
        replica = FakeReplica(ReplicaProfile(profile.pop("name", "gpu-a-0"), **profile), seed=1).start()
        started.append(replica)
        return replica

    yield make
    for replica in started:
        replica.stop()


def post(url: str, path: str, body: dict) -> urllib.request.Request:
    return urllib.request.Request(url + path, data=json.dumps(body).encode(),
                                  headers={"Content-Type": "application/json"})


def chat(url: str, body: dict) -> dict:
    with urllib.request.urlopen(post(url, "/v1/chat/completions", body), timeout=60) as resp:
        return json.loads(resp.read())


def stream(url: str, body: dict, path: str = "/v1/chat/completions") -> tuple[list[str], float, float]:
    """The SSE payloads in order, and when the first and the last arrived (perf_counter)."""
    events, first_at = [], None
    with urllib.request.urlopen(post(url, path, {**body, "stream": True}), timeout=60) as resp:
        assert resp.headers["Content-Type"] == "text/event-stream"
        for raw in resp:
            line = raw.decode().rstrip("\n")
            if not line:
                continue
            assert line.startswith("data: "), line
            events.append(line[len("data: "):])
            first_at = first_at or time.perf_counter()
    return events, first_at, time.perf_counter()


def metrics(url: str) -> dict[str, dict[tuple, float]]:
    """{sample name: {labels: value}} as Prometheus' own parser reads /metrics."""
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def one(samples: dict[tuple, float]) -> float:
    (value,) = samples.values()
    return value


def test_a_streamed_chat_answer_is_server_sent_events_ending_in_done(start):
    replica = start(decode_ms_per_token=2.0)
    events, first_at, last_at = stream(replica.url, {"model": "m", "max_tokens": 6,
                                                     "messages": [{"role": "user", "content": "hello there"}],
                                                     "stream_options": {"include_usage": True}})
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text.split() == [f"tok{i % 7}" for i in range(6)]
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 6
    assert first_at < last_at  # the first token arrives before the answer ends: TTFT < total


def test_a_streamed_completion_and_whole_answers_have_openai_shapes(start):
    replica = start()
    events, _, _ = stream(replica.url, {"model": "m", "prompt": "once upon a time", "max_tokens": 3},
                          path="/v1/completions")
    chunks = [json.loads(event) for event in events[:-1]]
    assert events[-1] == "[DONE]"
    assert "".join(c["choices"][0]["text"] for c in chunks).split() == ["tok0", "tok1", "tok2"]
    whole = chat(replica.url, {"model": "m", "max_tokens": 4,
                               "messages": [{"role": "user", "content": "hi"}]})
    assert whole["object"] == "chat.completion" and whole["usage"]["completion_tokens"] == 4
    assert whole["system_fingerprint"] == "gpu-a-0"
    completion = post(replica.url, "/v1/completions", {"prompt": "x", "max_tokens": 2})
    with urllib.request.urlopen(completion) as resp:
        assert json.loads(resp.read())["object"] == "text_completion"
    models = json.loads(urllib.request.urlopen(replica.url + "/v1/models").read())
    assert [m["id"] for m in models["data"]] == ["gpu-a-0"]


def test_a_failing_replica_answers_500_and_a_bad_body_400(start):
    replica = start(failure_rate=1.0)
    with pytest.raises(urllib.error.HTTPError) as failed:
        chat(replica.url, {"messages": [{"role": "user", "content": "hi"}], "stream": True})
    assert failed.value.code == 500
    with pytest.raises(urllib.error.HTTPError) as bad:
        chat(replica.url, {"messages": "not a list"})
    assert bad.value.code == 400


def test_metrics_use_vllm_names_and_parse_with_the_prometheus_parser(start):
    replica = start(name="gpu-b-1", model="llama-3-8b")
    chat(replica.url, {"max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]})
    found = metrics(replica.url)
    labels = (("engine", "0"), ("model_name", "llama-3-8b"))
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                 "vllm:gpu_cache_usage_perc"):
        assert found[name] == {labels: 0.0}, name
    assert found["vllm:time_to_first_token_seconds_count"] == {labels: 1.0}
    assert found["vllm:e2e_request_latency_seconds_count"] == {labels: 1.0}
    assert one(found["vllm:generation_tokens_total"]) == 3.0
    finished = tuple(sorted((*labels, ("finished_reason", "length"))))
    assert found["vllm:request_success_total"] == {finished: 1.0}


def test_requests_beyond_max_batch_wait_in_fifo_and_metrics_show_it(start):
    replica = start(max_batch=2, decode_ms_per_token=10.0, contention=0.0)
    body = {"max_tokens": 150, "messages": [{"role": "user", "content": "a long answer please"}]}
    with ThreadPoolExecutor(5) as pool:
        answers = [pool.submit(chat, replica.url, body) for _ in range(5)]
        seen = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(a.done() for a in answers):
            found = metrics(replica.url)
            seen = (one(found["vllm:num_requests_running"]), one(found["vllm:num_requests_waiting"]))
            if seen == (2.0, 3.0):
                break
            time.sleep(0.01)
        loads = [json.loads(urllib.request.urlopen(replica.url + path).read())
                 for path in ("/load", "/get_load")]
        results = [a.result() for a in answers]
    assert seen == (2.0, 3.0)  # two run, three wait
    assert loads[0]["server_load"] >= 1 and loads[1][0]["num_reqs"] >= loads[1][0]["num_waiting_reqs"]
    assert all(r["usage"]["completion_tokens"] == 150 for r in results)
    assert replica.engine.max_running_seen == 2 and replica.in_flight == 0 and replica.served == 5


def test_a_cached_prefix_skips_prefill(start):
    replica = start()
    first = chat(replica.url, {"max_tokens": 2, "messages": [{"role": "system", "content": SYSTEM},
                                                             {"role": "user", "content": "question one"}]})
    second = chat(replica.url, {"max_tokens": 2, "messages": [{"role": "system", "content": SYSTEM},
                                                              {"role": "user", "content": "question two"}]})
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] >= 300  # the shared system prompt
    found = metrics(replica.url)
    cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert one(found["vllm:prefix_cache_hits_total"]) == cached
    assert one(found["vllm:prefix_cache_queries_total"]) == (first["usage"]["prompt_tokens"]
                                                             + second["usage"]["prompt_tokens"])


def test_without_prefix_caching_nothing_is_cached(start):
    replica = start(prefix_caching=False)
    body = {"max_tokens": 1, "messages": [{"role": "system", "content": SYSTEM}]}
    answers = [chat(replica.url, body) for _ in range(2)]
    assert [a["usage"]["prompt_tokens_details"]["cached_tokens"] for a in answers] == [0, 0]


def test_a_client_that_hangs_up_mid_stream_frees_its_batch_slot(start):
    replica = start(max_batch=1, decode_ms_per_token=20.0)
    request = post(replica.url, "/v1/chat/completions",
                   {"max_tokens": 500, "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    resp = urllib.request.urlopen(request, timeout=30)
    resp.readline()  # the first event: the request runs
    resp.close()
    done = threading.Event()
    threading.Thread(target=lambda: (chat(replica.url, {"max_tokens": 1, "messages": [
        {"role": "user", "content": "next"}]}), done.set()), daemon=True).start()
    assert done.wait(60)  # served once the abandoned stream gave its slot back
    assert replica.engine.generation_tokens_total < 500  # the abandoned stream stopped decoding
