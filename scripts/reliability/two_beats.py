"""Two beats and two training workers at once for several intervals: one trainer at a time.

A mistaken deployment (beat started twice, say by two replicas of the same compose service)
sends every periodic task twice. The training lease must still let one run train at a time,
and nothing may be counted twice. Starts web, two workers and two beats from the Procfile
(Postgres + Redis when they answer, else embedded) with a short interval while experiences
keep arriving, then reads every run's result from the workers' logs and checks:

- each run that trained continued exactly where the previous one stopped (its steps_done is the
  previous run's plus its own iterations): runs that overlapped would start from the same step;
- the final steps_done is the sum of every run's iterations, and the model version and the
  training-run counter equal the number of runs;
- the second beat's duplicates were refused or found nothing new, never trained in parallel.

    .venv/bin/python scripts/reliability/two_beats.py [--intervals 15] [--interval 2]
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).parent)]

from kill_worker import report  # noqa: E402

from simulator.live_service import LiveStack, services_reachable  # noqa: E402

RESULT = re.compile(r"^\[([\d-]+ [\d:,]+): INFO/\S+\] Task tasks\.training\.scheduled_train\[[^\]]+\] "
                    r"succeeded in ([\d.e-]+)s: (\{.*\})$")


def runs_in(log: str, worker: str) -> list[dict]:
    runs = []
    for line in log.splitlines():
        match = RESULT.match(line)
        if match:
            ended = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            runs.append({"worker": worker, "start": ended - float(match[2]), "end": ended,
                         **ast.literal_eval(match[3])})
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--intervals", type=int, default=15)
    parser.add_argument("--interval", type=float, default=2.0, help="TRAINING_INTERVAL_SECONDS")
    args = parser.parse_args()
    env = {"TRAINING_INTERVAL_SECONDS": str(args.interval), "TRAINING_STEPS_PER_EXPERIENCE": "0",
           "TRAINING_ITERATIONS": "40", "TRAINING_BATCH_SIZE": "64", "CHECKPOINT_EVERY_STEPS": "200"}
    stack = LiveStack(Path(tempfile.mkdtemp(prefix="rlagent-two-beats-")), services_reachable(), **env)
    stop = threading.Event()
    try:
        stack.start("web")
        report(stack, 300)
        for name in ("worker", "worker2"):
            stack.start("worker", as_name=name)
        for name in ("beat", "beat2"):
            stack.start("beat", as_name=name)

        def feed() -> None:  # new traffic all along, so every run has something to learn from
            while not stop.wait(0.5):
                report(stack, 50)

        feeder = threading.Thread(target=feed)
        feeder.start()
        print(f"two beats and two workers for {args.intervals} intervals of {args.interval:g} s "
              f"(logs in {stack.tmp_path})", flush=True)
        time.sleep(args.intervals * args.interval)
        stop.set()
        feeder.join()
        for name in ("beat", "beat2"):
            stack.stop(name)
        time.sleep(args.interval * 2)  # runs already sent finish
        stats = stack.call("GET", "/stats").json()
        counted = int(stack.manage("shell", "-c", "from agent_app.models import TrainerCounters as T; "
                                   "print(T.load().training_runs)").split()[-1])
        logs = {name: stack.log(name) for name in ("worker", "worker2", "beat", "beat2")}
    finally:
        stop.set()
        stack.close()

    runs = sorted(runs_in(logs["worker"], "worker") + runs_in(logs["worker2"], "worker2"),
                  key=lambda run: run["end"])
    trained = [r for r in runs if "steps_done" in r]
    refused = [r for r in runs if r.get("refused")]
    sent = {name: logs[name].count("Sending due task train (tasks.training.scheduled_train)")
            for name in ("beat", "beat2")}
    failures, previous = [], 0
    for run in trained:
        if run["steps_done"] != previous + run["iterations"]:
            failures.append(f"run ending {run['end']:.3f} on {run['worker']}: steps_done {run['steps_done']} "
                            f"is not {previous} + {run['iterations']}")
        previous = run["steps_done"]
    overlaps = sum(1 for a, b in zip(trained, trained[1:], strict=False) if b["start"] < a["end"] - 0.05)
    total_iterations = sum(r["iterations"] for r in trained)
    print(f"train tasks sent: {sent}; runs that trained: {len(trained)} "
          f"({sum(r['worker'] == 'worker' for r in trained)} on worker, "
          f"{sum(r['worker'] == 'worker2' for r in trained)} on worker2); refused as busy: "
          f"{sum(r['refused'] == 'busy' for r in refused)}; refused for too few experiences: "
          f"{sum(r['refused'] == 'not_enough' for r in refused)}")
    print(f"runs whose logged span overlaps the previous run's by more than 50 ms: {overlaps}")
    print(f"steps_done {stats['steps_done']} = sum of the runs' iterations {total_iterations}: "
          f"{stats['steps_done'] == total_iterations}; model_version {stats['model_version']} and the "
          f"training-run counter {counted} = runs {len(trained)}: "
          f"{stats['model_version'] == len(trained) == counted}")
    if stats["steps_done"] != total_iterations:
        failures.append("steps_done differs from the sum of the runs' iterations")
    if not stats["model_version"] == len(trained) == counted:
        failures.append("model_version or the run counter differs from the number of runs")
    if min(sent.values()) == 0 or not trained:
        failures.append("one of the beats sent nothing, or nothing trained")
    if overlaps:
        failures.append("two runs trained at the same time")
    print("\n" + ("\n".join("FAILED: " + f for f in failures) if failures else "one trainer at a time; "
                                                                                  "nothing counted twice"))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
