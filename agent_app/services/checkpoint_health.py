"""Torch-free checks of checkpoint files (size, sha256 recorded at save time, zip CRCs), recorded on
their rows and logged once when found; used by /ready, the admin and before a rollback."""

from __future__ import annotations

import hashlib
import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.utils import timezone

from agent_app.models import Checkpoint

log = logging.getLogger(__name__)
_CHUNK = 1 << 20
# (path, size, mtime, inode, expected digests) -> verdict: a file is read again only once it changed.
_verdicts: dict[tuple[Any, ...], FileCheck] = {}
_reported_model_path: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class FileCheck:
    status: str  # Checkpoint.OK, MISSING or DAMAGED
    problem: str = ""
    by_digest: bool = False  # ok because the bytes are exactly those written (not only plausible)


def fingerprint(path: str | os.PathLike[str]) -> tuple[int, str]:
    """(size in bytes, sha256 hex) of a file, read in chunks."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def inspect_file(path: str | os.PathLike[str], *, size: int | None = None, sha256: str = "",
                 digests: frozenset[str] = frozenset()) -> FileCheck:
    """Missing, damaged or ok, without torch. With a recorded size and sha256 the bytes must be
    exactly those written; without, the file must be a zip archive (torch's format) whose CRCs hold.
    `digests`: other sha256 values that also count as intact (MODEL_PATH is a copy of a row's file).
    """
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return FileCheck(Checkpoint.MISSING, f"{path} does not exist")
    except OSError as exc:
        return FileCheck(Checkpoint.DAMAGED, f"{path} cannot be read: {exc}")
    if size is not None and stat.st_size != size:
        return FileCheck(Checkpoint.DAMAGED,
                         f"{path} is {stat.st_size} bytes, {size} were written (truncated?)")
    key = (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino, sha256, digests)
    known = _verdicts.get(key)
    if known is None:
        known = _inspect(Path(path), sha256, digests)
        if len(_verdicts) > 512:  # a handful of files are checked; never let this grow without bound
            _verdicts.clear()
        _verdicts[key] = known
    return known


def _inspect(path: Path, sha256: str, digests: frozenset[str]) -> FileCheck:
    try:
        actual = fingerprint(path)[1] if sha256 or digests else ""
    except OSError as exc:
        return FileCheck(Checkpoint.DAMAGED, f"{path} cannot be read: {exc}")
    if actual and (actual == sha256 or actual in digests):
        return FileCheck(Checkpoint.OK, by_digest=True)
    if sha256:
        return FileCheck(Checkpoint.DAMAGED, f"{path} differs from the file written (sha256 {actual[:12]}…, "
                                             f"written {sha256[:12]}…)")
    try:
        with zipfile.ZipFile(path) as archive:
            if not any(name.endswith("/data.pkl") or name == "data.pkl" for name in archive.namelist()):
                return FileCheck(Checkpoint.DAMAGED, f"{path} is a zip archive but not a torch checkpoint")
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        return FileCheck(Checkpoint.DAMAGED, f"{path} is truncated or not a checkpoint ({exc})")
    if bad is not None:
        return FileCheck(Checkpoint.DAMAGED, f"{path} is corrupt: member {bad} fails its CRC check")
    return FileCheck(Checkpoint.OK)


def record(checkpoint: Checkpoint, status: str, problem: str = "") -> bool:
    """Store a check's verdict on the row; log it when it changes (once, whichever process saw it)."""
    if checkpoint.status == status and checkpoint.problem == problem:
        return False
    changed = Checkpoint.objects.filter(pk=checkpoint.pk, status=checkpoint.status).update(
        status=status, problem=problem, checked_at=timezone.now())
    was, checkpoint.status, checkpoint.problem = checkpoint.status, status, problem
    if not changed or was == status:
        return False
    if status == Checkpoint.OK:
        log.warning("checkpoint v%s (%s) is usable again", checkpoint.version, checkpoint.path)
    else:
        log.error("checkpoint v%s is %s and cannot be rolled back to: %s",
                  checkpoint.version, status, problem)
    return True


def check_row(checkpoint: Checkpoint) -> Checkpoint:
    """Cheap check of a row's file, recorded. Only an exact digest match clears an earlier problem:
    a damaged or incompatible verdict of the worker's full check stands until it checks again.
    A process that does not see the models folder (no volume) keeps the recorded verdict."""
    if not models_folder_visible():
        return checkpoint
    found = inspect_file(checkpoint.path, size=checkpoint.size, sha256=checkpoint.sha256)
    if found.status != Checkpoint.OK:
        record(checkpoint, found.status, found.problem)
    elif checkpoint.status in (Checkpoint.MISSING, Checkpoint.DAMAGED) and found.by_digest:
        record(checkpoint, Checkpoint.OK)
    return checkpoint


def usable_or_reason(checkpoint: Checkpoint) -> str:
    """'' when the row may be offered for rollback, else why not (for the refusal message)."""
    check_row(checkpoint)
    if checkpoint.status == Checkpoint.OK:
        return ""
    return f"its file is {checkpoint.status}: {checkpoint.problem}"


def models_folder_visible() -> bool:
    """A web process without the models volume sees no files; it then reports the rows' records."""
    return Path(settings.MODEL_PATH).parent.is_dir()


def summary() -> dict[str, Any]:
    """For /ready: checkpoints usable for rollback, those that are not and why, MODEL_PATH's state."""
    rows = [check_row(row) for row in Checkpoint.objects.all()]
    visible = models_folder_visible()
    problems = [{"version": r.version, "path": r.path, "status": r.status, "problem": r.problem}
                for r in rows if r.status != Checkpoint.OK]
    model_path = _model_path_state(rows) if visible else "not visible from this process"
    return {"ok": not problems and model_path in ("ok", "missing"), "usable": len(rows) - len(problems),
            "problems": problems, "model_path": model_path}


def _model_path_state(rows: list[Checkpoint]) -> str:
    path = Path(settings.MODEL_PATH)
    found = inspect_file(path, digests=frozenset(r.sha256 for r in rows if r.sha256))
    if found.status == Checkpoint.OK:
        return "ok"
    if found.status == Checkpoint.MISSING:
        return "missing"
    key = (str(path), found.problem)
    if key not in _reported_model_path:  # once per process and per distinct problem
        _reported_model_path.add(key)
        log.error("MODEL_PATH checkpoint is damaged; start-up will use an older one: %s", found.problem)
    return f"damaged: {found.problem}"
