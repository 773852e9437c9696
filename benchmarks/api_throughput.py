"""API benchmark: /select_replica against the smallest DRF endpoint, batch ingest, one worker's RSS.

Starts the service as deployed (gunicorn with deploy/gunicorn.conf.py, 2 workers, and the
training worker), trains a model through POST /train so /select_replica answers with the DQN
(policy "dqn", checked), then under wrk, in the same run:

- /select_replica and /bench/constant (a DRF view that parses the same body and answers a
  constant, served by the same gunicorn), alternated --runs times: the median and the spread
  (min-max) of the throughput ratio and of the p99 ratio; once with the original body (3
  positional loads), once with 32 named replicas and their vLLM signals, and once with 16 named
  replicas and a request carrying 64 prefix-block hashes (a prefix-index lookup per request);
- /record_experience with 1000 experiences per body, --runs times: experiences per second;
- /record_experience with one experience per body, once;
- then every endpoint on both workers, and the largest web worker's RSS.

Uses Postgres and Redis when they answer on 127.0.0.1, else (or with --embedded) the embedded
default. Needs wrk (Debian: apt-get install wrk).

    .venv/bin/python benchmarks/api_throughput.py [--seconds 10] [--runs 3] [--connections 32] [--embedded]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.stack import EXPERIENCE, SELECT, SELECT_HASHED, SELECT_NAMED, Stack, wrk  # noqa: E402

BATCH = 1000
TARGETS = {"throughput": 0.9, "named_throughput": 0.85, "hashed_throughput": 0.75, "p99": 1.3,
           "ingest": 20_000, "rss_mib": 150}


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}x (min-max {min(values):.2f}-{max(values):.2f})"


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown CPU")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{os.cpu_count()} x {model}; load average {load}; Python {platform.python_version()}"


def train_first(stack: Stack) -> dict:
    """Record experiences, train through the API, and return a decision that the DQN made."""
    reply = stack.post("/record_experience", {"experiences": [EXPERIENCE] * 500})
    assert reply.status_code == 201, reply.text
    trained = stack.post("/train?batch_size=64&iterations=150", timeout=120)
    assert trained.status_code == 200, f"POST /train answered {trained.status_code}: {trained.text}"
    deadline = time.monotonic() + 10
    while True:  # every worker picks up the published model within SYNC_INTERVAL_SECONDS
        decisions = [stack.post("/select_replica", SELECT).json() for _ in range(8)]
        if all(d["policy"] == "dqn" for d in decisions) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    policies = {d["policy"] for d in decisions}
    assert policies == {"dqn"}, f"/select_replica should answer with the trained DQN, got {policies}"
    return {"steps": trained.json()["steps_done"], **decisions[0]}


def compare(run, body: dict, runs: int, label: str) -> list[tuple[dict, dict]]:
    """(constant, select_replica) wrk results for `body`, alternating which goes first so drift in
    the machine's load evens out."""
    pairs = []
    for index in range(runs):
        order = ("/bench/constant", "/select_replica") if index % 2 == 0 else ("/select_replica",
                                                                              "/bench/constant")
        result = {path: run(path, body) for path in order}
        pairs.append((result["/bench/constant"], result["/select_replica"]))
        print(f"  {label}, run {index + 1}: constant {result['/bench/constant']['rps']:.0f} req/s, "
              f"select_replica {result['/select_replica']['rps']:.0f} req/s", flush=True)
    return pairs


def dqn_selections(stack: Stack) -> dict[str, int]:
    time.sleep(1.5)  # the workers flush their counters every SYNC_INTERVAL_SECONDS
    counts: dict[str, int] = {}
    for per_policy in stack.get("/stats").json()["selections"].values():
        for policy, count in per_policy.items():
            counts[policy] = counts.get(policy, 0) + count
    return counts


