"""Background reporting of outcomes: a bounded queue that never blocks the caller, and a worker
thread that sends batches to POST /record_experience with retries and backoff.

When the queue is full the oldest report is dropped (and counted): fresh outcomes are worth more
to the learner than stale ones. Every report carries an experience_id, so a batch retried after
a lost answer is stored once (the service counts the repeats as duplicates). A reporter sends for
one replica pool (or the default one): its batches never mix pools.
"""

from __future__ import annotations

import http.client
import logging
import random
import threading
import time
from collections import deque
from typing import Any

from rlagent_client.transport import Transport

log = logging.getLogger(__name__)
PATH = "/record_experience"


class Reporter:
    def __init__(
        self,
        transport: Transport,
        *,
        queue_size: int = 10_000,
        batch_size: int = 500,
        interval_s: float = 0.2,
        timeout_s: float = 5.0,
        max_retries: int = 5,
        backoff_s: float = 0.1,
        max_backoff_s: float = 5.0,
        pool: str | None = None,
    ) -> None:
        self._transport = transport
        self._pool = pool  # every batch names it: one reporter, one pool, never mixed
        self._queue: deque[dict[str, Any]] = deque()
        self._queue_size = queue_size
        self._batch_size = min(batch_size, 1000)
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._max_retries = max_retries
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._cond = threading.Condition()
        self._in_flight = 0
        self._closing = False
        self._close_deadline = float("inf")
        self.counts = {"enqueued": 0, "dropped": 0, "stored": 0, "duplicates": 0, "rejected": 0,
                       "failed": 0, "retries": 0, "batches": 0}
        self._thread = threading.Thread(target=self._run, name="rlagent-reporter", daemon=True)
        self._thread.start()

    def put(self, experience: dict[str, Any]) -> None:
        """Enqueue one experience body; O(1), never waits on the network."""
        with self._cond:
            if self._closing:
                self.counts["dropped"] += 1
                return
            if len(self._queue) >= self._queue_size:
                self._queue.popleft()
                self.counts["dropped"] += 1
            self._queue.append(experience)
            self.counts["enqueued"] += 1
            if len(self._queue) >= self._batch_size:
                self._cond.notify()

    @property
    def pending(self) -> int:
        """Reports queued or being sent."""
        with self._cond:
            return len(self._queue) + self._in_flight

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Send what is queued now; True if everything was handed over in time."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._cond.notify_all()
            while self._queue or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
                self._cond.notify_all()
        return True

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush, then stop the worker; reports still unsent after timeout_s are counted as dropped."""
        with self._cond:
            self._closing = True
            self._close_deadline = time.monotonic() + timeout_s
            self._cond.notify_all()
        self._thread.join(timeout_s + self._timeout_s)

    def snapshot(self) -> dict[str, int]:
        with self._cond:
            return {**self.counts, "queued": len(self._queue), "in_flight": self._in_flight}

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._closing and len(self._queue) < self._batch_size:
                    self._cond.wait(self._interval_s)
                if self._closing and (not self._queue or time.monotonic() >= self._close_deadline):
                    self.counts["dropped"] += len(self._queue)
                    self._queue.clear()
                    self._cond.notify_all()
                    return
                count = min(len(self._queue), self._batch_size)
                batch = [self._queue.popleft() for _ in range(count)]
                self._in_flight = count
            try:
                if batch:
                    self._send(batch)
            except Exception:  # the worker must outlive any bug in one batch
                log.exception("rlagent reporter: batch of %d lost", len(batch))
                self._count("failed", len(batch))
            finally:
                with self._cond:
                    self._in_flight = 0
                    self._cond.notify_all()

    def _send(self, batch: list[dict[str, Any]]) -> None:
        attempt, backoff = 0, self._backoff_s
        while True:
            error = self._post(batch)
            if error is None:
                return
            if isinstance(error, list):  # 400 naming bad items: resend the good ones once
                batch, attempt = error, attempt + 1
                if not batch:
                    return
                continue
            attempt += 1
            if attempt > self._max_retries or time.monotonic() + backoff > self._close_deadline:
                log.warning("rlagent reporter: %d experiences lost after %d attempts (%s)",
                            len(batch), attempt, error)
                self._count("failed", len(batch))
                return
            self._count("retries", 1)
            time.sleep(backoff * (0.5 + random.random()))  # jitter: gateways must not retry in step
            backoff = min(backoff * 2, self._max_backoff_s)

    def _post(self, batch: list[dict[str, Any]]) -> str | list[dict[str, Any]] | None:
        """None on success, the good items after a 400, or a retryable error."""
        try:
            resp = self._transport.request("POST", PATH, timeout_s=self._timeout_s,
                                           payload=batch_body(batch, self._pool))
        except (OSError, http.client.HTTPException) as exc:
            return f"{type(exc).__name__}: {exc}"
        if resp.ok:
            body = resp.json()
            with self._cond:
                self.counts["batches"] += 1
                self.counts["stored"] += int(body.get("stored", 0))
                self.counts["duplicates"] += int(body.get("duplicates", 0))
            return None
        if resp.status >= 500 or resp.status in (408, 429):
            return f"http {resp.status}"
        good = _accepted_items(batch, resp)
        self._count("rejected", len(batch) - len(good))
        log.warning("rlagent reporter: %d experiences refused (http %d): %s",
                    len(batch) - len(good), resp.status, resp.body[:300].decode(errors="replace"))
        return good

    def _count(self, name: str, n: int) -> None:
        with self._cond:
            self.counts[name] += n


def batch_body(batch: list[dict[str, Any]], pool: str | None) -> dict[str, Any]:
    """The /record_experience body: the pool at the top (none: the default pool, as before pools)."""
    return {"experiences": batch} if pool is None else {"pool": pool, "experiences": batch}


def _accepted_items(batch: list[dict[str, Any]], resp: Any) -> list[dict[str, Any]]:
    """After a 400 the service names the bad items ({"experiences": {"3": {...}}} or a list with one
    entry per item); keep the others. Nothing is kept when the answer does not say which."""
    if resp.status != 400 or len(batch) < 2:
        return []
    try:
        errors = resp.json().get("experiences")
    except (ValueError, AttributeError):
        return []
    if isinstance(errors, list) and len(errors) == len(batch):
        bad = {i for i, error in enumerate(errors) if error}
    elif isinstance(errors, dict) and errors and all(str(k).isdigit() for k in errors):
        bad = {int(k) for k in errors}
    else:
        return []
    good = [item for i, item in enumerate(batch) if i not in bad]
    return good if len(good) < len(batch) else []
