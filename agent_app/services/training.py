"""Training: one trainer at a time (the lease), fed from the shared replay store, publishing
its weights so every web worker serves them within a second. Runs where torch is loaded: the
Celery tasks and `manage.py train` call it; web processes reach it through services/dispatch.py.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agent_app.metrics import training_run
from agent_app.models import AgentConfig, AgentState
from agent_app.pools import current_pool, model_path, pool_names
from agent_app.replay import get_replay_store
from agent_app.replay.base import TransitionArrays
from agent_app.rl.agent import DQNAgent
from agent_app.rl.checkpoint import CheckpointError
from agent_app.rl.config import DQNConfig, per_replica_config, routing_config
from agent_app.rl.network import weights_to_bytes
from agent_app.rl.replica_features import compact_size, is_compact, pad_compact
from agent_app.rl.state import normalize_state, state_dim
from agent_app.services import checkpoints
from agent_app.services.lease import LeaseHeld, LeaseLost, training_lease
from agent_app.services.refusals import (  # noqa: F401  (TrainingRefused: what callers here catch)
    NotEnoughExperience,
    TrainingBusy,
    TrainingRefused,
)

log = logging.getLogger(__name__)
PULL_CHUNK = 5000


def current_config(*, batch_size: int | None = None) -> DQNConfig:
    """The RL core's routing config with the operator's overrides from the admin."""
    admin = AgentConfig.load()
    overrides: dict[str, Any] = {
        "buffer_capacity": settings.REPLAY_CAPACITY,
        "target_update_interval": settings.TARGET_SYNC_STEPS,
        "device": settings.RL_DEVICE,
        "epsilon_min": admin.epsilon_min,
        "epsilon_decay": admin.epsilon_decay,
        "batch_size": batch_size or admin.batch_size or settings.TRAINING_BATCH_SIZE,
    }
    if admin.learning_rate is not None:
        overrides["lr"] = admin.learning_rate
    if admin.discount is not None:
        overrides["gamma"] = admin.discount
    overrides["batch_size"] = min(overrides["batch_size"], settings.REPLAY_CAPACITY)
    if settings.RL_NETWORK == "per_replica":
        return per_replica_config(settings.MAX_REPLICAS, **overrides)
    return routing_config(settings.NUM_REPLICAS, **overrides)


class LocalTrainer:
    """This process's copy of the agent and a mirror of the shared replay store for fast sampling."""

    def __init__(self) -> None:
        self.agent: DQNAgent | None = None
        self.version = -1
        self.cursor: str | None = None

    def prepare(self, state: AgentState, config: DQNConfig) -> DQNAgent:
        """Continue from the published state (another process may have trained since)."""
        if self.agent is None or state.model_version != self.version:
            agent = self._restore(state, config)
            if self.agent is not None and self.agent.config.state_dim == config.state_dim:
                agent.buffer = self.agent.buffer  # the mirror stays valid: same shared store
            self.agent, self.version = agent, state.model_version
        elif self.agent.config != config:
            self._apply_config(config)
        return self.agent

    def _restore(self, state: AgentState, config: DQNConfig) -> DQNAgent:
        if state.trainer_state:
            try:
                agent = checkpoints.agent_from_bytes(bytes(state.trainer_state), config)
            except CheckpointError as exc:  # e.g. RL_NETWORK changed: a new network starts
                log.warning("the published model does not fit the configured network (%s); a new one trains",
                            exc)
                return DQNAgent(config)
        else:
            found = checkpoints.load_newest_checkpoint(config)
            agent = found[0] if found else DQNAgent(config)
            if found:
                log.info("training continues from checkpoint %s (%s steps)", found[1], agent.steps_done)
        # The shared row is authoritative for epsilon and never lets steps_done go backwards.
        agent.epsilon = state.epsilon if state.model_version else agent.epsilon
        agent.steps_done = max(agent.steps_done, state.steps_done)
        return agent

    def _apply_config(self, config: DQNConfig) -> None:
        self.agent.reconfigure(config)

    def pull_experiences(self) -> int:
        """Copy experiences new since the last pull into the agent's buffer; returns how many."""
        store, pulled = get_replay_store(), 0
        while True:
            arrays, cursor = store.read_since(self.cursor, PULL_CHUNK)
            if not len(arrays):
                return pulled
            pulled += len(arrays)
            batch = network_inputs(arrays)
            if batch is not None:
                self.agent.buffer.add_batch(*batch)
            self.cursor = cursor


