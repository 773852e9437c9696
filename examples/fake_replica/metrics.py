"""A fake replica's `/metrics`: vLLM's Prometheus names, labels and histogram buckets (its v1
engine: `model_name` and `engine` labels), written by prometheus_client as vLLM's are."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from examples.fake_replica.engine import Engine

TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
               240.0, 480.0, 960.0, 1920.0, 7680.0)
LABELS = ("model_name", "engine")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class VllmMetrics:
    """One registry per replica, so replicas in one process never share a series."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.registry = registry = CollectorRegistry()
        labels = (engine.profile.served_model, "0")
        self._lock = threading.Lock()

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, LABELS, registry=registry).labels(*labels)

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, LABELS, registry=registry).labels(*labels)

        self.running = gauge("vllm:num_requests_running", "Number of requests in model execution batches.")
        self.waiting = gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.")
        self.kv_usage = gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.")
        # The name before vLLM 0.10; routers written for older releases still read it.
        self.gpu_usage = gauge("vllm:gpu_cache_usage_perc", "GPU KV-cache usage. 1 means 100 percent usage.")
        self.prefix_queries = counter("vllm:prefix_cache_queries",
                                      "Prefix cache queries, in terms of number of queried tokens.")
        self.prefix_hits = counter("vllm:prefix_cache_hits",
                                   "Prefix cache hits, in terms of number of cached tokens.")
        self.prompt_tokens = counter("vllm:prompt_tokens", "Number of prefill tokens processed.")
        self.generation_tokens = counter("vllm:generation_tokens", "Number of generation tokens processed.")
        self.success = Counter("vllm:request_success", "Count of successfully processed requests.",
                               (*LABELS, "finished_reason"), registry=registry)
        self.ttft = Histogram("vllm:time_to_first_token_seconds",
                              "Histogram of time to first token in seconds.", LABELS,
                              buckets=TTFT_BUCKETS, registry=registry).labels(*labels)
        self.e2e = Histogram("vllm:e2e_request_latency_seconds",
                             "Histogram of e2e request latency in seconds.", LABELS, buckets=E2E_BUCKETS,
                             registry=registry).labels(*labels)
        self._labels = labels
        self._pushed = {"queries": 0, "hits": 0, "prompt": 0, "generation": 0}

    def finished(self, ttft_s: float | None, e2e_s: float, finished_reason: str | None) -> None:
        """Record one request's outcome (finished_reason None: it failed)."""
        if ttft_s is not None:
            self.ttft.observe(ttft_s)
        self.e2e.observe(e2e_s)
        if finished_reason is not None:
            self.success.labels(*self._labels, finished_reason).inc()

    def render(self) -> bytes:
        """The exposition text, gauges and token counters read from the engine now."""
        engine = self.engine
        now = engine.snapshot()
        with self._lock:
            self.running.set(now["running"])
            self.waiting.set(now["waiting"])
            self.kv_usage.set(now["kv_cache_usage"])
            self.gpu_usage.set(now["kv_cache_usage"])
            totals = {"queries": engine.prefix_queries_total, "hits": engine.prefix_hits_total,
                      "prompt": engine.prompt_tokens_total, "generation": engine.generation_tokens_total}
            for key, metric in (("queries", self.prefix_queries), ("hits", self.prefix_hits),
                                ("prompt", self.prompt_tokens), ("generation", self.generation_tokens)):
                metric.inc(totals[key] - self._pushed[key])  # the engine counts; a counter only grows
                self._pushed[key] = totals[key]
            return generate_latest(self.registry)