def serve_every_endpoint(stack: Stack) -> None:
    calls = [("post", "/select_replica", SELECT), ("post", "/record_experience", EXPERIENCE),
             ("post", "/record_experience", {"experiences": [EXPERIENCE] * 50}),
             ("post", "/train?batch_size=64&iterations=1", None), ("post", "/save_model", None),
             ("get", "/stats", None), ("get", "/model/weights", None), ("get", "/ab_results", None),
             ("get", "/health", None), ("get", "/ready", None), ("get", "/metrics", None),
             ("get", "/api/schema/", None), ("get", "/api/docs/", None), ("get", "/admin/login/", None)]

    def call(item):
        method, path, body = item
        reply = stack.post(path, body, timeout=120) if method == "post" else stack.get(path)
        return path, reply.status_code

    with ThreadPoolExecutor(4) as pool:  # concurrent, so both workers serve each endpoint
        failed = [(p, s) for p, s in pool.map(call, calls * 6) if s >= 500]
    if failed:
        print(f"warning: failures while serving every endpoint: {sorted(set(failed))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run (default 10)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each comparison (default 3)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--embedded", action="store_true", help="SQLite and the filesystem broker even "
                        "where Postgres and Redis answer")
    args = parser.parse_args()
    print(f"machine: {machine()}", flush=True)
    with Stack(Path(tempfile.mkdtemp(prefix="rlagent-bench-")), embedded=args.embedded) as stack:
        print("setting up: migrate, API key, gunicorn (2 workers), training worker, 500 experiences, "
              "150 training steps ...", flush=True)
        stack.start()
        decided = train_first(stack)
        print(f"backend: {stack.backend}; gunicorn workers: 2; wrk: 2 threads, {args.connections} "
              f"connections, {args.seconds}s per run, {args.runs} runs")
        print(f"model: v{decided['model_version']}, {decided['steps']} training steps; /select_replica "
              f"answers policy={decided['policy']} (exploration off, so every request is a forward pass)\n",
              flush=True)
        run = lambda path, body, conns=args.connections, seconds=args.seconds: wrk(  # noqa: E731
            stack, path, body, seconds, conns)
        run("/bench/constant", SELECT, seconds=2), run("/select_replica", SELECT, seconds=2)  # warm up
        before = dqn_selections(stack)
        pairs = compare(run, SELECT, args.runs, "original body")
        policies = {stack.post("/select_replica", SELECT_NAMED).json()["policy"] for _ in range(8)}
        assert policies == {"dqn"}, f"32 named replicas should be routed by the DQN, got {policies}"
        named = compare(run, SELECT_NAMED, args.runs, "32 named replicas")
        hashed = compare(run, SELECT_HASHED, args.runs, "16 named replicas, 64 prefix hashes")
        after = dqn_selections(stack)
        others = sum(after.get(p, 0) - before.get(p, 0) for p in ("explore", "least_loaded"))
        assert others == 0, f"{others} selections during the runs were not made by the DQN"
        batches = [run("/record_experience", {"experiences": [EXPERIENCE] * BATCH}, 4)
                   for _ in range(args.runs)]
        single = run("/record_experience", EXPERIENCE)
        serve_every_endpoint(stack)
        rss = {w.pid: w.memory_info().rss / 2**20 for w in psutil.Process(stack.server.pid).children()}

    rows = [("constant DRF endpoint (reference)", [c for c, _ in pairs]),
            ("/select_replica (policy dqn)", [s for _, s in pairs]),
            ("constant, 32 named replicas' body", [c for c, _ in named]),
            ("/select_replica, 32 named replicas", [s for _, s in named]),
            ("constant, 16 replicas + 64 hashes' body", [c for c, _ in hashed]),
            ("/select_replica, 16 replicas + 64 hashes", [s for _, s in hashed]),
            ("/record_experience (one per request)", [single]),
            (f"/record_experience ({BATCH} per batch)", batches)]
    print(f"\n{'endpoint (median of runs)':40} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    for name, results in rows:
        med = {k: statistics.median(r[k] for r in results) for k in ("rps", "p50_ms", "p99_ms")}
        failures = sum(r["non2xx"] + r["errors"] for r in results)
        print(f"{name:40} {med['rps']:9.0f} {med['p50_ms']:8.2f} {med['p99_ms']:8.2f} {failures:8d}")
    throughput = [s["rps"] / c["rps"] for c, s in pairs]
    p99 = [s["p99_ms"] / c["p99_ms"] for c, s in pairs]
    ingest = [b["rps"] * BATCH for b in batches]
    print(f"\nselect_replica / constant DRF throughput: {spread(throughput)} "
          f"(target >= {TARGETS['throughput']}x)")
    print(f"select_replica / constant DRF p99:        {spread(p99)} (target <= {TARGETS['p99']}x)")
    named_p99 = spread([s["p99_ms"] / c["p99_ms"] for c, s in named])
    print(f"the same, 32 named replicas, throughput:  {spread([s['rps'] / c['rps'] for c, s in named])} "
          f"(target >= {TARGETS['named_throughput']}x); p99 {named_p99}")
    hashed_p99 = spread([s["p99_ms"] / c["p99_ms"] for c, s in hashed])
    print(f"the same, 16 replicas + 64 prefix hashes: {spread([s['rps'] / c['rps'] for c, s in hashed])} "
          f"(target >= {TARGETS['hashed_throughput']}x); p99 {hashed_p99}")
    print(f"record_experience, {BATCH} per batch:      {statistics.median(ingest):,.0f} experiences/s "
          f"(min-max {min(ingest):,.0f}-{max(ingest):,.0f}; target >= {TARGETS['ingest']:,})")
    print(f"RSS of one web worker after every endpoint: {max(rss.values()):.0f} MiB "
          f"(workers: {', '.join(f'{v:.0f}' for v in rss.values())} MiB; target <= {TARGETS['rss_mib']} MiB)")


if __name__ == "__main__":
    main()
