"""Beat, a training worker and web as separate processes: scheduled training, checkpoints,
target syncs, publication to the web tier, one trainer at a time, and recovery from SIGKILL."""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from agent_app.rl.checkpoint import load_checkpoint
from tests.conftest import random_experience

pytestmark = pytest.mark.slow
FAST = {
    "TRAINING_INTERVAL_SECONDS": "3",
    "TRAINING_ITERATIONS": "50",
    "TRAINING_STEPS_PER_EXPERIENCE": "0",  # 50 steps per scheduled run, fewer if its time budget runs out
    "TARGET_SYNC_STEPS": "25",
    "CHECKPOINT_EVERY_STEPS": "100",
    "TRAINING_LEASE_SECONDS": "4",
}


def report(stack, count: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for start in range(0, count, 500):
        batch = [random_experience(rng) for _ in range(min(500, count - start))]
        response = stack.call("POST", "/record_experience", {"experiences": batch})
        assert response.status_code == 201, response.text


def stats(stack) -> dict:
    return stack.call("GET", "/stats").json()


HISTORY = """
import json
from agent_app.models import MetricSample
runs = MetricSample.objects.order_by("model_version").values_list("model_version", "steps_done")
print(json.dumps(list(runs)))
"""


LEASE_HELD = ("from agent_app.models import TrainingLease; "
              "print(TrainingLease.objects.exclude(holder='').exists())")


def published_runs(stack) -> list[tuple[int, int]]:
    """(model_version, steps_done) as each training run published them (the dashboard's history)."""
    out = stack.manage("shell", "-c", HISTORY)
    return [(version, steps) for version, steps in json.loads(out.strip().splitlines()[-1])]


def assert_each_run_counted_once(runs: list[tuple[int, int]], final: dict, most_per_run: int) -> None:
    """Every run published a new version with 1..most_per_run more steps: none lost or counted twice.

    A run's time budget may stop it early on a busy machine, so the steps need not be whole runs.
    A run whose history point was not recorded shows as a gap of two versions, bounded the same way.
    """
    points = [(0, 0), *runs]
    if points[-1][0] == final["model_version"]:
        assert points[-1][1] == final["steps_done"]
    else:
        points.append((final["model_version"], final["steps_done"]))
    for (version, steps), (next_version, next_steps) in zip(points, points[1:], strict=False):
        runs_between = next_version - version
        assert runs_between >= 1, points
        assert runs_between <= next_steps - steps <= most_per_run * runs_between, points


def test_beat_trains_syncs_checkpoints_and_web_serves_the_new_model(live_stack_factory):
    stack = live_stack_factory(**FAST)
    stack.start("web")
    report(stack, 300)
    stack.start("worker")
    stack.start("beat")
    stack.wait_for(lambda: stats(stack)["steps_done"] >= 200, 90, "beat-driven training to reach 200 steps")
    # The web workers pick the published model up without a restart.
    select = {"replica_loads": [5, 3, 7], "queue_depth": 1, "recent_latency_ms": 100,
              "current_rps": 1, "success_rate": 1}
    version = stack.wait_for(
        lambda: (v := stack.call("POST", "/select_replica", select).json()["model_version"]) >= 4 and v,
        10, "web workers to serve the new model",
    )
    assert version >= 4
    # Two gunicorn workers answer these requests; they agree on the shared state.
    stack.stop("beat")
    stack.stop("worker")
    time.sleep(1.5)
    answers = {(b["steps_done"], b["model_version"], b["epsilon"]) for b in (stats(stack) for _ in range(12))}
    assert len(answers) == 1
    body = stats(stack)
    assert body["steps_done"] >= 200 and body["model_version"] >= 4
    assert_each_run_counted_once(published_runs(stack), body, most_per_run=50)
    assert body["target_syncs"] == body["steps_done"] // 25  # every 25 steps, whatever each run took
    # A checkpoint was written when a run crossed a multiple of 100 steps (not necessarily on it).
    agent = load_checkpoint(Path(stack.env["MODEL_PATH"]))
    assert 100 <= agent.steps_done <= body["steps_done"]


def test_only_one_trainer_trains_at_a_time(live_stack_factory):
    # A long interval gives the run a time budget far above what it needs; 5000 steps of 256 keep
    # the first trainer busy well past the second's start even on a quiet machine.
    stack = live_stack_factory(TRAINING_LEASE_SECONDS="30", TRAINING_INTERVAL_SECONDS="300")
    stack.start("web")
    report(stack, 300)
    first = _start_manage(stack, "train", "--iterations", "5000", "--chunk", "5000", "--batch-size", "256")
    # The second starts once the first holds the lease (for its whole single chunk), however long
    # the first took to start; a busy machine makes the first's run long, so its wait is generous.
    stack.wait_for(lambda: stack.manage("shell", "-c", LEASE_HELD).strip().endswith("True"), 120,
                   "the first trainer to hold the lease")
    second = stack.manage("train", "--iterations", "10", "--batch-size", "64", check=False)
    first.wait(timeout=1200)
    assert "another trainer" in second
    assert stack.call("GET", "/stats").json()["steps_done"] == 5000


def test_sigkilled_worker_restarts_from_its_newest_checkpoint(live_stack_factory):
    stack = live_stack_factory(**{**FAST, "CHECKPOINT_EVERY_STEPS": "50", "TRAINING_INTERVAL_SECONDS": "2"})
    stack.start("web")
    report(stack, 300)
    stack.start("beat")
    rng = random.Random(7)
    seen = 0
    for kill in range(4):
        stack.start("worker")
        stack.wait_for(
            lambda seen=seen: stats(stack)["steps_done"] > seen, 90, f"training before kill {kill}"
        )
        time.sleep(rng.uniform(0.0, 2.0))
        stack.stop("worker", signal.SIGKILL)
        now = stats(stack)["steps_done"]
        assert now >= seen, "steps_done went backwards"
        seen = now
    stack.start("worker")
    stack.wait_for(lambda: stats(stack)["steps_done"] > seen, 90, "training after the last restart")
    model_dir = Path(stack.env["MODEL_PATH"]).parent
    newest = load_checkpoint(stack.env["MODEL_PATH"])
    assert newest.steps_done <= stats(stack)["steps_done"]
    stack.wait_for(lambda: not list(model_dir.glob(".*.tmp")), 30, "stray temp files to be cleaned")


def _start_manage(stack, *args: str):
    import subprocess
    import sys

    from simulator.live_service import ROOT

    return subprocess.Popen([sys.executable, "manage.py", *args], cwd=ROOT, env=stack.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
