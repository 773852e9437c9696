"""Autoscaling over a daily traffic cycle: a pool that follows the service's replica
recommendation (`agent_app.autoscaling.DesiredReplicas`), against fixed-size clusters.

The day: Poisson arrivals whose rate follows a sinusoid from a trough to a peak `peak_to_trough`
times higher and back, one cycle per simulated `day_s`, starting at the trough; request sizes and
the replica are a synthetic scenario's (`homogeneous`: a 70B-class replica, batch 32).

The closed loop, in simulated time (`Simulation`'s `on_tick`, every `window_s`):
- the gateway (`Gateway`: the router plus what a proxy counts) has seen, in the window, the
  requests it routed (the arrival rate), per routable replica its completions, failures, the
  percentiles of TTFT and end-to-end latency of its successes and its mean in-flight count (its
  running + waiting requests, sampled at each routing decision: Poisson arrivals see time averages);
- `Autoscaler` makes that a `PoolWindow` (batch slots = `max_batch`, vLLM's max_num_seqs, unless
  `report_slots` is off, with the estimate's `batch_slowdown`; each replica's share of the window
  it was routable), asks `DesiredReplicas.evaluate` for the count and moves the pool to it:
  a new replica is billed from the decision and becomes routable `startup_s` later (a "join"); a
  removed one stops being offered at once and finishes what it holds (a "leave": a drain), billed
  until its last request ends. A scale-down cancels replicas still starting before it drains any.

Time above target: the day is cut into `window_s` windows; a window is above target when the
target percentile of the metric (TTFT or end to end) over the requests completing in it is over
the threshold, a failed request counting as infinitely slow. Fixed-size clusters of 1, 2, ...
replicas serve the same arrivals; the smallest holding the target in at least `hold_share` of the
windows is the one to beat. Replica-hours are counted over the day, for both.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from agent_app.autoscaling import (
    DEFAULT_BATCH_SLOWDOWN,
    PERCENTILES,
    DesiredReplicas,
    LatencyTarget,
    PoolWindow,
    ReplicaWindow,
)
from simulator.cluster import ReplicaSpec
from simulator.engine import OK, ClusterEvent, Records, Simulation
from simulator.policies import make_policy
from simulator.scenarios import Scenario, get_scenario
from simulator.workload import Workload, generate_workload

# MLPerf Inference's Llama-2-70B server scenario holds TTFT p99 <= 2 s (and TPOT p99 <= 200 ms):
# a common bar for a 70B-class chat model, the modelled replica.
DEFAULT_TARGET = LatencyTarget(percentile=99, threshold_ms=2000.0, metric="ttft")


@dataclass(frozen=True)
class DayConfig:
    """The day, the pool and the controller (defaults: the figures in simulator/README.md)."""

    scenario: str = "homogeneous"  # replica and request sizes (its replicas must be identical)
    mean_rps: float = 16.0  # the day's mean arrival rate
    peak_to_trough: float = 4.0
    day_s: float = 4 * 3600.0  # one compressed day: trough, peak after day_s / 2, trough
    window_s: float = 60.0  # controller period and measurement window
    startup_s: float = 120.0  # decision to routable (node boot, model load)
    target: LatencyTarget = DEFAULT_TARGET
    hold_share: float = 0.99  # share of windows within the target that "holds it"
    min_replicas: int = 1
    max_replicas: int = 16  # the controller's bound and the largest fixed cluster tried
    cooldown_evaluations: int = 3  # the service's defaults (agent_app/capacity.py, settings)
    cooldown_s: float = 300.0
    initial_replicas: int | None = None  # None: what the trough needs at max_utilisation
    report_slots: bool = True  # give the estimate each replica's batch slots
    batch_slowdown: float = DEFAULT_BATCH_SLOWDOWN  # the estimate's (not the engine's: ReplicaSpec.alpha)
    router: str = "least_loaded"

    def __post_init__(self) -> None:
        if self.min_replicas < 1:
            raise ValueError("min_replicas must be at least 1: a pool keeps one routable replica")
        if self.peak_to_trough < 1 or self.mean_rps <= 0 or self.day_s <= 0 or self.window_s <= 0:
            raise ValueError("mean_rps, day_s and window_s must be positive, peak_to_trough >= 1")

    @property
    def pool(self) -> Scenario:
        return get_scenario(self.scenario)

    @property
    def spec(self) -> ReplicaSpec:
        specs = self.pool.replica_specs()
        if any(s != specs[0] for s in specs):
            raise ValueError(f"scenario {self.scenario!r} mixes replicas: the pool needs identical ones")
        return specs[0]

    def replica_capacity_rps(self) -> float:
        """One replica's requests/s at a full batch (`ReplicaSpec.capacity_rps`), for sizing."""
        return self.pool.capacity_rps() / len(self.pool.final_members())

    @property
    def amplitude(self) -> float:
        """The sinusoid's relative swing: mean * (1 +- amplitude) are the peak and the trough."""
        return (self.peak_to_trough - 1.0) / (self.peak_to_trough + 1.0)

    def rate_bounds(self) -> tuple[float, float]:
        """(trough, peak) arrival rates."""
        return self.mean_rps * (1.0 - self.amplitude), self.mean_rps * (1.0 + self.amplitude)

    def start_replicas(self) -> int:
        if self.initial_replicas is not None:
            return self.initial_replicas
        trough, _ = self.rate_bounds()
        need = math.ceil(trough / (self.replica_capacity_rps() * self.target.max_utilisation))
        return min(max(need, self.min_replicas), self.max_replicas)


