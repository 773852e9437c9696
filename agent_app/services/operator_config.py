"""Operator settings edited in the admin: range checks, where each value lives, and the audit log.

Most live on the AgentConfig row; the current epsilon on AgentState (what the web workers serve
and the trainer decays); the training interval on beat's PeriodicTask "train". The serving
snapshot re-reads them every SYNC_INTERVAL_SECONDS and training per run, so a change reaches
every process within seconds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agent_app.models import AgentConfig, AgentState, ConfigChange
from agent_app.pools import current_pool
from agent_app.rl.reward import RewardConfig
from agent_app.services import schedule

CONFIG_FIELDS = (
    "exploration_enabled", "epsilon_min", "epsilon_decay", "learning_rate", "discount", "batch_size",
    "latency_scale_ms", "balance_weight", "failure_penalty",
)
EPSILON, INTERVAL = "epsilon", "training_interval_seconds"
EDITABLE = (EPSILON, *CONFIG_FIELDS, INTERVAL)


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    message: str
    low_open: bool = False  # the low end itself is refused

    def check(self, value: float) -> str | None:
        too_low = value <= self.low if self.low_open else value < self.low
        return self.message if not math.isfinite(value) or too_low or value > self.high else None


def ranges() -> dict[str, Range]:
    largest_batch = min(4096, settings.REPLAY_CAPACITY)
    floor = RewardConfig().clip_min
    floor = -1000.0 if floor is None else floor
    return {
        EPSILON: Range(0, 1, "Epsilon is a probability: between 0 and 1."),
        "epsilon_min": Range(0, 1, "The epsilon floor is a probability: between 0 and 1."),
        "epsilon_decay": Range(0, 1, "The decay multiplies epsilon after every training step: more than 0 "
                                     "and at most 1 (1 = no decay).", low_open=True),
        "learning_rate": Range(0, 1, "The learning rate must be more than 0 and at most 1 "
                                     "(the RL core's default is 0.001).", low_open=True),
        "discount": Range(0, 0.999, "The discount must be between 0 and 0.999: at 1 the Q-values of a task "
                                    "that never ends grow without bound."),
        "batch_size": Range(1, largest_batch, f"The batch size must be between 1 and {largest_batch} "
                                              "(REPLAY_CAPACITY and the 4096 the API allows)."),
        INTERVAL: Range(1, 86400, "The training interval must be between 1 second and 1 day (86400 s)."),
        "latency_scale_ms": Range(0, 600_000, "The latency scale must be more than 0 and at most "
                                              "600000 ms.", low_open=True),
        "balance_weight": Range(0, 100, "The balance weight must be between 0 and 100."),
        "failure_penalty": Range(floor, 0, f"The failure penalty must be between {floor:g} and 0: rewards "
                                           f"are clipped at {floor:g}, so a lower penalty changes nothing."),
    }


def check(values: Mapping[str, Any]) -> dict[str, str]:
    """Field -> message for every out-of-range value (None means "use the default" and passes)."""
    rules, errors = ranges(), {}
    for name, value in values.items():
        if name in rules and value is not None and not isinstance(value, bool):
            message = rules[name].check(float(value))
            if message:
                errors[name] = message
    epsilon, floor = values.get(EPSILON), values.get("epsilon_min")
    if epsilon is not None and floor is not None and EPSILON not in errors and epsilon < floor:
        errors[EPSILON] = (f"Epsilon {epsilon:g} is below the floor {floor:g}: the next training run would "
                           "raise it to the floor. Lower the floor too, or turn exploration off.")
    return errors


def current_values() -> dict[str, Any]:
    config = AgentConfig.load()
    values = {name: getattr(config, name) for name in CONFIG_FIELDS}
    values[EPSILON] = AgentState.load().epsilon
    values[INTERVAL] = schedule.training_interval_seconds()
    return values


class InvalidConfig(ValueError):
    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def apply_changes(*, username: str, values: Mapping[str, Any]) -> list[ConfigChange]:
    """Write the values that differ from the current ones, each where it lives, and audit each."""
    unknown = set(values) - set(EDITABLE)
    if unknown:
        raise InvalidConfig({name: "not an operator setting" for name in unknown})
    before = current_values()
    errors = check({**before, **values})
    if errors:
        raise InvalidConfig(errors)
    changed = {name: value for name, value in values.items() if before[name] != value}
    with transaction.atomic():
        config_changes = {name: v for name, v in changed.items() if name in CONFIG_FIELDS}
        if config_changes:
            AgentConfig.load()
            row = AgentConfig.objects.filter(pool=current_pool())
            row.update(**config_changes, updated_at=timezone.now())
        if EPSILON in changed:
            # A single-column update: the trainer's other fields are never overwritten, and its
            # publish step notices the new value and decays from it.
            AgentState.load()
            AgentState.objects.filter(pool=current_pool()).update(epsilon=changed[EPSILON])
        if INTERVAL in changed:
            schedule.set_training_interval(int(changed[INTERVAL]), username=username)
        return ConfigChange.objects.bulk_create([
            ConfigChange(pool=current_pool(), username=username, field=name, old_value=_text(before[name]),
                         new_value=_text(value))
            for name, value in changed.items()
        ])


def record(*, username: str, field: str, old: Any, new: Any) -> ConfigChange:
    """Audit an operator action that is not a setting (a rollback, a deleted checkpoint)."""
    return ConfigChange.objects.create(
        pool=current_pool(), username=username, field=field, old_value=_text(old), new_value=_text(new)
    )


def _text(value: Any) -> str:
    return "default" if value is None else str(value)
