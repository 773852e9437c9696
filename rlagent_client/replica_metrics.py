"""Replica metrics as routing features: one background thread reads every replica's vLLM
`/metrics` each `interval_s` and keeps the latest running, waiting and KV-cache usage per replica.

Requests never wait on a scrape: `features()` only reads what the thread last stored. A replica
whose metrics cannot be read stays routable; it is sent without metrics, and `stats()` says
which replicas are unreadable, since when and why.
"""

from __future__ import annotations

import http.client
import logging
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rlagent_client.transport import Transport

log = logging.getLogger(__name__)
RUNNING, WAITING = "vllm:num_requests_running", "vllm:num_requests_waiting"
# vLLM renamed the KV gauge in 0.10; the new name wins when a server exports both.
KV_USAGE_NAMES = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
WANTED = frozenset((RUNNING, WAITING, *KV_USAGE_NAMES))


def parse_vllm_metrics(text: str) -> dict[str, float]:
    """running, waiting and kv_cache_usage from Prometheus text; the keys found only.

    Several series of a name (data-parallel engines, several models) add up for running and
    waiting; KV usage is the fullest engine's, since a request may land on it.
    """
    series: dict[str, list[float]] = {}
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue  # comments, blank lines and other exporters' metrics
        brace = line.find("{")
        try:
            if brace >= 0:
                name, value = line[:brace], line[line.rindex("}") + 1:].split()[0]
            else:
                name, value = line.split()[:2]
            if name in WANTED:
                number = float(value)
                if math.isfinite(number):
                    series.setdefault(name, []).append(number)
        except (ValueError, IndexError):
            continue  # one malformed line does not hide the others
    out: dict[str, float] = {}
    if RUNNING in series:
        out["running"] = sum(series[RUNNING])
    if WAITING in series:
        out["waiting"] = sum(series[WAITING])
    for name in KV_USAGE_NAMES:
        if name in series:
            out["kv_cache_usage"] = min(1.0, max(0.0, max(series[name])))
            break
    return out


@dataclass(frozen=True)
class ReplicaReading:
    """The latest that is known of one replica."""

    name: str
    url: str
    metrics: dict[str, float] | None = None  # running, waiting, kv_cache_usage (those it exports)
    scraped_at: float | None = None  # time.time() of the last successful read
    unreachable_since: float | None = None  # time.time() of the first failed read in a row
    error: str | None = None  # why the last read failed
    failures: int = 0  # failed reads in a row


class ReplicaMetricsScraper:
    """Scrapes `targets` (replica name -> base URL) in one daemon thread; start() returns at once."""

    def __init__(self, targets: Mapping[str, str], *, interval_s: float = 0.25,
                 timeout_s: float | None = None, stale_after_s: float | None = None) -> None:
        if not targets:
            raise ValueError("targets must name at least one replica")
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
        self.interval_s = interval_s
        # A read may take an interval, but never long enough to freeze the others' figures.
        self.timeout_s = timeout_s if timeout_s is not None else min(1.0, max(interval_s, 0.1))
        # Older figures are not sent: a replica that stopped answering is not described by them.
        self.stale_after_s = stale_after_s if stale_after_s is not None else 4 * interval_s + self.timeout_s
        self._transports = {name: Transport(url) for name, url in targets.items()}
        self._readings = {name: ReplicaReading(name, url.rstrip("/")) for name, url in targets.items()}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self.rounds = 0  # completed passes over every replica
        self._thread = threading.Thread(target=self._run, name="rlagent-replica-metrics", daemon=True)

    def start(self) -> ReplicaMetricsScraper:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def wait_rounds(self, rounds: int, timeout_s: float = 10.0) -> bool:
        """Block until `rounds` more passes have completed (for start-up and tests); False on timeout."""
        with self._cond:
            target = self.rounds + rounds
            return self._cond.wait_for(lambda: self.rounds >= target, timeout_s)

    def reading(self, name: str) -> ReplicaReading:
        with self._cond:
            return self._readings[name]

    def features(self, names: Sequence[str]) -> list[dict[str, float]]:
        """For each name, its fresh metrics ({} when unknown, unreadable or stale)."""
        now = time.time()
        with self._cond:
            out = []
            for name in names:
                reading = self._readings.get(name)
                fresh = (reading is not None and reading.metrics is not None and reading.error is None
                         and reading.scraped_at is not None
                         and now - reading.scraped_at <= self.stale_after_s)
                out.append(dict(reading.metrics) if fresh else {})
            return out

    def stats(self) -> dict[str, Any]:
        with self._cond:
            readings = list(self._readings.values())
            rounds = self.rounds
        return {
            "interval_s": self.interval_s, "rounds": rounds,
            "replicas": {r.name: {"url": r.url, **(r.metrics or {}), "scraped_at": r.scraped_at}
                         for r in readings},
            "unreachable": {r.name: {"since": r.unreachable_since, "error": r.error, "failures": r.failures}
                            for r in readings if r.unreachable_since is not None},
        }

    def scrape_once(self) -> None:
        """One pass over every replica (the thread calls it each interval)."""
        for name, transport in self._transports.items():
            try:
                resp = transport.request("GET", "/metrics", timeout_s=self.timeout_s)
                if not resp.ok:
                    raise ValueError(f"http {resp.status}")
                metrics = parse_vllm_metrics(resp.body.decode("utf-8", "replace"))
                if not metrics:
                    raise ValueError("no vLLM metrics in the answer")
            except TimeoutError:
                self._failed(name, "timeout")
            except (OSError, http.client.HTTPException, ValueError) as exc:
                self._failed(name, f"{type(exc).__name__}: {exc}")
            else:
                with self._cond:
                    old = self._readings[name]
                    self._readings[name] = ReplicaReading(name, old.url, metrics, time.time())
        with self._cond:
            self.rounds += 1
            self._cond.notify_all()

    def _failed(self, name: str, error: str) -> None:
        with self._cond:
            old = self._readings[name]
            if old.unreachable_since is None:
                log.warning("replica %s: metrics unreadable (%s); it stays routable", name, error)
            self._readings[name] = ReplicaReading(
                name, old.url, old.metrics, old.scraped_at, old.unreachable_since or time.time(), error,
                old.failures + 1)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.scrape_once()
            except Exception:  # a bug here must not kill the thread: the features just go stale
                log.exception("replica metrics scrape failed")
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))
        for transport in self._transports.values():
            transport.close()