def day_workload(cfg: DayConfig, seed: int) -> Workload:
    """One day of Poisson arrivals on the sinusoid, the scenario's request sizes, no bursts."""
    traffic = replace(cfg.pool.traffic, rate_rps=cfg.mean_rps, day_s=cfg.day_s, diurnal_amp=cfg.amplitude,
                      day_phase=0.75, burst_every_s=0.0, bursts=())  # phase 0.75: the trough
    expected = cfg.mean_rps * cfg.day_s
    full = generate_workload(traffic, int(expected + 6 * math.sqrt(expected) + 100), seed)
    n = int(np.searchsorted(full.arrival_s, cfg.day_s))
    return Workload(full.arrival_s[:n], full.prompt_tokens[:n], full.output_tokens[:n],
                    duration_s=cfg.day_s)


def _percentiles(values: list[float]) -> dict[int, float]:
    return dict(zip(PERCENTILES, np.percentile(values, PERCENTILES).tolist(), strict=True))


class _Seen:
    """One replica's observations in the current window."""

    __slots__ = ("load_sum", "load_samples", "done", "failed", "e2e", "ttft")

    def __init__(self) -> None:
        self.load_sum, self.load_samples, self.done, self.failed = 0, 0, 0, 0
        self.e2e: list[float] = []
        self.ttft: list[float] = []


class Gateway:
    """The router, plus what the proxy in front of the pool counts per window."""

    def __init__(self, router: object) -> None:
        self.router = router
        self.name = getattr(router, "name", "router")
        self._observe = getattr(router, "observe", None)
        self.reset()

    def reset(self) -> None:
        self.decisions = 0
        self.seen: defaultdict[str, _Seen] = defaultdict(_Seen)

    def start(self, context: object) -> None:
        start = getattr(self.router, "start", None)
        if start is not None:
            start(context)

    def choose(self, fields: dict, rng: np.random.Generator) -> int:
        self.decisions += 1
        seen = self.seen
        for replica in fields["replicas"]:
            s = seen[replica["name"]]
            s.load_sum += replica["load"]
            s.load_samples += 1
        return self.router.choose(fields, rng)

    def observe(self, experience: dict) -> None:
        s = self.seen[experience["replica_name"]]
        s.done += 1
        if experience["success"]:
            s.e2e.append(experience["latency_ms"])
            s.ttft.append(experience["ttft_ms"])
        else:
            s.failed += 1
        if self._observe is not None:
            self._observe(experience)

    def replica_window(self, name: str, seconds: float, window_s: float, slots: int | None,
                       batch_slowdown: float) -> ReplicaWindow:
        """What this window (``window_s``) showed of one replica that was routable for ``seconds``
        of it."""
        s = self.seen.get(name) or _Seen()
        ok = bool(s.e2e)
        return ReplicaWindow(
            completed_per_s=s.done / seconds if seconds > 0 else 0.0,  # joined this instant
            latency_ms=_percentiles(s.e2e) if ok else {},
            ttft_ms=_percentiles(s.ttft) if ok else None,
            in_flight=s.load_sum / s.load_samples if s.load_samples else 0.0,
            failure_rate=s.failed / s.done if s.done else 0.0,
            concurrency=slots,
            batch_slowdown=batch_slowdown,
            window_share=min(max(seconds / window_s, 0.0), 1.0),
        )


