"""Named cluster + traffic scenarios; offered load is set as a share of cluster capacity.

Capacity (``ReplicaSpec.capacity_rps``, summed over replicas) is what the cluster completes
with every batch full and no prefix-cache hits. Synthetic traffic then swings around the
scenario's ``utilization`` (diurnal cycle, bursts); a trace keeps its own ups and downs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from simulator.cluster import BLOCK_TOKENS, ReplicaSpec
from simulator.engine import ClusterEvent
from simulator.replay import NAMED_TRACES, cached_trace, replay, trace_path
from simulator.workload import Workload, WorkloadConfig, generate_workload, token_samples

SYNTHETIC_REQUESTS = 20_000  # evaluation requests of a synthetic scenario unless asked otherwise
TRACE_LOAD = 0.75  # default offered load of a trace replay

# The trace scenarios' fleet: a 70B-class model (FP8 weights, BF16 KV cache: 160 MiB per
# 512-token block) served by vLLM with tensor parallelism on 4-GPU nodes of three generations.
# Decode is memory-bound and follows HBM bandwidth (H100 SXM 3.35 TB/s, A100 2.0, L40S 0.86);
# prefill is compute-bound, where the older nodes fall further behind. KV blocks: 90 % of
# GPU memory minus weights and activations. Rates are the H100 node's: 60 tok/s for one
# sequence alone, 12 000 prompt tok/s.
H100 = ReplicaSpec(speed=1.0, prefill_speed=1.0, max_batch=64, max_backlog=128,
                   kv_blocks=1250, gpu="4xH100-80GB")
A100 = ReplicaSpec(speed=0.6, prefill_speed=0.33, max_batch=64, max_backlog=128,
                   kv_blocks=1250, gpu="4xA100-80GB")
L40S = ReplicaSpec(speed=0.25, prefill_speed=0.25, max_batch=32, max_backlog=64,
                   kv_blocks=560, gpu="4xL40S-48GB")
TRACE_FLEET = (H100, H100, A100, L40S)


@dataclass(frozen=True)
class Scenario:
    """A cluster, its traffic and the changes that happen during a run."""

    name: str
    description: str
    utilization: float  # mean offered load / cluster capacity (see the module docstring)
    speeds: tuple[float, ...] = ()  # synthetic clusters: one ReplicaSpec per speed
    replica: ReplicaSpec = field(default_factory=ReplicaSpec)
    # Per-replica batch limits (KV-cache size differs across GPU generations); () = all alike.
    max_batches: tuple[int, ...] = ()
    fleet: tuple[ReplicaSpec, ...] = ()  # explicit replicas (trace scenarios), instead of speeds
    traffic: WorkloadConfig = field(default_factory=WorkloadConfig)
    trace: str | None = None  # a trace name (NAMED_TRACES) or path: replayed instead of traffic
    # (fraction of the run, kind, replica, value): see engine.ClusterEvent
    changes: tuple[tuple[float, str, int, float], ...] = ()
    bad_replica: int | None = None  # the replica a good policy should move traffic off
    absent: tuple[int, ...] = ()  # replicas not offered at the start (a "join" change adds one)

    @property
    def num_replicas(self) -> int:
        """Every replica the scenario may offer (present at the start or joining later)."""
        return len(self.fleet) or len(self.speeds)

    def final_members(self) -> list[int]:
        """The replicas offered once every join and leave has happened."""
        members = set(range(self.num_replicas)) - set(self.absent)
        for _, kind, idx, _ in sorted(self.changes):
            if kind == "join":
                members.add(idx)
            elif kind == "leave":
                members.discard(idx)
        return sorted(members)

    @property
    def nonstationary(self) -> bool:
        """True when the cluster changes during the run (an online learner must adapt)."""
        return bool(self.changes)

    @property
    def default_requests(self) -> int:
        """Evaluation requests when none are asked for: a trace once, else 20 000."""
        return len(cached_trace(str(trace_path(self.trace)))) if self.trace else SYNTHETIC_REQUESTS

    def replica_specs(self) -> list[ReplicaSpec]:
        if self.fleet:
            return list(self.fleet)
        batches = self.max_batches or (self.replica.max_batch,) * len(self.speeds)
        # KV memory for 4 blocks (2 048 tokens) per batch slot: the batch limit binds first.
        return [replace(self.replica, speed=s, max_batch=b, kv_blocks=4 * b)
                for s, b in zip(self.speeds, batches, strict=True)]

    def token_samples(self) -> tuple[np.ndarray, np.ndarray]:
        """(prompt, output) tokens that define the mean request: the whole trace, or draws."""
        if self.trace:
            tr = cached_trace(str(trace_path(self.trace)))
            return tr.prompt_tokens, tr.output_tokens
        return token_samples(self.traffic)

    def capacity_rps(self) -> float:
        """Requests/s the healthy cluster completes with every batch full, nothing cached."""
        prompt, output = self.token_samples()
        decode = float(np.maximum(output - 1, 0).mean())
        blocks = float(np.mean(-(-(prompt + output) // BLOCK_TOKENS)))
        # Load is set against the cluster a membership change ends with (scale_out, scale_in).
        specs = self.replica_specs()
        return sum(specs[i].capacity_rps(float(prompt.mean()), decode, blocks)
                   for i in self.final_members())

    def workload_config(self) -> WorkloadConfig:
        """The synthetic traffic with its mean rate set from ``utilization``."""
        return replace(self.traffic, rate_rps=self.utilization * self.capacity_rps())

    def workload(self, n: int, seed: int) -> Workload:
        """``n`` requests of this scenario's traffic for ``seed`` (the same for every policy)."""
        if self.trace:
            tr = cached_trace(str(trace_path(self.trace)))
            return replay(tr, n, seed, self.utilization * self.capacity_rps())
        return generate_workload(self.workload_config(), n, seed)

    def cluster_events(self, duration_s: float) -> list[ClusterEvent]:
        """The scenario's changes placed in a run that lasts ``duration_s``."""
        return [ClusterEvent(f * duration_s, kind, idx, value)
                for f, kind, idx, value in self.changes]

    def stationary(self) -> Scenario:
        """The cluster as it starts, without its changes (what a pre-trained agent has seen),
        at the same request rate (capacity may count replicas that join later)."""
        start = replace(self, changes=())
        if start.final_members() == self.final_members():
            return start
        rate = self.utilization * self.capacity_rps()
        return replace(start, utilization=rate / start.capacity_rps())

    def at_load(self, load: float) -> Scenario:
        """The same scenario at another offered load, named ``name@load``."""
        return replace(self, name=f"{self.name}@{load:g}", utilization=load)


