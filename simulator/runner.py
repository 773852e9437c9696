"""Run policies on scenarios with paired seeds and collect per-request records and metrics.

Paired: for a given seed every policy sees the same arrivals and token lengths.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simulator.engine import Records, Simulation
from simulator.metrics import aggregate, run_metrics, shift_metrics
from simulator.policies import canonical_name, make_policy
from simulator.scenarios import Scenario, get_scenario
from simulator.workload import Workload

TRAIN_SEED_OFFSET = 1_000_003  # a learner's training traffic never repeats an eval seed
ProgressFn = Callable[[float], None]


@dataclass
class RunResult:
    """One policy on one scenario and seed."""

    scenario: str
    policy: str
    seed: int
    metrics: dict
    records: Records
    shift: dict | None = None
    curve: dict | None = None  # learning curve of a trainable policy
    info: dict | None = None  # a policy's effective configuration, if it describes one
    learner: bool = False  # trained before evaluation (not a baseline)
    wall_s: float = 0.0


def simulate(scenario: Scenario, workload: Workload, policy: Any, seed: int,
             progress: ProgressFn | None = None) -> Records:
    """Run ``workload`` through ``policy`` on the scenario's cluster (events included)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 2]))
    cfg = scenario.traffic
    sim = Simulation(scenario.replica_specs(), workload, policy, rng,
                     events=scenario.cluster_events(workload.duration_s),
                     day_s=cfg.day_s, day_phase=cfg.day_phase, absent=scenario.absent)
    return sim.run(progress)


def train_policy(policy: Any, scenario: Scenario, seed: int,
                 progress: ProgressFn | None = None) -> None:
    """Train a learner online on its own traffic from the scenario's healthy cluster.

    A policy is trainable when it has ``train_requests`` and ``set_mode(mode)``; modes are
    "train" (explore and learn), "online" (greedy, keeps learning) and "eval" (greedy, frozen).
    """
    stationary = scenario.stationary()
    workload = stationary.workload(policy.train_requests, seed + TRAIN_SEED_OFFSET)
    policy.set_mode("train")
    simulate(stationary, workload, policy, seed + TRAIN_SEED_OFFSET, progress)


def run_policy(scenario: Scenario | str, policy: Any, requests: int | None, seed: int,
               progress: ProgressFn | None = None, train_scenario: Scenario | str | None = None,
               **policy_kwargs: Any) -> RunResult:
    """Train (if the policy learns), then evaluate it on ``requests`` paired requests (None:
    the scenario's default, a trace's length). ``train_scenario``: train there instead (a
    model trained on 4 replicas serving 8). A learner with no training budget starts cold
    and learns online, as a newly deployed service does."""
    sc = get_scenario(scenario) if isinstance(scenario, str) else scenario
    if isinstance(train_scenario, str):
        train_scenario = get_scenario(train_scenario)
    requests = sc.default_requests if requests is None else requests
    if isinstance(policy, str):
        kwargs = dict(policy_kwargs)
        if canonical_name(policy) == "dqn":
            kwargs.setdefault("seed", seed)
        policy = make_policy(policy, **kwargs)
    name = getattr(policy, "name", type(policy).__name__)
    trainable = hasattr(policy, "set_mode") and getattr(policy, "train_requests", 0) > 0
    t0 = time.perf_counter()
    train_n = policy.train_requests if trainable else 0
    total = train_n + requests

    def scaled(offset: int, size: int) -> ProgressFn | None:
        if progress is None:
            return None
        return lambda f: progress((offset + f * size) / total)

    if trainable:
        train_policy(policy, train_scenario or sc, seed, scaled(0, train_n))
        policy.set_mode("online" if sc.nonstationary else "eval")
    elif hasattr(policy, "set_mode") and hasattr(policy, "train_requests"):
        policy.set_mode("online")  # cold start: no training run, learns on the evaluated traffic
    workload = sc.workload(requests, seed)
    records = simulate(sc, workload, policy, seed, scaled(train_n, requests))
    describe = getattr(policy, "describe", None)
    result = RunResult(sc.name, name, seed, run_metrics(records, sc.num_replicas), records,
                       learner=trainable,
                       curve=getattr(policy, "curve", None),
                       info=describe() if describe is not None else None)
    if sc.bad_replica is not None and sc.changes:
        start = sc.changes[0][0] * workload.duration_s
        end = sc.changes[1][0] * workload.duration_s if len(sc.changes) > 1 else None
        result.shift = shift_metrics(records, start, sc.bad_replica, end)
    result.wall_s = time.perf_counter() - t0
    return result


