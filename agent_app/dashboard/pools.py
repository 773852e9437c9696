"""The pool a dashboard or admin page shows: `?pool=` (or a button's `pool` field), the default
pool when none is named, a 404 page for one that does not exist."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlencode

from django.http import Http404

from agent_app.pools import DEFAULT_POOL, PoolNotFound, ensure_pool, is_default


def chosen_pool(params: Mapping[str, str]) -> str:
    """The pool `params` name; Http404 for an unknown or invalid name (pages never create pools)."""
    name = params.get("pool") or DEFAULT_POOL
    try:
        return ensure_pool(name, create=False)
    except (PoolNotFound, ValueError) as exc:
        raise Http404(str(exc)) from None


def pool_query(pool: str) -> str:
    """`?pool=<name>` to keep a pool across links and redirects; nothing for the default pool, whose
    pages keep the URLs they always had."""
    return "" if is_default(pool) else "?" + urlencode({"pool": pool})


def of_pool(pool: str) -> str:
    """Names a pool other than the default one in a message ("Checkpoint v3 of pool alpha ...")."""
    return "" if is_default(pool) else f" of pool {pool}"
