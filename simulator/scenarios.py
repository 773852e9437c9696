"""Named cluster + traffic scenarios; offered load is set as a share of cluster capacity.

Capacity is what a replica completes at a full batch; the diurnal cycle and short random
bursts then swing the instantaneous load around the scenario's ``utilization``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from simulator.cluster import ReplicaSpec
from simulator.engine import ClusterEvent
from simulator.workload import WorkloadConfig, mean_tokens


@dataclass(frozen=True)
class Scenario:
    """A cluster, its traffic and the changes that happen during a run."""

    name: str
    description: str
    speeds: tuple[float, ...]
    utilization: float  # mean offered load / cluster capacity at full batches
    replica: ReplicaSpec = field(default_factory=ReplicaSpec)
    # Per-replica batch limits (KV-cache size differs across GPU generations); () = all alike.
    max_batches: tuple[int, ...] = ()
    traffic: WorkloadConfig = field(default_factory=WorkloadConfig)
    # (fraction of the run, kind, replica, value): see engine.ClusterEvent
    changes: tuple[tuple[float, str, int, float], ...] = ()
    bad_replica: int | None = None  # the replica a good policy should move traffic off

    @property
    def num_replicas(self) -> int:
        return len(self.speeds)

    @property
    def nonstationary(self) -> bool:
        """True when the cluster changes during the run (an online learner must adapt)."""
        return bool(self.changes)

    def replica_specs(self) -> list[ReplicaSpec]:
        batches = self.max_batches or (self.replica.max_batch,) * len(self.speeds)
        return [replace(self.replica, speed=s, max_batch=b)
                for s, b in zip(self.speeds, batches, strict=True)]

    def mean_work(self) -> float:
        """Mean cost of a request in decode-token units."""
        prompt, output = mean_tokens(self.traffic)
        return self.replica.work(prompt, output)

    def capacity_rps(self) -> float:
        """Requests/s the healthy cluster completes with every batch full."""
        work = self.mean_work()
        return sum(s.capacity_rps(work) for s in self.replica_specs())

    def workload_config(self) -> WorkloadConfig:
        """The traffic with its mean rate set from ``utilization``."""
        return replace(self.traffic, rate_rps=self.utilization * self.capacity_rps())

    def cluster_events(self, duration_s: float) -> list[ClusterEvent]:
        """The scenario's changes placed in a run that lasts ``duration_s``."""
        return [ClusterEvent(f * duration_s, kind, idx, value)
                for f, kind, idx, value in self.changes]

    def stationary(self) -> Scenario:
        """The same cluster without its changes (what a pre-trained agent has seen)."""
        return replace(self, changes=())


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
    ]
}


def get_scenario(name: str) -> Scenario:
    """Look a scenario up by name, with the list of names in the error."""
    try:
        return SCENARIOS[name]
    except KeyError:
        raise KeyError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}") from None
