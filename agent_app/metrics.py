"""The agent's Prometheus metrics, served at /metrics with django-prometheus's own.

Two kinds, so that every figure is right with several gunicorn workers and with training in
Celery workers that Prometheus never scrapes:

- counters of the web hot path (decisions, experiences) are prometheus_client counters,
  written to files in PROMETHEUS_MULTIPROC_DIR under gunicorn and summed at scrape time;
- what lives in the database (per pool: epsilon, steps, model version, checkpoints, the replay
  buffer; for the whole service: training-run durations, checkpoints written) is read by a
  collector when Prometheus scrapes, so no process holds a copy.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from django.conf import settings

if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # before the first metric opens a file there
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

from prometheus_client import REGISTRY, Counter  # noqa: E402
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily  # noqa: E402
from prometheus_client.registry import Collector  # noqa: E402

from agent_app.pools import DEFAULT_POOL  # noqa: E402

log = logging.getLogger(__name__)

POLICIES = ("dqn", "explore", "least_loaded", "scorer")
# Training-run durations (seconds): a run is one batch of gradient steps plus a publish.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

DECISIONS = Counter(
    "rl_agent_decisions", "Replica selections by pool, replica and the policy that decided.",
    ["pool", "replica", "policy"],
)
EXPERIENCES_RECORDED = Counter(
    "rl_agent_experiences_recorded", "Experiences stored in the replay stores, every pool's together."
)
EXPERIENCES_REJECTED = Counter(
    "rl_agent_experiences_rejected", "Experiences refused with a 400 (every body of a refused batch counts), "
    "every pool's together."
)
for _name in settings.REPLICA_NAMES:  # every series exists from the start, at 0, as Prometheus prefers
    for _policy in POLICIES:
        DECISIONS.labels(pool=DEFAULT_POOL, replica=_name, policy=_policy)
# What each (pool, replica, policy) of this process has added to DECISIONS so far.
_decisions_counted: dict[tuple[str, int | str, str], int] = {}
_decisions_lock = threading.Lock()  # the serving refresh and a scrape may flush at the same time


def count_decisions(totals: Mapping[tuple[str, int | str, str], int]) -> None:
    """Bring DECISIONS up to `totals`, this process's cumulative decisions per (pool, replica, policy).

    /select_replica only adds one to a dict; this runs off the hot path, from the serving refresh
    and before each scrape, so a scrape has every decision of the worker that answers it and the
    other workers' up to SYNC_INTERVAL_SECONDS ago.
    """
    with _decisions_lock:
        for key, total in list(totals.items()):
            delta = total - _decisions_counted.get(key, 0)
            if delta > 0:
                pool, replica, policy = key  # replica: an index into REPLICA_NAMES, or a name sent
                names = settings.REPLICA_NAMES
                name = replica if isinstance(replica, str) else names[replica] if replica < len(names) \
                    else str(replica)
                DECISIONS.labels(pool=pool, replica=name, policy=policy).inc(delta)
                _decisions_counted[key] = total


def count_recorded(stored: int) -> None:
    if stored:
        EXPERIENCES_RECORDED.inc(stored)


def count_rejected(data: Any) -> None:
    """Count the experiences of a refused report (`data`: its body): every one of a batch."""
    batch = data.get("experiences") if isinstance(data, dict) else None
    EXPERIENCES_REJECTED.inc(len(batch) if isinstance(batch, list) and batch else 1)


def training_run(train: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """Decorates training.train: a completed run adds its duration and a dashboard sample.

    Refused runs (lease held, too few experiences) raise before and are not counted.
    """

    @functools.wraps(train)
    def timed(*args: Any, **kwargs: Any) -> dict[str, Any]:
        started = time.perf_counter()
        result = train(*args, **kwargs)
        after_training_run(time.perf_counter() - started, result)
        return result

    return timed


def after_training_run(seconds: float, result: dict[str, Any]) -> None:
    """Best effort: bookkeeping must never fail a training run that already published."""
    from django.db import transaction

    from agent_app.dashboard.history import record_sample

    try:
        with transaction.atomic():  # a savepoint: a failure here leaves the caller's transaction usable
            observe_training_seconds(seconds)
            record_sample(result)
    except Exception:
        log.exception("could not record the training run's metrics")


def observe_training_seconds(seconds: float) -> None:
    from django.db import transaction

    from agent_app.models import TrainerCounters

    TrainerCounters.load()
    with transaction.atomic():
        row = TrainerCounters.objects.select_for_update().get(pk=1)
        bound = next((b for b in DURATION_BUCKETS if seconds <= b), math.inf)
        key = str(bound)
        row.duration_buckets[key] = row.duration_buckets.get(key, 0) + 1
        row.training_runs += 1
        row.training_seconds += seconds
        row.save()


def checkpoint_written() -> None:
    from django.db.models import F

    from agent_app.models import TrainerCounters

    TrainerCounters.load()
    TrainerCounters.objects.filter(pk=1).update(checkpoints_written=F("checkpoints_written") + 1)


def _number(value: float | None) -> float:
    return math.nan if value is None else float(value)


# The gauges with one sample per pool: (name, help, what it reads from `_PoolFigures`).
POOL_GAUGES = (
    ("rl_agent_epsilon", "Exploration rate epsilon the web workers serve.", "epsilon"),
    ("rl_agent_steps_done", "Gradient steps the published model has taken.", "steps_done"),
    ("rl_agent_model_version", "Version of the published model (0: none yet).", "model_version"),
    ("rl_agent_last_loss", "Loss of the last training step (NaN before any).", "last_loss"),
    ("rl_agent_replay_buffer_size", "Experiences in the replay store (NaN: the store did not answer).",
     "buffer_size"),
    ("rl_agent_avg_recent_reward", "Mean reward of the last {window} experiences (NaN: none, or the "
     "store did not answer).", "avg_reward"),
    ("rl_agent_target_syncs", "Target-network syncs so far.", "target_syncs"),
    ("rl_agent_exploration_enabled", "1 when epsilon-greedy exploration is on.", "exploration"),
    ("rl_agent_checkpoints", "Checkpoints kept on disk.", "checkpoints"),
    ("rl_agent_checkpoints_unusable", "Checkpoints whose file was last found missing, damaged or for "
     "another architecture.", "checkpoints_unusable"),
)
STATE_FIELDS = ("epsilon", "steps_done", "model_version", "last_loss", "target_syncs")


class AgentStateCollector(Collector):
    """Reads the shared state at scrape time: the figures /stats shows, per pool, for every process."""

    def collect(self) -> Iterator[Any]:
        from agent_app.models import TrainerCounters
        from agent_app.pools import pool_names
        from agent_app.services.stats import RECENT_REWARD_WINDOW

        pools = pool_names()
        figures = self._figures(pools, RECENT_REWARD_WINDOW)
        for name, documentation, key in POOL_GAUGES:
            documentation = documentation.format(window=RECENT_REWARD_WINDOW) + " Per pool."
            gauge = GaugeMetricFamily(name, documentation, labels=["pool"])
            for pool in pools:
                gauge.add_metric([pool], _number(figures[pool][key]))
            yield gauge
        counters = TrainerCounters.load()
        yield CounterMetricFamily(
            "rl_agent_checkpoints_written", "Checkpoints written since the database was created, every "
            "pool's together (one count for the service).", value=counters.checkpoints_written,
        )
        yield self._durations(counters)

    @staticmethod
    def _figures(pools: list[str], window: int) -> dict[str, dict[str, float | None]]:
        """Per pool, the gauges' values: one query per table for every pool, and each pool's replay
        store asked for its size and its last `window` rewards (None where it does not answer)."""
        from django.db.models import Count, Q

        from agent_app.models import AgentConfig, AgentState, Checkpoint
        from agent_app.replay import StoreUnavailable

        blank = {field: getattr(AgentState(), field) for field in STATE_FIELDS}  # a pool never trained
        states = {row.pop("pool"): row for row in AgentState.objects.values("pool", *STATE_FIELDS)}
        exploration = dict(AgentConfig.objects.filter(exploration_enabled__isnull=False)
                           .values_list("pool", "exploration_enabled"))
        checkpoints = {row["pool"]: row for row in Checkpoint.objects.values("pool").annotate(
            kept=Count("id"), unusable=Count("id", filter=~Q(status=Checkpoint.OK)))}
        figures, unavailable = {}, {}
        for pool in pools:
            try:
                buffer_size, avg_reward = _replay_figures(pool, window)
            except StoreUnavailable as exc:  # this pool's store: the other figures still export
                unavailable[pool] = exc
                buffer_size = avg_reward = None
            kept = checkpoints.get(pool, {})
            figures[pool] = {
                **states.get(pool, blank), "buffer_size": buffer_size, "avg_reward": avg_reward,
                "exploration": float(exploration.get(pool, settings.RL_EXPLORATION)),
                "checkpoints": kept.get("kept", 0), "checkpoints_unusable": kept.get("unusable", 0),
            }
        if unavailable:
            log.warning("metrics without the replay store of pool(s) %s: %s", ", ".join(unavailable),
                        next(iter(unavailable.values())))
        return figures

    @staticmethod
    def _durations(counters: Any) -> HistogramMetricFamily:
        cumulative, buckets = 0, []
        for bound in (*DURATION_BUCKETS, math.inf):
            cumulative += counters.duration_buckets.get(str(bound), 0)
            buckets.append(("+Inf" if bound == math.inf else repr(bound), cumulative))
        return HistogramMetricFamily(
            "rl_agent_training_run_duration_seconds", "Duration of completed training runs, every pool's "
            "together (one histogram for the service).", buckets=buckets, sum_value=counters.training_seconds,
        )


def _replay_figures(pool: str, window: int) -> tuple[int, float | None]:
    """The pool's replay buffer size and the mean reward of its latest `window` experiences."""
    from agent_app.replay import get_replay_store

    store = get_replay_store(pool)
    rewards = store.recent_rewards(window)
    return store.size(), sum(rewards) / len(rewards) if rewards else None


