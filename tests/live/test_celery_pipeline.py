"""Beat, a training worker and web as separate processes: scheduled training, checkpoints,
target syncs, publication to the web tier, one trainer at a time, and recovery from SIGKILL."""

from __future__ import annotations

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
    "TRAINING_STEPS_PER_EXPERIENCE": "0",  # exactly 50 steps per scheduled run
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


def test_beat_trains_syncs_checkpoints_and_web_serves_the_new_model(live_stack_factory):
    stack = live_stack_factory(**FAST)
    stack.start("web")
    report(stack, 300)
    stack.start("worker")
    stack.start("beat")
    body = stack.wait_for(lambda: (s := stats(stack))["steps_done"] >= 200 and s, 90,
                          "beat-driven training to reach 200 steps")
    assert body["steps_done"] % 50 == 0  # whole scheduled runs of TRAINING_ITERATIONS
    assert body["target_syncs"] == body["steps_done"] // 25
    assert body["model_version"] >= 4
    checkpoint = Path(stack.env["MODEL_PATH"])
    assert checkpoint.exists()
    agent = load_checkpoint(checkpoint)
    assert agent.steps_done % 100 == 0 and agent.steps_done >= 100
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


def test_only_one_trainer_trains_at_a_time(live_stack_factory):
    # A long interval gives the run a time budget far above what it needs; 5000 steps of 256 keep
    # the first trainer busy well past the second's start even on a quiet machine.
    stack = live_stack_factory(TRAINING_LEASE_SECONDS="30", TRAINING_INTERVAL_SECONDS="300")
    stack.start("web")
    report(stack, 300)
    first = _start_manage(stack, "train", "--iterations", "5000", "--chunk", "5000", "--batch-size", "256")
    time.sleep(3)  # the first holds the lease for its whole single chunk
    second = stack.manage("train", "--iterations", "10", "--batch-size", "64", check=False)
    first.wait(timeout=300)
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
