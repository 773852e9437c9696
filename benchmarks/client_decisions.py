"""Gateway client benchmark: one routing decision made locally (published weights, in-process
NumPy) against one made by the service (POST /select_replica over HTTP), in the same run.

Both go through `RLAgentClient.select()` with the same trained model, alternating round by round;
medians per decision and the ratio are printed. Without --url it starts the service the way the
README does (web + worker, a fresh database; Postgres and Redis when they answer on 127.0.0.1)
and trains it for 150 steps so that the model, not the fallback, decides.

    .venv/bin/python benchmarks/client_decisions.py [--rounds 15] [--url URL --api-key KEY] [--strict]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rlagent_client import ClientConfig, RLAgentClient  # noqa: E402

TARGET_LOCAL_US = 50.0


def start_service(folder: Path):
    """A live service (the Procfile's commands), trained past RL_MIN_TRAINING_STEPS."""
    from simulator.live_service import LiveStack, services_reachable

    print("starting the service (web + worker) on a fresh database ...", flush=True)
    stack = LiveStack(folder, use_services=services_reachable(), RL_EXPLORATION="false",
                      RL_ROUTING_GATE="false", LOG_LEVEL="warning")
    stack.start("web")
    stack.start("worker")
    rng = random.Random(3)
    experiences = []
    for i in range(600):
        loads, action = [rng.randint(0, 30) for _ in range(3)], i % 3
        experiences.append({"state": [*loads, rng.randint(0, 20), 0.2, 8.2, 0.98, 0.5, 0.4, 0.5],
                            "action": action, "latency_ms": 20.0 + 25 * loads[action], "success": True,
                            "replica_loads": loads})
    stack.call("POST", "/record_experience", json={"experiences": experiences}).raise_for_status()
    print("training 150 steps ...", flush=True)
    trained = stack.call("POST", "/train?batch_size=128&iterations=150")
    trained.raise_for_status()
    version = str(trained.json()["model_version"])
    stack.wait_for(lambda: all(stack.call("GET", "/model/weights", auth=False).headers.get("X-Model-Version")
                               == version for _ in range(6)), 30, "the web workers to serve the model")
    return stack


def timed_rounds(contenders: dict[str, tuple[Callable[[], object], int]], rounds: int) -> dict[str, float]:
    """Median seconds per call of each contender over `rounds` alternating rounds."""
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for round_index in range(rounds):
        order = list(contenders.items())
        if round_index % 2:
            order.reverse()  # neither contender always runs on a warmer (or busier) machine
        for name, (call, calls) in order:
            started = time.perf_counter()
            for _ in range(calls):
                call()
            samples[name].append((time.perf_counter() - started) / calls)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--local-calls", type=int, default=2000, help="local decisions per round")
    parser.add_argument("--remote-calls", type=int, default=100, help="service decisions per round")
    parser.add_argument("--url", help="a running, trained service (default: start one)")
    parser.add_argument("--api-key", help="its API key")
    parser.add_argument("--strict", action="store_true", help=f"exit 1 if local > {TARGET_LOCAL_US:g} us")
    args = parser.parse_args()
    if args.url is not None:
        return run(args)
    with tempfile.TemporaryDirectory(prefix="rlagent-bench-client-") as folder:
        stack = start_service(Path(folder))
        try:
            args.url, args.api_key = stack.url(""), stack.api_key
            return run(args)
        finally:
            stack.close()


def run(args: argparse.Namespace) -> int:
    common = {"url": args.url, "api_key": args.api_key, "report": False, "breaker_failures": 1000}
    local = RLAgentClient(ClientConfig(inference="local", weights_refresh_s=3600, **common))
    remote = RLAgentClient(ClientConfig(inference="remote", timeout_ms=5000, **common))
    rng = random.Random(0)
    inputs = [([rng.uniform(0, 30) for _ in range(3)], rng.uniform(0, 50), rng.uniform(10, 900),
               rng.uniform(0, 200), rng.uniform(0.8, 1.0)) for _ in range(256)]
    cursor = {"local": 0, "remote": 0}

    def decide(client: RLAgentClient, name: str) -> Callable[[], object]:
        def call() -> object:
            cursor[name] = (cursor[name] + 1) % len(inputs)
            return client.select(*inputs[cursor[name]])

        return call

    model = local.local.model
    if not model.ready:
        print(f"the service's model is not ready ({model.reason}): train it first", file=sys.stderr)
        return 2
    state = np.asarray(local.select(*inputs[0]).state, dtype=np.float32)
    from agent_app.rl.state import normalize_state

    network, normalized = model.network, normalize_state(state, 3)
    print(f"Gateway client decisions: python {platform.python_version()}, numpy {np.__version__}, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; service {args.url}, "
          f"model v{model.version}; medians of {args.rounds} alternating rounds")
    times = timed_rounds({
        "local": (decide(local, "local"), args.local_calls),
        "remote": (decide(remote, "remote"), args.remote_calls),
        "forward": (lambda: network.q_values(normalized), args.local_calls),
    }, args.rounds)
    stats = {"local": local.stats(), "remote": remote.stats()}
    local.close()
    remote.close()
    ratio = times["remote"] / times["local"]
    print(f"  local  select() (weights in-process, NumPy)   {times['local'] * 1e6:9.1f} us/decision  "
          f"{stats['local']['decisions']}")
    print(f"    of which the MLP forward pass alone        {times['forward'] * 1e6:9.1f} us")
    print(f"  remote select() (POST /select_replica, HTTP) {times['remote'] * 1e6:9.1f} us/decision  "
          f"{stats['remote']['decisions']}")
    print(f"  local is {ratio:.0f}x faster than asking the service; target local < {TARGET_LOCAL_US:g} us: "
          f"{'met' if times['local'] * 1e6 < TARGET_LOCAL_US else 'MISSED'}")
    fallbacks = {name: s["fallbacks"] for name, s in stats.items() if s["fallbacks"]}
    if fallbacks:
        print(f"  warning: some decisions fell back to the heuristic: {fallbacks}")
    return 1 if args.strict and times["local"] * 1e6 >= TARGET_LOCAL_US else 0


if __name__ == "__main__":
    sys.exit(main())