class CapacityCollector(Collector):
    """rlagent_desired_replicas{pool}: a sample per pool with a target (AUTOSCALE_TARGET_MS or
    AUTOSCALE_POOL_TARGETS) and outcomes seen (agent_app/capacity.py)."""

    def collect(self) -> Iterator[Any]:
        from agent_app.capacity import capacity

        decisions = capacity.decisions()
        if not decisions:  # off, or no replica seen yet: no series rather than a made-up count
            return
        gauge = GaugeMetricFamily(
            "rlagent_desired_replicas", "LLM replicas of the pool's current mix that hold its latency "
            "target (AUTOSCALE_TARGET_MS or AUTOSCALE_POOL_TARGETS); computed from the shared outcome "
            "rows by every web worker.", labels=["pool"])
        for pool, decision in decisions.items():
            gauge.add_metric([pool], float(decision.recommendation))
        yield gauge


class Scrape:
    """Process metrics (summed over gunicorn workers in multiprocess mode) plus the agent's state."""

    def __init__(self, sources: Iterable[Any]) -> None:
        self.sources = list(sources)

    def collect(self) -> Iterator[Any]:
        for source in self.sources:
            try:
                yield from source.collect()
            except Exception:  # the database down must not cost Prometheus the other metrics
                log.exception("metrics source %s failed", type(source).__name__)


