"""``python -m simulator``: benchmark routing policies on named scenarios, write JSON + PNGs."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from simulator.policies import POLICIES, canonical_name
from simulator.report import format_markdown, format_table
from simulator.runner import benchmark
from simulator.scenarios import SCENARIOS, Scenario, get_scenario


def _names(text: str, known: Sequence[str], what: str) -> list[str]:
    if text == "all":
        return list(known)
    names: list[str] = []
    for token in (t.strip() for t in text.split(",")):
        if token == "baselines":  # every non-learning policy (the oracle included), no training
            names += [n for n in known if n in POLICIES and n not in names]
        elif token:
            names.append(canonical_name(token))
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)}; known: {', '.join(known)}")
    return names


def _scenarios(text: str, loads: str | None) -> list[Scenario]:
    """Scenarios by name (``trace:<path>`` for any trace file), each at every ``--load``."""
    names = list(SCENARIOS) if text == "all" else [t.strip() for t in text.split(",") if t.strip()]
    try:
        found = [get_scenario(n) for n in names]
    except (KeyError, ValueError, OSError) as exc:
        raise SystemExit(f"unknown scenario: {exc}") from None
    if not loads:
        return found
    try:
        values = [float(x) for x in loads.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"--load must be numbers like 0.75 or 0.75,0.9, got {loads!r}") from None
    if not values or any(not 0 < v <= 2 for v in values):
        raise SystemExit(f"--load must be shares of capacity in (0, 2], got {loads!r}")
    return [sc.at_load(v) for sc in found for v in values]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m simulator", description=__doc__)
    p.add_argument("--scenario", default="heterogeneous",
                   help=f"comma-separated or 'all' ({', '.join(SCENARIOS)}, or "
                        "trace:<path> to replay any Azure CSV or Mooncake JSONL trace)")
    p.add_argument("--load", default=None,
                   help="offered load as a share of cluster capacity, e.g. 0.75 or 0.75,0.9 "
                        "(default: each scenario's own; traces 0.75)")
    p.add_argument("--policies", default="least_loaded,p2c,oracle",
                   help=f"comma-separated, 'baselines' (every one that does not learn) or "
                        f"'all' ({', '.join([*POLICIES, 'dqn'])})")
    p.add_argument("--requests", type=int, default=None,
                   help="evaluation requests per run (default: 20000; a trace: its length)")
    p.add_argument("--seeds", type=int, default=3, help="number of paired seeds")
    p.add_argument("--seed-base", type=int, default=0, help="first seed")
    p.add_argument("--out", type=Path, default=None, help="folder for JSON, table and PNGs")
    p.add_argument("--train-scenario", default=None,
                   help="train learners on this scenario, evaluate on --scenario (e.g. "
                        "hetero_4 then hetero_8: a model trained on 4 replicas serving 8)")
    p.add_argument("--dqn-train-requests", type=int, default=10_000,
                   help="online training budget of the DQN before evaluation")
    p.add_argument("--dqn-config", default="{}",
                   help="JSON of DQNConfig overrides, e.g. '{\"gamma\": 0.0}'")
    p.add_argument("--dqn-reward", default="{}", help="JSON of RewardConfig overrides")
    p.add_argument("--dqn-state", default="{}", help="JSON of StateScales overrides")
    p.add_argument("--dqn-preset", default="recommended", choices=["recommended", "core"],
                   help="base DQN overrides: the tuned ones, or the core's defaults alone")
    p.add_argument("--dqn-cadence", default="16x8",
                   help="train every K experiences with S gradient steps, as KxS")
    p.add_argument("--dqn-gate", default="{}",
                   help="JSON: the cold-start gate's options (GateConfig fields, 'window', "
                        "'decide_every'); '{\"enabled\": false}' turns it off")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    return p


def main(argv: Sequence[str] | None = None, factories: dict | None = None,
         parser: argparse.ArgumentParser | None = None) -> int:
    """Run the benchmark the arguments describe; print the table; write files to --out.

    ``factories`` adds policies run from a fresh resource per seed (see ``benchmark``).
    """
    args = (parser or build_parser()).parse_args(argv)
    factories = factories or {}
    scenarios = _scenarios(args.scenario, args.load)
    policies = _names(args.policies, [*POLICIES, "dqn", *factories], "policy")
    dqn_kwargs: dict = {}
    if "dqn" in policies or factories:
        every, steps = (int(x) for x in args.dqn_cadence.lower().split("x"))
        dqn_kwargs = {
            "train_requests": args.dqn_train_requests,
            "preset": args.dqn_preset,
            "config_overrides": json.loads(args.dqn_config),
            "reward_overrides": json.loads(args.dqn_reward),
            "state_overrides": json.loads(args.dqn_state),
            "train_every": every,
            "steps_per_train": steps,
        }
        gate = json.loads(args.dqn_gate)
        if gate:
            dqn_kwargs["gate"] = gate
        _one_torch_thread()
    seeds = list(range(args.seed_base, args.seed_base + args.seeds))
    print(f"scenarios={','.join(sc.name for sc in scenarios)} policies={','.join(policies)} "
          f"requests={args.requests or 'default'} seeds={seeds}", file=sys.stderr)
    started = time.perf_counter()
    if args.train_scenario:
        try:
            get_scenario(args.train_scenario)
        except KeyError as exc:
            raise SystemExit(f"unknown --train-scenario: {exc}") from None
    bench = benchmark(scenarios, policies, args.requests, seeds,
                      show_progress=not args.quiet, dqn_kwargs=dqn_kwargs, factories=factories,
                      train_scenario=args.train_scenario)
    table = format_table(bench.results)
    print(table)
    print(f"simulated in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        payload = bench.to_json()
        payload["command"] = "python -m simulator " + " ".join(
            sys.argv[1:] if argv is None else argv)
        (args.out / "benchmark.json").write_text(json.dumps(payload, indent=1))
        (args.out / "table.txt").write_text(table + "\n")
        (args.out / "table.md").write_text(format_markdown(bench.results) + "\n")
        if not args.no_plots:
            for path in bench_plots(bench, args.out):
                print(f"wrote {path}", file=sys.stderr)
        print(f"wrote {args.out / 'benchmark.json'}", file=sys.stderr)
    return 0


def _one_torch_thread() -> None:
    # The DQN is a tiny MLP called once per request: thread fan-out costs more than it saves.
    import torch

    torch.set_num_threads(1)


def bench_plots(bench: object, out: Path) -> list[Path]:
    from simulator.plots import write_plots

    return write_plots(bench, out)
