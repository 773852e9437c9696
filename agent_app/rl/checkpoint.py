"""Atomic, versioned agent checkpoints holding only tensors, numbers and JSON strings, loaded
with `torch.load(weights_only=True)`: loading can never run code (docs/design.md, decision 9)."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

from agent_app.rl.agent import DQNAgent
from agent_app.rl.config import DQNConfig

FORMAT_NAME = "rl-agent-service/dqn"
FORMAT_VERSION = 1
# Fields that must match for the weights to mean anything for the running service.
_ARCHITECTURE = ("state_dim", "n_actions", "hidden_sizes", "dueling", "network", "replica_features",
                 "context_features")


class CheckpointError(Exception):
    """Base class: the checkpoint cannot be used. The message says why."""


class CheckpointNotFoundError(CheckpointError):
    pass


class CheckpointCorruptError(CheckpointError):
    """Truncated or damaged file."""


class CheckpointFormatError(CheckpointError):
    """Not one of our checkpoints (foreign file, unsafe pickle, or another format version)."""


class CheckpointMismatchError(CheckpointError):
    """A valid checkpoint for another architecture or number of replicas."""


def save_checkpoint(
    agent: DQNAgent, path: str | os.PathLike[str], extra: dict[str, Any] | None = None
) -> Path:
    """Write the agent to `path` atomically: temp file beside it, fsync, rename, fsync dir.

    `extra` is free JSON-safe metadata (model version, who saved it, metrics...).
    """
    target = Path(path)
    payload: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": json.dumps(agent.config.to_dict()),
        "online": _cpu_state(agent.online.state_dict()),
        "target": _cpu_state(agent.target.state_dict()),
        "optimizer": agent.optimizer.state_dict(),
        "epsilon": float(agent.epsilon),
        "steps_done": int(agent.steps_done),
        # JSON keeps arbitrary-size ints (the PCG64 state) exact and needs no unpickling.
        "rng_state": json.dumps(agent.rng.bit_generator.state),
        "extra": json.dumps(extra or {}),
    }
    return _write_atomically(target, lambda handle: torch.save(payload, handle))


def copy_checkpoint(source: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """Copy a checkpoint file to `path` atomically, byte for byte (MODEL_PATH from a versioned file)."""
    with open(source, "rb") as origin:
        return _write_atomically(Path(path), lambda handle: shutil.copyfileobj(origin, handle))


def _write_atomically(target: Path, write: Callable[[BinaryIO], object]) -> Path:
    """Temp file beside `target`, fsync, rename, fsync the folder: a reader sees old or new, whole."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)
    return target


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw, verified payload (config, extra and rng_state decoded from JSON)."""
    source = Path(path)
    if not source.is_file():
        raise CheckpointNotFoundError(f"checkpoint {source} does not exist")
    try:
        with warnings.catch_warnings():
            # Foreign pickles trigger a protocol warning; they are refused below anyway.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            payload = torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses any global it does not know before calling it: unsafe or foreign.
        raise CheckpointFormatError(
            f"{source} is not a checkpoint of ours: it contains objects a safe load refuses ({exc})"
        ) from None
    except Exception as exc:  # zip/EOF/runtime errors from a damaged file
        raise CheckpointCorruptError(
            f"checkpoint {source} is truncated or corrupt: {exc}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise CheckpointFormatError(f"{source} is not an RL agent checkpoint of this service")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointFormatError(
            f"{source} has checkpoint format version {version!r}; this code reads {FORMAT_VERSION}"
        )
    try:
        decoded = dict(payload)
        decoded["config"] = DQNConfig.from_dict(json.loads(payload["config"]))
        decoded["extra"] = json.loads(payload["extra"])
        decoded["rng_state"] = json.loads(payload["rng_state"])
        for key in ("online", "target", "optimizer", "epsilon", "steps_done"):
            decoded[key] = payload[key]
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointCorruptError(f"checkpoint {source} is incomplete: {exc}") from None
    return decoded


def load_checkpoint(
    path: str | os.PathLike[str],
    expected_config: DQNConfig | None = None,
    device: str | None = None,
) -> DQNAgent:
    """Rebuild the agent saved at `path`.

    With `expected_config` (the service's current config) the architecture must match, and
    its hyperparameters (lr, gamma, epsilon schedule, device...) win over the saved ones;
    weights, optimizer moments, epsilon, steps_done and the RNG come from the checkpoint.
    `device` overrides both; without either, a checkpoint saved on a GPU machine loads on
    the CPU when this machine has no CUDA.
    """
    payload = read_checkpoint(path)
    saved: DQNConfig = payload["config"]
    config = saved
    if expected_config is not None:
        _check_architecture(saved, expected_config, path)
        config = expected_config
    if device is not None:
        config = config.replace(device=device)
    elif expected_config is None and config.device.startswith("cuda"):
        if not torch.cuda.is_available():
            config = config.replace(device="cpu")
    agent = DQNAgent(config)
    try:
        agent.online.load_state_dict(payload["online"])
        agent.target.load_state_dict(payload["target"])
        _load_optimizer(agent, payload["optimizer"])
        agent.epsilon = float(payload["epsilon"])
        agent.steps_done = int(payload["steps_done"])
        agent.rng.bit_generator.state = payload["rng_state"]
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointCorruptError(
            f"checkpoint {path} does not fit its own config: {exc}"
        ) from None
    return agent


def describe(config: DQNConfig) -> str:
    """'3 replicas/actions (state 10, hidden 128x128x128)' for error messages."""
    hidden = "x".join(str(w) for w in config.hidden_sizes)
    head = ", dueling" if config.dueling else ""
    return f"{config.n_actions} replicas/actions (state {config.state_dim}, hidden {hidden}{head})"


def _check_architecture(saved: DQNConfig, expected: DQNConfig, path: object) -> None:
    different = [f for f in _ARCHITECTURE if getattr(saved, f) != getattr(expected, f)]
    if different:
        raise CheckpointMismatchError(
            f"checkpoint {path} is for {describe(saved)}, the service is configured for "
            f"{describe(expected)} (differs in: {', '.join(different)})"
        )


def _load_optimizer(agent: DQNAgent, state: dict[str, Any]) -> None:
    # Keep this process's implementation flags (fused/foreach suit the current device) and
    # the configured learning rate; take the moments and step counts from the checkpoint.
    keep = [
        {k: v for k, v in group.items() if k in ("fused", "foreach", "capturable", "lr")}
        for group in agent.optimizer.param_groups
    ]
    agent.optimizer.load_state_dict(state)
    for group, kept in zip(agent.optimizer.param_groups, keep, strict=True):
        group.update(kept)


def _cpu_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().to("cpu").clone() for name, tensor in state.items()}


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not possible on every platform (e.g. Windows).
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
