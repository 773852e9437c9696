"""Creating and deleting replica pools: the admin, `manage.py create_pool` and `delete_pool`.

Deleting a pool removes everything it holds, so its name can be reused at once for a new, empty
pool: agent state, configuration, replay buffer, outcome statistics, latency histograms, the
routing gate's blocks, decision counts, history, checkpoints (rows and files) and its prefix-index
entries. It runs under the pool's training lease, so no trainer of that pool writes meanwhile; the
operator audit log keeps its entries and records the deletion. The default pool cannot be deleted.
"""

from __future__ import annotations

import logging
import shutil
from typing import Any

from agent_app.models import (
    AgentConfig,
    AgentState,
    ArmLatencyBucket,
    ArmOutcome,
    Checkpoint,
    Experience,
    GateBlock,
    MetricSample,
    Pool,
    ReplicaLatencyBin,
    ReplicaOutcome,
    ReplicaSelection,
    TrainingLease,
)
from agent_app.pools import check_name, is_default, lease_name, model_path, pool_scope
from agent_app.prefix_index import get_prefix_index
from agent_app.replay import get_replay_store
from agent_app.services import operator_config
from agent_app.services.lease import LeaseHeld, training_lease
from agent_app.services.refusals import TrainingBusy

log = logging.getLogger(__name__)
# Every table whose rows belong to one pool (besides the replay store's own, which it clears).
POOL_TABLES = (AgentState, AgentConfig, Experience, Checkpoint, ReplicaSelection, ReplicaOutcome,
               ReplicaLatencyBin, GateBlock, ArmOutcome, ArmLatencyBucket, MetricSample)


def create_pool(name: str, description: str = "") -> tuple[Pool, bool]:
    """The pool and whether it was created now (ValueError for an invalid name)."""
    check_name(name)
    pool, created = Pool.objects.get_or_create(name=name, defaults={"description": description})
    if created:
        log.info("pool %s created", name)
    return pool, created


def delete_pool(*, name: str, username: str = "") -> dict[str, Any]:
    """Delete pool `name` and its data; ValueError for the default pool or an unknown one."""
    check_name(name)
    if is_default(name):
        raise ValueError("the default pool cannot be deleted")
    if not Pool.objects.filter(name=name).exists():
        raise ValueError(f"pool {name!r} does not exist")
    try:
        with pool_scope(name), training_lease():
            get_replay_store(name).clear()
            removed = {model._meta.model_name: model.objects.filter(pool=name).delete()[0]
                       for model in POOL_TABLES}
            shutil.rmtree(model_path(name).parent, ignore_errors=True)  # its checkpoint folder
            get_prefix_index().forget_pool(name)
            Pool.objects.filter(name=name).delete()
    except LeaseHeld as exc:
        raise TrainingBusy(f"{exc}; pool {name!r} was not deleted") from None
    TrainingLease.objects.filter(name=lease_name(name)).delete()
    with pool_scope(name):
        operator_config.record(username=username, field="pool deleted", old=name, new="")
    log.warning("pool %s deleted with its data: %s", name, removed)
    return {"pool": name, "removed": removed}