def network_inputs(arrays: TransitionArrays) -> tuple[np.ndarray, ...] | None:
    """(states, actions, rewards, next states) of the pulled experiences the configured network
    reads, in its input layout; others (stored for another network or cluster size) are skipped."""
    states, nexts = arrays.states, arrays.next_states
    if settings.RL_NETWORK == "per_replica":
        keep = [i for i, s in enumerate(states)
                if is_compact(s) and -s[0] <= settings.MAX_REPLICAS and len(s) == compact_size(int(-s[0]))]
        def layout(rows):
            return pad_compact(rows, settings.MAX_REPLICAS)
    else:
        n = settings.NUM_REPLICAS
        keep = [i for i, s in enumerate(states) if len(s) == state_dim(n) and s[0] >= 0]
        def layout(rows):
            return normalize_state(np.asarray(rows, dtype=np.float32), n)
    if len(keep) < len(states):
        log.info("%d of %d experiences are for another network or cluster size; skipped",
                 len(states) - len(keep), len(states))
    if not keep:
        return None
    return (layout([states[i] for i in keep]), arrays.actions[keep], arrays.rewards[keep],
            layout([nexts[i] for i in keep]))


class LocalTrainers:
    """This process's trainers, one per pool it trained lately: at most POOLS_TRAINERS_MAX, the least
    recently used dropped first (it restores from its published state when its pool trains again)."""

    def __init__(self) -> None:
        self._by_pool: OrderedDict[str, LocalTrainer] = OrderedDict()

    def current(self) -> LocalTrainer:
        """The current pool's trainer (agent_app/pools.py)."""
        pool = current_pool()
        trainer = self._by_pool.pop(pool, None) or LocalTrainer()
        self._by_pool[pool] = trainer
        while len(self._by_pool) > settings.POOLS_TRAINERS_MAX:
            self._by_pool.popitem(last=False)
        return trainer

    def clear(self) -> None:
        self._by_pool.clear()


_trainers = LocalTrainers()


def scheduled_iterations(new_experiences: int) -> int:
    """Steps for a scheduled run: in proportion to the traffic since the last one, bounded."""
    wanted = math.ceil(settings.TRAINING_STEPS_PER_EXPERIENCE * new_experiences)
    return min(max(wanted, settings.TRAINING_ITERATIONS), settings.TRAINING_MAX_ITERATIONS)


@training_run  # its duration and a dashboard history sample, once it has published
def train(*, iterations: int | None = None, batch_size: int | None = None) -> dict[str, Any]:
    """Run gradient steps under the lease and publish the result.

    With no batch_size, the admin's batch size applies, else TRAINING_BATCH_SIZE; with no
    iterations (beat's runs), `scheduled_iterations` of the experiences new since the last run.
    """
    deadline = time.monotonic() + settings.TRAINING_RUN_BUDGET_SECONDS
    trainer = _trainers.current()
    try:
        with training_lease() as lease:
            state = AgentState.load()
            config = current_config(batch_size=batch_size)
            batch_size = config.batch_size
            agent = trainer.prepare(state, config)
            new_experiences = trainer.pull_experiences()
            if iterations is None:
                iterations = scheduled_iterations(new_experiences)
            if len(agent.buffer) < batch_size:
                raise NotEnoughExperience(
                    f"the replay buffer holds {len(agent.buffer)} experiences; a batch needs {batch_size}",
                    buffer_size=len(agent.buffer), steps_done=agent.steps_done, epsilon=agent.epsilon,
                )
            epsilon_before, steps_before = agent.epsilon, agent.steps_done
            losses = []
            for _ in range(iterations):
                losses.append(agent.train_step().loss)
                lease.renew()
                if time.monotonic() > deadline:  # a busy machine: publish fewer steps, not none
                    log.info("training run stopped after %d of %d steps: its %.0f s budget is spent",
                             len(losses), iterations, settings.TRAINING_RUN_BUDGET_SECONDS)
                    break
            lease.renew(force=True)
            state = _publish(agent, epsilon_before, steps_before, losses[-1], trainer.cursor)
    except (LeaseHeld, LeaseLost) as exc:  # lost: another trainer took over; nothing was published
        raise TrainingBusy(str(exc)) from None
    return {
        "loss": losses[-1] if math.isfinite(losses[-1]) else None,
        "epsilon": agent.epsilon,
        "buffer_size": len(agent.buffer),
        "steps_done": agent.steps_done,
        "model_version": state.model_version,
        "target_syncs": state.target_syncs,
        "iterations": len(losses),
        "time_limited": len(losses) < iterations,
    }


def _publish(agent: DQNAgent, epsilon_before: float, steps_before: int, loss: float,
             trained_through: str | None = None) -> AgentState:
    trained = agent.steps_done - steps_before
    with transaction.atomic():
        state = AgentState.objects.select_for_update().get(pool=current_pool())
        if trained and state.epsilon != epsilon_before:
            # An operator set epsilon while we trained: decay their value instead of ours.
            agent.epsilon = max(agent.config.epsilon_min, state.epsilon * agent.config.epsilon_decay**trained)
        interval = agent.config.target_update_interval
        state.target_syncs += agent.steps_done // interval - steps_before // interval
        state.model_version += 1
        state.epsilon, state.steps_done = agent.epsilon, agent.steps_done
        state.last_loss = loss if math.isfinite(loss) else None
        state.device = agent.device
        state.serving_weights = weights_to_bytes(agent.export_numpy())
        state.trainer_state = checkpoints.agent_to_bytes(agent, {"model_version": state.model_version})
        state.published_at = timezone.now()
        state.trained_through = trained_through or state.trained_through
        state.save()
    _trainers.current().version = state.model_version
    every = settings.CHECKPOINT_EVERY_STEPS
    if agent.steps_done // every > steps_before // every:
        checkpoints.write_checkpoint(agent, state, _avg_reward())
    return state


