"""python manage.py simulate: the routing benchmark, optionally through the real service's API.

    python manage.py simulate --scenario heterogeneous --policies dqn,least_loaded,p2c,oracle \\
        --requests 20000 --seeds 3 --through-api --out results/api

With --through-api the DQN is the service itself: for every scenario and seed a fresh web and
training worker start as the README starts them (Postgres + Redis when they answer on
127.0.0.1, else the embedded default), with NUM_REPLICAS set to the scenario's replica count
(4 on the trace scenarios), and the simulator plays the gateway over HTTP; its --train-every
cadence stands in for beat. Without it, the DQN runs in-process through the RL core
(python -m simulator, faster, for tuning).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.core.management.base import BaseCommand

from simulator import cli
from simulator.live_service import LiveStack, free_port, services_reachable
from simulator.service_policy import ServicePolicy


class Command(BaseCommand):
    help = "Benchmark routing policies on the LLM-cluster simulator (see python -m simulator --help)."

    def run_from_argv(self, argv: list[str]) -> None:
        # The simulator's own parser defines the options; this command adds --through-api.
        parser = cli.build_parser()
        parser.prog = "python manage.py simulate"
        parser.add_argument("--through-api", action="store_true",
                            help="run the DQN as the real service over HTTP (a fresh one per seed)")
        parser.add_argument("--train-every", type=int, default=16,
                            help="--through-api: POST /train every K reported experiences")
        parser.add_argument("--train-iterations", type=int, default=8,
                            help="--through-api: gradient steps per POST /train")
        args, _ = parser.parse_known_args(argv[2:])
        rest = argv[2:]
        factories = {}
        if args.through_api:
            factories["dqn_api"] = self._factory(args.dqn_train_requests, args.train_every,
                                                 args.train_iterations)
            rest = [a if a != "--through-api" else "" for a in rest]
            rest = [a for a in rest if a]
            rest = _replace_policy(rest, "dqn", "dqn_api")
        raise SystemExit(cli.main(rest, factories=factories, parser=parser))

    def _factory(self, train_requests: int, train_every: int, iterations: int):
        use_services = services_reachable()

        @contextmanager
        def fresh_service(seed: int) -> Iterator[ServicePolicy]:
            stacks: list[LiveStack] = []

            def launch(num_replicas: int) -> tuple[str, str]:
                # Started at the run's first decision, when the scenario's cluster size is known:
                # the service's NUM_REPLICAS must match it (3 replicas, or 4 in the trace fleet).
                names = ",".join(f"r{i}" for i in range(num_replicas))  # the simulator's names
                # One web worker: the simulated gateway sends one request at a time, and the traffic
                # runs 60-120x faster than real time, so the half second before one worker sees what
                # another routed (the serving refresh) would stand for a minute of simulated time.
                stack = LiveStack(Path(tempfile.mkdtemp(prefix=f"rlagent-sim-{seed}-")), use_services,
                                  port=free_port(), NUM_REPLICAS=str(num_replicas), REPLICA_NAMES=names,
                                  WEB_CONCURRENCY="1")
                stacks.append(stack)
                stack.start("web")
                stack.start("worker")  # /train runs on the training worker, as in every mode
                return stack.url(""), stack.api_key

            try:
                yield ServicePolicy(None, None, train_requests=train_requests, train_every=train_every,
                                    iterations=iterations, connect=launch)
            finally:
                for stack in stacks:
                    stack.close()
                    shutil.rmtree(stack.tmp_path, ignore_errors=True)  # its database, logs, checkpoints

        return fresh_service


def _replace_policy(argv: list[str], old: str, new: str) -> list[str]:
    out = list(argv)
    for i, arg in enumerate(out):
        if arg.startswith("--policies="):
            out[i] = "--policies=" + ",".join(new if p == old else p for p in arg.split("=", 1)[1].split(","))
        elif arg == "--policies" and i + 1 < len(out):
            out[i + 1] = ",".join(new if p == old else p for p in out[i + 1].split(","))
    return out
