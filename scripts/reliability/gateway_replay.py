"""Replay a gateway's cadence from the original specification against a running service and count
the answers: `select_replica` per request, `record_experience` per completion, `/train` every 200.

Each gateway thread routes a request (`POST /select_replica`), lets a simulated replica serve it
(slower when loaded, the odd failure), reports the outcome with the original body (`state`,
`action`, `latency_ms`, `success`, `replica_loads`), and after every `--train-every` completions
(counted over all threads) sends `POST /train?batch_size=64&iterations=50`. `--requests` counts
every HTTP request sent, whatever its endpoint.

    .venv/bin/python scripts/reliability/gateway_replay.py --requests 20000 [--threads 8] \\
        [--url http://localhost:5000] [--api-key KEY]

Without --api-key (or RLAGENT_API_KEY) a key is created with `manage.py create_api_key`, which
reaches the service's database when it runs from this checkout (as `make run` does).
Exit status 1 on any 5xx or any request left without an answer.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_SECONDS = 120  # /train waits up to TRAIN_TIMEOUT_SECONDS for the worker; never cut it short


@dataclass
class Replay:
    """Counts shared by the gateway threads: (endpoint, status) -> answers, and the request budget."""

    budget: int
    train_every: int = 200
    save_every: int = 0
    train_query: str = "batch_size=64&iterations=50"
    statuses: Counter = field(default_factory=Counter)
    samples: dict = field(default_factory=dict)  # (endpoint, status) -> the first non-2xx body
    sent: int = 0
    completions: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, count: int) -> bool:
        """Reserve `count` requests of the budget; False once it cannot cover them."""
        with self.lock:
            if self.sent + count > self.budget:
                return False
            self.sent += count
            return True

    def count(self, endpoint: str, response: requests.Response | None, error: str = "") -> None:
        status = response.status_code if response is not None else 0  # 0: no answer at all
        with self.lock:
            self.statuses[endpoint, status] += 1
            if not 200 <= status < 300 and (endpoint, status) not in self.samples:
                self.samples[endpoint, status] = error or response.text[:300]

    def complete(self) -> int:
        with self.lock:
            self.completions += 1
            return self.completions


def call(session: requests.Session, replay: Replay, url: str, endpoint: str, **kwargs) -> dict | None:
    """POST once and count the answer; the JSON body of a 2xx, else None."""
    try:
        response = session.post(f"{url}/{endpoint}", timeout=TIMEOUT_SECONDS, **kwargs)
    except requests.RequestException as exc:
        replay.count(endpoint.split("?")[0], None, str(exc)[:300])
        return None
    replay.count(endpoint.split("?")[0], response)
    return response.json() if 200 <= response.status_code < 300 else None


def gateway(replay: Replay, url: str, api_key: str, replicas: int, seed: int) -> None:
    """One gateway loop: route, serve on a simulated replica, report; train on the cadence."""
    rng = random.Random(seed)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {api_key}"
    while replay.take(2):  # a routed request is always reported
        loads = [round(rng.uniform(0, 100), 1) for _ in range(replicas)]
        body = {"replica_loads": loads, "queue_depth": rng.randint(0, 30),
                "recent_latency_ms": round(rng.uniform(50, 800), 1),
                "current_rps": round(rng.uniform(1, 50), 1), "success_rate": round(rng.uniform(0.9, 1.0), 3)}
        decision = call(session, replay, url, "select_replica", json=body)
        if decision is None:  # the gateway falls back to least-loaded and still reports
            action = loads.index(min(loads))
            state = [*loads, body["queue_depth"], body["recent_latency_ms"] / 1000, body["current_rps"],
                     body["success_rate"], 0.5, 0.5, 0.5]
        else:
            action, state = decision["replica_idx"], decision["state"]
        latency = rng.uniform(80, 300) * (1 + loads[action] / 50)
        after = [min(100.0, max(0.0, load + rng.uniform(-5, 5))) for load in loads]
        call(session, replay, url, "record_experience", json={
            "state": state, "action": action, "latency_ms": round(latency, 1),
            "success": rng.random() > 0.02, "replica_loads": after,
        })
        done = replay.complete()
        if done % replay.train_every == 0 and replay.take(1):
            call(session, replay, url, f"train?{replay.train_query}")
        if replay.save_every and done % replay.save_every == 0 and replay.take(1):
            call(session, replay, url, "save_model")


def run(url: str, api_key: str, *, requests_total: int, threads: int = 1, replicas: int = 3,
        train_every: int = 200, save_every: int = 0, seed: int = 0, progress: bool = False) -> Replay:
    """Drive the service from `threads` gateway loops until `requests_total` requests were sent."""
    replay = Replay(budget=requests_total, train_every=train_every, save_every=save_every)
    workers = [threading.Thread(target=gateway, args=(replay, url.rstrip("/"), api_key, replicas, seed + i),
                                daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    step = max(requests_total // 10, 1)
    next_report = step
    while any(worker.is_alive() for worker in workers):
        for worker in workers:
            worker.join(timeout=1)
        if progress and replay.sent >= next_report:
            errors = sum(n for (_, status), n in replay.statuses.items() if status >= 500 or status == 0)
            print(f"  {replay.sent} requests sent, {replay.completions} completions, 5xx or unanswered: "
                  f"{errors}", flush=True)
            next_report = (replay.sent // step + 1) * step
    return replay


def create_api_key() -> str:
    name = f"gateway-replay-{uuid.uuid4().hex[:8]}"
    result = subprocess.run([sys.executable, "manage.py", "create_api_key", name], cwd=ROOT,
                            capture_output=True, text=True, check=True)
    return result.stdout.strip().splitlines()[-1]


def report(replay: Replay) -> int:
    """Print the answers per endpoint and status, per status, and the first body of each refusal;
    returns how many were 5xx or unanswered."""
    print("\nresponses per endpoint and status:")
    for (endpoint, status), n in sorted(replay.statuses.items()):
        print(f"  {endpoint:<18} {status or 'no answer'}: {n}")
    per_status: Counter = Counter()
    for (_, status), n in replay.statuses.items():
        per_status[status] += n
    print("responses per status: "
          + ", ".join(f"{s or 'no answer'}: {n}" for s, n in sorted(per_status.items())))
    if replay.samples:
        print("first answer of each non-2xx status:")
        for (endpoint, status), text in sorted(replay.samples.items()):
            print(f"  {endpoint} {status or 'no answer'}: {text.strip()}")
    return sum(n for status, n in per_status.items() if status >= 500 or status == 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=f"http://localhost:{os.environ.get('PORT', '5000')}")
    parser.add_argument("--requests", type=int, default=20_000, help="HTTP requests to send, all endpoints")
    parser.add_argument("--threads", type=int, default=1, help="concurrent gateway loops")
    parser.add_argument("--train-every", type=int, default=200, help="completions between /train calls")
    parser.add_argument("--save-every", type=int, default=0,
                        help="completions between /save_model calls (0: none)")
    parser.add_argument("--replicas", type=int, default=int(os.environ.get("NUM_REPLICAS", "3")))
    parser.add_argument("--api-key", default=os.environ.get("RLAGENT_API_KEY", ""))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    api_key = args.api_key or create_api_key()
    print(f"{args.requests} requests from {args.threads} gateway thread(s) against {args.url}: select, "
          f"record each completion, /train?batch_size=64&iterations=50 every {args.train_every} completions"
          + (f", /save_model every {args.save_every}" if args.save_every else ""), flush=True)
    started = time.monotonic()
    replay = run(args.url, api_key, requests_total=args.requests, threads=args.threads,
                 replicas=args.replicas, train_every=args.train_every, save_every=args.save_every,
                 seed=args.seed, progress=True)
    print(f"{replay.sent} requests, {replay.completions} completions in {time.monotonic() - started:.0f} s")
    errors = report(replay)
    print(f"\n5xx or unanswered: {errors}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
