"""/metrics with several gunicorn workers: every worker's counts, per pool, are in each scrape.

Runs deploy/gunicorn.conf.py the way gunicorn's master does (before any worker imports
prometheus_client), forks workers that count decisions, and scrapes from yet another process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import os, runpy, sys
    conf = runpy.run_path("deploy/gunicorn.conf.py")      # the master reads its config first
    conf["on_starting"](None)                              # ...and clears the folder at start
    import django
    django.setup()
    from agent_app import metrics

    def worker(decisions):
        from collections import Counter
        totals = Counter()
        for i in range(decisions):
            pool = "beta" if i % 5 == 0 else "default"
            totals[pool, i % 3, "explore" if i % 2 else "least_loaded"] += 1
            if i % 7 == 0:
                metrics.count_decisions(totals)              # flushed now and then, as the refresh does
        metrics.count_decisions(totals)
        metrics.count_recorded(decisions)
        os._exit(0)

    pids = []
    for decisions in (10, 20, 30):                          # three workers, forked like gunicorn's
        pid = os.fork()
        if pid == 0:
            worker(decisions)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
        conf["child_exit"](None, type("Worker", (), {"pid": pid}))
    from prometheus_client import generate_latest
    sys.stdout.write(os.environ["PROMETHEUS_MULTIPROC_DIR"] + "\\n")
    sys.stdout.write(generate_latest(metrics.scrape()).decode())
""")


def test_counters_of_every_gunicorn_worker_are_summed_in_one_scrape(tmp_path):
    stale = tmp_path / "var" / "prometheus-multiproc"
    stale.mkdir(parents=True)
    (stale / "counter_999999.db").write_bytes(b"left by a previous run")
    env = {
        **{k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
        "DJANGO_SETTINGS_MODULE": "rlagent_project.settings",
        "DATA_DIR": str(tmp_path / "var"), "SECRET_KEY": "x" * 50,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'empty.sqlite3'}",  # no tables: the state part fails alone
    }
    for name in ("REDIS_HOST", "REDIS_DB"):
        env.pop(name, None)
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    folder, text = result.stdout.split("\n", 1)
    assert folder == str(stale)  # under DATA_DIR, as the gunicorn config promises
    families = {f.name: f for f in text_string_to_metric_families(text)}
    decisions = families["rl_agent_decisions"].samples
    assert sum(s.value for s in decisions if s.name.endswith("_total")) == 60
    explore = [s for s in decisions if s.name.endswith("_total") and s.labels["policy"] == "explore"]
    assert sum(s.value for s in explore) == 30
    beta = [s for s in decisions if s.name.endswith("_total") and s.labels["pool"] == "beta"]
    assert sum(s.value for s in beta) == 2 + 4 + 6  # every fifth decision of each worker
    recorded = families["rl_agent_experiences_recorded"].samples
    assert next(s.value for s in recorded if s.name.endswith("_total")) == 60
