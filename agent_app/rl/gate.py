"""Who routes: the heuristic until the model is measured better on live traffic, then the model
with a small heuristic holdout that can hand control back; and exploration that stays near the best.

The evidence is an online A/B test on randomly assigned requests: while unproven, the model routes
a `trial_fraction` of requests; once it leads, the heuristic keeps a `holdout_fraction`. Each arm's
reward totals (count, sum, sum of squares) come from the outcomes recorded for its decisions. The
model takes over when its mean reward beats the heuristic's by `z` standard errors of the
difference, and gives control back when it falls behind by `z_back` (3) of them: the gap between
the two thresholds is the hysteresis that keeps it from flapping.

Randomising single requests lets the two arms interfere: they share the replicas, so the model's
few requests ride on a cluster the heuristic keeps balanced and its measured lead flatters it.
`assignment="block"` is a switchback design instead: time is cut into blocks of `block_seconds`,
one arm routes every request of a block (`block_arm`), and the verdict compares the arms' block
mean rewards (`decide_blocks`): each arm is measured at full share, and since requests of one
block share its cluster state, the standard error comes from the spread of block means, not of
single rewards. The shares are the same, counted in blocks.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

MODEL, HEURISTIC = "model", "heuristic"
ASSIGNMENTS = ("request", "block")
# The golden ratio's fractional part: frac(block x GOLDEN) spreads any run of consecutive blocks
# evenly over [0, 1), so each arm's blocks come at its share, evenly spaced, with no shared state.
GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass(frozen=True)
class GateConfig:
    trial_fraction: float = 0.1  # requests (or blocks) the model routes while it is unproven
    holdout_fraction: float = 0.05  # requests (or blocks) the heuristic keeps once the model leads
    min_samples: int = 200  # outcomes per arm before a verdict on randomised requests
    z: float = 2.0  # standard errors the model's lead must exceed to take over
    # ... and its deficit to hand back: stricter, so noise between equal arms does not flap it.
    z_back: float = 3.0
    # Exploration picks among replicas within this much reward of the best Q (docs/design.md).
    exploration_margin: float = 0.5
    # "request": each request's arm drawn at random; "block": one arm routes each time block.
    assignment: str = "request"
    block_seconds: float = 60.0  # several times a request's latency, so a block sees its own arm
    min_blocks: int = 8  # per arm before a block verdict
    # Block verdicts on each minority block against its neighbours (decide_paired) rather than on
    # the two arms' block means taken as independent samples (decide_blocks).
    paired: bool = False

    def __post_init__(self) -> None:
        for name in ("trial_fraction", "holdout_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        if self.min_samples < 1:
            raise ValueError(f"min_samples must be >= 1, got {self.min_samples!r}")
        if self.min_blocks < 2:  # a standard error needs two block means
            raise ValueError(f"min_blocks must be >= 2, got {self.min_blocks!r}")
        if self.assignment not in ASSIGNMENTS:
            raise ValueError(f"assignment must be one of {ASSIGNMENTS}, got {self.assignment!r}")
        if not (self.block_seconds > 0 and math.isfinite(self.block_seconds)):
            raise ValueError(f"block_seconds must be a finite number > 0, got {self.block_seconds!r}")
        for name in ("z", "z_back"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not (self.exploration_margin >= 0 and math.isfinite(self.exploration_margin)):
            raise ValueError(f"exploration_margin must be a finite number >= 0, got "
                             f"{self.exploration_margin!r}")


@dataclass(frozen=True)
class ArmTotals:
    """Reward totals of the requests one arm routed."""

    count: int = 0
    reward_sum: float = 0.0
    reward_sq_sum: float = 0.0

    @property
    def mean(self) -> float:
        return self.reward_sum / self.count if self.count else 0.0

    @property
    def variance(self) -> float:
        if self.count < 2:
            return 0.0
        return max(0.0, (self.reward_sq_sum - self.count * self.mean**2) / (self.count - 1))

    def add(self, reward: float) -> ArmTotals:
        return ArmTotals(self.count + 1, self.reward_sum + reward, self.reward_sq_sum + reward * reward)

    @classmethod
    def of(cls, rewards: Iterable[float]) -> ArmTotals:
        values = list(rewards)
        return cls(len(values), math.fsum(values), math.fsum(v * v for v in values))


@dataclass(frozen=True)
class Verdict:
    """Which arm routes, and the evidence: the model's lead in mean reward and its standard error."""

    leader: str
    lead: float
    stderr: float
    reason: str

    def to_dict(self) -> dict:
        stderr = round(self.stderr, 6) if math.isfinite(self.stderr) else None  # None: too few outcomes
        return {"routes": self.leader, "model_lead": round(self.lead, 6), "stderr": stderr,
                "reason": self.reason}


def decide(model: ArmTotals, heuristic: ArmTotals, current: str, config: GateConfig) -> Verdict:
    """The arm that routes next, given each arm's totals and the arm that routes now."""
    return _judge(model, heuristic, current, config, config.min_samples, "outcomes")


