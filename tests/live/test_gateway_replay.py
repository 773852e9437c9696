"""The embedded default (SQLite, filesystem broker) driven as a gateway drives it: select, record,
train and save from several threads at once, while the web workers' sync threads, the worker and
beat write to the same database. No answer may be a 5xx, and no training run may lose its metrics."""

from __future__ import annotations

import sqlite3

import pytest

from scripts.reliability.gateway_replay import run
from simulator.live_service import LiveStack

pytestmark = pytest.mark.slow
REQUESTS, THREADS = 3000, 6


def test_embedded_service_answers_concurrent_gateway_writes_without_5xx(tmp_path):
    # Embedded whatever backends the suite runs on: no DATABASE_URL, no Redis, a DATA_DIR of its
    # own. Beat trains every 2 s so the worker writes all along; a slow machine must not turn a
    # queued /train into a 504, so the wait for the worker is long.
    stack = LiveStack(tmp_path, use_services=False, DATABASE_URL="", WEB_CONCURRENCY="3",
                      TRAINING_INTERVAL_SECONDS="2", TRAINING_MAX_ITERATIONS="100",
                      TRAIN_TIMEOUT_SECONDS="90")
    try:
        for name in ("web", "worker", "beat"):
            stack.start(name)
        replay = run(stack.url(""), stack.api_key, requests_total=REQUESTS, threads=THREADS,
                     train_every=100, save_every=250)
        stats = stack.call("GET", "/stats").json()
    finally:
        stack.close()
    logs = {name: stack.log(name) for name in ("web", "worker", "beat")}

    statuses = replay.statuses
    failed = {key: n for key, n in statuses.items() if key[1] >= 500 or key[1] == 0}
    assert not failed, f"{failed}; first answers: {replay.samples}"
    assert statuses["record_experience", 201] == replay.completions == stats["buffer_size"]
    # The write paths under test really ran; a trainer busy with beat's run may refuse some (409).
    assert statuses["train", 200] >= 1 and statuses["save_model", 200] >= 1, statuses
    assert {status for _, status in statuses} <= {200, 201, 409}, statuses
    for name, text in logs.items():
        assert "database is locked" not in text, f"{name} log:\n{text[-3000:]}"
    # Every published run recorded its duration and its dashboard point.
    with sqlite3.connect(f"file:{tmp_path / 'var' / 'db.sqlite3'}?mode=ro", uri=True) as db:
        runs = db.execute("SELECT training_runs FROM agent_app_trainercounters").fetchone()[0]
        points = db.execute("SELECT COUNT(*) FROM agent_app_metricsample").fetchone()[0]
        version = db.execute("SELECT model_version FROM agent_app_agentstate").fetchone()[0]
    assert runs == points == version >= 1
