"""The gateway's handle on the RL agent: `select()` a replica, `report()` what happened.

`select()` never raises for a sick service and never waits longer than the timeout: on a timeout,
an error, a non-2xx answer or an open circuit the heuristic decides, and the Decision says so.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import itertools
import logging
import math
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from agent_app.rl.policy import softmax_confidence
from agent_app.rl.state import build_state, normalize_state, state_dim
from rlagent_client.config import ClientConfig, check_pool
from rlagent_client.decision import ARM_HEURISTIC, ARM_RL, HEURISTIC, LOCAL, SERVICE, Decision
from rlagent_client.fallback import CircuitBreaker, Heuristic, heuristic_name, make_heuristic
from rlagent_client.local import LocalPolicy
from rlagent_client.payload import select_payload
from rlagent_client.replica_metrics import ReplicaMetricsScraper
from rlagent_client.reporter import Reporter
from rlagent_client.transport import Response, Transport, unknown_pool

log = logging.getLogger(__name__)
MAX_LATENCY_MS = 3_600_000.0  # the service's bound on latency_ms
WEIGHTS_TIMEOUT_S = 2.0


class RLAgentClient:
    """Thread-safe; create one per gateway process and share it between request threads."""

    def __init__(self, config: ClientConfig | None = None, *, heuristic: Heuristic | None = None) -> None:
        self.config = config = config or ClientConfig()
        self._given_heuristic = heuristic  # for_pool() clients share a caller's own heuristic
        self.heuristic = heuristic or make_heuristic(config.heuristic)
        self._heuristic_policy = heuristic_name(self.heuristic)
        self._transport = Transport(config.url, config.api_key)
        self.breaker = CircuitBreaker(config.breaker_failures, config.breaker_cooldown_s)
        self._rng = random.Random()
        self._lock = threading.Lock()
        self._decisions: Counter[str] = Counter()
        self._fallbacks: Counter[str] = Counter()
        self._arms: Counter[str] = Counter()
        self._shadow: Counter[str] = Counter()
        self._shadow_choices: Counter[int] = Counter()
        self._invalid_reports = 0
        self._host = (0.0, 0.0)  # memory and CPU from the service's last answer, for local states
        self._ids = itertools.count()
        self._id_prefix = uuid.uuid4().hex[:16]
        self._pool_clients: dict[str | None, RLAgentClient] = {}  # for_pool()
        self._pool_clients_lock = threading.Lock()  # not self._lock: a new client may fetch weights first
        self._unknown_pool_logged = False
        agent_used = config.mode != "heuristic"
        self.reporter = None
        if agent_used and config.report:
            self.reporter = Reporter(
                self._transport, queue_size=config.report_queue_size, batch_size=config.report_batch_size,
                interval_s=config.report_interval_ms / 1000, timeout_s=config.report_timeout_s,
                max_retries=config.report_max_retries, pool=config.pool,
            )
        self.local = None
        if agent_used and config.inference == "local":
            self.local = LocalPolicy(self._transport, refresh_s=config.weights_refresh_s,
                                     timeout_s=WEIGHTS_TIMEOUT_S, pool=config.pool)
            self.local.start()
        self.scraper = None
        self._owns_scraper = agent_used and config.replica_metrics  # False in for_pool() clients
        if self._owns_scraper:
            names = [config.replica_name(i) for i in range(len(config.replica_urls))]
            self.scraper = ReplicaMetricsScraper(dict(zip(names, config.replica_urls, strict=True)),
                                                 interval_s=config.metrics_interval_s).start()
        self._shadow_pool = None
        if config.mode == "shadow" and self.local is None:
            self._shadow_pool = ThreadPoolExecutor(config.shadow_concurrency, "rlagent-shadow")
            self._shadow_slots = threading.BoundedSemaphore(config.shadow_concurrency)

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, heuristic: Heuristic | None = None, **overrides: Any
    ) -> RLAgentClient:
        """A client configured by USE_RL_AGENT, RL_AGENT_URL and the other RL_AGENT_* variables."""
        return cls(ClientConfig.from_env(env, **overrides), heuristic=heuristic)

    def select(
        self,
        replica_loads: Sequence[float],
        queue_depth: float = 0.0,
        recent_latency_ms: float = 0.0,
        current_rps: float = 0.0,
        success_rate: float = 1.0,
        *,
        request_key: str | None = None,
        memory: float | None = None,
        cpu: float | None = None,
        time_of_day: float | None = None,
        request: Mapping[str, Any] | None = None,
        replica_metrics: Sequence[Mapping[str, float]] | None = None,
        replica_names: Sequence[str] | None = None,
    ) -> Decision:
        """Which replica serves this request. `request_key` (a user or session id) makes the canary
        split deterministic; memory, cpu and time_of_day default as the service's would.

        `request` ({"prompt_tokens", "max_tokens"}) or `replica_metrics` (per replica: running,
        waiting, kv_cache_usage), or the client's own scraper (RL_AGENT_REPLICA_METRICS), send the
        service the per-replica `replicas` form of the body instead of `replica_loads`, naming the
        replicas `replica_names` (default: RL_AGENT_REPLICA_NAMES, else replica-1, replica-2...)."""
        started = time.perf_counter()
        if not replica_loads:
            raise ValueError("replica_loads must not be empty")
        memory = self._host[0] if memory is None else memory
        cpu = self._host[1] if cpu is None else cpu
        # The body is built here, so a bad `request` or `replica_metrics` raises to the caller.
        extended = self._extended(len(replica_loads), request, replica_metrics, replica_names)
        payload = select_payload(replica_loads, queue_depth, recent_latency_ms, current_rps, success_rate,
                                 pool=self.config.pool, **extended)
        inputs = (replica_loads, queue_depth, recent_latency_ms, current_rps, success_rate, memory, cpu,
                  time_of_day, payload)
        mode = self.config.mode
        if mode == "rl":
            decision = self._agent(inputs, ARM_RL)
        elif mode == "canary":
            if self.in_canary(request_key):
                decision = self._agent(inputs, ARM_RL)
            else:
                decision = self._fallback(inputs, ARM_HEURISTIC, "canary: heuristic arm")
        elif mode == "shadow":
            decision = self._fallback(inputs, ARM_HEURISTIC, "mode=shadow")
            decision.shadow = self._ask_in_shadow(inputs, decision.replica_idx)
        else:
            decision = self._fallback(inputs, ARM_HEURISTIC, "mode=heuristic")
        decision.elapsed_ms = (time.perf_counter() - started) * 1000
        with self._lock:
            self._decisions[f"{decision.decided_by}/{decision.policy}"] += 1
            self._arms[decision.arm] += 1
            if decision.fallback:
                self._fallbacks[decision.reason.split(":", 1)[0]] += 1
        return decision

    def in_canary(self, request_key: str | None) -> bool:
        """Is this request in the agent's share? Stable per key; random without one."""
        percent = self.config.canary_percent
        if request_key is None:
            return self._rng.random() * 100 < percent
        digest = hashlib.blake2b(request_key.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") % 1_000_000 < percent * 10_000

    def report(
        self, decision: Decision, latency_ms: float, success: bool, replica_loads_after: Sequence[float],
        *, ttft_ms: float | None = None, output_tokens: int | None = None,
    ) -> None:
        """Queue the outcome for the background reporter; returns at once, whatever the service does.
        `ttft_ms` (time to first token, streamed answers) and `output_tokens` are sent when given."""
        if self.reporter is None:
            return
        try:
            latency = float(latency_ms)
            loads = [float(load) for load in replica_loads_after]
            valid = math.isfinite(latency) and latency >= 0 and loads and all(map(math.isfinite, loads))
            ttft = None if ttft_ms is None else float(ttft_ms)
            valid = valid and (ttft is None or (math.isfinite(ttft) and ttft >= 0))
            tokens = None if output_tokens is None else int(output_tokens)
            valid = valid and (tokens is None or tokens >= 0)
        except (TypeError, ValueError):
            valid = False
        if not valid:
            with self._lock:
                self._invalid_reports += 1
            return
        body: dict[str, Any] = {
            "experience_id": f"{self._id_prefix}:{next(self._ids)}",
            "latency_ms": min(latency, MAX_LATENCY_MS), "success": bool(success),
            "replica_loads": loads, "arm": decision.arm,
        }
        if ttft is not None:
            body["ttft_ms"] = min(ttft, latency, MAX_LATENCY_MS)
        if tokens is not None:
            body["output_tokens"] = tokens
        if decision.decided_by == SERVICE and decision.decision_id:
            body["decision_id"] = decision.decision_id
        else:
            shadow = decision.shadow_choice()
            state = shadow.state if shadow is not None and shadow.decided_by == SERVICE else decision.state
            body["state"], body["action"] = state, decision.replica_idx
        self.reporter.put(body)

    def for_pool(self, pool: str | None) -> RLAgentClient:
        """The client for another replica pool of the same service: these settings and heuristic,
        its own circuit breaker, reporter (its batches name its pool) and local weights, and this
        client's replica-metrics scraper (metrics are matched by replica name). Made once per pool,
        closed by this client's close(); `None` is the default pool. Report a decision to the
        client that made it."""
        if pool is not None:
            check_pool("pool", pool)
        if pool == self.config.pool:
            return self
        with self._pool_clients_lock:
            child = self._pool_clients.get(pool)
            if child is None:
                config = dataclasses.replace(self.config, pool=pool, replica_metrics=False)
                child = RLAgentClient(config, heuristic=self._given_heuristic)
                child.scraper = self.scraper
                self._pool_clients[pool] = child
        return child

    def stats(self) -> dict[str, Any]:
        """Counters for dashboards and logs: who decided, why the heuristic did, the reporter, shadow;
        the for_pool() clients' own under "pools"."""
        with self._pool_clients_lock:
            children = dict(self._pool_clients)
        with self._lock:
            out: dict[str, Any] = {
                "pool": self.config.pool, "mode": self.config.mode, "inference": self.config.inference,
                "decisions": dict(self._decisions), "arms": dict(self._arms),
                "fallbacks": dict(self._fallbacks), "invalid_reports": self._invalid_reports,
            }
            if self.config.mode == "shadow":
                out["shadow"] = {**{k: self._shadow[k] for k in ("asked", "answered", "agreed", "failed",
                                                                 "skipped")},
                                 "agent_choices": dict(self._shadow_choices)}
        out["breaker"] = self.breaker.snapshot()
        out["reporter"] = self.reporter.snapshot() if self.reporter else None
        out["local_model"] = self.local.snapshot() if self.local else None
        out["replica_metrics"] = self.scraper.stats() if self.scraper else None
        if children:
            out["pools"] = {name or "default": child.stats() for name, child in children.items()}
        return out

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the background threads, sending what is queued (up to timeout_s), for_pool() clients' too."""
        with self._pool_clients_lock:
            children = list(self._pool_clients.values())
        for child in children:
            child.close(timeout_s)
        if self.local is not None:
            self.local.stop()
        if self.scraper is not None and self._owns_scraper:
            self.scraper.stop()
        if self._shadow_pool is not None:
            self._shadow_pool.shutdown(wait=True, cancel_futures=True)
        if self.reporter is not None:
            self.reporter.close(timeout_s)
        self._transport.close()

    def __enter__(self) -> RLAgentClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- deciding -------------------------------------------------------------------------------

    def _extended(self, n: int, request: Mapping[str, Any] | None,
                  metrics: Sequence[Mapping[str, float]] | None,
                  names: Sequence[str] | None) -> dict[str, Any]:
        """What the per-replica body needs beyond the loads; nothing for the original body."""
        names = list(names) if names is not None else [self.config.replica_name(i) for i in range(n)]
        if metrics is None and self.scraper is not None:
            metrics = self.scraper.features(names)  # by name: unknown ones get no metrics
        if metrics is None and request is None:
            return {}
        return {"names": names, "replica_metrics": metrics, "request": request}

    def _agent(self, inputs: tuple, arm: str) -> Decision:
        return self._local_decision(inputs, arm) if self.local is not None else self._remote(inputs, arm)

    def _fallback(self, inputs: tuple, arm: str, reason: str) -> Decision:
        loads = inputs[0]
        index = self.heuristic(loads)
        if not 0 <= index < len(loads):
            raise ValueError(f"heuristic {self._heuristic_policy} chose replica {index} of {len(loads)}")
        state = build_state(*inputs[:8]) if self.reporter is not None else None
        return Decision(index, self.config.replica_name(index), HEURISTIC, reason, self._heuristic_policy,
                        arm, state=state)

    def _remote(self, inputs: tuple, arm: str) -> Decision:
        if not self.breaker.allow():
            return self._fallback(inputs, arm, "circuit_open")
        loads = inputs[0]
        try:
            resp = self._transport.request("POST", "/select_replica", timeout_s=self.config.timeout_s,
                                           payload=inputs[8])
            if not resp.ok:
                raise self._refusal(resp)
            body = resp.json()
            index = int(body["replica_idx"])
            if not 0 <= index < len(loads):
                raise _Refused(f"replica_idx {index} out of range")
        except TimeoutError:
            reason = "timeout"
        except _UnknownPool as exc:
            reason = f"unknown_pool: {exc}"
        except _Refused as exc:
            reason = f"error: {exc}"
        except (OSError, http.client.HTTPException) as exc:
            reason = f"error: {type(exc).__name__}: {exc}"
        except (ValueError, KeyError, TypeError) as exc:
            reason = f"error: bad response: {exc}"
        else:
            self.breaker.record_success()
            self._unknown_pool_logged = False
            state = body.get("state") or None
            if state is not None and len(state) == state_dim(len(loads)):
                self._host = (float(state[-3]), float(state[-2]))
            return Decision(index, str(body.get("replica_name") or self.config.replica_name(index)), SERVICE,
                            body.get("fallback_reason"), str(body.get("policy", "dqn")), arm, state=state,
                            decision_id=body.get("decision_id"), model_version=body.get("model_version"),
                            confidence=body.get("confidence"), exploration=bool(body.get("exploration")))
        self.breaker.record_failure()
        return self._fallback(inputs, arm, reason)

    def _refusal(self, resp: Response) -> _Refused:
        """Why a non-2xx answer is no decision: _UnknownPool when the service has no such pool."""
        detail = unknown_pool(resp)
        if detail is None:
            return _Refused(f"http {resp.status}")
        if not self._unknown_pool_logged:  # a setting to fix, not a sick service: say so, once
            self._unknown_pool_logged = True
            log.warning("rlagent client: %s; the heuristic routes until it exists", detail)
        return _UnknownPool(detail)

    def _local_decision(self, inputs: tuple, arm: str) -> Decision:
        model = self.local.model  # one read: a refresh swaps the whole object
        network, n = model.network, len(inputs[0])
        if network is None:
            return self._fallback(inputs, arm, f"no_model: {model.reason}")
        if not model.ready:
            return self._fallback(inputs, arm, f"not_ready: {model.reason}")
        if network.n_actions != n:
            return self._fallback(inputs, arm, f"mismatch: model v{model.version} is for "
                                               f"{network.n_actions} replicas, got {n} loads")
        state = build_state(*inputs[:8])
        values = network.q_values(normalize_state(state, n))
        if self.config.local_epsilon and self._rng.random() < self.config.local_epsilon:
            index, policy, exploring = self._rng.randrange(n), "explore", True
        else:
            index, policy, exploring = int(values.argmax()), "dqn", False
        return Decision(index, self.config.replica_name(index), LOCAL, None, policy, arm, state=state,
                        model_version=model.version, confidence=softmax_confidence(values, index),
                        exploration=exploring)

    def _ask_in_shadow(self, inputs: tuple, routed: int) -> Future[Decision] | None:
        with self._lock:
            self._shadow["asked"] += 1
        if self._shadow_pool is None:  # local inference: microseconds, answer at once
            future: Future[Decision] = Future()
            future.set_result(self._local_decision(inputs, ARM_HEURISTIC))
        elif self._shadow_slots.acquire(blocking=False):
            future = self._shadow_pool.submit(self._remote, inputs, ARM_HEURISTIC)
        else:
            with self._lock:
                self._shadow["skipped"] += 1  # the agent is slower than the traffic: do not queue
            return None
        future.add_done_callback(lambda done: self._shadow_done(done, routed))
        return future

    def _shadow_done(self, future: Future[Decision], routed: int) -> None:
        if self._shadow_pool is not None:
            self._shadow_slots.release()
        agent = None if future.cancelled() or future.exception() else future.result()
        with self._lock:
            if agent is None or agent.decided_by == HEURISTIC:
                self._shadow["failed"] += 1
                return
            self._shadow["answered"] += 1
            self._shadow_choices[agent.replica_idx] += 1
            if agent.replica_idx == routed:
                self._shadow["agreed"] += 1


class _Refused(Exception):
    """The service answered, but not with a usable decision."""


class _UnknownPool(_Refused):
    """The service has no pool of the configured name (404 naming it)."""
