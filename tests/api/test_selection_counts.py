"""Decision counters: a web worker adds its decisions to the shared rows in one transaction (one
write lock per refresh), and a flush the database refuses is retried whole: nothing lost or doubled."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from django.db import DatabaseError, connection

from agent_app.models import ReplicaSelection
from agent_app.serving import policy_cache

pytestmark = pytest.mark.django_db(transaction=True)  # the flush is the outermost transaction
TABLE = ReplicaSelection._meta.db_table


@pytest.fixture
def counts():
    policy_cache.selections.clear()
    policy_cache._flushed.clear()
    yield policy_cache.selections
    policy_cache.selections.clear()
    policy_cache._flushed.clear()


@contextmanager
def refused_updates(replica_idx: int):
    """The database refuses to update one replica's counter (a trigger), as a failing write would."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("CREATE FUNCTION refuse_flush() RETURNS trigger AS $$ BEGIN "
                           "RAISE EXCEPTION 'flush refused'; END $$ LANGUAGE plpgsql")
            cursor.execute(f"CREATE TRIGGER refuse_flush BEFORE UPDATE ON {TABLE} FOR EACH ROW "
                           f"WHEN (NEW.replica_idx = {replica_idx}) EXECUTE FUNCTION refuse_flush()")
        else:
            cursor.execute(f"CREATE TRIGGER refuse_flush BEFORE UPDATE ON {TABLE} WHEN NEW.replica_idx = "
                           f"{replica_idx} BEGIN SELECT RAISE(ABORT, 'flush refused'); END")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute(f"DROP TRIGGER refuse_flush ON {TABLE}")
                cursor.execute("DROP FUNCTION refuse_flush()")
            else:
                cursor.execute("DROP TRIGGER refuse_flush")


def stored() -> dict[tuple[str, int, str], int]:
    return {(row.pool, row.replica_idx, row.policy): row.count for row in ReplicaSelection.objects.all()}


def test_a_refused_flush_writes_nothing_and_the_next_one_adds_every_decision_once(counts):
    counts["default", 0, "dqn"] += 4
    counts["default", 2, "explore"] += 3
    counts["llama", 2, "dqn"] += 5  # another pool's counters flush in the same transaction
    with refused_updates(2), pytest.raises(DatabaseError, match="flush refused"):
        policy_cache.flush_selections()
    # All or nothing: replica 0's counter was not committed without replica 2's.
    assert {key: n for key, n in stored().items() if n} == {}
    counts["default", 2, "explore"] += 1
    policy_cache.flush_selections()
    policy_cache.flush_selections()  # nothing new: nothing added
    assert stored() == {("default", 0, "dqn"): 4, ("default", 2, "explore"): 4, ("llama", 2, "dqn"): 5}
