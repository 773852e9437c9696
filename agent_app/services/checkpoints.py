"""Checkpoint files beside MODEL_PATH: one row per versioned file, MODEL_PATH a copy of the newest,
pruned by file to the newest CHECKPOINT_KEEP that load (docs/design.md, decision 9). Per pool: the
current pool's rows, in its folder (agent_app/pools.model_path). Needs torch: worker side."""

from __future__ import annotations

import itertools
import logging
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from agent_app.metrics import checkpoint_written
from agent_app.models import AgentState, Checkpoint
from agent_app.pools import current_pool, model_path
from agent_app.rl.agent import DQNAgent
from agent_app.rl.checkpoint import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    copy_checkpoint,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from agent_app.rl.config import DQNConfig
from agent_app.services import checkpoint_health

log = logging.getLogger(__name__)


def versioned_path(version: int, copy: int = 1) -> Path:
    """rl_agent-v000007.pth; a second checkpoint numbered 7 (after a database reset) is -v000007-2."""
    path = model_path()
    tail = "" if copy == 1 else f"-{copy}"
    return path.with_name(f"{path.stem}-v{version:06d}{tail}{path.suffix}")


def pool_checkpoints() -> QuerySet[Checkpoint]:
    return Checkpoint.objects.filter(pool=current_pool())


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
    """Write version `state.model_version` atomically, check it reads back, copy it to MODEL_PATH and
    prune. Saving again at an unchanged version rewrites that version's file and updates its row."""
    extra = {"model_version": state.model_version, "loss": state.last_loss}
    remove_stray_temp_files()
    path = save_checkpoint(agent, _path_for(state.model_version, agent.steps_done), extra)
    size, digest = checkpoint_health.fingerprint(path)
    checkpoint, _ = Checkpoint.objects.update_or_create(path=str(path), defaults={
        "pool": current_pool(), "version": state.model_version, "steps_done": agent.steps_done,
        "epsilon": agent.epsilon,
        "loss": state.last_loss, "avg_reward": avg_reward, "size": size, "sha256": digest,
        "status": Checkpoint.OK, "problem": "", "checked_at": timezone.now(),
    })
    if verify(checkpoint, agent.config, full=True) != Checkpoint.OK:
        prune(agent.config)  # keeps MODEL_PATH and the older good checkpoints
        raise CheckpointCorruptError(f"checkpoint v{checkpoint.version} written to {path} does not read "
                                     f"back ({checkpoint.problem}); MODEL_PATH was left as it was")
    copy_checkpoint(path, model_path())
    prune(agent.config)
    log.info("checkpoint v%s written to %s (%s steps)", state.model_version, path, agent.steps_done)
    checkpoint_written()
    return checkpoint


def _path_for(version: int, steps_done: int) -> Path:
    """This version's file, unless another checkpoint holds that name: never overwrite one."""
    for copy in itertools.count(1):
        path = versioned_path(version, copy)
        row = Checkpoint.objects.filter(path=str(path)).first()
        if row is not None and (row.version, row.steps_done) == (version, steps_done):
            return path  # saved again with no training in between: the same checkpoint
        if row is None and not path.exists():
            return path
    raise AssertionError("unreachable")


def verify(checkpoint: Checkpoint, config: DQNConfig, *, full: bool = False) -> str:
    """Check a row's file and record the verdict. Bytes identical to those written (and read back
    then) need no torch load unless `full`; a load says damaged, incompatible or ok."""
    found = checkpoint_health.inspect_file(checkpoint.path, size=checkpoint.size, sha256=checkpoint.sha256)
    if found.status != Checkpoint.OK:
        checkpoint_health.record(checkpoint, found.status, found.problem)
        return checkpoint.status
    if found.by_digest and checkpoint.status == Checkpoint.OK and not full:
        return Checkpoint.OK
    status, problem = load_verdict(Path(checkpoint.path), config)
    if status != Checkpoint.DAMAGED and not checkpoint.sha256:  # a row from before sizes were recorded
        checkpoint.size, checkpoint.sha256 = checkpoint_health.fingerprint(checkpoint.path)
        Checkpoint.objects.filter(pk=checkpoint.pk).update(size=checkpoint.size, sha256=checkpoint.sha256)
    checkpoint_health.record(checkpoint, status, problem)
    return checkpoint.status


def load_verdict(path: Path, config: DQNConfig) -> tuple[str, str]:
    """(status, problem) of loading `path` the way a rollback would (on the CPU: only a check)."""
    try:
        load_checkpoint(path, expected_config=config, device="cpu")
    except CheckpointError as exc:
        return verdict_of(exc)
    return Checkpoint.OK, ""


