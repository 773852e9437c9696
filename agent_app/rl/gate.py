"""Who routes: the heuristic until the model is measured better on live traffic, then the model
with a small heuristic holdout that can hand control back; and exploration that stays near the best.

The evidence is an online A/B test on randomly assigned requests: while unproven, the model routes
a `trial_fraction` of requests; once it leads, the heuristic keeps a `holdout_fraction`. Each arm's
reward totals (count, sum, sum of squares) come from the outcomes recorded for its decisions. The
model takes over when its mean reward beats the heuristic's by `z` standard errors of the
difference, and gives control back when it falls behind by `z_back` (3) of them: the gap between
the two thresholds is the hysteresis that keeps it from flapping.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

MODEL, HEURISTIC = "model", "heuristic"


@dataclass(frozen=True)
class GateConfig:
    trial_fraction: float = 0.1  # requests the model routes while it is unproven
    holdout_fraction: float = 0.05  # requests the heuristic keeps routing once the model leads
    min_samples: int = 200  # per arm before any verdict
    z: float = 2.0  # standard errors the model's lead must exceed to take over
    # ... and its deficit to hand back: stricter, so noise between equal arms does not flap it.
    z_back: float = 3.0
    # Exploration picks among replicas within this much reward of the best Q (docs/design.md).
    exploration_margin: float = 0.5

    def __post_init__(self) -> None:
        for name in ("trial_fraction", "holdout_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        if self.min_samples < 1:
            raise ValueError(f"min_samples must be >= 1, got {self.min_samples!r}")
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
    lead = model.mean - heuristic.mean
    if min(model.count, heuristic.count) < config.min_samples:
        return Verdict(current, lead, math.inf,
                       f"{model.count} model and {heuristic.count} heuristic outcomes; "
                       f"{config.min_samples} of each are needed")
    stderr = math.sqrt(model.variance / model.count + heuristic.variance / heuristic.count)
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


def bounded_explore(q_values: Sequence[float], margin: float, rng: random.Random) -> int:
    """A random replica among those whose Q-value is within `margin` of the best: exploration
    never sends a request where the model already expects a much worse outcome."""
    best = max(q_values)
    near = [i for i, q in enumerate(q_values) if q >= best - margin]
    return near[0] if len(near) == 1 else rng.choice(near)
