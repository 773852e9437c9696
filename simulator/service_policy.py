"""The real service as a policy: the simulator plays the gateway over HTTP.

Each decision is a POST /select_replica; each completion is reported with the decision's
`decision_id` (so the service learns from exactly the state it decided on) through the batch
form of POST /record_experience; every `train_every` reports it calls POST /train, as beat
would. What is measured is what a gateway gets, network and fallbacks included.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import requests

from simulator.dqn_policy import add_curve_point
from simulator.router_view import BLOCK_TOKENS
from simulator.service_prefix import SERVICE_HASHES

# The original specification's five fields; with ``named`` the loads go as named ``replicas`` with
# what a vLLM replica reports, and the request's token counts as ``request``.
SELECT_FIELDS = ("replica_loads", "queue_depth", "recent_latency_ms", "current_rps", "success_rate")
REPLICA_FIELDS = ("name", "load", "running", "waiting", "kv_cache_usage")
# A gateway's prefix hash covers 256 characters, about 64 tokens (rlagent_client/prefix.py); a
# simulator block is 512 tokens. Each block goes as the 8 hashes a gateway would send for it, so
# the service's bounds (512 hashes a request, 8192 a replica) mean the 64 and 1024 blocks of the
# in-process index (service_prefix.py).
HASHES_PER_BLOCK = BLOCK_TOKENS // (256 // 4)
MODEL_POLICIES = ("dqn", "explore")  # decisions the model's arm made (with the gate, exploring is its)


class ServicePolicy:
    """The `Policy` interface (start/choose/observe/set_mode) backed by a running service."""

    name = "dqn_api"

    def __init__(self, base_url: str | None, api_key: str | None, train_requests: int = 10_000,
                 train_every: int = 16, iterations: int = 8, batch_size: int | None = None,
                 report_batch: int = 32, timeout_s: float = 10.0, curve_every: int = 250,
                 connect: Callable[[int], tuple[str, str]] | None = None, named: bool = True) -> None:
        """``connect`` (with ``base_url`` None) starts the service at the first ``start``: it gets
        the scenario's replica count, the service's NUM_REPLICAS, and returns (base_url, api_key)."""
        if base_url is None and connect is None:
            raise ValueError("give the service's base_url and api_key, or connect to start one")
        self.train_requests = train_requests
        self.train_every, self.iterations, self.batch_size = train_every, iterations, batch_size
        self.report_batch, self.timeout_s = report_batch, timeout_s
        self.http = requests.Session()
        self.base_url = ""
        if base_url is not None:
            self._use(base_url, api_key or "")
        self._connect = connect
        self.named = named  # the named body (any cluster size) or the original positional one
        self.num_replicas: int | None = None
        self._decisions: dict[int, str] = {}
        self._pending: list[dict] = []
        self.mode = "train"
        self.reported = 0
        self.policies: dict[str, int] = {}
        self.policies_by_mode: dict[str, dict[str, int]] = {}  # "train" / "eval" / "online"
        self.train_results: list[dict] = []
        self._recent: deque = deque(maxlen=1000)
        self._curve_every = curve_every
        self.curve: dict = {"requests": [], "latency_ms": [], "reward": [], "failure_rate": [],
                            "epsilon": [], "train_requests": train_requests}

    def _use(self, base_url: str, api_key: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.http.headers["Authorization"] = f"Bearer {api_key}"

    def start(self, context: Any) -> None:
        """Called before each run (training, then evaluation): the same service routes both, so
        they must have the same number of replicas."""
        self.context = context
        n = context.num_replicas
        if self.num_replicas is None:
            if not self.base_url:
                self._use(*self._connect(n))
            self.num_replicas = n
        elif n != self.num_replicas and not self.named:
            raise ValueError(f"the service routes {self.num_replicas} replicas; this run has {n}")

    def set_mode(self, mode: str) -> None:
        """"train" and "online" report and train as a deployment does; "eval" only decides."""
        self.flush()
        self.mode = mode

    def choose(self, request_fields: dict, rng: np.random.Generator) -> int:
        body = {key: request_fields[key] for key in SELECT_FIELDS if key in request_fields}
        if self.named and "replicas" in request_fields:
            body.pop("replica_loads", None)
            body["replicas"] = [{key: r[key] for key in REPLICA_FIELDS if key in r}
                                for r in request_fields["replicas"]]
            request = request_fields.get("request") or {}
            body["request"] = {key: int(request[key]) for key in ("prompt_tokens", "max_tokens")
                               if key in request}
            if request.get("prefix_hashes"):
                body["request"]["prefix_hashes"] = service_hashes(request["prefix_hashes"])
        response = self.http.post(f"{self.base_url}/select_replica", json=body,
                                  timeout=self.timeout_s)
        response.raise_for_status()
        decision = response.json()
        self.policies[decision["policy"]] = self.policies.get(decision["policy"], 0) + 1
        by_mode = self.policies_by_mode.setdefault(self.mode, {})
        by_mode[decision["policy"]] = by_mode.get(decision["policy"], 0) + 1
        # The engine hands this same state list back with the completed request.
        self._decisions[id(self.context.raw_state())] = decision["decision_id"]
        return int(decision["replica_idx"])

    def observe(self, experience: dict) -> None:
        decision_id = self._decisions.pop(id(experience["state"]), None)
        if self.mode == "eval" or decision_id is None:
            return
        report = {"decision_id": decision_id, "latency_ms": experience["latency_ms"],
                  "success": experience["success"], "replica_loads": experience["replica_loads"]}
        if self.named and experience.get("ttft_ms") is not None:
            report.update(ttft_ms=experience["ttft_ms"], output_tokens=int(experience["output_tokens"]))
        self._pending.append(report)
        if len(self._pending) >= self.report_batch:
            self.flush()

    def flush(self) -> None:
        """Report what is pending; train `iterations` steps per `train_every` reports sent."""
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        response = self.http.post(f"{self.base_url}/record_experience", json={"experiences": batch},
                                  timeout=self.timeout_s)
        response.raise_for_status()
        before, self.reported = self.reported, self.reported + len(batch)
        for item, reward in zip(batch, response.json()["rewards"], strict=True):
            self._track(item, reward)
        # `iterations` steps for every `train_every` reports this flush completed: a flush of 32
        # reports crosses two boundaries of 16, and 8 steps for both halved the steps per
        # experience (0.25 instead of the 0.5 of the in-process cadence and of the service's
        # TRAINING_STEPS_PER_EXPERIENCE).
        crossed = self.reported // self.train_every - before // self.train_every
        if crossed > 0:
            params = {"iterations": self.iterations * crossed}
            if self.batch_size:
                params["batch_size"] = self.batch_size  # else the service's default batch size
            trained = self.http.post(f"{self.base_url}/train", timeout=max(self.timeout_s, 60),
                                     params=params)
            if trained.status_code == 200:
                self.train_results.append(trained.json())
            elif trained.status_code != 409:  # 409: fewer experiences than a batch, or busy
                trained.raise_for_status()

    def _track(self, item: dict, reward: float) -> None:
        ok = item["success"]
        self._recent.append((item["latency_ms"] if ok else np.nan, reward, not ok))
        if self.reported % self._curve_every < self.report_batch and len(self._recent) > 1:
            epsilon = self.train_results[-1]["epsilon"] if self.train_results else 1.0
            add_curve_point(self.curve, self._recent, self.reported, epsilon)

    def describe(self) -> dict:
        last = self.train_results[-1] if self.train_results else {}
        # Per run (the runner keeps "gate" for every seed): the model's share of the decisions of
        # each phase, the evaluated one being the last mode set.
        shares = {mode: round(sum(counts.get(p, 0) for p in MODEL_POLICIES) / sum(counts.values()), 4)
                  for mode, counts in self.policies_by_mode.items() if counts}
        return {"service": self.base_url, "train_every": self.train_every, "iterations": self.iterations,
                "batch_size": self.batch_size, "train_requests": self.train_requests,
                "decisions_by_policy": dict(self.policies), "steps_done": last.get("steps_done"),
                "model_version": last.get("model_version"), "epsilon": last.get("epsilon"),
                "gate": {"model_share": shares.get(self.mode, 0.0), "model_share_by_mode": shares,
                         "decisions_by_mode": {m: dict(c) for m, c in self.policies_by_mode.items()}}}


def service_hashes(blocks: Sequence[int]) -> list[str]:
    """The hashes a gateway sends for a request's leading 512-token blocks: the first 64 blocks,
    ``HASHES_PER_BLOCK`` each (``"<block>-<k>"``), 512 in all at most, the service's limit."""
    return [f"{block}-{k}" for block in blocks[:SERVICE_HASHES] for k in range(HASHES_PER_BLOCK)]
