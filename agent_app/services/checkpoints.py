"""Checkpoint files beside MODEL_PATH: versioned copies, the newest at MODEL_PATH, the last K kept."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from django.conf import settings

from agent_app.metrics import checkpoint_written
from agent_app.models import AgentState, Checkpoint
from agent_app.rl.agent import DQNAgent
from agent_app.rl.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from agent_app.rl.config import DQNConfig

log = logging.getLogger(__name__)


def versioned_path(version: int) -> Path:
    path = Path(settings.MODEL_PATH)
    return path.with_name(f"{path.stem}-v{version:06d}{path.suffix}")


def agent_to_bytes(agent: DQNAgent, extra: dict | None = None) -> bytes:
    """The full trainer state in the checkpoint format (loaded back with weights_only=True)."""
    with tempfile.TemporaryDirectory() as folder:
        return save_checkpoint(agent, Path(folder) / "state.pth", extra).read_bytes()


def agent_from_bytes(blob: bytes, config: DQNConfig) -> DQNAgent:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "state.pth"
        path.write_bytes(blob)
        return load_checkpoint(path, expected_config=config)


def write_checkpoint(agent: DQNAgent, state: AgentState, avg_reward: float | None) -> Checkpoint:
    """Write version `state.model_version` atomically, point MODEL_PATH at it, prune old ones."""
    extra = {"model_version": state.model_version, "loss": state.last_loss}
    remove_stray_temp_files()
    path = save_checkpoint(agent, versioned_path(state.model_version), extra)
    save_checkpoint(agent, settings.MODEL_PATH, extra)
    checkpoint = Checkpoint.objects.create(
        version=state.model_version, steps_done=agent.steps_done, epsilon=agent.epsilon,
        loss=state.last_loss, avg_reward=avg_reward, path=str(path),
    )
    for old in Checkpoint.objects.order_by("-created_at", "-id")[settings.CHECKPOINT_KEEP :]:
        Path(old.path).unlink(missing_ok=True)
        old.delete()
    log.info("checkpoint v%s written to %s (%s steps)", state.model_version, path, agent.steps_done)
    checkpoint_written()
    return checkpoint


def remove_stray_temp_files() -> None:
    """Temp files of a write that was killed midway; safe to delete under the training lease."""
    model_path = Path(settings.MODEL_PATH)
    if model_path.parent.is_dir():
        for stray in model_path.parent.glob(f".{model_path.stem}*.tmp"):
            log.warning("removing %s, left by a checkpoint write that did not finish", stray)
            stray.unlink(missing_ok=True)


def candidate_paths() -> list[Path]:
    """MODEL_PATH first, then the versioned copies, newest first."""
    model_path = Path(settings.MODEL_PATH)
    pattern = f"{model_path.stem}-v*{model_path.suffix}"
    versioned = sorted(model_path.parent.glob(pattern), reverse=True) if model_path.parent.is_dir() else []
    return [model_path, *versioned]


def load_newest_checkpoint(config: DQNConfig) -> tuple[DQNAgent, Path] | None:
    """The newest checkpoint that loads; corrupt or foreign files are logged and skipped."""
    for path in candidate_paths():
        if not path.exists():
            continue
        try:
            return load_checkpoint(path, expected_config=config), path
        except CheckpointError as exc:
            log.error("skipping checkpoint %s: %s", path, exc)
    return None