def decide_blocks(model_means: Iterable[float], heuristic_means: Iterable[float], current: str,
                  config: GateConfig) -> Verdict:
    """``decide`` for block assignment: each arm's evidence is the mean reward of every block it
    routed. The lead is the difference of the arms' means of block means and its standard error
    comes from the spread of those block means: rewards within one block share its cluster state,
    so they are not independent draws."""
    return _judge(ArmTotals.of(model_means), ArmTotals.of(heuristic_means), current, config,
                  config.min_blocks, "blocks")


def paired_block_differences(model: Mapping[int, float], heuristic: Mapping[int, float],
                             current: str) -> list[float]:
    """Model minus heuristic, one difference per block of the arm that does not lead (the
    minority's): its mean reward against the mean of the nearest blocks of the other arm just
    before and just after it (one of them at the edges, none within two blocks: skipped). Traffic
    drifts over minutes to hours, so neighbouring blocks share most of it and the differences vary
    far less than the block means themselves (the switchback's paired estimate)."""
    minority, majority = (model, heuristic) if current == HEURISTIC else (heuristic, model)
    sign = 1.0 if current == HEURISTIC else -1.0
    differences = []
    for block, mean in minority.items():
        neighbours = [majority[b] for b in _nearest(block, majority, -1) + _nearest(block, majority, 1)]
        if neighbours:
            differences.append(sign * (mean - math.fsum(neighbours) / len(neighbours)))
    return differences


def _nearest(block: int, blocks: Mapping[int, float], step: int) -> list[int]:
    """The block of ``blocks`` next to ``block`` in direction ``step``, within two blocks."""
    return next(([b] for b in (block + step, block + 2 * step) if b in blocks), [])


def decide_paired(differences: Iterable[float], current: str, config: GateConfig) -> Verdict:
    """``decide_blocks`` on paired differences (``paired_block_differences``): the lead is their
    mean and its standard error comes from their spread."""
    paired = ArmTotals.of(differences)
    if paired.count < config.min_blocks:
        return Verdict(current, paired.mean, math.inf,
                       f"{paired.count} paired blocks; {config.min_blocks} are needed")
    return _verdict(paired.mean, math.sqrt(paired.variance / paired.count), current, config)


def _judge(model: ArmTotals, heuristic: ArmTotals, current: str, config: GateConfig, minimum: int,
           unit: str) -> Verdict:
    """The z / z_back hysteresis on two arms' totals, each counting ``unit`` (at least ``minimum``)."""
    lead = model.mean - heuristic.mean
    if min(model.count, heuristic.count) < minimum:
        return Verdict(current, lead, math.inf,
                       f"{model.count} model and {heuristic.count} heuristic {unit}; "
                       f"{minimum} of each are needed")
    stderr = math.sqrt(model.variance / model.count + heuristic.variance / heuristic.count)
    return _verdict(lead, stderr, current, config)


def _verdict(lead: float, stderr: float, current: str, config: GateConfig) -> Verdict:
    """The z / z_back hysteresis on the model's lead and its standard error."""
    if current == HEURISTIC and lead > config.z * stderr:
        return Verdict(MODEL, lead, stderr, "the model's mean reward is better by more than "
                                            f"{config.z:g} standard errors")
    if current == MODEL and lead < -config.z_back * stderr:
        return Verdict(HEURISTIC, lead, stderr, "the model's mean reward is worse by more than "
                                                f"{config.z_back:g} standard errors")
    return Verdict(current, lead, stderr, "no significant change")


def assign_arm(leader: str, config: GateConfig, rng: random.Random) -> str:
    """The arm that routes one request: the leader, except a random share for the other arm."""
    if leader == MODEL:
        return HEURISTIC if rng.random() < config.holdout_fraction else MODEL
    return MODEL if rng.random() < config.trial_fraction else HEURISTIC


def model_share(leader: str, config: GateConfig) -> float:
    """The model's share of the traffic: its trial while unproven, all but the holdout once it leads."""
    return 1.0 - config.holdout_fraction if leader == MODEL else config.trial_fraction


def block_index(timestamp: float, block_seconds: float) -> int:
    """The time block a moment falls in: every process with the same clock agrees on it."""
    return math.floor(timestamp / block_seconds)


def block_arm(block: int, fraction: float) -> str:
    """The arm that routes every request of ``block`` when the model routes ``fraction`` of the
    blocks: the model where frac(block x golden ratio) < fraction. Deterministic, so every web
    worker agrees without coordination, and low-discrepancy: any run of consecutive blocks gives
    the model close to ``fraction`` of them, evenly spaced. A smaller share's blocks are a subset
    of a larger one's, so a change of leader does not reshuffle the blocks the trial had."""
    return MODEL if (block * GOLDEN) % 1.0 < fraction else HEURISTIC


def assign_block(leader: str, config: GateConfig, block: int) -> str:
    """``assign_arm`` for block assignment: the arm that routes all of ``block``."""
    return block_arm(block, model_share(leader, config))


def bounded_explore(q_values: Sequence[float], margin: float, rng: random.Random) -> int:
    """A random replica among those whose Q-value is within `margin` of the best: exploration
    never sends a request where the model already expects a much worse outcome."""
    best = max(q_values)
    near = [i for i, q in enumerate(q_values) if q >= best - margin]
    return near[0] if len(near) == 1 else rng.choice(near)
