"""The embedded mode's Celery result backend: files under DATA_DIR, as the broker is, no server."""

import os
import uuid
from pathlib import Path

from celery.backends.filesystem import FilesystemBackend
from kombu.utils.encoding import ensure_bytes


class FolderResultBackend(FilesystemBackend):
    """Celery's file-system result backend that makes its folder when first used (web, worker and
    beat all open it) and renames each result into place, so a reader never sees half of one."""

    def __init__(self, url: str | None = None, *args, **kwargs) -> None:
        Path(self._find_path(url)).mkdir(parents=True, exist_ok=True)
        super().__init__(url, *args, **kwargs)

    def set(self, key: bytes, value: bytes | str) -> None:
        path = self._filename(key)
        temp = path + f".{uuid.uuid4().hex}.tmp".encode()
        with self.open(temp, "wb") as out:
            out.write(ensure_bytes(value))
        os.replace(temp, path)