@dataclass
class Lease:
    """One replica's time in the pool: billed from `start_s` (the decision) to `end_s`."""

    slot: int  # the simulator's replica index
    start_s: float
    ready_s: float  # routable from here
    leave_s: float | None = None  # no longer offered from here
    end_s: float | None = None  # last request done (set after the run), or a start cancelled

    @property
    def active(self) -> bool:
        return self.leave_s is None


@dataclass
class Step:
    """One evaluation: the pool as the controller saw it and what it decided."""

    at_s: float
    arrival_rps: float
    routable: int
    starting: int
    needed: int  # the estimate before hysteresis
    recommendation: int
    reason: str


class Autoscaler:
    """Every tick: the gateway's window -> `DesiredReplicas` -> joins and leaves."""

    def __init__(self, cfg: DayConfig, gateway: Gateway, slots: int, initial: int) -> None:
        self.cfg, self.gateway = cfg, gateway
        self.desired = DesiredReplicas(cfg.target, min_replicas=cfg.min_replicas,
                                       max_replicas=cfg.max_replicas,
                                       cooldown_evaluations=cfg.cooldown_evaluations,
                                       cooldown_seconds=cfg.cooldown_s)
        self.slots = slots
        self.leases = [Lease(i, 0.0, 0.0) for i in range(initial)]
        self.steps: list[Step] = []
        self.actions = {"up": 0, "down": 0}  # evaluations that moved the count
        self.moved = {"started": 0, "cancelled": 0, "drained": 0}  # replicas

    def active(self) -> list[Lease]:
        return [lease for lease in self.leases if lease.active]

    def tick(self, sim: Simulation) -> None:
        now, cfg = sim.now, self.cfg
        since = now - cfg.window_s
        active = self.active()
        routable = [lease for lease in active if lease.ready_s <= now]
        slots = sim.replicas[0].spec.max_batch if cfg.report_slots else None
        window = PoolWindow(
            arrival_rate=self.gateway.decisions / cfg.window_s,
            replicas=[self.gateway.replica_window(sim.replicas[lease.slot].name,
                                                  now - max(since, lease.ready_s), cfg.window_s, slots,
                                                  cfg.batch_slowdown)
                      for lease in routable])
        self.gateway.reset()
        decision = self.desired.evaluate(window, at=now)
        target = decision.recommendation
        self.steps.append(Step(now, window.arrival_rate, len(routable), len(active) - len(routable),
                               decision.estimate.needed_replicas, target, decision.reason))
        if target > len(active):
            self.actions["up"] += 1
            for _ in range(target - len(active)):
                self._start(sim, now)
        elif target < len(active):
            self.actions["down"] += 1
            self._stop(sim, now, len(active) - target)

    def _start(self, sim: Simulation, now: float) -> None:
        # A slot is free once its last lease has left (its events are past) and it holds nothing.
        busy = {lease.slot for lease in self.leases if lease.active or lease.leave_s > now}
        free = [i for i in range(self.slots) if i not in busy and i not in sim.present
                and sim.replicas[i].load == 0]
        if not free:
            raise RuntimeError(f"no free replica slot of {self.slots}: raise the slot count")
        lease = Lease(free[0], now, now + self.cfg.startup_s)
        self.leases.append(lease)
        sim.schedule(ClusterEvent(lease.ready_s, "join", lease.slot))
        self.moved["started"] += 1

    def _stop(self, sim: Simulation, now: float, count: int) -> None:
        # Replicas still starting go first (nothing to drain); then the routable ones holding the
        # fewest requests (the quickest drains).
        starting = sorted((lease for lease in self.active() if lease.ready_s > now),
                          key=lambda lease: -lease.start_s)
        routable = sorted((lease for lease in self.active() if lease.ready_s <= now),
                          key=lambda lease: sim.replicas[lease.slot].load)
        for lease in (starting + routable)[:count]:
            if lease.ready_s > now:  # its join is queued: leave at the same instant, never offered
                lease.leave_s, lease.end_s = lease.ready_s, now
                self.moved["cancelled"] += 1
            else:
                lease.leave_s = now
                self.moved["drained"] += 1
            sim.schedule(ClusterEvent(lease.leave_s, "leave", lease.slot))


