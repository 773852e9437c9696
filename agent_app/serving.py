"""What a web worker serves from memory, per pool: published weights, epsilon, config, key digests,
host use, the per-replica statistics and who routes (the gate).

A daemon thread per process refreshes it every SYNC_INTERVAL_SECONDS from the database, so the
hot path reads one attribute and never queries, waits or locks; if the database is down the
last snapshot keeps serving.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace

from django.conf import settings
from django.db import DatabaseError, close_old_connections, transaction
from django.db.models import F
from django.utils import timezone

from agent_app import metrics
from agent_app.host_metrics import HostMetrics
from agent_app.models import AgentConfig, AgentState, ApiKey, Pool, ReplicaSelection
from agent_app.pools import DEFAULT_POOL, ensure_pool, pool_scope
from agent_app.prefix_index import get_prefix_index
from agent_app.replica_outcomes import OutcomeTally, arm_totals, gate_block_means, replica_statistics
from agent_app.rl.gate import HEURISTIC, MODEL, ArmTotals, GateConfig, Verdict, decide, decide_blocks
from agent_app.rl.inference import NumpyQNetwork, weights_from_bytes
from agent_app.rl.reward import RewardConfig
from agent_app.rl.set_inference import SET_DIMS_KEY, NumpySetQNetwork

log = logging.getLogger(__name__)
HOST_METRICS_EVERY_SECONDS = 5.0
_STATE_FIELDS = ("model_version", "epsilon", "steps_done", "router")
_NO_STATE = {"model_version": 0, "epsilon": 1.0, "steps_done": 0, "router": HEURISTIC}  # before a publish


@dataclass(frozen=True)
class ServingSnapshot:
    network: NumpyQNetwork | NumpySetQNetwork | None = None
    network_kind: str = "mlp"  # "mlp" or "per_replica"
    weights_blob: bytes | None = None  # the published npz, served to gateways for local inference
    model_version: int = 0
    steps_done: int = 0
    epsilon: float = 1.0
    exploration: bool = True
    reward_config: RewardConfig = field(default_factory=RewardConfig)
    memory: float = 0.0
    cpu: float = 0.0
    api_key_digests: frozenset[str] = frozenset()
    # Why there is no network to serve: routing falls back to least-loaded and says this.
    fallback_reason: str | None = "no trained model yet"
    refreshed_at: float = 0.0
    # What the service learned per replica name from recorded outcomes (agent_app/replica_outcomes.py).
    replica_stats: dict[str, dict[str, float]] = field(default_factory=dict)
    # The routing gate (agent_app/rl/gate.py): who routes, with what evidence.
    router: str = HEURISTIC
    gate: GateConfig = field(default_factory=GateConfig)
    verdict: Verdict | None = None
    arms: dict[str, ArmTotals] = field(default_factory=dict)  # per-request reward totals per arm
    # Under block assignment, per arm its settled block means' count and sum (the verdict's evidence).
    block_arms: dict[str, ArmTotals] = field(default_factory=dict)

    @property
    def gate_reason(self) -> str:
        evidence = self.verdict.reason if self.verdict else "no outcomes yet"
        return f"the heuristic routes until the model is measured better on live traffic: {evidence}"

    @property
    def holdout_reason(self) -> str:
        unit = "time blocks" if self.gate.assignment == "block" else "requests"
        return f"holdout: the heuristic keeps a share of {unit} so the model stays measured against it"


def gate_config() -> GateConfig:
    return GateConfig(
        trial_fraction=settings.RL_TRIAL_FRACTION, holdout_fraction=settings.RL_HOLDOUT_FRACTION,
        min_samples=settings.RL_GATE_MIN_OUTCOMES, exploration_margin=settings.RL_EXPLORATION_MARGIN,
        assignment=settings.RL_GATE_ASSIGNMENT, block_seconds=settings.RL_GATE_BLOCK_SECONDS,
        min_blocks=settings.RL_GATE_MIN_BLOCKS,
    )


def reward_config_from(config: AgentConfig) -> RewardConfig:
    overrides = {
        name: getattr(config, name)
        for name in ("latency_scale_ms", "balance_weight", "failure_penalty")
        if getattr(config, name) is not None
    }
    core = RewardConfig(latency_mode=settings.REWARD_LATENCY_MODE, ttft_weight=settings.REWARD_TTFT_WEIGHT)
    return replace(core, **overrides)


class PolicyCache:
    """This process's serving snapshots, one per pool it serves (the default pool always; another
    from its first request on, at most POOLS_SERVED_MAX, the least recently used dropped first)."""

    def __init__(self) -> None:
        self._host = HostMetrics(settings.PROMETHEUS_URL)
        self._host_read_at = float("-inf")
        self._thread_pid: int | None = None
        self._database_down = False  # log an outage once when it starts and once when it ends
        # Process-wide parts of every pool's snapshot.
        self._memory, self._cpu, self._digests = 0.0, 0.0, frozenset()
        self.reset()

    def reset(self) -> None:
        """Forget every snapshot, count and outcome (a new process, or a test's fresh start)."""
        default = ServingSnapshot(exploration=settings.RL_EXPLORATION)
        self.snapshots: dict[str, ServingSnapshot] = {DEFAULT_POOL: default}
        self._last_used: dict[str, float] = {}
        self.known_pools: frozenset[str] = frozenset({DEFAULT_POOL})
        # Cumulative per-process decision counts by (pool, replica index or name, policy); the
        # flusher sends deltas, so no lock is needed.
        self.selections: defaultdict[tuple[str, int | str, str], int] = defaultdict(int)
        self._flushed: dict[tuple[str, int | str, str], int] = {}
        self.outcomes = OutcomeTally()  # recorded outcomes, flushed with the decision counts

    @property
    def snapshot(self) -> ServingSnapshot:
        """The default pool's snapshot (the original single agent's)."""
        return self.snapshots[DEFAULT_POOL]

    def snapshot_for(self, pool: str) -> ServingSnapshot:
        """The pool's snapshot; a pool not served yet is checked and loaded now, once (its first
        request in this process), and raises PoolNotFound if it does not exist."""
        snap = self.snapshots.get(pool)
        if snap is None:
            if pool not in self.known_pools:
                ensure_pool(pool)  # PoolNotFound, or created under POOLS_AUTO_CREATE
            snap = self._serve(pool)
        elif pool != DEFAULT_POOL:
            self._last_used[pool] = time.monotonic()
        return snap

    def _serve(self, pool: str) -> ServingSnapshot:
        """Load a pool's snapshot and, past POOLS_SERVED_MAX pools besides the default one, drop
        the least recently used (another thread may add one meanwhile: a copy is iterated)."""
        self._refresh_pools([pool], adding=True)
        snap = self.snapshots[pool]
        self._last_used[pool] = time.monotonic()
        while len(self._last_used) > settings.POOLS_SERVED_MAX:
            oldest = min(list(self._last_used.items()), key=lambda item: item[1])[0]
            self.snapshots.pop(oldest, None)
            self._last_used.pop(oldest, None)
        return snap

    @property
    def host_metrics_source(self) -> str:
        """Where memory and CPU use come from now: "prometheus" or "host"."""
        return self._host.source

    def ensure_started(self) -> None:
        """Start the refresh thread once per process (after gunicorn forks, not before).

        With POLICY_SYNC_THREAD off (the tests) every call refreshes synchronously instead.
        """
        if not settings.POLICY_SYNC_THREAD:
            self.refresh()
            return
        if self._thread_pid == os.getpid():
            return
        self._thread_pid = os.getpid()
        self.refresh()
        threading.Thread(target=self._loop, name="policy-sync", daemon=True).start()

    def _loop(self) -> None:
        while True:
            time.sleep(settings.SYNC_INTERVAL_SECONDS)
            if not settings.POLICY_SYNC_THREAD:
                self._thread_pid = None
                return
            close_old_connections()  # this thread's own connection, like a request's
            self.refresh()

    def refresh(self) -> None:
        try:
            metrics.count_decisions(self.selections)  # needs no database: counted while it is down too
        except Exception:  # the thread must survive anything
            log.exception("could not add the decisions to the Prometheus counter")
        try:
            self.flush_selections()
            self.outcomes.flush()
            self._refresh_from_database()
        except DatabaseError as exc:
            if not self._database_down:
                log.warning("database unavailable, serving model v%s from memory until it answers: %s",
                            self.snapshot.model_version, str(exc).strip().splitlines()[0])
            self._database_down = True
            return
        except Exception:  # the thread must survive anything; the snapshot stays as it was
            log.exception("policy refresh failed; serving the previous snapshot")
            return
        finally:
            get_prefix_index().flush()  # blocks sent since the last refresh; never raises
        if self._database_down:
            log.warning("database answers again; serving model v%s", self.snapshot.model_version)
            self._database_down = False

    def _refresh_from_database(self) -> None:
        """Every served pool's snapshot, in one query per table for all of them; only a pool whose
        published version changed has its weights read again."""
        self.known_pools = frozenset(Pool.objects.values_list("name", flat=True)) | {DEFAULT_POOL}
        for gone in set(self.snapshots) - self.known_pools:  # deleted: dropped, a 404 from now on
            self.snapshots.pop(gone, None)
            self._last_used.pop(gone, None)
        pools = list(self.snapshots)
        if time.monotonic() - self._host_read_at > HOST_METRICS_EVERY_SECONDS:
            self._memory, self._cpu = self._host.read()
            self._host_read_at = time.monotonic()
        self._digests = frozenset(ApiKey.objects.filter(active=True).values_list("digest", flat=True))
        self._refresh_pools(pools)

    def _refresh_pools(self, pools: list[str], *, adding: bool = False) -> None:
        rows = AgentState.objects.filter(pool__in=pools).values("pool", *_STATE_FIELDS)
        rows = {row.pop("pool"): row for row in rows}
        configs = {c.pool: c for c in AgentConfig.objects.filter(pool__in=pools)}
        stats, arms = replica_statistics(pools), arm_totals(pools)
        gate = gate_config()
        blocks = gate_block_means(pools) if gate.assignment == "block" else None
        for pool in pools:
            snap = self.snapshots.get(pool)
            if snap is None and not adding:
                continue  # dropped by a request thread meanwhile: not brought back
            with pool_scope(pool):
                config = configs.get(pool) or AgentConfig.load()
                snap = snap or ServingSnapshot()
                self.snapshots[pool] = self._load_pool(
                    pool, snap, rows.get(pool), config, stats.get(pool, {}), arms.get(pool, {}), gate,
                    None if blocks is None else blocks.get(pool, {}))

    def _load_pool(self, pool: str, snap: ServingSnapshot, row: dict | None, config: AgentConfig,
                   replica_stats: dict, arms: dict[str, ArmTotals], gate: GateConfig,
                   block_means: dict[str, list[float]] | None) -> ServingSnapshot:
        """The pool's new snapshot. The gate's verdict is on ``block_means`` (each arm's settled
        block mean rewards) under block assignment, else on the per-request ``arms`` totals."""
        row = dict(row or _NO_STATE)
        network, blob, reason = snap.network, snap.weights_blob, snap.fallback_reason
        if row["model_version"] != snap.model_version or (network is None and row["model_version"]):
            row, network, blob, reason = self._load_network(pool)
        if network is not None and row["steps_done"] < settings.RL_MIN_TRAINING_STEPS:
            reason = f"model has {row['steps_done']} of {settings.RL_MIN_TRAINING_STEPS} training steps"
        elif network is not None:
            reason = None
        exploration = config.exploration_enabled
        if exploration is None:
            exploration = settings.RL_EXPLORATION
        router = row["router"]
        if block_means is None:
            verdict = decide(arms.get(MODEL, ArmTotals()), arms.get(HEURISTIC, ArmTotals()), router, gate)
            block_arms = {}
        else:
            verdict = decide_blocks(block_means.get(MODEL, []), block_means.get(HEURISTIC, []), router, gate)
            block_arms = {arm: ArmTotals.of(means) for arm, means in block_means.items()}
        if verdict.leader != router:
            row["router"] = self._switch_router(pool, router, verdict)
        return ServingSnapshot(
            network=network, network_kind=_kind(network), weights_blob=blob,
            model_version=row["model_version"], steps_done=row["steps_done"],
            epsilon=row["epsilon"], exploration=exploration, reward_config=reward_config_from(config),
            memory=self._memory, cpu=self._cpu, api_key_digests=self._digests,
            fallback_reason=reason, refreshed_at=time.time(), replica_stats=replica_stats,
            router=row["router"], gate=gate, verdict=verdict, arms=arms, block_arms=block_arms,
        )

    @staticmethod
    def _switch_router(pool: str, current: str, verdict: Verdict) -> str:
        """Hand routing to the verdict's leader: one conditional update, so of several workers that
        reach the same verdict one switches and the others read the result."""
        switched = AgentState.objects.filter(pool=pool, router=current).update(
            router=verdict.leader, router_since=timezone.now())
        if switched:
            log.warning("pool %s: routing handed from the %s to the %s: model lead %.4f "
                        "(standard error %.4f), %s", pool, current, verdict.leader, verdict.lead,
                        verdict.stderr, verdict.reason)
        return AgentState.objects.filter(pool=pool).values_list("router", flat=True).first() or current

    def _load_network(self, pool: str) -> tuple[dict, NumpyQNetwork | None, bytes | None, str | None]:
        """The published weights and the version, epsilon and steps of the same row, in one query:
        read apart, a publish in between would serve new weights under the old version (and ETag)."""
        row = AgentState.objects.filter(pool=pool).values(*_STATE_FIELDS, "serving_weights").first()
        row = row or {**_NO_STATE, "serving_weights": None}
        blob, version = row.pop("serving_weights"), row["model_version"]
        if version == 0:
            return row, None, None, "no trained model yet"
        try:
            blob = bytes(blob)
            weights = weights_from_bytes(blob)
            network = NumpySetQNetwork(weights) if SET_DIMS_KEY in weights else NumpyQNetwork(weights)
        except Exception as exc:
            log.error("pool %s: published weights of model v%s do not load (%s); routing falls back",
                      pool, version, exc)
            return row, None, None, f"model v{version} failed to load"
        if _kind(network) != settings.RL_NETWORK:
            log.error("pool %s: model v%s is a %s network but RL_NETWORK=%s; routing falls back until one is "
                      "trained", pool, version, _kind(network), settings.RL_NETWORK)
            return row, None, None, f"model v{version} is {_kind(network)}, RL_NETWORK {settings.RL_NETWORK}"
        if _kind(network) == "mlp" and network.n_actions != settings.NUM_REPLICAS:
            log.error("pool %s: model v%s has %s actions but NUM_REPLICAS=%s; routing falls back",
                      pool, version, network.n_actions, settings.NUM_REPLICAS)
            return row, None, None, f"model v{version} is for {network.n_actions} replicas"
        log.info("pool %s: serving model v%s", pool, version)
        return row, network, blob, None

    def flush_selections(self) -> None:
        """Add the decisions since the last flush to the shared counters: one transaction, so one
        write lock and one commit per refresh however many replica and policy pairs moved."""
        # Positional decisions (the original body) only: named replicas are counted per name by
        # Prometheus and, once reported, in the per-replica statistics.
        pending = {key: total - self._flushed.get(key, 0) for key, total in list(self.selections.items())
                   if isinstance(key[1], int)}
        pending = {key: delta for key, delta in pending.items() if delta}
        if not pending:
            return
        with transaction.atomic():
            for (pool, replica_idx, policy), delta in pending.items():
                counter = ReplicaSelection.objects.filter(pool=pool, replica_idx=replica_idx, policy=policy)
                if not counter.update(count=F("count") + delta):
                    ReplicaSelection.objects.get_or_create(pool=pool, replica_idx=replica_idx, policy=policy)
                    counter.update(count=F("count") + delta)
        for key, delta in pending.items():  # only once committed: a failed flush is retried whole
            self._flushed[key] = self._flushed.get(key, 0) + delta


def _kind(network: object) -> str:
    return "per_replica" if isinstance(network, NumpySetQNetwork) else "mlp"


policy_cache = PolicyCache()
