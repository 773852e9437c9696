"""Memory and CPU use for the state vector: Prometheus at PROMETHEUS_URL, else this host.

Read by the background sync thread and cached, so a slow Prometheus never delays a request.
"""

from __future__ import annotations

import logging
import time

import psutil
import requests

log = logging.getLogger(__name__)

# node_exporter's usual series: memory in use and CPU busy fraction across the fleet, in 0-1.
MEMORY_QUERY = "1 - sum(node_memory_MemAvailable_bytes) / sum(node_memory_MemTotal_bytes)"
CPU_QUERY = '1 - avg(rate(node_cpu_seconds_total{mode="idle"}[1m]))'
RETRY_PROMETHEUS_AFTER_SECONDS = 60.0


class HostMetrics:
    """Remembers when Prometheus last failed so an absent one costs one timeout a minute."""

    def __init__(self, prometheus_url: str, timeout: float = 0.5) -> None:
        self.prometheus_url = prometheus_url.rstrip("/")
        self.timeout = timeout
        self.source = "host"
        self._prometheus_failed_at = float("-inf")
        psutil.cpu_percent(None)  # primes psutil's interval measurement

    def read(self) -> tuple[float, float]:
        """(memory, cpu), each in [0, 1]."""
        if time.monotonic() - self._prometheus_failed_at > RETRY_PROMETHEUS_AFTER_SECONDS:
            try:
                values = self._query(MEMORY_QUERY), self._query(CPU_QUERY)
                self.source = "prometheus"
                return values
            except (requests.RequestException, ValueError, KeyError, IndexError) as exc:
                log.info("Prometheus at %s unavailable (%s); using this host's figures",
                         self.prometheus_url, exc)
                self._prometheus_failed_at = time.monotonic()
        self.source = "host"
        return psutil.virtual_memory().percent / 100.0, psutil.cpu_percent(None) / 100.0

    def _query(self, promql: str) -> float:
        response = requests.get(
            f"{self.prometheus_url}/api/v1/query", params={"query": promql}, timeout=self.timeout
        )
        response.raise_for_status()
        value = float(response.json()["data"]["result"][0]["value"][1])
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{promql} gave {value}, outside [0, 1]")
        return value
