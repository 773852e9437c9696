"""Minimal HTTP/1.1 client on the standard library: one connection per thread, a deadline per call.

The deadline bounds connecting, sending and waiting for the answer, so a stopped, slow or hung
service costs a caller at most about the timeout. A kept-alive connection the server closed is
retried once on a fresh one (a stale socket is not a failure of the service).
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

USER_AGENT = "rlagent-client/1.0"
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        return json.loads(self.body)


class Transport:
    """Requests to one base URL (`http://host:port[/prefix]`), safe to share between threads."""

    def __init__(self, base_url: str, api_key: str | None = None) -> None:
        parts = urlsplit(base_url)
        self.scheme = parts.scheme
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.base_url = base_url.rstrip("/")
        self._auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._local = threading.local()

    def _connection(self, timeout_s: float) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
            conn = cls(self.host, self.port, timeout=timeout_s)
            self._local.conn = conn
        return conn

    def request(
        self,
        method: str,
        path: str,
        *,
        timeout_s: float,
        payload: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """One request; raises TimeoutError past the deadline, OSError/HTTPException on failure."""
        deadline = time.monotonic() + timeout_s
        body = None if payload is None else json.dumps(payload, separators=(",", ":")).encode()
        all_headers = {"User-Agent": USER_AGENT, "Accept": "*/*", **self._auth, **(headers or {})}
        if body is not None:
            all_headers["Content-Type"] = "application/json"
        for attempt in range(2):
            conn = self._connection(timeout_s)
            reused = conn.sock is not None
            try:
                return self._exchange(conn, method, self.prefix + path, body, all_headers, deadline)
            except _STALE:
                conn.close()
                if attempt or not reused or time.monotonic() >= deadline:
                    raise
            except BaseException:
                conn.close()  # a half-read response must never be reused
                raise
        raise AssertionError("unreachable")

    def _exchange(
        self,
        conn: http.client.HTTPConnection,
        method: str,
        url: str,
        body: bytes | None,
        headers: dict[str, str],
        deadline: float,
    ) -> Response:
        conn.timeout = _remaining(deadline)
        if conn.sock is None:
            conn.connect()
        conn.sock.settimeout(_remaining(deadline))
        conn.request(method, url, body=body, headers=headers)
        conn.sock.settimeout(_remaining(deadline))
        resp = conn.getresponse()
        if conn.sock is not None:
            conn.sock.settimeout(_remaining(deadline))
        data = resp.read()
        if resp.will_close:
            conn.close()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def unknown_pool(resp: Response) -> str | None:
    """The service's explanation when it answered 404 because it has no pool of the name sent (its
    answer then names the pool), else None."""
    if resp.status != 404:
        return None
    try:
        answer = resp.json()
    except ValueError:
        return None
    if not isinstance(answer, dict) or "pool" not in answer:
        return None
    return str(answer.get("detail") or f"pool {answer['pool']!r} does not exist")


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("deadline passed")
    return left
