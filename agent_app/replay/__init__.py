"""Replay stores behind one interface; REPLAY_STORE picks Redis or the database."""

from __future__ import annotations

from functools import lru_cache

from django.conf import settings

from agent_app.replay.base import ExperienceRecord, ReplayStore, StoreUnavailable, TransitionArrays

__all__ = ["ExperienceRecord", "ReplayStore", "StoreUnavailable", "TransitionArrays", "get_replay_store"]


@lru_cache(maxsize=1)
def get_replay_store() -> ReplayStore:
    state_dim = settings.NUM_REPLICAS + 7
    if settings.REPLAY_STORE == "redis":
        from agent_app.replay.redis_store import RedisReplayStore

        return RedisReplayStore(settings.REPLAY_CAPACITY, state_dim)
    from agent_app.replay.database_store import DatabaseReplayStore

    return DatabaseReplayStore(settings.REPLAY_CAPACITY, state_dim)