def close_leases(leases: list[Lease], records: Records, horizon_s: float) -> None:
    """End each drained lease when its last request finished; leases still active at the horizon."""
    for lease in leases:
        if lease.end_s is not None:
            continue
        if lease.leave_s is None:
            lease.end_s = horizon_s
            continue
        mine = ((records.replica == lease.slot) & (records.arrival_s >= lease.ready_s)
                & (records.arrival_s < lease.leave_s))
        last = float(np.nanmax(records.finish_s[mine])) if mine.any() else lease.leave_s
        lease.end_s = max(lease.leave_s, last)


def replica_hours(leases: Sequence[Lease], horizon_s: float) -> float:
    """Billed replica time within [0, horizon], in hours."""
    return sum(max(0.0, min(lease.end_s, horizon_s) - min(lease.start_s, horizon_s))
               for lease in leases) / 3600.0


def windows_above(records: Records, cfg: DayConfig) -> np.ndarray:
    """Per measurement window of the day: whether the target percentile of the requests completing
    in it is over the threshold (failures count as infinitely slow); no completion: not above."""
    count = int(math.ceil(cfg.day_s / cfg.window_s))
    metric = records.ttft_ms if cfg.target.metric == "ttft" else records.latency_ms
    values = np.where(records.outcome == OK, metric, np.inf)
    index = np.floor(records.finish_s / cfg.window_s).astype(np.int64)
    keep = index < count
    index, values = index[keep], values[keep]
    order = np.argsort(index, kind="stable")
    index, values = index[order], values[order]
    edges = np.searchsorted(index, np.arange(count + 1))
    above = np.zeros(count, dtype=bool)
    for k in range(count):
        chunk = values[edges[k]:edges[k + 1]]
        if chunk.size:
            above[k] = np.percentile(chunk, cfg.target.percentile, method="inverted_cdf") \
                > cfg.target.threshold_ms
    return above


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, 2]))  # as runner.simulate


@dataclass
class AutoscaledRun:
    records: Records
    leases: list[Lease]
    steps: list[Step]
    actions: dict[str, int]
    moved: dict[str, int]
    above: np.ndarray
    replica_hours: float


def run_autoscaled(cfg: DayConfig, seed: int, workload: Workload | None = None) -> AutoscaledRun:
    workload = day_workload(cfg, seed) if workload is None else workload
    # Slots for every replica the pool may hold at once, twice over: draining ones are extra.
    slots = 2 * cfg.max_replicas
    initial = cfg.start_replicas()
    gateway = Gateway(make_policy(cfg.router))
    scaler = Autoscaler(cfg, gateway, slots, initial)
    sim = Simulation([cfg.spec] * slots, workload, gateway, _rng(seed), day_s=cfg.day_s,
                     day_phase=0.75, absent=range(initial, slots), window_s=cfg.window_s,
                     tick_s=cfg.window_s, on_tick=scaler.tick)
    records = sim.run()
    close_leases(scaler.leases, records, cfg.day_s)
    return AutoscaledRun(records, scaler.leases, scaler.steps, scaler.actions, scaler.moved,
                         windows_above(records, cfg), replica_hours(scaler.leases, cfg.day_s))


def run_fixed(cfg: DayConfig, replicas: int, seed: int, workload: Workload) -> np.ndarray:
    """Windows above target of a fixed cluster of ``replicas`` on the same arrivals."""
    sim = Simulation([cfg.spec] * replicas, workload, make_policy(cfg.router), _rng(seed),
                     day_s=cfg.day_s, day_phase=0.75, window_s=cfg.window_s)
    return windows_above(sim.run(), cfg)


