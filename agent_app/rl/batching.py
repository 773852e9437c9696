"""Validation of training batches sampled outside the agent (Redis/Postgres; docs/design.md, decision 8)
and the zero-copy conversion of batches to tensors."""

from __future__ import annotations

import numpy as np
import torch

from agent_app.rl.buffers import Batch

_CPU = torch.device("cpu")


def validate_batch(batch: Batch, state_dim: int, n_actions: int) -> Batch:
    """Return `batch` with canonical dtypes and contiguous arrays, or raise ValueError.

    Checks shapes against (state_dim, n_actions), finiteness of every float field, actions
    in range, dones in {0, 1}, steps whole numbers >= 1 and weights >= 0.
    """
    states = _floats("states", batch.states)
    if states.ndim != 2 or states.shape[1] != state_dim:
        raise ValueError(f"states must have shape (B, {state_dim}), got {states.shape}")
    rows = states.shape[0]
    if rows == 0:
        raise ValueError("batch is empty")
    next_states = _floats("next_states", batch.next_states)
    if next_states.shape != states.shape:
        raise ValueError(f"next_states must have shape {states.shape}, got {next_states.shape}")
    actions_raw = np.asarray(batch.actions)
    if actions_raw.shape != (rows,):
        raise ValueError(f"actions must have shape ({rows},), got {actions_raw.shape}")
    if actions_raw.dtype.kind not in "iu" and not (
        actions_raw.dtype.kind == "f" and np.all(np.mod(actions_raw, 1) == 0)
    ):
        raise ValueError("actions must be integers")
    actions = np.ascontiguousarray(actions_raw, dtype=np.int64)
    if actions.min() < 0 or actions.max() >= n_actions:
        raise ValueError(
            f"actions must be in [0, {n_actions}), got {actions.min()}..{actions.max()}"
        )
    rewards = _vector("rewards", batch.rewards, rows)
    dones = _vector("dones", batch.dones, rows)
    if not np.isin(dones, (0.0, 1.0)).all():
        raise ValueError("dones must be 0/1 (or booleans)")
    steps = None
    if batch.steps is not None:
        steps = _vector("steps", batch.steps, rows)
        if (steps < 1).any() or (np.mod(steps, 1) != 0).any():
            raise ValueError("steps must be whole numbers >= 1")
    weights = None
    if batch.weights is not None:
        weights = _vector("weights", batch.weights, rows)
        if (weights < 0).any():
            raise ValueError("weights must be >= 0")
    return Batch(states, actions, rewards, next_states, dones, steps, weights, batch.indices)


def as_tensors(
    batch: Batch, device: torch.device
) -> tuple[
    torch.Tensor,
    torch.Tensor,
    torch.Tensor,
    torch.Tensor,
    torch.Tensor,
    torch.Tensor | None,
    torch.Tensor | None,
]:
    """(states, actions, rewards, next_states, dones, steps, weights) as tensors.

    On CPU `torch.from_numpy` shares memory with the sampled arrays: no copy at all.
    """
    if device == _CPU:
        convert = torch.from_numpy
    else:

        def convert(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(array).to(device, non_blocking=True)

    return (
        convert(np.ascontiguousarray(batch.states, dtype=np.float32)),
        convert(np.ascontiguousarray(batch.actions, dtype=np.int64)),
        convert(np.ascontiguousarray(batch.rewards, dtype=np.float32)),
        convert(np.ascontiguousarray(batch.next_states, dtype=np.float32)),
        convert(np.ascontiguousarray(batch.dones, dtype=np.float32)),
        None
        if batch.steps is None
        else convert(np.ascontiguousarray(batch.steps, dtype=np.float32)),
        None
        if batch.weights is None
        else convert(np.ascontiguousarray(batch.weights, dtype=np.float32)),
    )


def _floats(name: str, values: np.ndarray) -> np.ndarray:
    try:
        array = np.ascontiguousarray(values, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from None
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinity")
    return array


def _vector(name: str, values: np.ndarray, rows: int) -> np.ndarray:
    array = _floats(name, values)
    if array.shape != (rows,):
        raise ValueError(f"{name} must have shape ({rows},), got {array.shape}")
    return array