def scrape() -> Scrape:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client.multiprocess import MultiProcessCollector

        return Scrape([MultiProcessCollector(None), AgentStateCollector(), CapacityCollector()])
    return Scrape([REGISTRY, AgentStateCollector(), CapacityCollector()])


def metrics_allowed(request: Any) -> bool:
    """A staff session, a valid API key, or METRICS_OPEN (only Prometheus can reach the port)."""
    from rest_framework.exceptions import AuthenticationFailed

    from agent_app.api.auth import ApiKeyAuthentication

    if settings.METRICS_OPEN:
        return True
    user = getattr(request, "user", None)
    if user is not None and user.is_active and user.is_staff:
        return True
    try:
        return ApiKeyAuthentication().authenticate(request) is not None
    except AuthenticationFailed:
        return False


def metrics_view(request: Any) -> Any:
    from django.http import HttpResponse
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    if not metrics_allowed(request):
        refused = HttpResponse(
            "/metrics needs a staff session or an API key ('Authorization: Bearer <key>'), "
            "or METRICS_OPEN=true where only Prometheus can reach it.\n",
            status=401, content_type="text/plain",
        )
        refused["WWW-Authenticate"] = 'Bearer realm="rl-agent"'
        return refused
    from agent_app.serving import policy_cache

    count_decisions(policy_cache.selections)  # this worker's latest decisions
    return HttpResponse(generate_latest(scrape()), content_type=CONTENT_TYPE_LATEST)
