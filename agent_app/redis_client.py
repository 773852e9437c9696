"""One Redis connection pool per process, with short timeouts so an outage fails fast."""

from __future__ import annotations

from functools import lru_cache

import redis
from django.conf import settings

KEY_PREFIX = settings.REDIS_KEY_PREFIX


@lru_cache(maxsize=1)
def get_redis() -> redis.Redis:
    if not settings.REDIS_URL:
        raise RuntimeError("REDIS_HOST is not set")
    return redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=1.0, socket_connect_timeout=0.5, health_check_interval=30
    )
