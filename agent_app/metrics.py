"""The agent's Prometheus metrics, served at /metrics with django-prometheus's own.

Two kinds, so that every figure is right with several gunicorn workers and with training in
Celery workers that Prometheus never scrapes:

- counters of the web hot path (decisions, experiences) are prometheus_client counters,
  written to files in PROMETHEUS_MULTIPROC_DIR under gunicorn and summed at scrape time;
- what lives in the database (epsilon, steps, model version, training-run durations,
  checkpoints) is read by a collector when Prometheus scrapes, so no process holds a copy.
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

log = logging.getLogger(__name__)

POLICIES = ("dqn", "explore", "least_loaded")
# Training-run durations (seconds): a run is one batch of gradient steps plus a publish.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

DECISIONS = Counter(
    "rl_agent_decisions", "Replica selections by replica and by the policy that decided.",
    ["replica", "policy"],
)
EXPERIENCES_RECORDED = Counter("rl_agent_experiences_recorded", "Experiences stored in the replay store.")
EXPERIENCES_REJECTED = Counter(
    "rl_agent_experiences_rejected", "Experiences refused with a 400 (every body of a refused batch counts)."
)
for _name in settings.REPLICA_NAMES:  # every series exists from the start, at 0, as Prometheus prefers
    for _policy in POLICIES:
        DECISIONS.labels(replica=_name, policy=_policy)
# What each (replica, policy) pair of this process has added to DECISIONS so far.
_decisions_counted: dict[tuple[int, str], int] = {}
_decisions_lock = threading.Lock()  # the serving refresh and a scrape may flush at the same time


def count_decisions(totals: Mapping[tuple[int | str, str], int]) -> None:
    """Bring DECISIONS up to `totals`, this process's cumulative decisions per (replica, policy).

    /select_replica only adds one to a dict; this runs off the hot path, from the serving refresh
    and before each scrape, so a scrape has every decision of the worker that answers it and the
    other workers' up to SYNC_INTERVAL_SECONDS ago.
    """
    with _decisions_lock:
        for key, total in list(totals.items()):
            delta = total - _decisions_counted.get(key, 0)
            if delta > 0:
                replica, policy = key  # an index into REPLICA_NAMES, or a name the gateway sent
                names = settings.REPLICA_NAMES
                name = replica if isinstance(replica, str) else names[replica] if replica < len(names) \
                    else str(replica)
                DECISIONS.labels(replica=name, policy=policy).inc(delta)
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


class AgentStateCollector(Collector):
    """Reads the shared state at scrape time: the same figures /stats shows, for every process."""

    def collect(self) -> Iterator[Any]:
        from agent_app.models import AgentState, Checkpoint, TrainerCounters
        from agent_app.replay import StoreUnavailable, get_replay_store
        from agent_app.services.stats import RECENT_REWARD_WINDOW
        from agent_app.serving import policy_cache

        state = AgentState.load()
        counters = TrainerCounters.load()
        try:
            store = get_replay_store()
            buffer_size: float | None = store.size()
            rewards = store.recent_rewards(RECENT_REWARD_WINDOW)
            avg_reward = sum(rewards) / len(rewards) if rewards else None
        except StoreUnavailable as exc:
            log.warning("metrics without the replay store: %s", exc)
            buffer_size = avg_reward = None
        gauges = [
            ("rl_agent_epsilon", "Exploration rate epsilon the web workers serve.", state.epsilon),
            ("rl_agent_steps_done", "Gradient steps the published model has taken.", state.steps_done),
            ("rl_agent_model_version", "Version of the published model (0: none yet).", state.model_version),
            ("rl_agent_last_loss", "Loss of the last training step (NaN before any).", state.last_loss),
            ("rl_agent_replay_buffer_size", "Experiences in the replay store.", buffer_size),
            ("rl_agent_avg_recent_reward",
             f"Mean reward of the last {RECENT_REWARD_WINDOW} experiences.", avg_reward),
            ("rl_agent_target_syncs", "Target-network syncs so far.", state.target_syncs),
            ("rl_agent_exploration_enabled", "1 when epsilon-greedy exploration is on.",
             float(policy_cache.snapshot.exploration)),
            ("rl_agent_checkpoints", "Checkpoints kept on disk.", Checkpoint.objects.count()),
            ("rl_agent_checkpoints_unusable", "Checkpoints whose file was last found missing, damaged "
             "or for another architecture.", Checkpoint.objects.exclude(status=Checkpoint.OK).count()),
        ]
        for name, documentation, value in gauges:
            yield GaugeMetricFamily(name, documentation, value=_number(value))
        yield CounterMetricFamily(
            "rl_agent_checkpoints_written", "Checkpoints written since the database was created.",
            value=counters.checkpoints_written,
        )
        yield self._durations(counters)

    @staticmethod
    def _durations(counters: Any) -> HistogramMetricFamily:
        cumulative, buckets = 0, []
        for bound in (*DURATION_BUCKETS, math.inf):
            cumulative += counters.duration_buckets.get(str(bound), 0)
            buckets.append(("+Inf" if bound == math.inf else repr(bound), cumulative))
        return HistogramMetricFamily(
            "rl_agent_training_run_duration_seconds", "Duration of completed training runs.",
            buckets=buckets, sum_value=counters.training_seconds,
        )


class CapacityCollector(Collector):
    """rlagent_desired_replicas{pool}, only while AUTOSCALE_TARGET_MS is set (agent_app/capacity.py)."""

    def collect(self) -> Iterator[Any]:
        from agent_app.capacity import POOL, capacity

        decision = capacity.decision()
        if decision is None:  # off, or no replica seen yet: no series rather than a made-up count
            return
        gauge = GaugeMetricFamily(
            "rlagent_desired_replicas", "LLM replicas of the pool's current mix that hold the latency "
            "target (AUTOSCALE_TARGET_MS); computed from the shared outcome rows by every web worker.",
            labels=["pool"])
        gauge.add_metric([POOL], float(decision.recommendation))
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
