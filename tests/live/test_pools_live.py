"""Two replica pools on one live service (web, beat and two training workers as separate
processes): each pool learns its own simulated cluster, of a different size and speed, and both
train at once on the two workers; training one pool moves nothing of the other; a request that
names no pool is answered by the default pool."""

from __future__ import annotations

import ast
import hashlib
import json
import re
import subprocess
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from simulator.live_service import ROOT, LiveStack

pytestmark = pytest.mark.slow
FAST = {
    "TRAINING_INTERVAL_SECONDS": "3",
    "TRAINING_ITERATIONS": "30",
    "TRAINING_STEPS_PER_EXPERIENCE": "0",  # 30 steps per scheduled run, whatever the traffic
    "TRAINING_BATCH_SIZE": "32",
    "TRAINING_LEASE_SECONDS": "10",
    "TRAIN_TIMEOUT_SECONDS": "50",  # below the test client's 60 s: a slow /train answers 504, retried
}
WORKERS = ("worker", "worker2")
# A training run's answer as Celery logs it: "Task tasks.training.train[<id>] succeeded in 0.4s: {...}".
RUN_RESULT = re.compile(
    r"Task tasks\.training\.(?:train|scheduled_train_pool)\[[^\]]+\] succeeded in \S+: (\{.*\})$", re.M)
HISTORY = """
import json
from agent_app.models import MetricSample
print(json.dumps(list(MetricSample.objects.values_list("pool", "model_version", "steps_done", "loss"))))
"""


@dataclass(frozen=True)
class Cluster:
    """A simulated deployment: each named replica's latency when idle (ms), growing with its load."""

    pool: str | None  # None: its requests name no pool
    idle_ms: dict[str, float]

    @property
    def fastest(self) -> str:
        return min(self.idle_ms, key=self.idle_ms.__getitem__)

    @property
    def pool_field(self) -> dict[str, str]:
        return {"pool": self.pool} if self.pool else {}

    def select_body(self, loads: list[int]) -> dict[str, Any]:
        replicas = [{"name": name, "load": load} for name, load in zip(self.idle_ms, loads, strict=True)]
        return {"replicas": replicas, "queue_depth": 2, "recent_latency_ms": 300.0, "current_rps": 5.0,
                "success_rate": 1.0, **self.pool_field}

    def drive(self, stack: LiveStack, rng: np.random.Generator, requests: int = 12) -> None:
        """Route `requests` requests through /select_replica and report their outcomes in one batch."""
        names, reports = list(self.idle_ms), []
        for _ in range(requests):
            loads = [int(x) for x in rng.integers(0, 8, len(names))]
            answer = stack.call("POST", "/select_replica", self.select_body(loads))
            assert answer.status_code == 200, answer.text
            decision = answer.json()
            chosen = decision["replica_idx"]
            latency = self.idle_ms[names[chosen]] * (1 + loads[chosen] / 8) * rng.lognormal(0.0, 0.1)
            loads[chosen] += 1
            reports.append({"decision_id": decision["decision_id"], "replica_loads": loads,
                            "latency_ms": round(float(latency), 1), "success": True})
        reply = stack.call("POST", "/record_experience", {"experiences": reports, **self.pool_field})
        assert reply.status_code == 201, reply.text


# Different replica counts and speeds; in each, one replica is clearly the fastest.
SMALL = Cluster("chat-small", {"small-0": 900.0, "small-1": 150.0, "small-2": 1000.0})
LARGE = Cluster("chat-large", {"large-0": 1400.0, "large-1": 1300.0, "large-2": 1500.0, "large-3": 1350.0,
                               "large-4": 300.0})
DEFAULT = Cluster(None, {"gpu-0": 500.0, "gpu-1": 650.0})
POOLS = (SMALL, LARGE)


def stats(stack: LiveStack, pool: str | None = None) -> dict[str, Any]:
    reply = stack.call("GET", f"/stats?pool={pool}" if pool else "/stats")
    assert reply.status_code == 200, reply.text
    return reply.json()


def published(stack: LiveStack, pool: str) -> tuple[str, str]:
    """The ETag and a digest of the weights /model/weights serves for the pool."""
    reply = stack.call("GET", f"/model/weights?pool={pool}")
    assert reply.status_code == 200, reply.text
    return reply.headers["ETag"], hashlib.sha256(reply.content).hexdigest()


def train(stack: LiveStack, pool: str | None) -> dict[str, Any] | None:
    """One run through POST /train; None when refused for now (lease held, too few experiences, or
    the worker not answering yet: 504 leaves the run queued, and it will run)."""
    query = f"pool={pool}&" if pool else ""
    reply = stack.call("POST", f"/train?{query}iterations=20&batch_size=32")
    if reply.status_code in (409, 504):
        return None
    assert reply.status_code == 200, reply.text
    return reply.json()


def runs_in_log(stack: LiveStack, worker: str) -> list[dict[str, Any]]:
    """The published training runs the worker's log shows (not refusals)."""
    results = (ast.literal_eval(text) for text in RUN_RESULT.findall(stack.log(worker)))
    return [r for r in results if "model_version" in r and "refused" not in r]


