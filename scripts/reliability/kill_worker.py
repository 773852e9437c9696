"""Kill the training worker with SIGKILL at random moments, checkpoint writes included.

Starts web, worker and beat as the README does (Postgres + Redis when they answer on
127.0.0.1, else embedded) with a short training interval and a checkpoint every run, then
N times: wait a random moment, SIGKILL the worker, check that the newest checkpoint loads
and steps_done did not go backwards, restart the worker. At the end: no stray temp files.

    .venv/bin/python scripts/reliability/kill_worker.py [--kills 20] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from agent_app.rl.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from simulator.live_service import LiveStack, services_reachable  # noqa: E402

FAST = {"TRAINING_INTERVAL_SECONDS": "1", "TRAINING_STEPS_PER_EXPERIENCE": "0", "TRAINING_ITERATIONS": "40",
        "TRAINING_BATCH_SIZE": "64", "CHECKPOINT_EVERY_STEPS": "40", "TRAINING_LEASE_SECONDS": "3"}



def report(stack: LiveStack, count: int) -> None:
    rng = np.random.default_rng(0)
    batch = []
    for _ in range(count):
        loads = [float(x) for x in rng.integers(0, 100, 3)]
        batch.append({"state": loads + [3.0, 0.3, 8.0, 0.99, 0.5, 0.4, 0.5], "action": int(rng.integers(3)),
                      "latency_ms": float(rng.uniform(50, 900)), "success": True, "replica_loads": loads})
    assert stack.call("POST", "/record_experience", {"experiences": batch}).status_code == 201


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rlagent_project.settings")
    services = services_reachable()
    stack = LiveStack(Path(tempfile.mkdtemp(prefix="rlagent-kill-")), services, **FAST)
    model_path = Path(stack.env["MODEL_PATH"])
    failures, rows = [], []
    try:
        stack.start("web")
        report(stack, 500)
        stack.start("beat")
        stack.start("worker")
        steps = lambda: stack.call("GET", "/stats").json()["steps_done"]  # noqa: E731
        stack.wait_for(lambda: steps() > 0, 120, "the first training run")
        last = steps()
        for kill in range(1, args.kills + 1):
            time.sleep(rng.uniform(0.2, 2.5))
            stack.stop("worker", signal.SIGKILL)
            now = steps()
            strays = sorted(p.name for p in model_path.parent.glob(".*.tmp"))
            try:
                loaded = load_checkpoint(model_path).steps_done
            except CheckpointError as exc:
                loaded = None
                failures.append(f"kill {kill}: newest checkpoint does not load: {exc}")
            if now < last:
                failures.append(f"kill {kill}: steps_done went back from {last} to {now}")
            rows.append((kill, now, loaded, len(strays)))
            print(f"kill {kill:2d}: steps_done {now:5d}  newest checkpoint loads at {loaded} steps  "
                  f"temp files left by the kill: {len(strays)}", flush=True)
            last = now
            stack.start("worker")
            stack.wait_for(lambda last=last: steps() > last, 120, f"training after restart {kill}")
        stack.wait_for(lambda: not list(model_path.parent.glob(".*.tmp")), 30, "stray temp files cleaned")
        final = steps()
        print(f"\n{args.kills} SIGKILLs: steps_done {rows[0][1]} -> {final}, never backwards: "
              f"{not any('went back' in f for f in failures)}; newest checkpoint loaded after every kill: "
              f"{not any('does not load' in f for f in failures)}; kills that left a temp file: "
              f"{sum(1 for r in rows if r[3])}; temp files left at the end: 0")
    finally:
        stack.close()
    for failure in failures:
        print("FAILED:", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
