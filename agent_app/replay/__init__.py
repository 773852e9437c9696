"""Replay stores behind one interface; REPLAY_STORE picks Redis or the database. One store per pool."""

from __future__ import annotations

from functools import lru_cache

from django.conf import settings

from agent_app.pools import current_pool
from agent_app.replay.base import ExperienceRecord, ReplayStore, StoreUnavailable, TransitionArrays
from agent_app.replay.database_store import DatabaseReplayStore
from agent_app.replay.redis_store import RedisReplayStore
from agent_app.rl.state import state_dim

__all__ = ["ExperienceRecord", "ReplayStore", "StoreUnavailable", "TransitionArrays", "get_replay_store"]


def get_replay_store(pool: str | None = None) -> ReplayStore:
    """The pool's replay store (default: the current pool's, agent_app/pools.py)."""
    return _store_of(pool or current_pool())


@lru_cache(maxsize=4096)
def _store_of(pool: str) -> ReplayStore:
    store = RedisReplayStore if settings.REPLAY_STORE == "redis" else DatabaseReplayStore
    return store(settings.REPLAY_CAPACITY, state_dim(settings.NUM_REPLICAS), pool=pool)