def pools_trained_by(stack: LiveStack) -> dict[str, set[str]]:
    """Which pools each training worker published runs of: a run's answer in the worker's log is
    matched to the pool whose history (one sample per run) has the same version, steps and loss."""
    out = stack.manage("shell", "-c", HISTORY)
    history = {(version, steps, f"{loss:.9g}"): pool
               for pool, version, steps, loss in json.loads(out.strip().splitlines()[-1]) if loss is not None}
    return {worker: {history.get((r["model_version"], r["steps_done"], f"{r['loss']:.9g}"))
                     for r in runs_in_log(stack, worker) if r.get("loss") is not None} - {None}
            for worker in WORKERS}


def purge_training_queue(stack: LiveStack) -> None:
    subprocess.run(["celery", "-A", "rlagent_project", "purge", "-f", "-Q", "training"], cwd=ROOT,
                   env=stack.env, check=True, capture_output=True, timeout=120)


def test_two_pools_train_apart_on_two_workers_and_no_pool_means_the_default(live_stack_factory):
    stack = live_stack_factory(**FAST)
    stack.start("web")
    for cluster in POOLS:
        stack.manage("create_pool", cluster.pool)
    for worker in WORKERS:
        stack.start("worker", as_name=worker)
    stack.start("beat")
    rng = np.random.default_rng(0)

    # Both pools serve traffic; beat queues a run per pool with new experience, for either worker.
    def trained_on_both_workers() -> bool:
        for cluster in POOLS:
            cluster.drive(stack, rng)
        return (all(stats(stack, c.pool)["steps_done"] > 0 for c in POOLS)
                and all(runs_in_log(stack, worker) for worker in WORKERS))

    stack.wait_for(trained_on_both_workers, 300, "both pools trained, by both workers")
    by_worker = pools_trained_by(stack)
    assert all(by_worker[worker] for worker in WORKERS), by_worker
    assert set().union(*by_worker.values()) == {c.pool for c in POOLS}, by_worker

    # Each pool learned its own cluster: its replicas only, the fastest one measured fastest.
    for cluster in POOLS:
        learned = stack.wait_for(
            lambda c=cluster: (r := stats(stack, c.pool)["replicas"]).keys() == set(c.idle_ms) and r,
            60, f"{cluster.pool}'s outcomes to reach its statistics")
        latency = {name: replica["latency_ms"] for name, replica in learned.items()}
        assert min(latency, key=latency.__getitem__) == cluster.fastest, latency
    assert published(stack, SMALL.pool)[1] != published(stack, LARGE.pool)[1]

    # From here only chat-small trains: beat stops, the workers stop (a run cut short publishes
    # nothing; its task is requeued), the runs beat queued are purged, and chat-large's traffic ends.
    stack.stop("beat")
    for worker in WORKERS:
        stack.stop(worker)
    purge_training_queue(stack)
    large_before, large_weights = stats(stack, LARGE.pool), published(stack, LARGE.pool)
    small_before = stats(stack, SMALL.pool)
    for worker in WORKERS:
        stack.start("worker", as_name=worker)
    for run in range(2):
        SMALL.drive(stack, rng)
        stack.wait_for(lambda: train(stack, SMALL.pool), 240, f"POST /train?pool={SMALL.pool} ({run + 1})")
    small = stats(stack, SMALL.pool)
    assert small["steps_done"] > small_before["steps_done"]
    assert small["model_version"] >= small_before["model_version"] + 2
    # The web workers serve chat-small's new model, so they refreshed after its runs.
    stack.wait_for(lambda: published(stack, SMALL.pool)[0] == f'"v{small["model_version"]}"', 30,
                   "the web workers to serve chat-small's new model")
    for _ in range(8):  # both web workers answer some of these
        large = stats(stack, LARGE.pool)
        assert [large[k] for k in ("steps_done", "epsilon", "model_version")] == \
               [large_before[k] for k in ("steps_done", "epsilon", "model_version")]
        assert published(stack, LARGE.pool) == large_weights

    # A request naming no pool is the default pool's: train it to a version neither other pool has.
    def default_trained_apart() -> bool:
        DEFAULT.drive(stack, rng)
        others = {stats(stack, c.pool)["model_version"] for c in POOLS}
        return train(stack, None) is not None and stats(stack)["model_version"] not in others

    stack.wait_for(default_trained_apart, 240, "the default pool to be trained to a version of its own")
    default = stats(stack)
    assert default["pool"] == "default"

    def answered_by_default() -> dict[str, Any] | None:
        answer = stack.call("POST", "/select_replica", DEFAULT.select_body([1] * len(DEFAULT.idle_ms))).json()
        return answer if answer["model_version"] == default["model_version"] else None

    answer = stack.wait_for(answered_by_default, 30, "a request without a pool to get the default model")
    assert answer["replica_name"] in DEFAULT.idle_ms
    assert answer["model_version"] not in {stats(stack, c.pool)["model_version"] for c in POOLS}
    stack.wait_for(lambda: stats(stack)["replicas"].keys() == set(DEFAULT.idle_ms), 30,
                   "the default pool's statistics to hold its own replicas only")
