"""Replica pools: one service, one agent per pool (docs/design.md, decision 12).

A pool is one deployment's replicas (a model, a LoRA set, a region) with its own agent state,
replay buffer, training lease, configuration, checkpoints and history. Every per-pool row carries
the pool's name; Redis keys and checkpoint folders of a pool other than the default one carry it
too, so the default pool is exactly the original single agent and a request without a pool
behaves as before.

Which pool the code below a request or a task works for is `current_pool()`: the API and the
Celery tasks enter `pool_scope(name)` once at their boundary, so the storage layer (replay
stores, leases, checkpoints, agent state) need not pass the name through every call. The hot
path takes the pool explicitly instead (services/routing.py), to look its snapshot up.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from django.conf import settings

DEFAULT_POOL = "default"
NAME_PATTERN = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")
NAME_RULE = "1-63 characters of letters, digits, '.', '_' and '-', starting with a letter or digit"

_current: ContextVar[str] = ContextVar("pool", default=DEFAULT_POOL)


class PoolNotFound(LookupError):
    """A request named a pool that does not exist (and POOLS_AUTO_CREATE is off)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"pool {name!r} does not exist; create it in the admin or with "
                         f"`manage.py create_pool {name}`, or set POOLS_AUTO_CREATE=true")
        self.name = name


def current_pool() -> str:
    return _current.get()


@contextmanager
def pool_scope(name: str | None) -> Iterator[str]:
    """Work for pool `name` (None: the default pool) inside the block."""
    token = _current.set(name or DEFAULT_POOL)
    try:
        yield _current.get()
    finally:
        _current.reset(token)


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ValueError(f"invalid pool name {name!r}: {NAME_RULE}")
    return name


def is_default(name: str | None = None) -> bool:
    return (name or current_pool()) == DEFAULT_POOL


def redis_prefix(name: str | None = None) -> str:
    """Where the pool's Redis keys start: the configured prefix, plus `pool:<name>:` except for the
    default pool, whose keys stay where they always were."""
    name = name or current_pool()
    return settings.REDIS_KEY_PREFIX + ("" if is_default(name) else f"pool:{name}:")


def lease_name(name: str | None = None) -> str:
    name = name or current_pool()
    return "trainer" if is_default(name) else f"trainer:{name}"


def ensure_pool(name: str, *, create: bool | None = None) -> str:
    """The pool's name if it exists; created first when `create` (default: POOLS_AUTO_CREATE).

    The default pool always exists. Raises PoolNotFound, or ValueError for an invalid name.
    """
    from agent_app.models import Pool

    check_name(name)
    if is_default(name):
        Pool.objects.get_or_create(name=DEFAULT_POOL)
        return name
    if Pool.objects.filter(name=name).exists():
        return name
    if settings.POOLS_AUTO_CREATE if create is None else create:
        Pool.objects.get_or_create(name=name)
        return name
    raise PoolNotFound(name)


def pool_names() -> list[str]:
    """Every pool, the default one first."""
    from agent_app.models import Pool

    names = list(Pool.objects.exclude(name=DEFAULT_POOL).order_by("name").values_list("name", flat=True))
    return [DEFAULT_POOL, *names]


def model_path(name: str | None = None) -> Path:
    """Where the pool's newest checkpoint is copied: MODEL_PATH for the default pool, the same file
    name in `pools/<name>/` beside it for another, whose versioned checkpoints live there too."""
    name = name or current_pool()
    path = Path(settings.MODEL_PATH)
    return path if is_default(name) else path.parent / "pools" / name / path.name
