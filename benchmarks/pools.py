"""Replica pools benchmark: /select_replica over 50 pools against one, pools trained per minute by
one and two training workers, and a web worker's memory per pool it serves.

Starts the service as deployed (benchmarks/stack.py: gunicorn with 2 workers and a training worker
on a fresh database; Postgres and Redis when they answer on 127.0.0.1), creates --pools pools of 8
named replicas each, reports experiences to every pool through the API (each pool's cluster has its
own fastest replica) and publishes a model per pool with beat's fan-out (one training task per pool
with new experience). Then:

(a) wrk (2 threads, --connections) alternates, --runs times: requests cycling over the pools (the
    i-th body names pool i), and the same bodies all naming one pool. The ratio of the two
    throughputs per run, its median and spread (min-max); every pool is checked to route with
    its own model (policy "dqn") first.
(b) --train-pools pools receive new experiences and beat's fan-out task is sent; the time until
    every one of them has published a new model gives pools trained per minute. One training
    worker and two, alternated --runs times; the ratio per round, its median and spread.
(c) the web workers, restarted (SIGHUP), after serving one pool and after serving all of them:
    their RSS and the difference per pool.

    .venv/bin/python -m benchmarks.pools [--seconds 10] [--runs 3] [--pools 50] [--train-pools 20]
                                         [--train-steps 100] [--connections 32] [--embedded]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import requests

from benchmarks.api_throughput import machine, spread
from benchmarks.stack import Stack, wrk
from simulator.live_service import free_port

REPLICAS = 8
DECISIONS_PER_POOL = 8  # decisions each pool's reports cycle through
TARGETS = {"select": 0.95, "workers": 1.6}
# A scheduled run takes exactly TRAINING_ITERATIONS steps; one core per training worker, so two
# workers have two cores' worth of threads; a briefly trained model routes every request.
BENCH_ENV = {"TRAINING_STEPS_PER_EXPERIENCE": "0", "TRAINING_BATCH_SIZE": "64", "OMP_NUM_THREADS": "1",
             "RL_MIN_TRAINING_STEPS": "0"}
FAN_OUT = """
import json, time
from agent_app.models import AgentState
from agent_app.services.dispatch import send
pools = {pools}
def published():
    rows = AgentState.objects.filter(pool__in=pools).values_list("pool", "model_version", "steps_done")
    return dict((pool, (version, steps)) for pool, version, steps in rows)
def all_published():
    now = published()
    return all(now.get(pool, (0, 0))[0] > before.get(pool, (0, 0))[0] for pool in pools)
before = published()
started = time.monotonic()
send("tasks.training.scheduled_train")
while not all_published():
    if time.monotonic() - started > {timeout}:
        raise SystemExit("the fanned-out training runs did not all publish in time")
    time.sleep(0.05)
seconds = time.monotonic() - started
steps = sum(steps for _, steps in published().values()) - sum(steps for _, steps in before.values())
print(json.dumps({{"seconds": seconds, "steps": steps}}))
"""
CREATE_POOLS = """
from agent_app.services.pool_admin import create_pool
for name in {pools}:
    create_pool(name)
"""


def select_body(pool: str, index: int) -> dict[str, Any]:
    """A gateway's body over 8 named replicas, with loads that vary with `index`."""
    replicas = [{"name": f"gpu-{r}", "load": (7 * index + 3 * r) % 16, "running": (7 * index + 3 * r) % 12,
                 "waiting": (index + r) % 3, "kv_cache_usage": ((index + r) % 10) / 10}
                for r in range(REPLICAS)]
    return {"replicas": replicas, "request": {"prompt_tokens": 812, "max_tokens": 256}, "queue_depth": 12,
            "recent_latency_ms": 280.5, "current_rps": 8.2, "success_rate": 0.98, "pool": pool}


