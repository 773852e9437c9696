"""Both replay stores behave the same: bounded, atomic batches, idempotent ids, cursors."""

from __future__ import annotations

import numpy as np
import pytest
from django.conf import settings

from agent_app.replay import ExperienceRecord
from agent_app.replay.database_store import DatabaseReplayStore

pytestmark = pytest.mark.django_db
BACKENDS = ["database", "redis"]


@pytest.fixture(params=BACKENDS)
def replay(request, db):
    if request.param == "redis":
        if not settings.REDIS_URL:
            pytest.skip("Redis is not configured (TEST_BACKENDS=embedded)")
        from agent_app.replay.redis_store import RedisReplayStore

        store = RedisReplayStore(capacity=50, state_dim=10)
    else:
        store = DatabaseReplayStore(capacity=50, state_dim=10)
    store.clear()
    yield store
    store.clear()


def records(count, start=0, ids=False):
    return [
        ExperienceRecord(
            state=[float(i)] * 10, action=i % 3, reward=float(i) / 10, next_state=[float(i) + 0.5] * 10,
            latency_ms=float(i), success=i % 5 != 0, experience_id=f"e{i}" if ids else None,
        )
        for i in range(start, start + count)
    ]


def test_append_and_read_back_in_order(replay):
    assert replay.add(records(10)) == 10
    arrays, cursor = replay.read_since(None, 100)
    assert len(arrays) == 10
    np.testing.assert_array_equal(arrays.states[:, 0], np.arange(10))
    np.testing.assert_array_equal(arrays.actions, np.arange(10) % 3)
    np.testing.assert_allclose(arrays.next_states[:, 0], np.arange(10) + 0.5)
    replay.add(records(5, start=10))
    newer, _ = replay.read_since(cursor, 100)
    np.testing.assert_array_equal(newer.states[:, 0], np.arange(10, 15))


def test_capacity_keeps_only_the_newest(replay):
    for chunk in range(4):
        replay.add(records(20, start=chunk * 20))
    assert replay.size() == 50
    arrays, _ = replay.read_since(None, 100)
    np.testing.assert_array_equal(arrays.states[:, 0], np.arange(30, 80))


def test_known_ids_are_skipped(replay):
    assert replay.add(records(5, ids=True)) == 5
    assert replay.add(records(7, ids=True)) == 2
    assert replay.size() == 7


def test_recent_is_newest_first_with_every_field(replay):
    replay.add(records(3))
    rows = replay.recent(2)
    assert [row["action"] for row in rows] == [2, 1]
    assert rows[0]["success"] is True and rows[0]["latency_ms"] == 2.0
    assert replay.recent_rewards(3) == pytest.approx([0.2, 0.1, 0.0])
    assert replay.ping()
