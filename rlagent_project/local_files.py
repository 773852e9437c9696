"""Local files the embedded mode needs, made when a process starts (AgentAppConfig.ready), never
when settings are imported: the generated secret key, the SQLite file's folder, the broker's folders.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured


def prepare(settings: Any) -> None:
    """Make what this process's settings need on disk; the secret key is set from its file."""
    if settings.SECRET_KEY_FILE is not None:
        settings.SECRET_KEY = embedded_secret_key(settings.SECRET_KEY_FILE)
    for database in settings.DATABASES.values():
        if database["ENGINE"].endswith("sqlite3") and _is_file(str(database["NAME"])):
            Path(database["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    if settings.CELERY_BROKER_URL.startswith("filesystem"):
        # kombu lists the incoming folder on every poll and writes to the outgoing one.
        options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
        for key in ("data_folder_in", "data_folder_out", "control_folder"):
            Path(options[key]).mkdir(parents=True, exist_ok=True)


def embedded_secret_key(path: Path) -> str:
    """The key kept in `path`, generated first if there is none.

    Web, worker and beat may start at the same moment: each writes a candidate to a file of its
    own and links it to `path`, which only the first link creates, so all of them read one key.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, candidate = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
        try:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(50))
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(candidate, path)
            except FileExistsError:
                pass  # another process was first: its key is everyone's
        finally:
            os.unlink(candidate)
    key = path.read_text().strip()
    if not key:
        raise ImproperlyConfigured(f"{path} is empty: delete it to generate a new key, or set SECRET_KEY")
    return key


def _is_file(name: str) -> bool:
    return name != ":memory:" and not name.startswith("file:")
