"""One command: three fake LLM replicas (fast, medium, slow), the example gateway in front of
them, a few hundred chat requests through it, then per-replica traffic and latency.

    python -m examples.run_demo                      # heuristic routing, no service needed
    USE_RL_AGENT=true RL_AGENT_URL=http://localhost:5000 RL_AGENT_API_KEY=rlk_... python -m examples.run_demo

With USE_RL_AGENT=true (or --mode) the gateway asks the service at RL_AGENT_URL; if it does not
answer /health, the demo says so and routes with the heuristic.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

if __package__ in (None, ""):  # `python examples/run_demo.py` as well as `python -m examples.run_demo`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from examples.fake_replica import FakeReplica, ReplicaProfile  # noqa: E402
from examples.gateway import Gateway  # noqa: E402
from rlagent_client import ClientConfig, RLAgentClient  # noqa: E402
from rlagent_client.config import INFERENCE, MODES  # noqa: E402

PROFILES = (ReplicaProfile("replica-1", speed=1.0), ReplicaProfile("replica-2", speed=0.6),
            ReplicaProfile("replica-3", speed=0.3))
WORDS = "the quick brown fox jumps over a lazy dog while replicas serve tokens".split()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Fake replicas + example gateway + chat traffic.")
    parser.add_argument("--requests", type=int, default=300, help="chat requests to send (300)")
    parser.add_argument("--concurrency", type=int, default=12, help="requests in flight at once (12)")
    parser.add_argument("--mode", choices=MODES, help="client mode; default from USE_RL_AGENT/RL_AGENT_MODE")
    parser.add_argument("--inference", choices=INFERENCE, help="remote or local (RL_AGENT_INFERENCE)")
    parser.add_argument("--url", help="service URL (RL_AGENT_URL)")
    parser.add_argument("--api-key", help="service API key (RL_AGENT_API_KEY)")
    parser.add_argument("--port", type=int, default=0, help="gateway port (any free one)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the request mix")
    return parser.parse_args(argv)


def build_client(args: argparse.Namespace) -> tuple[RLAgentClient, str]:
    overrides = {name: value for name, value in (("mode", args.mode), ("inference", args.inference),
                                                 ("url", args.url), ("api_key", args.api_key)) if value}
    config = ClientConfig.from_env(os.environ, **overrides)
    names = tuple(profile.name for profile in PROFILES)
    config = dataclasses.replace(config, replica_names=config.replica_names or names)
    note = f"service {config.url}"
    if config.mode != "heuristic" and not service_answers(config.url):
        note = f"the service at {config.url} does not answer /health: routing with {config.heuristic}"
        config = dataclasses.replace(config, mode="heuristic")
    elif config.mode == "heuristic":
        note = "no service used (set USE_RL_AGENT=true and RL_AGENT_URL to ask one)"
    return RLAgentClient(config), note


def service_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=2) as resp:
            return resp.status == 200
    except (OSError, ValueError):
        return False


def chat_request(rng: random.Random) -> dict:
    words = rng.choices(WORDS, k=rng.randint(20, 600))
    return {"model": "demo", "messages": [{"role": "user", "content": " ".join(words)}],
            "max_tokens": rng.randint(8, 96), "user": f"user-{rng.randrange(50)}"}


def send(url: str, body: dict) -> tuple[int, str]:
    request = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as resp:
            resp.read()
            return resp.status, resp.headers.get("X-Decided-By", "?")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("X-Decided-By", "?")


def drive(url: str, total: int, concurrency: int, seed: int) -> Counter:
    """Send `total` chat requests, `concurrency` at a time, printing progress every 10%."""
    rng = random.Random(seed)
    bodies = [chat_request(rng) for _ in range(total)]
    statuses: Counter = Counter()
    step = max(total // 10, 1)
    with ThreadPoolExecutor(concurrency) as pool:
        for done, (status, _) in enumerate(pool.map(lambda body: send(url, body), bodies), start=1):
            statuses[status] += 1
            if done % step == 0 or done == total:
                print(f"  {done}/{total} requests answered", flush=True)
    return statuses


def print_report(gateway: Gateway, client: RLAgentClient, statuses: Counter, elapsed_s: float) -> None:
    total = sum(statuses.values())
    ok = sum(n for status, n in statuses.items() if 200 <= status < 300)
    print(f"\n{total} requests in {elapsed_s:.1f} s ({total / elapsed_s:.0f} req/s): {ok} ok, "
          f"{total - ok} failed")
    print(f"\n{'replica':<11}{'speed':>7}{'requests':>10}{'share':>8}{'errors':>8}"
          f"{'mean ms':>10}{'p50 ms':>9}{'p95 ms':>9}")
    for profile, row in zip(PROFILES, gateway.state.per_replica(), strict=True):
        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value:.1f}"

        print(f"{row['replica']:<11}{profile.speed:>6.1f}x{row['requests']:>10}{row['share']:>8.1%}"
              f"{row['errors']:>8}{ms(row['latency_mean_ms']):>10}{ms(row['latency_p50_ms']):>9}"
              f"{ms(row['latency_p95_ms']):>9}")
    stats = client.stats()
    print(f"\ndecided by: {stats['decisions']}")
    print(f"arms: {stats['arms']}   fallbacks: {stats['fallbacks'] or 'none'}")
    if stats.get("shadow"):
        print(f"shadow (agent's would-be choices): {stats['shadow']}")
    if stats["local_model"]:
        print(f"local model: {stats['local_model']}")
    if stats["reporter"]:
        r = stats["reporter"]
        print(f"reports: enqueued={r['enqueued']} stored={r['stored']} duplicates={r['duplicates']} "
              f"dropped={r['dropped']} rejected={r['rejected']} failed={r['failed']}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    replicas = [FakeReplica(profile, seed=args.seed + i).start() for i, profile in enumerate(PROFILES)]
    client, note = build_client(args)
    gateway = Gateway([r.url for r in replicas], client, names=[p.name for p in PROFILES], port=args.port)
    gateway.start()
    listing = (f"{p.name} ({p.speed:g}x) {r.url}" for p, r in zip(PROFILES, replicas, strict=True))
    print(f"replicas: {', '.join(listing)}")
    print(f"gateway {gateway.url}: mode={client.config.mode} inference={client.config.inference}; {note}")
    print(f"sending {args.requests} chat requests, {args.concurrency} at a time", flush=True)
    try:
        started = time.perf_counter()
        statuses = drive(gateway.url, args.requests, args.concurrency, args.seed)
        elapsed = time.perf_counter() - started
        client.close()  # flushes the reports before they are counted
        print_report(gateway, client, statuses, elapsed)
    finally:
        gateway.stop()
        for replica in replicas:
            replica.stop()
    return 0 if sum(statuses.values()) == statuses.get(200, 0) else 1


if __name__ == "__main__":
    sys.exit(main())