class Pools:
    """The benchmark's pools on a running stack: each with decisions to report outcomes of."""

    def __init__(self, stack: Stack, count: int) -> None:
        self.stack, self.names = stack, [f"pool-{i:02d}" for i in range(count)]
        self.rng = np.random.default_rng(0)
        stack.manage("shell", "-c", CREATE_POOLS.format(pools=self.names))
        self.decisions: dict[str, list[tuple[dict, dict]]] = {}
        for index, pool in enumerate(self.names):
            bodies = [select_body(pool, index * DECISIONS_PER_POOL + k) for k in range(DECISIONS_PER_POOL)]
            self.decisions[pool] = [(body, self._post("/select_replica", body)) for body in bodies]

    def _post(self, path: str, body: dict) -> dict:
        reply = self.stack.post(path, body)
        if reply.status_code not in (200, 201):
            raise SystemExit(f"POST {path} answered {reply.status_code}: {reply.text}")
        return reply.json()

    def report(self, pool: str, count: int) -> None:
        """`count` outcomes in one batch; in pool i's cluster replica i mod 8 is the fast one."""
        fast = self.names.index(pool) % REPLICAS
        items = []
        for k in range(count):
            body, decision = self.decisions[pool][k % DECISIONS_PER_POOL]
            chosen, loads = decision["replica_idx"], [r["load"] for r in body["replicas"]]
            idle_ms = 150.0 if chosen == fast else 900.0
            latency = idle_ms * (1 + loads[chosen] / 16) * self.rng.lognormal(0, 0.1)
            loads[chosen] += 1
            items.append({"decision_id": decision["decision_id"], "replica_loads": loads,
                          "latency_ms": round(float(latency), 1), "success": True})
        self._post("/record_experience", {"experiences": items, "pool": pool})

    def fan_out(self, pools: list[str], timeout: float = 1200) -> tuple[float, int]:
        """Seconds from beat's task being sent until every pool in `pools` published a new model,
        and the gradient steps they took."""
        out = json.loads(self.stack.manage("shell", "-c", FAN_OUT.format(pools=pools, timeout=timeout)))
        return out["seconds"], out["steps"]

    def check_routing(self) -> int:
        """Every pool routes with its own published model; returns the lowest model version."""
        versions = []
        for index, pool in enumerate(self.names):
            for k in range(4):  # likely on both web workers
                answer = self._post("/select_replica", select_body(pool, index + k))
                if answer["policy"] != "dqn" or answer["model_version"] < 1:
                    raise SystemExit(f"{pool} should route with its trained model: {answer}")
                versions.append(answer["model_version"])
        return min(versions)


def web_rss(stack: Stack) -> list[float]:
    return sorted(w.memory_info().rss / 2**20 for w in psutil.Process(stack.server.pid).children())


def restart_web_workers(stack: Stack) -> None:
    """New gunicorn workers (SIGHUP to the master): they hold no pool until a request names one."""
    master = psutil.Process(stack.server.pid)
    old = {w.pid for w in master.children()}
    os.kill(master.pid, signal.SIGHUP)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pids = {w.pid for w in master.children()}
        if len(pids) == int(stack.env["WEB_CONCURRENCY"]) and not pids & old:
            try:
                if all(requests.get(stack.base + "/health", timeout=2).ok for _ in range(4)):
                    return
            except requests.RequestException:
                pass
        time.sleep(0.5)
    raise SystemExit("gunicorn did not restart its workers")


def measure_training(pools: Pools, count: int, runs: int, experiences: int) -> dict[int, list[float]]:
    """Pools trained per minute with 1 and 2 training workers, alternating which goes first."""
    names = pools.names[:count]
    rates: dict[int, list[float]] = {1: [], 2: []}
    for run in range(runs):
        for workers in ((2, 1) if run % 2 == 0 else (1, 2)):
            if workers == 1:
                pools.stack.stop_extra_workers()
            elif not pools.stack.extra_workers:
                pools.stack.add_worker()
            for pool in names:
                pools.report(pool, experiences)
            seconds, steps = pools.fan_out(names)
            rates[workers].append(len(names) * 60 / seconds)
            print(f"  training, round {run + 1}, {workers} worker(s): {len(names)} pools ({steps} steps) in "
                  f"{seconds:.1f} s = {rates[workers][-1]:.1f} pools/min", flush=True)
    pools.stack.stop_extra_workers()
    return rates


