"""The original specification's curl examples, verbatim plus the API-key header, against a live server."""

from __future__ import annotations

import json
import shlex
import subprocess

SEED_SELECT = '{"replica_loads": [5, 3, 7], "queue_depth": 12, "recent_latency_ms": 280.5, ' \
    '"current_rps": 8.2, "success_rate": 0.98}'
SEED_EXPERIENCE = '{"state": [5, 3, 7, 12, 0.28, 8.2, 0.98, 0.5, 0.4, 0.5], "action": 1, ' \
    '"latency_ms": 265.3, "success": true, "replica_loads": [5, 4, 7]}'


def curl(stack, command: str) -> dict:
    command = command.replace("localhost:5000", f"localhost:{stack.port}")
    args = shlex.split(command)
    args[1:1] = ["-sS", "-H", f"Authorization: Bearer {stack.api_key}"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60, check=True)
    return json.loads(result.stdout)


def test_the_specification_curl_examples_work_as_written(live_stack_factory):
    stack = live_stack_factory()
    stack.start("web")
    stack.start("worker")
    select = curl(stack, f"curl -X POST http://localhost:5000/select_replica -H 'Content-Type: "
                         f"application/json' -d '{SEED_SELECT}'")
    assert {"replica_idx", "replica_name", "confidence", "exploration"} <= set(select)
    for _ in range(70):
        recorded = curl(stack, f"curl -X POST http://localhost:5000/record_experience -H 'Content-Type: "
                               f"application/json' -d '{SEED_EXPERIENCE}'")
    assert recorded["stored"] == 1
    # "Trigger 10 training iterations"
    trained = curl(stack, 'curl -X POST "http://localhost:5000/train?batch_size=64&iterations=10"')
    assert {"loss", "epsilon", "buffer_size", "steps_done"} <= set(trained), trained
    # Up to 10 steps (a run's time budget may stop it early on a busy machine), each counted once.
    assert 1 <= trained["iterations"] <= 10 and trained["steps_done"] == trained["iterations"]
    assert trained["buffer_size"] >= 70
    saved = curl(stack, "curl -X POST http://localhost:5000/save_model")
    assert saved["steps_done"] == trained["steps_done"]
    stats = curl(stack, "curl http://localhost:5000/stats")
    assert {"epsilon", "steps_done", "buffer_size", "avg_recent_reward", "device", "model_path"} <= set(stats)
    assert stats["steps_done"] == trained["steps_done"]
    assert stats["model_path"] == stack.env["MODEL_PATH"]
