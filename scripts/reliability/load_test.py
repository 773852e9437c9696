"""Five minutes of gateway traffic against gunicorn while the worker trains and checkpoints.

Starts web (gunicorn, several workers), the training worker and beat from the Procfile on a
fresh Postgres database and Redis prefix, runs locust (scripts/reliability/locustfile.py:
select_replica then record_experience, one report in ten a batch of 20), then prints the
statuses, select_replica's latency percentiles, the training done meanwhile, and checks that
every experience answered 201 is in the replay store and nothing else is.

    .venv/bin/python scripts/reliability/load_test.py [--seconds 300] [--users 16] [--web-workers 4]

Exit status 1 on any 5xx, any request without an answer, or accepted != stored.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).parent)]

import psycopg  # noqa: E402
from loadrun import (  # noqa: E402
    check_accounting,
    latency_percentiles,
    print_statuses,
    stack_env,
    start_locust,
    status_counts,
    wait_locust,
)

from simulator.live_service import LiveStack, services_reachable  # noqa: E402


def trainer_counters(stack: LiveStack) -> tuple[int, int]:
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        query = "SELECT training_runs, checkpoints_written FROM agent_app_trainercounters"
        row = conn.execute(query).fetchone()
    return row or (0, 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=300)
    parser.add_argument("--users", type=int, default=16, help="concurrent gateway loops")
    parser.add_argument("--web-workers", type=int, default=4)
    args = parser.parse_args()
    if not services_reachable():
        print("needs Postgres and Redis on 127.0.0.1 (5432, 6379)")
        return 2
    out = Path(tempfile.mkdtemp(prefix="rlagent-load-"))
    stack = LiveStack(out / "stack", True, WEB_CONCURRENCY=str(args.web_workers), **stack_env())
    try:
        for name in ("web", "worker", "beat"):
            stack.start(name)
        print(f"{args.users} users for {args.seconds} s against {args.web_workers} gunicorn workers "
              f"(worker and beat running; logs and locust output in {out})", flush=True)
        results = wait_locust(start_locust(stack, args.seconds, args.users, out), out)
        stats = stack.call("GET", "/stats").json()
        runs, checkpoints = trainer_counters(stack)
        accounting_ok, accounting = check_accounting(stack, results)
    finally:
        stack.close()

    counts = status_counts(results)
    errors = sum(n for (_, status), n in counts.items() if status >= 500 or status == 0)
    print("\nstatuses:")
    print_statuses(counts)
    for name in ("select_replica", "record_experience"):
        total = sum(n for (endpoint, _), n in counts.items() if endpoint == name)
        ms = latency_percentiles(out, name)
        print(f"{name}: {total} requests, {total / args.seconds:.0f}/s; latency p50 {ms['50%']} ms, "
              f"p95 {ms['95%']} ms, p99 {ms['99%']} ms, max {ms['100%']} ms")
    print(f"training meanwhile: {runs} runs, {stats['steps_done']} gradient steps, "
          f"model v{stats['model_version']}, {checkpoints} checkpoints written")
    print(accounting)
    print(f"\n5xx or unanswered: {errors}; accepted = stored: {accounting_ok}")
    return 0 if errors == 0 and accounting_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