def measure_selects(stack: Stack, pools: Pools, args: argparse.Namespace) -> dict[str, Any]:
    """Throughput over one pool and over all of them, and the web workers' RSS after each."""
    one = [select_body(pools.names[0], i) for i in range(len(pools.names))]
    every = [select_body(pool, i) for i, pool in enumerate(pools.names)]

    def run(bodies: list[dict], seconds: int = args.seconds) -> dict:
        return wrk(stack, "/select_replica", bodies[0], seconds, args.connections, bodies=bodies)

    restart_web_workers(stack)
    run(one, 3)
    rss_one = web_rss(stack)
    run(every, 3)
    version = pools.check_routing()
    rss_every = web_rss(stack)
    print(f"every pool routes with its own model (policy dqn, model version >= {version}); web workers' "
          f"RSS: {', '.join(f'{v:.1f}' for v in rss_one)} MiB serving one pool, "
          f"{', '.join(f'{v:.1f}' for v in rss_every)} MiB serving {len(pools.names)}", flush=True)
    pairs = []
    for index in range(args.runs):
        order = ("one", "every") if index % 2 == 0 else ("every", "one")
        result = {label: run(one if label == "one" else every) for label in order}
        pairs.append((result["one"], result["every"]))
        print(f"  select, run {index + 1}: one pool {result['one']['rps']:.0f} req/s, "
              f"{len(pools.names)} pools {result['every']['rps']:.0f} req/s", flush=True)
    return {"pairs": pairs, "rss_one": rss_one, "rss_every": rss_every, "rss_end": web_rss(stack)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run (default 10)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each comparison (default 3)")
    parser.add_argument("--pools", type=int, default=50, help="pools served in (a) and (c) (default 50)")
    parser.add_argument("--train-pools", type=int, default=20, help="pools trained per round in (b) "
                        "(default 20)")
    parser.add_argument("--train-steps", type=int, default=100, help="gradient steps of each pool's run, "
                        "batch 64 (default 100)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--embedded", action="store_true", help="SQLite and the filesystem broker even "
                        "where Postgres and Redis answer")
    args = parser.parse_args()
    print(f"machine: {machine()}", flush=True)
    with Stack(Path(tempfile.mkdtemp(prefix="rlagent-pools-")), embedded=args.embedded,
               port=free_port()) as stack:
        stack.env.update(BENCH_ENV, TRAINING_ITERATIONS=str(args.train_steps))
        print(f"setting up: gunicorn (2 workers), 2 training workers, {args.pools} pools of {REPLICAS} named "
              f"replicas, 300 experiences each, a model published per pool ...", flush=True)
        stack.start()
        stack.add_worker()
        pools = Pools(stack, args.pools)
        for pool in pools.names:
            pools.report(pool, 300)
        seconds, _ = pools.fan_out(pools.names)
        print(f"backend: {stack.backend}; {args.pools} models published in {seconds:.1f} s by 2 workers",
              flush=True)
        rates = measure_training(pools, min(args.train_pools, args.pools), args.runs, experiences=64)
        selects = measure_selects(stack, pools, args)
    print_results(args, rates, selects)


def print_results(args: argparse.Namespace, rates: dict[int, list[float]], selects: dict[str, Any]) -> None:
    pairs, n = selects["pairs"], args.pools
    print(f"\n{'what (median of ' + str(args.runs) + ' runs)':44} {'median':>10} {'min-max':>17}")
    rows = [("/select_replica, one pool: req/s", [one["rps"] for one, _ in pairs]),
            (f"/select_replica, {n} pools: req/s", [every["rps"] for _, every in pairs]),
            ("/select_replica, one pool: p99 ms", [one["p99_ms"] for one, _ in pairs]),
            (f"/select_replica, {n} pools: p99 ms", [every["p99_ms"] for _, every in pairs]),
            (f"pools trained per minute, 1 worker ({args.train_pools} pools)", rates[1]),
            (f"pools trained per minute, 2 workers ({args.train_pools} pools)", rates[2])]
    for name, values in rows:
        print(f"{name:44} {statistics.median(values):10.1f} {min(values):8.1f}-{max(values):<8.1f}")
    failures = sum(r["non2xx"] + r["errors"] for pair in pairs for r in pair)
    select_ratio = [every["rps"] / one["rps"] for one, every in pairs]
    workers_ratio = [two / one for one, two in zip(rates[1], rates[2], strict=True)]
    rss_one, rss_every = statistics.mean(selects["rss_one"]), statistics.mean(selects["rss_every"])
    print(f"\n{n} pools / one pool, select throughput: {spread(select_ratio)} "
          f"(target >= {TARGETS['select']}x); non-2xx and errors: {failures}")
    print(f"2 workers / 1 worker, pools trained per minute: {spread(workers_ratio)} "
          f"(target >= {TARGETS['workers']}x where the cores are free)")
    print(f"web worker RSS: {rss_one:.1f} MiB serving one pool, {rss_every:.1f} MiB serving {n} "
          f"(mean of the workers), {(rss_every - rss_one) / (n - 1):.2f} MiB per pool; after the runs "
          f"{', '.join(f'{v:.1f}' for v in selects['rss_end'])} MiB")
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
