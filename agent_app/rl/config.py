"""Every DQN hyperparameter in one typed, validated, JSON-round-trippable dataclass, and
`routing_config(N)` for the replica-routing shape (state N + 7, N actions)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from agent_app.rl.replica_features import CONTEXT_DIM, REPLICA_DIM, observation_dim
from agent_app.rl.state import state_dim

_LOSSES = ("mse", "huber")
_NETWORKS = ("mlp", "per_replica")
PER_REPLICA_HIDDEN = (64, 64, 64)


@dataclass(frozen=True)
class DQNConfig:
    """DQN hyperparameters. Defaults are the original specification's where it has one; the rest say why."""

    state_dim: int
    n_actions: int
    # The specification's architecture: input -> 128 -> 128 -> 128 -> actions, ReLU.
    hidden_sizes: tuple[int, ...] = (128, 128, 128)
    dueling: bool = False
    # Double DQN: max over noisy Q estimates is biased upwards; latency rewards are noisy and
    # heavy-tailed, and decoupling selection (online) from evaluation (target) costs only one
    # extra forward pass of a tiny MLP per gradient step.
    double_dqn: bool = True
    # Discount. A routing decision pays its reward per request and barely moves the next state
    # (one request more on one replica among tens in flight), so the bootstrap term is mostly
    # a state-dependent baseline shared by all actions: it adds target noise, slows learning
    # and scales Q by 1/(1-gamma). The immediate reward (latency + balance) already carries
    # nearly all the signal, so gamma is kept low; 0.3 (effective horizon ~1.4 requests) keeps
    # a little credit for load that lingers on a replica. The simulator tunes it.
    gamma: float = 0.3
    # Adam step size: the net is small and with a low gamma the problem is close to supervised
    # regression of the reward, where 1e-3 (Adam's usual default) converges quickly and stably.
    lr: float = 1e-3
    batch_size: int = 64
    buffer_capacity: int = 10_000
    # Target sync period, counted in gradient steps (the specification: every 100 steps).
    target_update_interval: int = 100
    # 1.0 = hard copy every interval; < 1 = Polyak averaging applied every interval.
    tau: float = 1.0
    epsilon_start: float = 1.0
    epsilon_min: float = 0.01
    # The specification's schedule: epsilon = max(epsilon_min, epsilon * epsilon_decay) after each train step.
    epsilon_decay: float = 0.995
    # The specification's loss is MSE; "huber" is less sensitive to the -10 failure outliers.
    loss: str = "mse"
    # Gradient clipping by global norm; None disables it. 10 only clips the rare -10 spikes.
    max_grad_norm: float | None = 10.0
    prioritized: bool = False
    per_alpha: float = 0.6
    per_beta_start: float = 0.4
    # Gradient steps over which the IS exponent beta rises linearly to 1.0.
    per_beta_steps: int = 10_000
    # Added to |TD error| so no transition gets zero probability.
    per_eps: float = 1e-6
    n_step: int = 1
    # "auto" picks cuda when available, else cpu; or "cpu", "cuda", "cuda:N".
    device: str = "auto"
    # None: nondeterministic; an int makes initial weights, exploration and sampling repeatable.
    seed: int | None = None
    # "mlp": the specification's fixed network (one output per replica position). "per_replica":
    # the set network (set_network.py) over padded per-replica observations (replica_features.py);
    # then n_actions is the most replicas it can see and state_dim follows from the two dims below.
    network: str = "mlp"
    replica_features: int = 0
    context_features: int = 0

    def __post_init__(self) -> None:
        # Accept lists (from JSON) but store a tuple so the config stays hashable and frozen.
        object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))
        self._validate()

    def _validate(self) -> None:
        _positive_int("state_dim", self.state_dim)
        _positive_int("n_actions", self.n_actions)
        if not self.hidden_sizes:
            raise ValueError("hidden_sizes must name at least one layer width")
        for width in self.hidden_sizes:
            _positive_int("hidden_sizes", width)
        for name in ("dueling", "double_dqn", "prioritized"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        _in_range("gamma", self.gamma, 0.0, 1.0)
        _finite("lr", self.lr)
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        _positive_int("batch_size", self.batch_size)
        _positive_int("buffer_capacity", self.buffer_capacity)
        if self.batch_size > self.buffer_capacity:
            raise ValueError(
                f"batch_size ({self.batch_size}) must not exceed buffer_capacity "
                f"({self.buffer_capacity})"
            )
        _positive_int("target_update_interval", self.target_update_interval)
        _finite("tau", self.tau)
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau must be in (0, 1], got {self.tau}")
        _in_range("epsilon_start", self.epsilon_start, 0.0, 1.0)
        _in_range("epsilon_min", self.epsilon_min, 0.0, 1.0)
        if self.epsilon_min > self.epsilon_start:
            raise ValueError(
                f"epsilon_min ({self.epsilon_min}) must not exceed epsilon_start "
                f"({self.epsilon_start})"
            )
        _finite("epsilon_decay", self.epsilon_decay)
        if not 0.0 < self.epsilon_decay <= 1.0:
            raise ValueError(f"epsilon_decay must be in (0, 1], got {self.epsilon_decay}")
        if self.loss not in _LOSSES:
            raise ValueError(f"loss must be one of {_LOSSES}, got {self.loss!r}")
        if self.max_grad_norm is not None:
            _finite("max_grad_norm", self.max_grad_norm)
            if self.max_grad_norm <= 0:
                raise ValueError(f"max_grad_norm must be > 0 or None, got {self.max_grad_norm}")
        _in_range("per_alpha", self.per_alpha, 0.0, 1.0)
        _in_range("per_beta_start", self.per_beta_start, 0.0, 1.0)
        _positive_int("per_beta_steps", self.per_beta_steps)
        _finite("per_eps", self.per_eps)
        if self.per_eps <= 0:
            raise ValueError(f"per_eps must be > 0, got {self.per_eps}")
        _positive_int("n_step", self.n_step)
        if not isinstance(self.device, str) or not (
            self.device in ("auto", "cpu", "cuda")
            or (self.device.startswith("cuda:") and self.device[5:].isdigit())
        ):
            raise ValueError(
                f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}"
            )
        if self.network not in _NETWORKS:
            raise ValueError(f"network must be one of {_NETWORKS}, got {self.network!r}")
        if self.network == "per_replica":
            _positive_int("replica_features", self.replica_features)
            if isinstance(self.context_features, bool) or not isinstance(self.context_features, int) \
                    or self.context_features < 0:
                raise ValueError(f"context_features must be an integer >= 0, got {self.context_features!r}")
            expected = self.n_actions * (self.replica_features + 1) + self.context_features
            if self.state_dim != expected or self.dueling:
                raise ValueError(
                    f"per_replica needs state_dim = n_actions * (replica_features + 1) + "
                    f"context_features = {expected} (got {self.state_dim}) and no dueling head"
                )
        seed = self.seed
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed must be an integer or None, got {self.seed!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (tuples become lists) for checkpoints and the admin."""
        data = asdict(self)
        data["hidden_sizes"] = list(self.hidden_sizes)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DQNConfig:
        """Inverse of `to_dict`; unknown keys are an error so typos do not pass silently."""
        if not isinstance(data, dict):
            raise ValueError(f"config must be a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(unknown)}")
        return cls(**data)

    def replace(self, **changes: Any) -> DQNConfig:
        """A copy with some fields changed (validated again)."""
        return DQNConfig.from_dict({**self.to_dict(), **changes})


def routing_config(num_replicas: int, **overrides: Any) -> DQNConfig:
    """Config for routing over `num_replicas` replicas: state N + 7, one action per replica."""
    _positive_int("num_replicas", num_replicas)
    for name in ("state_dim", "n_actions"):
        if name in overrides:
            raise ValueError(f"{name} is derived from num_replicas; do not override it")
    return DQNConfig(state_dim=state_dim(num_replicas), n_actions=num_replicas, **overrides)


def per_replica_config(max_replicas: int, **overrides: Any) -> DQNConfig:
    """Config for the per-replica network over up to `max_replicas` replicas (replica_features.py layout).

    Its layers are 64 wide: the same network scores every replica, so a 32-replica decision costs 32
    passes; at 64 it stays under 50 us in NumPy (128: ~65 us) and 15 input features need no more.
    """
    _positive_int("max_replicas", max_replicas)
    overrides.setdefault("hidden_sizes", PER_REPLICA_HIDDEN)
    return DQNConfig(state_dim=observation_dim(max_replicas), n_actions=max_replicas, network="per_replica",
                     replica_features=REPLICA_DIM, context_features=CONTEXT_DIM, **overrides)


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _finite(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


def _in_range(name: str, value: Any, low: float, high: float) -> None:
    _finite(name, value)
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