def smallest_fixed(cfg: DayConfig, seed: int, workload: Workload) -> tuple[int | None, dict[int, float]]:
    """The smallest fixed size in 1..max_replicas holding the target in hold_share of the windows
    (None if none does), and the share of windows above target of every size tried."""
    tried: dict[int, float] = {}
    for n in range(1, cfg.max_replicas + 1):
        tried[n] = float(run_fixed(cfg, n, seed, workload).mean())
        if tried[n] <= 1.0 - cfg.hold_share + 1e-12:
            return n, tried
    return None, tried


@dataclass
class SeedResult:
    seed: int
    requests: int
    autoscaled_hours: float
    autoscaled_above: float  # share of windows
    actions_up: int
    actions_down: int
    started: int
    drained: int
    cancelled: int
    mean_replicas: float  # billed replicas, time average
    max_routable: int
    failed: float  # share of requests
    fixed_n: int | None
    fixed_hours: float | None
    fixed_tried: dict[int, float] = field(default_factory=dict)
    hold_share: float = 0.99

    @property
    def holds(self) -> bool:
        """The requirement: within the target as often as required, at fewer replica-hours."""
        return (self.fixed_hours is not None and self.autoscaled_above <= 1.0 - self.hold_share + 1e-12
                and self.autoscaled_hours < self.fixed_hours)


def compare(cfg: DayConfig, seed: int) -> tuple[SeedResult, AutoscaledRun]:
    workload = day_workload(cfg, seed)
    run = run_autoscaled(cfg, seed, workload)
    n, tried = smallest_fixed(cfg, seed, workload)
    hours = cfg.day_s / 3600.0
    result = SeedResult(
        seed=seed, requests=len(workload), autoscaled_hours=run.replica_hours,
        autoscaled_above=float(run.above.mean()), actions_up=run.actions["up"],
        actions_down=run.actions["down"], started=run.moved["started"], drained=run.moved["drained"],
        cancelled=run.moved["cancelled"], mean_replicas=run.replica_hours / hours,
        max_routable=max([s.routable for s in run.steps], default=0),
        failed=float((run.records.outcome != OK).mean()),
        fixed_n=n, fixed_hours=None if n is None else n * hours, fixed_tried=tried,
        hold_share=cfg.hold_share)
    return result, run


def format_table(cfg: DayConfig, results: Sequence[SeedResult]) -> str:
    t = cfg.target
    lines = [
        f"target: {t.metric} p{t.percentile} <= {t.threshold_ms:g} ms in >= {cfg.hold_share:.0%} of "
        f"{cfg.window_s:g} s windows; day {cfg.day_s / 3600:g} h, {cfg.mean_rps:g} req/s mean, "
        f"peak/trough {cfg.peak_to_trough:g}; start-up {cfg.startup_s:g} s; {cfg.router}; batch slots "
        f"{f'reported, batch slowdown {cfg.batch_slowdown:g}' if cfg.report_slots else 'not reported'}, "
        f"max utilisation {t.max_utilisation:g}, "
        f"cool-down {cfg.cooldown_evaluations} evaluations and {cfg.cooldown_s:g} s",
        f"{'seed':>4} {'requests':>8} | {'auto rh':>7} {'above %':>7} {'up/down':>7} "
        f"{'started/drained/cancelled':>25} {'mean n':>6} {'max n':>5} {'failed %':>8} | "
        f"{'fixed n':>7} {'fixed rh':>8} {'above %':>7} {'n-1 above %':>11} | {'saved %':>7}",
    ]
    for r in results:
        fixed_above = r.fixed_tried.get(r.fixed_n, math.nan) if r.fixed_n else math.nan
        below = r.fixed_tried.get(r.fixed_n - 1, math.nan) if r.fixed_n else math.nan
        saved = 100 * (1 - r.autoscaled_hours / r.fixed_hours) if r.fixed_hours else math.nan
        lines.append(
            f"{r.seed:>4} {r.requests:>8} | {r.autoscaled_hours:>7.2f} {100 * r.autoscaled_above:>7.2f} "
            f"{r.actions_up:>3}/{r.actions_down:<3} {f'{r.started}/{r.drained}/{r.cancelled}':>25} "
            f"{r.mean_replicas:>6.2f} {r.max_routable:>5} {100 * r.failed:>8.3f} | "
            f"{r.fixed_n or '-':>7} {r.fixed_hours or math.nan:>8.2f} {100 * fixed_above:>7.2f} "
            f"{100 * below:>11.2f} | {saved:>7.1f}")
    if results:
        auto = np.array([r.autoscaled_hours for r in results])
        above = np.array([r.autoscaled_above for r in results])
        fixed = np.array([r.fixed_hours or math.nan for r in results])
        lines.append(f"mean: autoscaled {auto.mean():.2f} replica-h, {100 * above.mean():.2f} % of windows "
                     f"above (max {100 * above.max():.2f}); fixed {np.mean(fixed):.2f} replica-h; "
                     f"target met on {sum(r.holds for r in results)} of {len(results)} seeds")
    return "\n".join(lines)


