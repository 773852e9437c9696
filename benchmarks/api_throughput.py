"""API benchmark: gunicorn (deploy/gunicorn.conf.py) under wrk, in one run.

Compares /select_replica with a constant DRF endpoint served by the same gunicorn
configuration (throughput ratio and p99 ratio), then measures /record_experience (single and
batch form, experiences per second) and one web worker's RSS. Uses Postgres and Redis when
they answer on 127.0.0.1, else the embedded default.

    .venv/bin/python benchmarks/api_throughput.py [--seconds 10] [--connections 32]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
SELECT = {"replica_loads": [5, 3, 7], "queue_depth": 12, "recent_latency_ms": 280.5, "current_rps": 8.2,
          "success_rate": 0.98}
EXPERIENCE = {"state": [5, 3, 7, 12, 0.28, 8.2, 0.98, 0.5, 0.4, 0.5], "action": 1, "latency_ms": 265.3,
              "success": True, "replica_loads": [5, 4, 7]}


def reachable(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def environment(data_dir: Path) -> tuple[dict[str, str], str | None]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "benchmarks.api.settings", "DATA_DIR": str(data_dir),
           "SECRET_KEY": "benchmark-" + "s" * 40, "MODEL_PATH": str(data_dir / "models" / "rl_agent.pth"),
           "WEB_CONCURRENCY": "2", "PORT": "5055", "PROMETHEUS_URL": "http://127.0.0.1:9",
           "LOG_LEVEL": "warning", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    database = None
    if reachable(5432) and reachable(6379):
        database = f"rlagent_bench_{uuid.uuid4().hex[:8]}"
        admin_sql(f'CREATE DATABASE "{database}"')
        env.update(DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{database}", REDIS_HOST="127.0.0.1",
                   REDIS_DB="13")
        import redis

        redis.Redis(db=13).flushdb()
    else:
        env["DATABASE_URL"] = f"sqlite:///{data_dir / 'bench.sqlite3'}"
    return env, database


def admin_sql(statement: str) -> None:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as conn:
        conn.execute(statement)


def manage(env: dict[str, str], *args: str) -> str:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True,
                          capture_output=True, text=True).stdout.strip().splitlines()[-1]


def wrk(url: str, body: object, key: str, seconds: int, connections: int, folder: Path) -> dict:
    script = folder / f"{uuid.uuid4().hex}.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {key}"\nwrk.body = [[{json.dumps(body)}]]\n'
        "done = function(summary, latency, requests)\n"
        '  io.write(string.format("STATUS non2xx=%d errors=%d\\n", summary.errors.status,'
        " summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))\n"
        '  io.write(string.format("LAT p50=%d p99=%d\\n", latency:percentile(50), latency:percentile(99)))\n'
        "end\n"
    )
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50, p99 = (int(v) / 1000.0 for v in re.search(r"LAT p50=(\d+) p99=(\d+)", out).groups())
    non2xx, errors = (int(v) for v in re.search(r"non2xx=(\d+) errors=(\d+)", out).groups())
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "non2xx": non2xx, "errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="rlagent-bench-"))
    env, database = environment(folder)
    server = None
    try:
        print("setting up: migrate, API key, 500 experiences, 150 training steps ...", flush=True)
        manage(env, "migrate", "--noinput")
        key = manage(env, "create_api_key", "benchmark")
        command = ["gunicorn", "rlagent_project.wsgi", "--config", "deploy/gunicorn.conf.py"]
        server = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = "http://127.0.0.1:5055"
        for _ in range(120):
            try:
                if requests.get(base + "/health", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.5)
        headers = {"Authorization": f"Bearer {key}"}
        requests.post(base + "/record_experience", json={"experiences": [EXPERIENCE] * 500}, headers=headers)
        manage(env, "train", "--iterations", "150")
        time.sleep(1.5)  # web workers pick up the published model
        decided = requests.post(base + "/select_replica", json=SELECT, timeout=5).json()
        backend = "postgres+redis" if database else "sqlite (embedded)"
        print(f"backend: {backend}; gunicorn workers: 2; wrk: 2 threads, {args.connections} connections, "
              f"{args.seconds}s each; select_replica policy: {decided['policy']}\n", flush=True)
        c = args.connections
        run = lambda path, body, conns=c: wrk(base + path, body, key, args.seconds, conns, folder)  # noqa: E731
        reference = run("/bench/constant", SELECT)
        select = run("/select_replica", SELECT)
        single = run("/record_experience", EXPERIENCE)
        batch = run("/record_experience", {"experiences": [EXPERIENCE] * 1000}, 4)
        workers = psutil.Process(server.pid).children()
        rss = max(w.memory_info().rss for w in workers) / 2**20
        rows = [("constant DRF endpoint (reference)", reference), ("/select_replica", select),
                ("/record_experience (one per request)", single),
                ("/record_experience (1000 per batch)", batch)]
        print(f"{'endpoint':40} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
        for name, r in rows:
            failures = r["non2xx"] + r["errors"]
            print(f"{name:40} {r['rps']:9.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {failures:8d}")
        throughput, p99 = select["rps"] / reference["rps"], select["p99_ms"] / reference["p99_ms"]
        print(f"\nselect_replica / constant throughput: {throughput:.2f}x (target >= 0.85x)")
        print(f"select_replica / constant p99:        {p99:.2f}x (target <= 1.3x)")
        per_second = batch["rps"] * 1000
        print(f"record_experience batch form:         {per_second:,.0f} experiences/s (target >= 20,000)")
        print(f"RSS of one web worker:                {rss:.0f} MiB")
    finally:
        if server:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        if database:
            admin_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


if __name__ == "__main__":
    main()
