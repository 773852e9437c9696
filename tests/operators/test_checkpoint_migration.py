"""The migration to one row per checkpoint file merges the duplicate rows earlier saves left."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("agent_app", "0003_operators")]
AFTER = [("agent_app", "0004_checkpoint_one_row_per_file")]


def migrate(targets: list[tuple[str, str]]):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return MigrationExecutor(connection).loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_duplicate_rows_of_one_file_become_one_row_the_newest():
    try:
        old = migrate(BEFORE).get_model("agent_app", "Checkpoint")
        v2, v3 = "/models/rl_agent-v000002.pth", "/models/rl_agent-v000003.pth"
        for _ in range(3):  # saves at an unchanged version, as earlier code stored them
            old.objects.create(version=3, steps_done=10, epsilon=0.5, path=v3)
        newest = old.objects.create(version=3, steps_done=12, epsilon=0.4, path=v3)
        old.objects.create(version=2, steps_done=8, epsilon=0.6, path=v2)

        new = migrate(AFTER).get_model("agent_app", "Checkpoint")
        assert sorted(new.objects.values_list("path", "steps_done")) == [(v2, 8), (v3, 12)]
        assert new.objects.get(version=3).pk == newest.pk
        with pytest.raises(IntegrityError):
            new.objects.create(version=3, steps_done=12, epsilon=0.4, path=v3)
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
