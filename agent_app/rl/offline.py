"""Train from logged experiences alone: read JSONL/CSV rows (validated, errors name the line),
fill the agent's buffer, take K gradient steps."""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from agent_app.rl.agent import DQNAgent
from agent_app.rl.reward import DEFAULT_REWARD, RewardConfig, compute_reward
from agent_app.rl.state import (
    DEFAULT_SCALES,
    EXTRA_FEATURES,
    StateScales,
    next_state_after,
    normalize_state,
)


class OfflineDataError(ValueError):
    """A logged row is invalid; the message names the file, line and field."""


class OfflineData(NamedTuple):
    states: np.ndarray  # (R, state_dim) raw, as logged
    actions: np.ndarray  # (R,) int64
    rewards: np.ndarray  # (R,) float32
    next_states: np.ndarray  # (R, state_dim)
    dones: np.ndarray  # (R,) float32


class OfflineResult(NamedTuple):
    rows: int
    steps: int
    losses: np.ndarray  # one per gradient step


def load_experiences(
    path: str | os.PathLike[str],
    state_dim: int,
    n_actions: int,
    reward_config: RewardConfig = DEFAULT_REWARD,
) -> OfflineData:
    """Read and validate every row of a JSON-lines or .csv file.

    A row is either a transition (state, action, reward, next_state[, done]) or the original
    `record_experience` body (state, action, latency_ms, success, replica_loads[, next_state]):
    its reward comes from `reward.compute_reward` and, without next_state, its next state from
    `state.next_state_after`. In CSV, list cells hold JSON arrays ("[5, 3, 7]").
    """
    source = Path(path)
    if not source.is_file():
        raise OfflineDataError(f"{source}: file not found")
    rows = _csv_rows(source) if source.suffix.lower() == ".csv" else _jsonl_rows(source)
    states, actions, rewards, next_states, dones = [], [], [], [], []
    for line, row in rows:
        try:
            s, a, r, s2, d = _parse_row(row, state_dim, n_actions, reward_config)
        except (KeyError, TypeError, ValueError) as exc:
            message = f"missing field {exc.args[0]!r}" if isinstance(exc, KeyError) else str(exc)
            raise OfflineDataError(f"{source}:{line}: {message}") from None
        states.append(s)
        actions.append(a)
        rewards.append(r)
        next_states.append(s2)
        dones.append(d)
    if not states:
        raise OfflineDataError(f"{source}: no experiences found")
    return OfflineData(
        np.asarray(states, dtype=np.float32),
        np.asarray(actions, dtype=np.int64),
        np.asarray(rewards, dtype=np.float32),
        np.asarray(next_states, dtype=np.float32),
        np.asarray(dones, dtype=np.float32),
    )


def train_offline(
    agent: DQNAgent,
    path: str | os.PathLike[str],
    steps: int,
    *,
    scales: StateScales | None = DEFAULT_SCALES,
    reward_config: RewardConfig = DEFAULT_REWARD,
    progress: Callable[[int, float], None] | None = None,
    progress_every: int = 100,
) -> OfflineResult:
    """Load `path` into the agent's buffer and run `steps` gradient steps.

    Logged states are raw; with `scales` (default) they are normalised for N = state_dim - 7
    replicas, as the live service does. Pass scales=None for files that hold network inputs.
    """
    c = agent.config
    data = load_experiences(path, c.state_dim, c.n_actions, reward_config)
    states, next_states = data.states, data.next_states
    if scales is not None:
        replicas = c.state_dim - len(EXTRA_FEATURES)
        if replicas < 1:
            raise ValueError(f"state_dim {c.state_dim} is not a routing state; pass scales=None")
        states = normalize_state(states, replicas, scales)
        next_states = normalize_state(next_states, replicas, scales)
    agent.buffer.add_batch(states, data.actions, data.rewards, next_states, data.dones)
    losses = np.empty(steps, dtype=np.float64)
    done_steps = 0
    for step in range(steps):
        result = agent.train_step()
        if result is None:
            break  # fewer rows than one batch: nothing to learn from
        losses[step] = result.loss
        done_steps = step + 1
        if progress is not None and (done_steps % progress_every == 0 or done_steps == steps):
            progress(done_steps, result.loss)
    return OfflineResult(len(data.actions), done_steps, losses[:done_steps])


def _parse_row(
    row: dict[str, Any], state_dim: int, n_actions: int, reward_config: RewardConfig
) -> tuple[list[float], int, float, list[float], float]:
    state = _vector(row["state"], "state", state_dim)
    action = row["action"]
    if isinstance(action, str):
        action = action.strip()
        action = int(action) if action.lstrip("-").isdigit() else action
    if isinstance(action, bool) or not isinstance(action, int) or not 0 <= action < n_actions:
        raise ValueError(f"'action' must be an integer in [0, {n_actions}), got {action!r}")
    done = _bool(row.get("done", False), "done")
    if _present(row, "reward"):
        reward = _number(row["reward"], "reward")
        next_state = _vector(row["next_state"], "next_state", state_dim)
    else:  # the original specification's record_experience shape
        latency = _number(row["latency_ms"], "latency_ms")
        if latency < 0:
            raise ValueError(f"'latency_ms' must be >= 0, got {latency}")
        success = _bool(row["success"], "success")
        loads = _vector(row["replica_loads"], "replica_loads", state_dim - len(EXTRA_FEATURES))
        reward = compute_reward(latency, success, loads, reward_config)
        if _present(row, "next_state"):
            next_state = _vector(row["next_state"], "next_state", state_dim)
        else:
            next_state = next_state_after(state, loads)
    return state, action, reward, next_state, float(done)


def _present(row: dict[str, Any], key: str) -> bool:
    return row.get(key) not in (None, "")


def _number(value: Any, name: str) -> float:
    if isinstance(value, str):
        value = value.strip()
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"{name!r} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name!r} must be a finite number, got {value!r}")
    return float(value)


def _vector(value: Any, name: str, length: int) -> list[float]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"{name!r} must be a JSON array of numbers, got {value!r}") from None
    if not isinstance(value, list) or len(value) != length:
        got = len(value) if isinstance(value, list) else type(value).__name__
        raise ValueError(f"{name!r} must be a list of {length} numbers, got {got}")
    return [_number(item, name) for item in value]


def _bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise ValueError(f"{name!r} must be true/false, got {value!r}")


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                raise OfflineDataError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise OfflineDataError(f"{path}:{number}: expected a JSON object")
            yield number, row


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            if None in row:  # more cells than header columns
                raise OfflineDataError(f"{path}:{reader.line_num}: more cells than columns")
            yield reader.line_num, row
