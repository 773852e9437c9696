"""Local inference: the service's published weights, fetched with GET /model/weights (ETag) and
refreshed by a background thread, run in-process with the same NumPy forward pass the service uses.

A decision is then a few microseconds of NumPy and no network round trip. The model in use is
swapped as one attribute, so deciding threads never lock or see a half-loaded model.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
from dataclasses import dataclass
from urllib.parse import urlencode

from agent_app.rl.inference import NumpyQNetwork, weights_from_bytes
from agent_app.rl.set_inference import SET_DIMS_KEY
from rlagent_client.transport import Transport, unknown_pool

log = logging.getLogger(__name__)
PATH = "/model/weights"


@dataclass(frozen=True)
class LocalModel:
    """What the deciding threads read: the network (or why there is none) and whether it may route."""

    network: NumpyQNetwork | None = None
    version: int | None = None
    ready: bool = False
    etag: str | None = None
    reason: str = "weights not fetched yet"  # why the heuristic decides instead


class LocalPolicy:
    """Keeps `model` in step with the service's published weights."""

    def __init__(self, transport: Transport, *, refresh_s: float = 1.0, timeout_s: float = 5.0,
                 pool: str | None = None) -> None:
        self._transport = transport
        # The pool's weights; none named: the default pool's, from the same URL as before pools.
        self._path = PATH if pool is None else f"{PATH}?{urlencode({'pool': pool})}"
        self._refresh_s = refresh_s
        self._timeout_s = timeout_s
        self.model = LocalModel()
        self.counts = {"fetched": 0, "not_modified": 0, "errors": 0}
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Fetch once now (so the first decisions can use the model), then refresh in the background."""
        if self._thread is not None:
            return
        self.refresh()
        self._thread = threading.Thread(target=self._loop, name="rlagent-weights", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self._timeout_s + 1)

    def _loop(self) -> None:
        while not self._stop.wait(self._refresh_s):
            self.refresh()

    def refresh(self) -> bool:
        """One conditional GET; True when the model in use changed. Errors keep the current model."""
        current = self.model
        headers = {"If-None-Match": current.etag} if current.etag else {}
        try:
            resp = self._transport.request("GET", self._path, timeout_s=self._timeout_s, headers=headers)
        except (OSError, http.client.HTTPException) as exc:
            return self._failed(f"{type(exc).__name__}: {exc}")
        ready = resp.headers.get("x-model-ready", "false").lower() == "true"
        if resp.status == 304:
            self.counts["not_modified"] += 1
            if ready != current.ready:  # same weights, but enough training steps now (or a reset)
                self.model = LocalModel(current.network, current.version, ready, current.etag,
                                        "" if ready else _not_ready(current.version))
                return True
            return False
        if resp.status == 404:
            self.counts["fetched"] += 1
            missing_pool = unknown_pool(resp)
            if missing_pool is not None and missing_pool != self.last_error:  # said once, not each refresh
                log.warning("rlagent client: %s; the heuristic decides until it exists", missing_pool)
            self.last_error = missing_pool
            self.model = LocalModel(reason=missing_pool or f"no model published yet ({_detail(resp.body)})")
            return current.network is not None
        if not resp.ok:
            return self._failed(f"http {resp.status}")
        try:
            weights = weights_from_bytes(resp.body)
            if SET_DIMS_KEY in weights:  # its features include what only the service has learned
                self.counts["fetched"] += 1
                self.model = LocalModel(reason="the service's per-replica network decides remotely only "
                                               "(local inference serves RL_NETWORK=mlp)")
                return current.network is not None
            network = NumpyQNetwork(weights)
            version = int(resp.headers.get("x-model-version", "0"))
        except ValueError as exc:
            return self._failed(f"weights do not load: {exc}")
        self.counts["fetched"] += 1
        self.last_error = None
        self.model = LocalModel(network, version, ready, resp.headers.get("etag"),
                                "" if ready else _not_ready(version))
        log.info("rlagent client: local model v%s loaded (ready=%s)", version, ready)
        return True

    def _failed(self, error: str) -> bool:
        self.counts["errors"] += 1
        if error != self.last_error:
            kept = f"keeping model v{self.model.version}" if self.model.network else "no model to use yet"
            log.warning("rlagent client: weights refresh failed (%s); %s", error, kept)
        self.last_error = error
        if self.model.network is None:
            self.model = LocalModel(reason=f"weights unavailable: {error}")
        return False

    def snapshot(self) -> dict[str, object]:
        model = self.model
        return {"version": model.version, "ready": model.ready, "loaded": model.network is not None,
                "reason": model.reason or None, "last_error": self.last_error, **self.counts}


def _not_ready(version: int | None) -> str:
    return f"model v{version} not ready (X-Model-Ready: false)"


def _detail(body: bytes) -> str:
    try:
        return str(json.loads(body)["detail"])
    except (ValueError, KeyError, TypeError):
        return body[:200].decode(errors="replace") or "http 404"