def pools_to_train() -> list[str]:
    """Pools beat trains now: those whose replay store holds experience newer than their last
    published run; with TRAINING_STEPS_PER_EXPERIENCE=0 (a fixed TRAINING_ITERATIONS a run, not
    steps in proportion to traffic) every pool that holds experience."""
    fixed_cadence = settings.TRAINING_STEPS_PER_EXPERIENCE == 0
    trained = dict(AgentState.objects.values_list("pool", "trained_through"))
    due = []
    for pool in pool_names():
        newest = get_replay_store(pool).newest_cursor()
        if newest is not None and (fixed_cadence or newest != trained.get(pool)):
            due.append(pool)
    return due


def _avg_reward() -> float | None:
    rewards = get_replay_store().recent_rewards(100)
    return sum(rewards) / len(rewards) if rewards else None


def save_model() -> dict[str, Any]:
    """Write a checkpoint of the published model now."""
    try:
        with training_lease():
            state = AgentState.load()
            agent = _trainers.current().prepare(state, current_config())
            checkpoint = checkpoints.write_checkpoint(agent, state, _avg_reward())
    except LeaseHeld as exc:
        raise TrainingBusy(str(exc)) from None
    return {"path": str(model_path()), "versioned_path": checkpoint.path,
            "version": checkpoint.version, "steps_done": checkpoint.steps_done}


def checkpoint_if_due() -> dict[str, Any]:
    """Write a checkpoint when the published steps passed a CHECKPOINT_EVERY_STEPS boundary unsaved."""
    state = AgentState.load()
    every = settings.CHECKPOINT_EVERY_STEPS
    saved = checkpoints.pool_checkpoints().order_by("-steps_done").values_list("steps_done", flat=True)
    last = saved.first() or 0
    if state.model_version == 0 or state.steps_done // every <= last // every:
        return {"due": False, "steps_done": state.steps_done}
    return {"due": True, **save_model()}


def sync_target_if_due() -> dict[str, Any]:
    """Sync the target network if the published state is behind its TARGET_SYNC_STEPS schedule."""
    try:
        with training_lease():
            state = AgentState.load()
            due = state.steps_done // settings.TARGET_SYNC_STEPS
            if state.model_version == 0 or state.target_syncs >= due:
                return {"due": False, "target_syncs": state.target_syncs}
            agent = _trainers.current().prepare(state, current_config())
            agent.sync_target()
            with transaction.atomic():
                state = AgentState.objects.select_for_update().get(pool=current_pool())
                state.target_syncs = due
                state.trainer_state = checkpoints.agent_to_bytes(
                    agent, {"model_version": state.model_version}
                )
                state.save(update_fields=["target_syncs", "trainer_state"])
    except LeaseHeld as exc:
        raise TrainingBusy(str(exc)) from None
    return {"due": True, "target_syncs": due}


def restore_published_model() -> dict[str, Any]:
    """At worker start: if nothing is published yet, publish the newest checkpoint that loads."""
    try:
        with training_lease():
            checkpoints.check_on_start(current_config())  # damaged or unknown files are reported
            if AgentState.load().model_version:
                return {"restored": False, "reason": "a model is published already"}
            found = checkpoints.load_newest_checkpoint(current_config())
            if found is None:
                return {"restored": False, "reason": "no loadable checkpoint"}
            agent, path = found
            trainer = _trainers.current()
            trainer.agent, trainer.version = agent, 0
            state = _publish(agent, AgentState.load().epsilon, agent.steps_done, math.nan)
            log.info("pool %s: published checkpoint %s as model v%s", current_pool(), path,
                     state.model_version)
            return {"restored": True, "path": str(path), "steps_done": agent.steps_done}
    except LeaseHeld:
        return {"restored": False, "reason": "another process holds the training lease"}


def warm_up() -> None:
    """One tiny training step, so torch's lazily imported modules load before any task runs.

    A time limit that interrupts a first-use import leaves a half-initialised module behind
    and every later task in that process fails; doing it at process start avoids that.
    """
    config = routing_config(settings.NUM_REPLICAS, batch_size=2, hidden_sizes=(8,), device=settings.RL_DEVICE)
    agent = DQNAgent(config)
    zeros = [0.0] * config.state_dim
    for action in (0, 1):
        agent.observe(zeros, action, 0.0, zeros)
    agent.train_step()
    checkpoints.agent_to_bytes(agent)
