"""Signed, self-contained decision ids: the state and action travel in the id, nothing is stored.

`record_experience` may send a `decision_id` instead of the state: the HMAC proves it came from
this service (any web worker, since they share SECRET_KEY), so the hot path writes nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from django.conf import settings

# Format 2: format, model version, action, unix time, deciding arm, prompt tokens (NaN: not sent),
# length of the chosen replica's name; then the name (UTF-8) and the state as float32.
_FORMAT = 2
_HEADER = struct.Struct("<BIHdBfB")
_TAG_BYTES = 16
ARMS = ("", "model", "heuristic")  # "": a decision made with the routing gate off


@dataclass(frozen=True)
class DecodedDecision:
    model_version: int
    action: int
    decided_at: float
    state: list[float]  # the raw N + 7 state, or a compact per-replica observation (rl/replica_features)
    arm: str = ""
    replica: str = ""
    prompt_tokens: float | None = None


class InvalidDecision(ValueError):
    """The decision_id was not issued by this service, or is malformed."""


@lru_cache(maxsize=1)
def _key() -> bytes:
    return hashlib.sha256(b"rlagent-decision:" + settings.SECRET_KEY.encode()).digest()


@lru_cache(maxsize=1)
def _mac() -> hmac.HMAC:
    # Keyed once per process; each token copies it (cheaper than keying OpenSSL's HMAC afresh).
    return hmac.new(_key(), digestmod=hashlib.sha256)


@lru_cache(maxsize=8)
def _floats(count: int) -> struct.Struct:
    return struct.Struct(f"<{count}f")


def encode_decision(model_version: int, action: int, state: Sequence[float], *, arm: str = "",
                    replica: str = "", prompt_tokens: float | None = None,
                    decided_at: float | None = None) -> str:
    """The signed id of one decision; ``decided_at`` (unix seconds, now by default) is the clock
    reading the arm was chosen at, so the decision is filed in the gate block it was routed in."""
    try:
        values = _floats(len(state)).pack(*state)  # float32, as np.float32 would round them
    except (OverflowError, struct.error):  # beyond float32's range: NumPy makes it infinite
        values = np.asarray(state, np.float32).tobytes()
    name = replica.encode()[:255]
    tokens = math.nan if prompt_tokens is None else float(prompt_tokens)
    decided_at = time.time() if decided_at is None else decided_at
    payload = _HEADER.pack(_FORMAT, model_version, action, decided_at, ARMS.index(arm), tokens, len(name))
    payload += name + values
    mac = _mac().copy()
    mac.update(payload)
    return base64.urlsafe_b64encode(payload + mac.digest()[:_TAG_BYTES]).rstrip(b"=").decode()


def decode_decision(token: str) -> DecodedDecision:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidDecision("decision_id is not a decision issued by this service") from exc
    if len(raw) < _HEADER.size + _TAG_BYTES or raw[0] != _FORMAT:
        raise InvalidDecision("decision_id is not a decision issued by this service (unknown format)")
    payload, tag = raw[:-_TAG_BYTES], raw[-_TAG_BYTES:]
    if not hmac.compare_digest(tag, hmac.digest(_key(), payload, "sha256")[:_TAG_BYTES]):
        raise InvalidDecision("decision_id signature does not match: not issued by this service")
    _, version, action, decided_at, arm, tokens, name_length = _HEADER.unpack_from(payload)
    start = _HEADER.size + name_length
    if (len(payload) - start) % 4 or arm >= len(ARMS):
        raise InvalidDecision("decision_id is not a decision issued by this service (bad layout)")
    state = np.frombuffer(payload[start:], dtype=np.float32).astype(float).tolist()
    return DecodedDecision(version, action, decided_at, state, ARMS[arm],
                           payload[_HEADER.size:start].decode(errors="replace"),
                           None if math.isnan(tokens) else tokens)
