"""Stop Redis or Postgres under load, start it again, and check the service's behaviour.

The stack (gunicorn web, training worker, beat, from the Procfile) runs on a private Redis
or Postgres server started for the drill, so stopping it disturbs nothing else on the machine.
locust sends gateway traffic throughout (scripts/reliability/locustfile.py). Redis is stopped
with SHUTDOWN (it runs with appendonly, as docker-compose runs it); Postgres with an immediate
stop (a crash: the restart recovers from the WAL).

The standard: no 500 and no request left unanswered at any moment; `select_replica` answers
200 throughout; `record_experience` answers 503 naming the backend while the replay store is
down (or carries on when the stopped server is not the store); every 2xx after the restart
without anyone touching the service; every experience answered 201 is stored; training resumes.

    .venv/bin/python scripts/reliability/outage_drill.py --service redis
    .venv/bin/python scripts/reliability/outage_drill.py --service postgres [--store redis]

Exit status 1 when the standard is not met.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).parent)]

from loadrun import (  # noqa: E402
    check_accounting,
    print_statuses,
    stack_env,
    start_locust,
    status_counts,
    wait_locust,
)

from simulator.live_service import LiveStack, free_port, port_free, services_reachable  # noqa: E402

OUTAGE_LINE = re.compile(r"unavailable|cannot connect|connection refused|connection to broker lost", re.I)
RECOVERY_GRACE_SECONDS = 15  # after the restart, to reconnect; everything after must be 2xx


class PrivateRedis:
    def __init__(self, folder: Path) -> None:
        self.folder, self.port, self.proc = folder, free_port(), None
        folder.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir",
                   str(self.folder), "--appendonly", "yes", "--logfile", str(self.folder / "redis.log")]
        self.proc = subprocess.Popen(command)
        wait_until(lambda: not port_free(self.port), f"Redis on port {self.port}")

    def stop(self) -> None:
        subprocess.run(["redis-cli", "-p", str(self.port), "shutdown"], capture_output=True)
        self.proc.wait(timeout=30)


class PrivatePostgres:
    """A throwaway cluster; the server refuses to run as root, so it runs as `postgres` then."""

    def __init__(self, folder: Path) -> None:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
        self.bin = bins[-1] if bins else Path(shutil.which("pg_ctl") or "pg_ctl").parent
        self.folder, self.port, self.data = folder, free_port(), folder / "pgdata"
        folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            folder.parent.chmod(0o755)  # mkdtemp's folder is root's alone; the server must reach its own
            shutil.chown(folder, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust")

    def _run(self, tool: str, *args: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run([*prefix, str(self.bin / tool), *args], capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{tool} failed: {done.stdout}{done.stderr}")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        log = str(self.folder / "postgres.log")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")


def wait_until(predicate, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def steps_done(stack: LiveStack) -> int:
    return stack.call("GET", "/stats").json()["steps_done"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--service", choices=("redis", "postgres"), required=True, help="the server to stop")
    parser.add_argument("--store", choices=("redis", "database"),
                        help="REPLAY_STORE (default: the one the stopped server holds)")
    parser.add_argument("--before", type=int, default=30, help="seconds of load before the stop")
    parser.add_argument("--outage", type=int, default=30, help="seconds the server stays down")
    parser.add_argument("--after", type=int, default=45, help="seconds of load after the restart")
    parser.add_argument("--users", type=int, default=8)
    args = parser.parse_args()
    store = args.store or ("redis" if args.service == "redis" else "database")
    if not services_reachable():
        print("needs Postgres and Redis on 127.0.0.1 (5432, 6379) besides the private server it stops")
        return 2
    out = Path(tempfile.mkdtemp(prefix=f"rlagent-outage-{args.service}-"))
    server = (PrivateRedis if args.service == "redis" else PrivatePostgres)(out / args.service)
    server.start()
    ports = {"redis_port": server.port} if args.service == "redis" else {"pg_port": server.port}
    stack = LiveStack(out / "stack", True, WEB_CONCURRENCY="3", REPLAY_STORE=store, **ports, **stack_env())
    total = args.before + args.outage + args.after
    try:
        for name in ("web", "worker", "beat"):
            stack.start(name)
        print(f"replay store: {store}; load for {total} s; {args.service} stopped at {args.before} s for "
              f"{args.outage} s (logs in {out})", flush=True)
        started = time.monotonic()
        locust = start_locust(stack, total, args.users, out)
        time.sleep(args.before)
        server.stop()
        stopped_at = time.monotonic() - started
        print(f"{stopped_at:5.1f} s: {args.service} stopped", flush=True)
        time.sleep(args.outage)
        server.start()
        restarted_at = time.monotonic() - started
        print(f"{restarted_at:5.1f} s: {args.service} started again", flush=True)
        time.sleep(RECOVERY_GRACE_SECONDS)
        steps_after_restart = steps_done(stack)
        results = wait_locust(locust, out)
        steps_at_end = steps_done(stack)
        alive = {name: proc.poll() is None for name, proc in stack.procs.items()}
        accounting_ok, accounting = check_accounting(stack, results)
        logs = {name: stack.log(name) for name in ("web", "worker", "beat")}
    finally:
        stack.close()
        server.stop()

    # Seconds in the timeline count from locust's start, a moment after `started`: round outward.
    during = status_counts(results, int(stopped_at) + 2, int(restarted_at))
    recovered = status_counts(results, int(restarted_at) + RECOVERY_GRACE_SECONDS)
    everything = status_counts(results)
    print("\nstatuses, whole run:")
    print_statuses(everything)
    print(f"statuses while {args.service} was down:")
    print_statuses(during)
    print(f"statuses from {RECOVERY_GRACE_SECONDS} s after the restart to the end:")
    print_statuses(recovered)
    print("what a refused report said:", *{text for name, status, text in results["samples"] if status == 503}
          or ["(none)"], sep="\n  ")
    for name, text in logs.items():
        lines = [line for line in text.splitlines() if OUTAGE_LINE.search(line)]
        print(f"{name} log: {len(lines)} lines on the outage; first: {lines[0][:200] if lines else '-'}")
    print(accounting)
    print(f"steps_done {RECOVERY_GRACE_SECONDS} s after the restart: {steps_after_restart}; at the end: "
          f"{steps_at_end}; processes alive at the end: {alive}")

    failures = []
    if any(status >= 500 and status != 503 or status == 0 for (_, status) in everything):
        failures.append("a 5xx other than 503, or a request without an answer")
    if any(name == "select_replica" and status != 200 for (name, status) in everything):
        failures.append("select_replica did not always answer 200")
    store_server = "redis" if store == "redis" else "postgres"
    if store_server == args.service and not during[("record_experience", 503)]:
        failures.append("record_experience did not answer 503 while its store was down")
    if any(not 200 <= status < 300 for (_, status) in recovered):
        failures.append("not every answer was 2xx after the restart")
    if not accounting_ok:
        failures.append("accepted != stored")
    if steps_at_end <= steps_after_restart:
        failures.append("training did not resume")
    if not all(alive.values()):
        failures.append("a process died")
    print("\n" + ("\n".join("FAILED: " + f for f in failures) if failures else "the standard is met"))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
