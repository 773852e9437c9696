"""Naming an unreachable backend the same way in API answers, task results and logs."""

from __future__ import annotations

import redis
from django.db import DatabaseError

from agent_app.replay import StoreUnavailable

OUTAGES = (DatabaseError, redis.RedisError, StoreUnavailable)


def describe_outage(exc: BaseException) -> str:
    """"database unavailable: …", "Redis unavailable: …", or the replay store's own message."""
    text = str(exc).strip()
    first_line = text.splitlines()[0] if text else type(exc).__name__
    if isinstance(exc, StoreUnavailable):
        return first_line  # it already names the store
    return f"{'database' if isinstance(exc, DatabaseError) else 'Redis'} unavailable: {first_line}"