# Speed classes of the synthetic mixed clusters and their batch limits (KV memory follows).
_BATCH = {1.0: 32, 0.6: 20, 0.3: 10}
_MIX = (1.0, 0.6, 0.3, 1.0)  # per 4 replicas: half fast, a quarter at 0.6, a quarter at 0.3


def mixed_speeds(n: int) -> tuple[float, ...]:
    """``n`` replicas of three GPU generations, repeating 1.0 / 0.6 / 0.3 / 1.0."""
    return tuple(_MIX[i % len(_MIX)] for i in range(n))


def hetero_scenario(n: int, load: float = 0.70) -> Scenario:
    """``hetero_<n>``: the mixed cluster of ``n`` replicas at ``load``."""
    speeds = mixed_speeds(n)
    return Scenario(
        f"hetero_{n}",
        f"{n} replicas of three GPU generations at {load:.0%} load: speeds 1.0 / 0.6 / 0.3 "
        f"({speeds.count(1.0)} / {speeds.count(0.6)} / {speeds.count(0.3)}), batch 32 / 20 / 10.",
        speeds=speeds, max_batches=tuple(_BATCH[v] for v in speeds), utilization=load,
    )


def trace_scenario(name: str, load: float = TRACE_LOAD) -> Scenario:
    """``trace:<name or path>``: the trace replayed on the mixed fleet at ``load``."""
    path = trace_path(name)
    if name not in NAMED_TRACES and not path.is_file():
        known = ", ".join(f"trace:{n}" for n in NAMED_TRACES)
        raise KeyError(f"no trace {name!r}: use {known} or trace:<path of a .csv or .jsonl file>")
    return Scenario(
        f"trace:{name}",
        f"{path.name} replayed on 4 replicas of three GPU generations (2 x 4xH100, 4xA100, "
        f"4xL40S) at {load:.0%} of capacity; arrivals and tokens from the trace"
        + (", prefixes from its block hashes." if path.suffix != ".csv" else "."),
        utilization=load, fleet=TRACE_FLEET, trace=name,
    )


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            "homogeneous",
            "3 identical replicas at 70% load: least-loaded is near optimal here.",
            speeds=(1.0, 1.0, 1.0), utilization=0.70,
        ),
        Scenario(
            "heterogeneous",
            "3 GPU generations at 70% load: speed 1.0 / 0.6 / 0.3 and, with less memory, "
            "KV-cache room for 32 / 20 / 10 sequences. Equal queues are not equal delays, so "
            "least-loaded overfeeds the slow replica.",
            speeds=(1.0, 0.6, 0.3), max_batches=(32, 20, 10), utilization=0.70,
        ),
        Scenario(
            "degradation",
            "3 identical replicas at 65% load; at 40% of the run replica 2 slows to 0.25x "
            "(thermal throttling, a noisy neighbour) and stays slow.",
            speeds=(1.0, 1.0, 1.0), utilization=0.65,
            changes=((0.4, "speed", 2, 0.25),), bad_replica=2,
        ),
        Scenario(
            "outage",
            "3 identical replicas at 60% load; replica 1 answers every request with a fast "
            "error from 35% to 65% of the run. Its load looks ~0, which attracts "
            "least-loaded.",
            speeds=(1.0, 1.0, 1.0), utilization=0.60,
            changes=((0.35, "fail", 1, 0.0), (0.65, "recover", 1, 1.0)), bad_replica=1,
        ),
        Scenario(
            "burst",
            "3 identical replicas at 60% load with a burst to 2x traffic (~120% of "
            "capacity) from 40% to 50% of the run: backlogs overflow and requests fail.",
            speeds=(1.0, 1.0, 1.0), utilization=0.60,
            traffic=WorkloadConfig(bursts=((0.4, 0.5, 2.0),)),
        ),
        Scenario(
            "many_replicas",
            "8 replicas of two generations at 70% load: 4 at speed 1.0 with room for 32 "
            "sequences, 4 at 0.5 with room for 16.",
            speeds=(1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5),
            max_batches=(32, 32, 32, 32, 16, 16, 16, 16), utilization=0.70,
        ),
        hetero_scenario(4),
        hetero_scenario(8),
        hetero_scenario(16),
        hetero_scenario(32),
        Scenario(
            "homogeneous_16",
            "16 identical replicas at 70% load: least-loaded is near optimal here.",
            speeds=(1.0,) * 16, utilization=0.70,
        ),
        Scenario(
            "scale_out",
            "The mixed cluster grows from 4 to 8 replicas (hetero_4, then hetero_8) at 50% of "
            "the run; 35% of the 8's capacity, so the first 4 run at ~70%. The new ones "
            "arrive empty: a router should fill them without overfeeding them.",
            speeds=mixed_speeds(8), max_batches=tuple(_BATCH[v] for v in mixed_speeds(8)),
            utilization=0.35, absent=(4, 5, 6, 7),
            changes=tuple((0.5, "join", i, 1.0) for i in range(4, 8)),
        ),
        Scenario(
            "scale_in",
            "The mixed cluster shrinks from 8 to 5 replicas at 50% of the run (r5, r6, r7 "
            "drain what they hold and are no longer offered); 70% of the 5's capacity.",
            speeds=mixed_speeds(8), max_batches=tuple(_BATCH[v] for v in mixed_speeds(8)),
            utilization=0.70, changes=tuple((0.5, "leave", i, 1.0) for i in range(5, 8)),
        ),
    ]
}


SCENARIOS.update({f"trace:{n}": trace_scenario(n) for n in NAMED_TRACES})


def get_scenario(name: str) -> Scenario:
    """Look a scenario up by name (``trace:<path>`` replays any trace file), with the list of
    names in the error."""
    if name in SCENARIOS:
        return SCENARIOS[name]
    if name.startswith("trace:"):
        return trace_scenario(name.split(":", 1)[1])
    raise KeyError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}, trace:<path>")
