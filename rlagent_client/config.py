"""Client settings: every knob in one frozen dataclass, read once from the environment by
`ClientConfig.from_env()` and validated with a message that names the bad variable."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlsplit

MODES = ("rl", "shadow", "canary", "heuristic")
INFERENCE = ("remote", "local")
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")
# The service's rule for pool names (agent_app/pools.py, which needs Django: the client does not).
POOL_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")
POOL_RULE = "1-63 characters of letters, digits, '.', '_' and '-', starting with a letter or digit"

# Environment variable -> field. USE_RL_AGENT and RL_AGENT_URL are the original specification's names.
ENV_FIELDS = {
    "RL_AGENT_URL": "url",
    "RL_AGENT_API_KEY": "api_key",
    "RL_AGENT_POOL": "pool",
    "RL_AGENT_MODE": "mode",
    "RL_AGENT_INFERENCE": "inference",
    "RL_AGENT_TIMEOUT_MS": "timeout_ms",
    "RL_AGENT_CANARY_PERCENT": "canary_percent",
    "RL_AGENT_HEURISTIC": "heuristic",
    "RL_AGENT_BREAKER_FAILURES": "breaker_failures",
    "RL_AGENT_BREAKER_COOLDOWN_SECONDS": "breaker_cooldown_s",
    "RL_AGENT_REPORT": "report",
    "RL_AGENT_REPORT_QUEUE": "report_queue_size",
    "RL_AGENT_REPORT_BATCH": "report_batch_size",
    "RL_AGENT_REPORT_INTERVAL_MS": "report_interval_ms",
    "RL_AGENT_WEIGHTS_REFRESH_SECONDS": "weights_refresh_s",
    "RL_AGENT_LOCAL_EPSILON": "local_epsilon",
    "RL_AGENT_REPLICA_NAMES": "replica_names",
    "RL_AGENT_REPLICA_METRICS": "replica_metrics",
    "RL_AGENT_REPLICA_URLS": "replica_urls",
    "RL_AGENT_METRICS_INTERVAL_SECONDS": "metrics_interval_s",
}


@dataclass(frozen=True)
class ClientConfig:
    """How the gateway asks the agent. Defaults suit a service on the same network."""

    url: str = "http://localhost:5000"  # the RL agent service
    api_key: str | None = None  # sent as `Authorization: Bearer`; /record_experience needs it
    pool: str | None = None  # the service's replica pool this gateway routes for; None: the default pool
    mode: str = "rl"  # rl | shadow | canary | heuristic (who routes; see rlagent_client/README.md)
    inference: str = "remote"  # remote: POST /select_replica; local: published weights in-process
    timeout_ms: float = 50.0  # budget of one /select_replica call before the heuristic decides
    canary_percent: float = 10.0  # canary mode: share of requests the agent routes
    heuristic: str = "least_loaded"  # fallback: least_loaded | round_robin | power_of_two | random
    breaker_failures: int = 5  # consecutive failures that open the circuit
    breaker_cooldown_s: float = 5.0  # open circuit: seconds before one probe is let through
    report: bool = True  # send outcomes to /record_experience (never in heuristic mode)
    report_queue_size: int = 10_000  # reports held in memory; when full the oldest are dropped
    report_batch_size: int = 500  # experiences per POST (the service takes at most 1000)
    report_interval_ms: float = 200.0  # longest a report waits for its batch to fill
    report_timeout_s: float = 5.0  # one batch POST
    report_max_retries: int = 5  # retries of a batch on 5xx / connection errors, with backoff
    weights_refresh_s: float = 1.0  # local inference: how often GET /model/weights is polled
    local_epsilon: float = 0.0  # local inference: share of random (exploring) decisions
    replica_names: tuple[str, ...] = ()  # names for local/heuristic decisions; replica-1.. otherwise
    shadow_concurrency: int = 8  # shadow mode: agent calls in flight at most (extra ones are skipped)
    # Scrape each replica's vLLM /metrics and send running, waiting and KV-cache usage per replica
    # (the `replicas` form of /select_replica); needs replica_urls, in the order of the loads.
    replica_metrics: bool = False
    replica_urls: tuple[str, ...] = ()  # base URLs of the replicas (their /metrics is scraped)
    metrics_interval_s: float = 0.25  # how often the background thread reads every replica

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"RL_AGENT_URL must be an http(s) URL, got {self.url!r}")
        if self.pool is not None:
            check_pool("RL_AGENT_POOL", self.pool)
        _choice("RL_AGENT_MODE", self.mode, MODES)
        _choice("RL_AGENT_INFERENCE", self.inference, INFERENCE)
        _number("RL_AGENT_TIMEOUT_MS", self.timeout_ms, 1, 60_000)
        _number("RL_AGENT_CANARY_PERCENT", self.canary_percent, 0, 100)
        _number("RL_AGENT_BREAKER_FAILURES", self.breaker_failures, 1, 1_000_000, integer=True)
        _number("RL_AGENT_BREAKER_COOLDOWN_SECONDS", self.breaker_cooldown_s, 0, 86_400)
        _number("RL_AGENT_REPORT_QUEUE", self.report_queue_size, 1, 10_000_000, integer=True)
        _number("RL_AGENT_REPORT_BATCH", self.report_batch_size, 1, 1000, integer=True)
        _number("RL_AGENT_REPORT_INTERVAL_MS", self.report_interval_ms, 1, 3_600_000)
        _number("report_timeout_s", self.report_timeout_s, 0.01, 600)
        _number("report_max_retries", self.report_max_retries, 0, 1000, integer=True)
        _number("RL_AGENT_WEIGHTS_REFRESH_SECONDS", self.weights_refresh_s, 0.01, 86_400)
        _number("RL_AGENT_LOCAL_EPSILON", self.local_epsilon, 0, 1)
        _number("shadow_concurrency", self.shadow_concurrency, 1, 1024, integer=True)
        _number("RL_AGENT_METRICS_INTERVAL_SECONDS", self.metrics_interval_s, 0.01, 3600)
        for replica_url in self.replica_urls:
            bad = urlsplit(replica_url)
            if bad.scheme not in ("http", "https") or not bad.hostname:
                raise ValueError(f"RL_AGENT_REPLICA_URLS must hold http(s) URLs, got {replica_url!r}")
        if self.replica_metrics and not self.replica_urls:
            raise ValueError("RL_AGENT_REPLICA_METRICS=true needs RL_AGENT_REPLICA_URLS, one per replica")
        if not isinstance(self.heuristic, str) or not self.heuristic:
            raise ValueError(f"RL_AGENT_HEURISTIC must be a heuristic name, got {self.heuristic!r}")

    @property
    def timeout_s(self) -> float:
        return self.timeout_ms / 1000.0

    def replica_name(self, index: int) -> str:
        if index < len(self.replica_names):
            return self.replica_names[index]
        return f"replica-{index + 1}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> ClientConfig:
        """Read the RL_AGENT_* variables; USE_RL_AGENT=false (the default) means heuristic mode.

        Keyword overrides win over the environment (e.g. `from_env(timeout_ms=20)`).
        """
        env = os.environ if env is None else env
        types = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for var, name in ENV_FIELDS.items():
            raw = env.get(var)
            if raw is None or (raw.strip() == "" and name != "report"):
                continue
            values[name] = _parse(var, raw.strip(), types[name])
        if not _parse("USE_RL_AGENT", env.get("USE_RL_AGENT", "false").strip(), "bool"):
            values["mode"] = "heuristic"  # as specified: USE_RL_AGENT=false falls back to the heuristic
        values.update(overrides)
        return cls(**values)


def _parse(var: str, raw: str, kind: str) -> Any:
    if kind == "bool":
        if raw.lower() in TRUE:
            return True
        if raw.lower() in FALSE:
            return False
        raise ValueError(f"{var} must be true or false, got {raw!r}")
    if kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{var} must be an integer, got {raw!r}") from None
    if kind == "float":
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"{var} must be a number, got {raw!r}") from None
    if kind.startswith("tuple"):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw  # str and str | None


def check_pool(var: str, name: Any) -> str:
    """`name` if it is a valid pool name, else ValueError naming `var`."""
    if not isinstance(name, str) or not POOL_NAME.match(name):
        raise ValueError(f"{var} must be a pool name ({POOL_RULE}), got {name!r}")
    return name


def _choice(var: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{var} must be one of {', '.join(allowed)}, got {value!r}")


def _number(var: str, value: Any, low: float, high: float, integer: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value):
        raise ValueError(f"{var} must be {'an integer' if integer else 'a number'}, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{var} must be between {low:g} and {high:g}, got {value!r}")
