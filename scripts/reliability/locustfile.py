"""Gateway traffic for locust: each user routes a request, then reports its outcome.

A closed loop per user: `POST /select_replica`, then `POST /record_experience` with the
decision it got and a unique `experience_id` (a random replica when routing failed, as a
gateway falls back). Nine reports in ten are single; one in ten carries a batch of 20, as a
buffering gateway sends them. A report answered 503 (or not at all) is sent again a second
later with the same ids, as the gateway client does.

Environment: RLAGENT_API_KEY (the key), NUM_REPLICAS (default 3), LOAD_RESULTS (a JSON file
written when the run ends: the accepted experience ids, those still waiting to be sent again,
and per second the count of each status per endpoint, with the first answers of every non-2xx
status for the report).

    locust -f scripts/reliability/locustfile.py --headless -u 16 -r 16 -t 5m --host http://localhost:5000
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from collections import Counter, defaultdict

from locust import HttpUser, events, task

N = int(os.environ.get("NUM_REPLICAS", "3"))
BATCH_SHARE, BATCH_SIZE = 0.1, 20

RETRY_SECONDS = 1.0
accepted_ids: list[str] = []
gateways: list = []  # to list, at the end, the reports still waiting to be sent again
by_second: Counter = Counter()  # (second since start, endpoint, status) -> count
samples: dict[tuple[str, int], list[str]] = defaultdict(list)
started = time.monotonic()


@events.request.add_listener
def count(request_type, name, response, exception, **_kwargs) -> None:
    status = response.status_code if response is not None else 0  # 0: no answer at all
    by_second[(int(time.monotonic() - started), name, status)] += 1
    if not 200 <= status < 300 and len(samples[(name, status)]) < 3:
        samples[(name, status)].append(str(exception) if status == 0 else response.text[:300])


@events.quitting.add_listener
def write_results(**_kwargs) -> None:
    path = os.environ.get("LOAD_RESULTS")
    if not path:
        return
    timeline = [[second, name, status, n] for (second, name, status), n in sorted(by_second.items())]
    answers = [[name, status, text] for (name, status), texts in samples.items() for text in texts]
    with open(path, "w") as out:
        unsent = [e["experience_id"] for gateway in gateways for e in gateway.unsent]
        json.dump({"accepted_ids": accepted_ids, "unsent_ids": unsent, "timeline": timeline,
                   "samples": answers}, out)


def outcome(replica: int, loads: list[float]) -> dict:
    """What the replica did with the request: slower when loaded, the odd failure."""
    latency = random.uniform(80, 300) * (1 + loads[replica] / 50)
    return {"latency_ms": round(latency, 1), "success": random.random() > 0.02,
            "replica_loads": [min(100.0, max(0.0, x + random.uniform(-5, 5))) for x in loads]}


class Gateway(HttpUser):
    def on_start(self) -> None:
        self.client.headers["Authorization"] = f"Bearer {os.environ['RLAGENT_API_KEY']}"
        self.unsent: list[dict] = []
        self.retry_at = 0.0
        gateways.append(self)

    def route(self) -> dict:
        loads = [round(random.uniform(0, 100), 1) for _ in range(N)]
        body = {"replica_loads": loads, "queue_depth": random.uniform(0, 30),
                "recent_latency_ms": random.uniform(50, 800), "current_rps": random.uniform(1, 200),
                "success_rate": random.uniform(0.9, 1.0)}
        response = self.client.post("/select_replica", json=body, name="select_replica")
        if response.status_code == 200:
            decision = response.json()
            return {"decision_id": decision["decision_id"], **outcome(decision["replica_idx"], loads)}
        fallback = random.randrange(N)
        # The raw state the service would have built: loads, queue, latency (s), rps, success, host.
        state = loads + [body["queue_depth"], body["recent_latency_ms"] / 1000, body["current_rps"],
                         body["success_rate"], 0.5, 0.5, 0.5]
        return {"state": state, "action": fallback, **outcome(fallback, loads)}

    def report(self, experiences: list[dict]) -> None:
        body = experiences[0] if len(experiences) == 1 else {"experiences": experiences}
        response = self.client.post("/record_experience", json=body, name="record_experience")
        if response.status_code == 201:
            accepted_ids.extend(e["experience_id"] for e in experiences)
        elif response.status_code == 503 or response.status_code == 0:
            # Kept and sent again later with the same ids, as the gateway client does: a report
            # whose answer was lost after the store wrote it is then recognised, not stored twice.
            self.unsent += experiences
            self.retry_at = time.monotonic() + RETRY_SECONDS

    @task
    def route_and_report(self) -> None:
        if self.unsent and time.monotonic() >= self.retry_at:
            unsent, self.unsent = self.unsent[:1000], self.unsent[1000:]
            self.report(unsent)
            return
        count = BATCH_SIZE if random.random() < BATCH_SHARE else 1
        self.report([{**self.route(), "experience_id": uuid.uuid4().hex} for _ in range(count)])