def verdict_of(exc: CheckpointError) -> tuple[str, str]:
    """The row status and problem a load failure means."""
    if isinstance(exc, CheckpointNotFoundError):
        return Checkpoint.MISSING, str(exc)
    if isinstance(exc, CheckpointMismatchError):
        return Checkpoint.INCOMPATIBLE, str(exc)
    return Checkpoint.DAMAGED, str(exc)


def prune(config: DQNConfig) -> list[Checkpoint]:
    """Keep the newest CHECKPOINT_KEEP checkpoints that load, and the unusable ones among them
    (marked, for the operator to see); delete older rows and their files, but never a file that a
    kept row or MODEL_PATH holds. Returns the rows deleted."""
    newest_copy = model_path()
    model_digest = checkpoint_health.fingerprint(newest_copy)[1] if newest_copy.is_file() else ""
    kept, dropped, usable = [], [], 0
    for row in pool_checkpoints().order_by("-created_at", "-id"):
        if usable < settings.CHECKPOINT_KEEP:
            kept.append(row)
            usable += verify(row, config) == Checkpoint.OK
        elif model_digest and _holds(row, model_digest):
            kept.append(row)  # MODEL_PATH is a copy of it: what a fresh start loads first
        else:
            dropped.append(row)
    protected = {newest_copy.resolve()} | {Path(row.path).resolve() for row in kept}
    for row in dropped:
        row.delete()
        if Path(row.path).resolve() not in protected:
            Path(row.path).unlink(missing_ok=True)
        log.info("pruned checkpoint v%s (%s, %s)", row.version, row.path, row.get_status_display())
    return dropped


def _holds(row: Checkpoint, digest: str) -> bool:
    if row.sha256:
        return row.sha256 == digest
    return Path(row.path).is_file() and checkpoint_health.fingerprint(row.path)[1] == digest


def check_on_start(config: DQNConfig) -> None:
    """At worker start: remove temp files of killed writes, load every row's file, list versioned
    files no row knows (the database was reset) so they can be rolled back to, report MODEL_PATH."""
    remove_stray_temp_files()
    rows = list(pool_checkpoints())
    for row in rows:
        verify(row, config, full=True)
    known = {row.path for row in rows}
    for path in versioned_files():
        if str(path) not in known:
            _adopt(path, config)
    checkpoint_health.summary()  # logs a damaged MODEL_PATH


def _adopt(path: Path, config: DQNConfig) -> Checkpoint:
    match = re.search(r"-v(\d+)(?:-\d+)?$", path.stem)
    fields = {"version": int(match.group(1)) if match else 0, "steps_done": 0, "epsilon": 0.0}
    try:
        payload = read_checkpoint(path)
        fields.update(steps_done=int(payload["steps_done"]), epsilon=float(payload["epsilon"]),
                      loss=payload["extra"].get("loss"))
    except CheckpointError:
        pass  # load_verdict says why
    status, problem = load_verdict(path, config)
    if status != Checkpoint.DAMAGED:
        fields["size"], fields["sha256"] = checkpoint_health.fingerprint(path)
    row = Checkpoint.objects.create(pool=current_pool(), path=str(path), status=status, problem=problem,
                                    checked_at=timezone.now(), **fields)
    written = datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)
    Checkpoint.objects.filter(pk=row.pk).update(created_at=written)  # ordered by when it was written
    log.warning("checkpoint file %s had no database row (written before the database was reset?); "
                "listed as v%s, %s", path, row.version, row.get_status_display())
    return row


def remove_stray_temp_files() -> None:
    """Temp files of a write that was killed midway; safe to delete under the training lease."""
    newest_copy = model_path()
    if newest_copy.parent.is_dir():
        for stray in newest_copy.parent.glob(f".{newest_copy.stem}*.tmp"):
            log.warning("removing %s, left by a checkpoint write that did not finish", stray)
            stray.unlink(missing_ok=True)


def versioned_files() -> list[Path]:
    """The versioned copies beside MODEL_PATH, most recently written first."""
    newest_copy = model_path()
    if not newest_copy.parent.is_dir():
        return []
    files = [p for p in newest_copy.parent.glob(f"{newest_copy.stem}-v*{newest_copy.suffix}") if p.is_file()]
    return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name), reverse=True)


def candidate_paths() -> list[Path]:
    """MODEL_PATH first, then the versioned copies, most recently written first."""
    return [model_path(), *versioned_files()]


def load_newest_checkpoint(config: DQNConfig) -> tuple[DQNAgent, Path] | None:
    """The newest checkpoint that loads; damaged or foreign files are logged, marked and skipped."""
    for path in candidate_paths():
        if not path.exists():
            continue
        try:
            return load_checkpoint(path, expected_config=config), path
        except CheckpointError as exc:
            log.error("skipping checkpoint %s: %s", path, exc)
            row = Checkpoint.objects.filter(path=str(path)).first()
            if row is not None:
                checkpoint_health.record(row, *verdict_of(exc))
    return None