def _target(text: str) -> LatencyTarget:
    """``ttft:99:2000`` -> TTFT p99 <= 2000 ms."""
    try:
        metric, percentile, threshold = text.split(":")
        return LatencyTarget(percentile=int(percentile), threshold_ms=float(threshold), metric=metric)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--target must look like ttft:99:2000, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    d = DayConfig()
    p = argparse.ArgumentParser(prog="python -m simulator.autoscale", description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--seed-base", type=int, default=0)
    p.add_argument("--target", type=_target, default=d.target,
                   help="metric:percentile:threshold_ms (default ttft:99:2000)")
    p.add_argument("--max-utilisation", type=float, default=d.target.max_utilisation,
                   help="the estimate's highest target utilisation (LatencyTarget.max_utilisation)")
    p.add_argument("--mean-rps", type=float, default=d.mean_rps)
    p.add_argument("--peak-to-trough", type=float, default=d.peak_to_trough)
    p.add_argument("--day-hours", type=float, default=d.day_s / 3600)
    p.add_argument("--window-s", type=float, default=d.window_s)
    p.add_argument("--startup-s", type=float, default=d.startup_s)
    p.add_argument("--min-replicas", type=int, default=d.min_replicas)
    p.add_argument("--max-replicas", type=int, default=d.max_replicas)
    p.add_argument("--cooldown-s", type=float, default=d.cooldown_s)
    p.add_argument("--no-slots", action="store_true",
                   help="do not tell the estimate the batch slots (as agent_app/capacity.py without "
                        "AUTOSCALE_REPLICA_SLOTS)")
    p.add_argument("--batch-slowdown", type=float, default=d.batch_slowdown,
                   help="the estimate's growth of a request's time per other request in the batch "
                        "(ReplicaWindow.batch_slowdown)")
    p.add_argument("--router", default=d.router)
    p.add_argument("--json", type=Path, default=None, help="write per-seed results and each evaluation")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = DayConfig(mean_rps=args.mean_rps, peak_to_trough=args.peak_to_trough,
                    day_s=args.day_hours * 3600, window_s=args.window_s, startup_s=args.startup_s,
                    target=replace(args.target, max_utilisation=args.max_utilisation),
                    min_replicas=args.min_replicas, max_replicas=args.max_replicas,
                    cooldown_s=args.cooldown_s, report_slots=not args.no_slots,
                    batch_slowdown=args.batch_slowdown, router=args.router)
    results, payload = [], []
    started = time.perf_counter()
    for seed in range(args.seed_base, args.seed_base + args.seeds):
        result, run = compare(cfg, seed)
        results.append(result)
        payload.append({**asdict(result), "steps": [asdict(s) for s in run.steps],
                        "above": run.above.astype(int).tolist()})
        print(f"seed {seed} done ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    print(format_table(cfg, results))
    if args.json is not None:
        args.json.write_text(json.dumps({"config": {**asdict(cfg), "target": asdict(cfg.target)},
                                         "seeds": payload}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