@dataclass
class Benchmark:
    """Per-seed and aggregated metrics for every (scenario, policy) pair."""

    config: dict
    results: dict = field(default_factory=dict)  # scenario -> policy -> summary
    # (scenario, policy) -> {"e2e": ms, "ttft": ms} of the first seed's successful requests
    latencies: dict = field(default_factory=dict)
    curves: dict = field(default_factory=dict)  # (scenario, policy) -> first seed's curve

    def to_json(self) -> dict:
        return {"config": self.config, "results": self.results}


class Progress:
    """Prints the share of simulated requests done: one rewritten line on a terminal,
    a line per 5 % otherwise (logs, CI)."""

    def __init__(self, total: int, stream: Any = None) -> None:
        self.total, self.done = total, 0
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last = -1

    def task(self, size: int, label: str) -> ProgressFn:
        base = self.done
        self.done += size

        def report(fraction: float) -> None:
            pct = int(100 * (base + fraction * size) / self.total)
            if pct == self._last or (not self.tty and pct % 5):
                return
            self._last = pct
            self.stream.write(f"\r{pct:3d}% {label:<48}" if self.tty else f"{pct:3d}% {label}\n")
            self.stream.flush()

        return report

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def policy_kind(name: str, learner: bool) -> str:
    """"learner" (trained before evaluation), "oracle" (reads the true speeds) or "baseline"."""
    return "learner" if learner else ("oracle" if name == "oracle" else "baseline")


def benchmark(scenarios: Sequence[str | Scenario], policies: Sequence[str], requests: int | None,
              seeds: Sequence[int], show_progress: bool = True,
              dqn_kwargs: dict | None = None,
              factories: dict[str, Callable[[int], Any]] | None = None,
              train_scenario: str | None = None) -> Benchmark:
    """Run every policy on every scenario for every seed; aggregate over seeds.

    ``requests`` None: each scenario's default (a trace's length, else 20 000). ``factories``
    maps a policy name to ``seed -> context manager yielding a policy``, for learners that need
    a fresh outside resource per run (the real service, through its API).
    """
    factories = dict(factories or {})
    policies = [p if p in factories else canonical_name(p) for p in policies]
    dqn_kwargs = dict(dqn_kwargs or {})
    learners = {"dqn", *factories}
    train_n = int(dqn_kwargs.get("train_requests", 10_000)) if learners & set(policies) else 0
    scs = [get_scenario(s) if isinstance(s, str) else s for s in scenarios]
    sizes = {sc.name: sc.default_requests if requests is None else requests for sc in scs}
    per_run = {(sc.name, p): sizes[sc.name] + (train_n if p in learners else 0)
               for sc in scs for p in policies}
    bar = Progress(sum(per_run.values()) * len(seeds)) if show_progress else None
    bench = Benchmark(config={"scenarios": [sc.name for sc in scs], "policies": policies,
                              "requests": requests, "seeds": list(seeds), "dqn": dqn_kwargs,
                              "train_scenario": train_scenario})
    train_sc = get_scenario(train_scenario) if train_scenario else None
    for sc in scs:
        sc_name = sc.name
        table: dict = {}
        for pol in policies:
            runs: list[RunResult] = []
            for seed in seeds:
                cb = bar.task(per_run[(sc_name, pol)], f"{sc_name} {pol} seed {seed}") if bar else None
                if pol in factories:
                    with factories[pol](seed) as learner:
                        runs.append(run_policy(sc, learner, sizes[sc_name], seed, cb, train_sc))
                    continue
                kwargs = dqn_kwargs if pol == "dqn" else {}
                runs.append(run_policy(sc, pol, sizes[sc_name], seed, cb, train_sc, **kwargs))
            first = runs[0]
            rec = first.records
            bench.latencies[(sc_name, pol)] = {"e2e": rec.latency_ms[rec.success],
                                               "ttft": rec.ttft_ms[rec.success]}
            if first.curve is not None:
                bench.curves[(sc_name, pol)] = first.curve
            table[pol] = {
                "kind": policy_kind(pol, first.learner or pol in learners),
                "aggregate": aggregate([r.metrics for r in runs]),
                "per_seed": [{"seed": r.seed, **r.metrics, "wall_s": round(r.wall_s, 2)}
                             for r in runs],
            }
            if first.shift is not None:
                table[pol]["shift"] = [r.shift for r in runs]
            if first.info is not None:
                table[pol]["config"] = first.info
                if "gate" in first.info:  # when the model took over, per seed
                    table[pol]["gate"] = [r.info["gate"] for r in runs]
        bench.results[sc_name] = {"description": sc.description,
                                  "capacity_rps": round(sc.capacity_rps(), 4),
                                  "load": sc.utilization, "policies": table}
    if bar:
        bar.close()
    return bench
