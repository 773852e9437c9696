"""The service as deployed, for the API benchmark: gunicorn and the training worker on a fresh
database (Postgres and Redis when they answer on 127.0.0.1, else the embedded default), and wrk."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
PORT = 5055
SELECT = {"replica_loads": [5, 3, 7], "queue_depth": 12, "recent_latency_ms": 280.5, "current_rps": 8.2,
          "success_rate": 0.98}
# The named body over 32 replicas, as a gateway reading vLLM's metrics sends it.
SELECT_NAMED = {"replicas": [{"name": f"gpu-{i}", "load": (7 * i) % 40, "running": (7 * i) % 32,
                              "waiting": i % 3, "kv_cache_usage": (i % 10) / 10} for i in range(32)],
                "request": {"prompt_tokens": 812, "max_tokens": 256},
                **{key: value for key, value in SELECT.items() if key != "replica_loads"}}
# 16 named replicas and a request with 64 prefix-block hashes (what rlagent_client.prefix sends for a
# 16 k-character prompt): the prefix index is asked for every replica's match on each request.
SELECT_HASHED = {**SELECT_NAMED, "replicas": SELECT_NAMED["replicas"][:16],
                 "request": {"prompt_tokens": 4000, "max_tokens": 256,
                             "prefix_hashes": [f"{i:016x}" for i in range(64)]}}
EXPERIENCE = {"state": [5, 3, 7, 12, 0.28, 8.2, 0.98, 0.5, 0.4, 0.5], "action": 1, "latency_ms": 265.3,
              "success": True, "replica_loads": [5, 4, 7]}
TRAINING_WORKER = ["celery", "-A", "rlagent_project", "worker", "--queues", "training", "--concurrency", "1"]


def reachable(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def admin_sql(statement: str) -> None:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as conn:
        conn.execute(statement)


class Stack:
    """gunicorn (deploy/gunicorn.conf.py, 2 workers) and a training worker; stopped on exit."""

    def __init__(self, folder: Path, embedded: bool = False, port: int = PORT) -> None:
        self.folder = folder
        self.embedded = embedded
        self.base = f"http://127.0.0.1:{port}"
        self.database: str | None = None
        self.server: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None
        self.extra_workers: list[subprocess.Popen] = []  # add_worker()'s
        self.key = ""
        self.env = {
            **os.environ, "DJANGO_SETTINGS_MODULE": "benchmarks.api.settings", "DATA_DIR": str(folder),
            "SECRET_KEY": "benchmark-" + "s" * 40, "MODEL_PATH": str(folder / "models" / "rl_agent.pth"),
            "WEB_CONCURRENCY": "2", "PORT": str(port), "PROMETHEUS_URL": "http://127.0.0.1:9",
            "LOG_LEVEL": "warning", "RL_EXPLORATION": "false", "TRAIN_TIMEOUT_SECONDS": "120",
            # The model's forward pass is what is measured: it routes every request once trained.
            "RL_ROUTING_GATE": "false",
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        }
        if shutil.which("wrk") is None:
            raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")

    @property
    def backend(self) -> str:
        return "postgres+redis" if self.database else "sqlite + filesystem broker (embedded)"

    def __enter__(self) -> Stack:
        if not self.embedded and reachable(5432) and reachable(6379):
            self.database = f"rlagent_bench_{uuid.uuid4().hex[:8]}"
            admin_sql(f'CREATE DATABASE "{self.database}"')
            self.env.update(DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{self.database}",
                            REDIS_HOST="127.0.0.1", REDIS_DB="13", REDIS_KEY_PREFIX=f"{self.database}:")
        else:
            self.env["DATABASE_URL"] = f"sqlite:///{self.folder / 'bench.sqlite3'}"
        return self

    def start(self) -> None:
        self.manage("migrate", "--noinput")
        self.key = self.manage("create_api_key", "benchmark")
        quiet = {"cwd": ROOT, "env": self.env, "start_new_session": True, "stdout": subprocess.DEVNULL,
                 "stderr": subprocess.DEVNULL}
        self.server = subprocess.Popen(
            ["gunicorn", "rlagent_project.wsgi", "--config", "deploy/gunicorn.conf.py"], **quiet)
        self.worker = subprocess.Popen([*TRAINING_WORKER, "--loglevel", "warning"], **quiet)
        for _ in range(240):
            try:
                if requests.get(self.base + "/health", timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            if self.server.poll() is not None:
                break
            time.sleep(0.5)
        raise SystemExit("gunicorn did not answer /health")

    def add_worker(self) -> None:
        """One more training worker process, with a node name of its own; returns once it is ready."""
        number = len(self.extra_workers) + 1
        log = self.folder / f"worker-{number}.log"
        with log.open("wb") as out:
            worker = subprocess.Popen([*TRAINING_WORKER, "--loglevel", "info", "-n", f"extra{number}@%h"],
                                      cwd=ROOT, env=self.env, start_new_session=True, stdout=out,
                                      stderr=subprocess.STDOUT)
        self.extra_workers.append(worker)
        deadline = time.monotonic() + 180
        while " ready." not in log.read_text(errors="replace"):  # logged after its start-up tasks
            if worker.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"training worker {number} did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.5)

    def stop_extra_workers(self) -> None:
        while self.extra_workers:
            _terminate(self.extra_workers.pop())

    def manage(self, *args: str) -> str:
        out = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, check=True,
                             capture_output=True, text=True).stdout
        return out.strip().splitlines()[-1] if out.strip() else ""

    def post(self, path: str, body: object = None, timeout: float = 30) -> requests.Response:
        return requests.post(self.base + path, json=body, timeout=timeout,
                             headers={"Authorization": f"Bearer {self.key}"})

    def get(self, path: str) -> requests.Response:
        return requests.get(self.base + path, timeout=30, headers={"Authorization": f"Bearer {self.key}"})

    def __exit__(self, *exc: object) -> None:
        for process in (self.server, self.worker, *self.extra_workers):
            if process is not None:
                _terminate(process)
        if self.database:
            import redis

            client = redis.Redis(db=13)
            for key in client.scan_iter(f"{self.database}:*", count=1000):
                client.delete(key)
            admin_sql(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        shutil.rmtree(self.folder, ignore_errors=True)


def _terminate(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def wrk(stack: Stack, path: str, body: object, seconds: int, connections: int,
        bodies: list[object] | None = None) -> dict:
    """One wrk run (2 threads) posting `body` to `path`: req/s, p50 and p99 in ms, failures.

    With `bodies`, each thread's requests post them in turn instead.
    """
    script = stack.folder / f"{uuid.uuid4().hex}.lua"
    in_turn = ""
    if bodies:
        in_turn = ("bodies = {" + ", ".join(f"[[{json.dumps(b)}]]" for b in bodies) + "}\nsent = 0\n"
                   "request = function()\n  sent = sent + 1\n"
                   "  return wrk.format(nil, nil, nil, bodies[sent % #bodies + 1])\nend\n")
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {stack.key}"\nwrk.body = [[{json.dumps(body)}]]\n'
        f"{in_turn}"
        "done = function(summary, latency, requests)\n"
        '  io.write(string.format("STATUS non2xx=%d errors=%d\\n", summary.errors.status,'
        " summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))\n"
        '  io.write(string.format("LAT p50=%d p99=%d\\n", latency:percentile(50), latency:percentile(99)))\n'
        "end\n"
    )
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", str(script),
                          stack.base + path], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50, p99 = (int(v) / 1000.0 for v in re.search(r"LAT p50=(\d+) p99=(\d+)", out).groups())
    non2xx, errors = (int(v) for v in re.search(r"non2xx=(\d+) errors=(\d+)", out).groups())
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "non2xx": non2xx, "errors": errors}
