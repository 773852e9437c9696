"""Start the service the way the README does (the Procfile's commands) on a fresh database.

Used by `manage.py simulate --through-api` (a fresh agent per scenario and seed) and by the
live tests. Postgres + Redis when asked to use services, else the embedded default.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
PROCFILE = dict(line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line.strip())
LIVE_REDIS_DB = "14"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


class LiveStack:
    """Web, worker and beat as separate processes sharing a fresh database (and Redis if used)."""

    def __init__(self, tmp_path: Path, use_services: bool, port: int | None = None, *,
                 pg_port: int = 5432, redis_port: int = 6379, **env: str) -> None:
        self.tmp_path = tmp_path
        self.pg_port, self.redis_port = pg_port, redis_port
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.port = port or (5000 if port_free(5000) else free_port())
        self.procs: dict[str, subprocess.Popen] = {}
        self.database = None
        bin_dir = str(Path(sys.executable).parent)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST"))},
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "DATA_DIR": str(tmp_path / "var"),
            "MODEL_PATH": str(tmp_path / "models" / "rl_agent.pth"),
            "SECRET_KEY": "live-test-secret-" + "k" * 40,
            "PORT": str(self.port),
            "WEB_CONCURRENCY": "2",
            "PROMETHEUS_URL": "http://127.0.0.1:9",  # nothing listens: host figures are used
        }
        for name in ("DATABASE_URL", "REDIS_HOST", "REDIS_DB", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
            self.env.pop(name, None)
        if use_services:
            self.database = f"rlagent_live_{uuid.uuid4().hex[:10]}"
            _admin_sql(f'CREATE DATABASE "{self.database}"', pg_port)
            self.env["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:{pg_port}/{self.database}"
            # A prefix of its own: stacks running at the same time never share keys or queues.
            self.env.update(REDIS_HOST="127.0.0.1", REDIS_PORT=str(redis_port), REDIS_DB=LIVE_REDIS_DB,
                            REDIS_KEY_PREFIX=f"rlagent-live-{uuid.uuid4().hex[:8]}:")
        else:
            self.env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'live.sqlite3'}"
        self.env.update(env)
        self.manage("migrate", "--noinput")
        self.api_key = self.manage("create_api_key", "live-tests").strip().splitlines()[-1]

    def manage(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True,
            timeout=300,
        )
        if check and result.returncode:
            raise AssertionError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout if check else result.stdout + result.stderr

    def start(self, name: str, *, as_name: str | None = None) -> subprocess.Popen:
        log = open(self.tmp_path / f"{as_name or name}.log", "ab")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(
            shlex.split(PROCFILE[name]), cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[as_name or name] = proc
        if name == "web":
            self.wait_for(lambda: self._answers("/health"), 60, "the web server to answer /health")
        return proc

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name)
        if self.database:
            _admin_sql(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)', self.pg_port)
            client, keys = self.redis(), []
            for key in client.scan_iter(self.env["REDIS_KEY_PREFIX"] + "*", count=1000):
                keys.append(key)
                if len(keys) == 1000:  # a load test leaves a key per experience id
                    client.delete(*keys)
                    keys.clear()
            if keys:
                client.delete(*keys)

    def redis(self):
        """A client on the stack's Redis database (its keys start with env["REDIS_KEY_PREFIX"])."""
        import redis

        return redis.Redis(host="127.0.0.1", port=self.redis_port, db=int(LIVE_REDIS_DB))

    def log(self, name: str) -> str:
        path = self.tmp_path / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def url(self, path: str) -> str:
        return f"http://localhost:{self.port}{path}"

    def call(self, method: str, path: str, json: Any = None, auth: bool = True) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.api_key}"} if auth else {}
        return requests.request(method, self.url(path), json=json, headers=headers, timeout=60)

    def wait_for(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.25)
        logs = "\n".join(f"--- {n} ---\n{self.log(n)[-3000:]}" for n in ("web", "worker", "beat"))
        raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{logs}")

    def _answers(self, path: str) -> bool:
        try:
            return requests.get(self.url(path), timeout=1).status_code == 200
        except requests.RequestException:
            return False


def services_reachable(pg_port: int = 5432, redis_port: int = 6379) -> bool:
    """Postgres and Redis both answer on 127.0.0.1."""
    return not port_free(pg_port) and not port_free(redis_port)


def _admin_sql(statement: str, pg_port: int = 5432) -> None:
    import psycopg

    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{pg_port}/postgres", autocommit=True) as conn:
        conn.execute(statement)
