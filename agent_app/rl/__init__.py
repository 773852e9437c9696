"""Plain-Python DQN core for replica routing: stdlib, NumPy and torch only, never Django.
Names load lazily, so the NumPy serving path (inference, state, reward) never imports torch."""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> submodule that defines it. Imported lazily (PEP 562): a web worker that only
# needs the NumPy inference path never pays for importing torch.
_EXPORTS = {
    "agent": ["DQNAgent", "Decision", "TrainResult", "resolve_device"],
    "batching": ["validate_batch"],
    "buffers": ["Batch", "PrioritizedReplayBuffer", "ReplayBuffer", "Transition", "beta_schedule"],
    "checkpoint": [
        "FORMAT_VERSION",
        "CheckpointCorruptError",
        "CheckpointError",
        "CheckpointFormatError",
        "CheckpointMismatchError",
        "CheckpointNotFoundError",
        "load_checkpoint",
        "read_checkpoint",
        "save_checkpoint",
    ],
    "config": ["DQNConfig", "per_replica_config", "routing_config"],
    "inference": ["NumpyQNetwork", "weights_from_bytes", "weights_to_bytes"],
    "network": ["QNetwork", "export_numpy"],
    "nstep": ["NStepAccumulator", "NStepTransition"],
    "offline": ["OfflineDataError", "OfflineResult", "load_experiences", "train_offline"],
    "policy": ["least_loaded", "softmax_confidence"],
    "reward": ["DEFAULT_REWARD", "RewardConfig", "compute_reward", "compute_rewards"],
    "state": [
        "DEFAULT_SCALES",
        "StateScales",
        "build_state",
        "feature_names",
        "next_state_after",
        "normalize_state",
        "state_dim",
    ],
    "replica_features": ["ReplicaFeatures", "ReplicaStats", "encode_context", "encode_observation"],
    "set_inference": ["NumpySetQNetwork"],
    "set_network": ["SetQNetwork"],
    "sum_tree": ["SumTree"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
