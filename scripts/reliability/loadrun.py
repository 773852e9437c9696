"""What the load test and the outage drills share: locust against a live stack, and the counts.

`accepted = stored` is checked with ids: every experience the gateway saw answered 201 must be
in the replay store (the Redis stream or the database table), and nothing else may be there.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

from simulator.live_service import ROOT, LiveStack

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
LOCUST = str(Path(sys.executable).with_name("locust"))


def start_locust(stack: LiveStack, seconds: int, users: int, out: Path) -> subprocess.Popen:
    """locust, headless, for `seconds`; results land in out/results.json and out/locust_stats.csv."""
    env = {**stack.env, "RLAGENT_API_KEY": stack.api_key, "LOAD_RESULTS": str(out / "results.json")}
    command = [LOCUST, "-f", str(LOCUSTFILE), "--headless", "--only-summary", "-u", str(users),
               "-r", str(users), "-t", f"{seconds}s", "--host", stack.url(""), "--csv", str(out / "locust"),
               "--stop-timeout", "10"]
    log = open(out / "locust.log", "wb")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_locust(proc: subprocess.Popen, out: Path) -> dict:
    proc.wait()
    results = out / "results.json"
    if not results.exists():
        raise SystemExit(f"locust wrote no results; see {out / 'locust.log'}")
    return json.loads(results.read_text())


def stored_ids(stack: LiveStack) -> list[str]:
    """The experience ids in the stack's replay store."""
    if stack.env.get("REPLAY_STORE") == "database":
        import psycopg

        with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
            rows = conn.execute("SELECT experience_id FROM agent_app_experience").fetchall()
        return [row[0] for row in rows]
    client = stack.redis()
    stream, ids, start = stack.env["REDIS_KEY_PREFIX"] + "experiences", [], "-"
    while entries := client.xrange(stream, start, "+", 10_000):
        ids += [fields[b"id"].decode() for _, fields in entries]
        start = "(" + entries[-1][0].decode()
    return ids


def status_counts(results: dict, since: int = 0, until: int | None = None) -> Counter:
    """(endpoint, status) -> requests, for the seconds in [since, until)."""
    counts: Counter = Counter()
    for second, name, status, n in results["timeline"]:
        if second >= since and (until is None or second < until):
            counts[(name, status)] += n
    return counts


def latency_percentiles(out: Path, name: str) -> dict[str, str]:
    """locust's response-time percentiles (ms) for one endpoint."""
    with open(out / "locust_stats.csv") as handle:
        for row in csv.DictReader(handle):
            if row["Name"] == name:
                return {key: row[key] for key in ("50%", "95%", "99%", "100%")}
    return {}


def check_accounting(stack: LiveStack, results: dict) -> tuple[bool, str]:
    """Every id answered 201 is stored, once. The only ids stored without a 201 are ones still
    waiting to be resent when the run stopped (the store wrote them, their answer was lost)."""
    accepted, stored, unsent = set(results["accepted_ids"]), stored_ids(stack), set(results["unsent_ids"])
    missing, unexpected = accepted - set(stored), set(stored) - accepted
    ok = not missing and unexpected <= unsent and len(stored) == len(set(stored))
    return ok, (f"experiences accepted (201): {len(accepted)}; stored: {len(stored)} ({len(set(stored))} "
                f"distinct); accepted but missing: {len(missing)}; stored without a 201: {len(unexpected)} "
                f"(all still waiting to be resent: {unexpected <= unsent}); refused and never resent: "
                f"{len(unsent - set(stored))}")


def print_statuses(counts: Counter) -> None:
    for (name, status), n in sorted(counts.items()):
        print(f"  {name:<18} {status or 'no answer'}: {n}")


def stack_env(**overrides: str) -> dict[str, str]:
    """Settings for a run under load: room for every experience, training and checkpoints often."""
    return {"REPLAY_CAPACITY": "5000000", "TRAINING_INTERVAL_SECONDS": "10", "CHECKPOINT_EVERY_STEPS": "200",
            "LOG_LEVEL": "warning", **overrides}
