"""The DQN agent: epsilon-greedy decisions and one readable, fast gradient step. Generic over
sizes; it sees states exactly as given (for routing, normalise with `state.normalize_state`)."""

from __future__ import annotations

import copy
from collections.abc import Hashable, Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from agent_app.rl.batching import as_tensors, validate_batch
from agent_app.rl.buffers import (
    Batch,
    PrioritizedReplayBuffer,
    ReplayBuffer,
    Transition,
    beta_schedule,
)
from agent_app.rl.config import DQNConfig
from agent_app.rl.inference import NumpyQNetwork
from agent_app.rl.network import FlatParameters, QNetwork, export_numpy, make_adam
from agent_app.rl.nstep import NStepAccumulator
from agent_app.rl.policy import softmax_confidence
from agent_app.rl.set_inference import NumpySetQNetwork
from agent_app.rl.set_network import SetQNetwork, export_set_numpy


class Decision(NamedTuple):
    """What `act` decided. confidence is the softmax probability of the chosen action over
    the Q-values (temperature 1): 1/n_actions when all actions look equal, near 1 when one
    leads by a few reward units. A ranking signal for dashboards, not a calibrated probability."""

    action: int
    explored: bool
    q_values: np.ndarray
    confidence: float
    epsilon: float


class TrainResult(NamedTuple):
    loss: float
    td_errors: np.ndarray
    grad_norm: float  # before clipping
    epsilon: float
    steps_done: int
    target_updated: bool


def resolve_device(name: str) -> torch.device:
    """Map "auto" to cuda if available, else cpu; asking for cuda without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


class DQNAgent:
    """Online and target Q-networks, Adam, a replay buffer, and the epsilon schedule."""

    def __init__(self, config: DQNConfig) -> None:
        self.config = config
        self._device = resolve_device(config.device)
        self.device = str(self._device)
        self.rng = np.random.default_rng(config.seed)
        # Seed the weights without disturbing the caller's global torch RNG.
        with torch.random.fork_rng(devices=[]):
            if config.seed is not None:
                torch.manual_seed(config.seed)
            self.online = self._new_network()
        self.target = copy.deepcopy(self.online)
        self.target.requires_grad_(False)
        # Flat buffers make zero_grad, clipping and Adam one kernel each (see network.py).
        self.flat = FlatParameters(self.online)
        self.optimizer = make_adam([self.flat.param], config.lr)
        if config.prioritized:
            self.buffer: ReplayBuffer = PrioritizedReplayBuffer(
                config.buffer_capacity,
                config.state_dim,
                alpha=config.per_alpha,
                beta_start=config.per_beta_start,
                beta_steps=config.per_beta_steps,
                eps=config.per_eps,
            )
        else:
            self.buffer = ReplayBuffer(config.buffer_capacity, config.state_dim)
        self.nstep = NStepAccumulator(config.n_step, config.gamma) if config.n_step > 1 else None
        self.epsilon = config.epsilon_start
        self.steps_done = 0
        self.last_grad_norm = 0.0

    def _new_network(self) -> torch.nn.Module:
        c = self.config
        if c.network == "per_replica":
            return SetQNetwork(c.replica_features, c.context_features, c.n_actions,
                               c.hidden_sizes).to(self._device)
        return QNetwork(c.state_dim, c.n_actions, c.hidden_sizes, c.dueling).to(self._device)

    def reconfigure(self, config: DQNConfig) -> None:
        """Apply edited hyperparameters (lr, gamma, schedules, loss, n_step...) in place.

        Everything is read from `self.config` at each step and stored n-step rows keep k, not
        gamma^k, so changes take effect at the next step. Fields that fix the shape of the
        networks or the buffer cannot change here: that needs a new agent (or
        `load_checkpoint(path, expected_config=...)`).
        """
        fixed = ("state_dim", "n_actions", "hidden_sizes", "dueling", "buffer_capacity")
        fixed += ("prioritized", "device", "network", "replica_features", "context_features")
        changed = [name for name in fixed if getattr(config, name) != getattr(self.config, name)]
        if changed:
            raise ValueError(f"{', '.join(changed)} cannot change on a live agent; build a new one")
        for group in self.optimizer.param_groups:
            group["lr"] = config.lr
        if isinstance(self.buffer, PrioritizedReplayBuffer):
            self.buffer.alpha, self.buffer.eps = config.per_alpha, config.per_eps
        if config.n_step != self.config.n_step or config.gamma != self.config.gamma:
            # Pending partial windows were summed with the old settings: store them as they are.
            for t in self.nstep.flush() if self.nstep is not None else []:
                self.buffer.add(t.state, t.action, t.reward, t.next_state, t.done, t.steps)
            self.nstep = (
                NStepAccumulator(config.n_step, config.gamma) if config.n_step > 1 else None
            )
        self.config = config

    # --- acting -------------------------------------------------------------------------

    def q_values(self, states: np.ndarray | Sequence[float]) -> np.ndarray:
        """Online Q-values for one state (n_actions,) or a batch (B, n_actions)."""
        x = np.asarray(states, dtype=np.float32)
        if x.shape[-1] != self.config.state_dim or x.ndim not in (1, 2):
            raise ValueError(f"state must have {self.config.state_dim} values, got {x.shape}")
        with torch.no_grad():
            q = self.online(torch.from_numpy(np.atleast_2d(x)).to(self._device))
        q_np = q.cpu().numpy()
        return q_np[0] if x.ndim == 1 else q_np

    def act(self, state: np.ndarray | Sequence[float], explore: bool = True) -> Decision:
        """Epsilon-greedy when `explore`, else greedy."""
        q = self.q_values(state)
        explored = bool(explore and self.rng.random() < self.epsilon)
        if not explored:
            action = int(np.argmax(q))
        elif self.config.network == "per_replica":
            # Explore among the replicas present (the mask follows the padded replica rows).
            c = self.config
            start = c.n_actions * c.replica_features
            mask = np.asarray(state, dtype=np.float32)[start : start + c.n_actions]
            action = int(self.rng.choice(np.flatnonzero(mask > 0.5)))
        else:
            action = int(self.rng.integers(self.config.n_actions))
        return Decision(action, explored, q, softmax_confidence(q, action), self.epsilon)

    def greedy(self, state: np.ndarray | Sequence[float]) -> int:
        """The highest-Q action, never exploring."""
        return int(np.argmax(self.q_values(state)))

    # --- experience ---------------------------------------------------------------------

    def observe(
        self,
        state: np.ndarray | Sequence[float],
        action: int,
        reward: float,
        next_state: np.ndarray | Sequence[float],
        done: bool = False,
        *,
        stream_key: Hashable = "default",
        seq: int | None = None,
    ) -> int:
        """Store a transition (through the n-step accumulator when n_step > 1).

        Returns how many transitions reached the buffer (n-step ones may wait for successors).
        """
        if not 0 <= int(action) < self.config.n_actions:
            raise ValueError(f"action must be in [0, {self.config.n_actions}), got {action}")
        if self.nstep is None:
            self.buffer.add(state, action, reward, next_state, done)
            return 1
        ready = self.nstep.add(Transition(state, action, reward, next_state, done), stream_key, seq)
        for t in ready:
            self.buffer.add(t.state, t.action, t.reward, t.next_state, t.done, t.steps)
        return len(ready)

    # --- learning -----------------------------------------------------------------------

    def train_step(self) -> TrainResult | None:
        """One gradient step on a sampled batch; None while the buffer holds < batch_size."""
        if len(self.buffer) < self.config.batch_size:
            return None
        if isinstance(self.buffer, PrioritizedReplayBuffer):
            beta = beta_schedule(
                self.steps_done, self.config.per_beta_start, self.config.per_beta_steps
            )
            batch = self.buffer.sample(self.config.batch_size, self.rng, beta)
        else:
            batch = self.buffer.sample(self.config.batch_size, self.rng)
        loss, td_errors, synced = self._learn(batch)
        if isinstance(self.buffer, PrioritizedReplayBuffer):
            self.buffer.update_priorities(batch.indices, td_errors)
        return TrainResult(
            loss, td_errors, self.last_grad_norm, self.epsilon, self.steps_done, synced
        )

    def train_on_batch(self, batch: Batch, validate: bool = True) -> tuple[float, np.ndarray]:
        """One gradient step on externally provided arrays (e.g. sampled from Redis/Postgres).

        Same schedule as `train_step`: epsilon decays, steps_done counts, the target syncs.
        Returns (loss, td_errors); |td_errors| are the new priorities for an external PER.
        """
        if validate:
            batch = validate_batch(batch, self.config.state_dim, self.config.n_actions)
        loss, td_errors, _ = self._learn(batch)
        return loss, td_errors

    def _learn(self, batch: Batch) -> tuple[float, np.ndarray, bool]:
        c = self.config
        s, a, r, s2, d, k, w = as_tensors(batch, self._device)
        q = self.online(s).gather(1, a.unsqueeze(1)).squeeze(1)
        with torch.no_grad():
            if c.gamma == 0.0:
                # Pure bandit (every discount gamma^k is 0): no bootstrap, skip two forwards.
                target = r
            else:
                # The per-replica net scores absent replica slots far below any reward, so both
                # maxima below range over the replicas present only.
                if c.double_dqn:
                    # Online net picks a', target net evaluates it (van Hasselt et al. 2016).
                    next_a = self.online(s2).argmax(dim=1, keepdim=True)
                    next_q = self.target(s2).gather(1, next_a).squeeze(1)
                else:
                    next_q = self.target(s2).amax(dim=1)
                # gamma^k from the current gamma (k = 1 unless the rows are n-step).
                discount = c.gamma if k is None else torch.pow(c.gamma, k)
                target = r + discount * (1.0 - d) * next_q
        td = q - target
        if c.loss == "huber":
            per_sample = F.huber_loss(q, target, reduction="none", delta=1.0)
        else:
            per_sample = td.square()
        loss = per_sample.mean() if w is None else (per_sample * w).mean()
        self.flat.zero_grad()
        loss.backward()
        if c.max_grad_norm is not None:
            grad_norm = self.flat.clip_grad_norm(c.max_grad_norm)
        else:
            grad_norm = self.flat.grad_norm()
        self.optimizer.step()
        # One device->host transfer for everything the caller needs (a single sync on CUDA).
        host = torch.cat([loss.detach().reshape(1), grad_norm.reshape(1), td.detach()]).cpu()
        values = host.numpy()
        self.last_grad_norm = float(values[1])
        self.steps_done += 1
        self.epsilon = max(c.epsilon_min, self.epsilon * c.epsilon_decay)
        synced = self.steps_done % c.target_update_interval == 0
        if synced:
            self.sync_target()
        return float(values[0]), values[2:].copy(), synced

    def sync_target(self) -> None:
        """Hard copy (tau = 1) or Polyak step target <- tau * online + (1 - tau) * target."""
        with torch.no_grad():
            for target_param, param in zip(
                self.target.parameters(), self.online.parameters(), strict=True
            ):
                if self.config.tau >= 1.0:
                    target_param.copy_(param)
                else:
                    target_param.lerp_(param, self.config.tau)

    # --- export -------------------------------------------------------------------------

    def export_numpy(self) -> dict[str, np.ndarray]:
        """Online weights as named float32 arrays (for NumpyQNetwork / weights_to_bytes)."""
        if self.config.network == "per_replica":
            return export_set_numpy(self.online)
        return export_numpy(self.online)

    def numpy_network(self) -> NumpyQNetwork | NumpySetQNetwork:
        """A NumPy twin of the current online network."""
        if self.config.network == "per_replica":
            return NumpySetQNetwork(self.export_numpy())
        return NumpyQNetwork(self.export_numpy())

    def stats(self) -> dict[str, float | int | str]:
        return {
            "epsilon": self.epsilon,
            "steps_done": self.steps_done,
            "buffer_size": len(self.buffer),
            "device": self.device,
        }
