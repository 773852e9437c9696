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


def test_a_batch_skips_known_and_repeated_ids_and_reports_the_size_after_trimming(replay):
    assert replay.add_and_size(records(30, ids=True)) == (30, 30)
    batch = records(40, start=25, ids=True) + records(3, start=60, ids=True)  # e25-e29 known, e60-e62 twice
    assert replay.add_and_size(batch) == (35, 50)
    arrays, _ = replay.read_since(None, 100)
    np.testing.assert_array_equal(arrays.states[:, 0], np.arange(15, 65))
    np.testing.assert_allclose(arrays.rewards, np.arange(15, 65) / 10, rtol=1e-6)
    assert replay.recent(1)[0]["experience_id"] == "e64"


def test_arm_totals_count_only_the_records_a_batch_stored(replay):
    batch = [r._replace(arm="rl" if i % 2 else "heuristic") for i, r in enumerate(records(10, ids=True))]
    replay.add(batch[:4])
    replay.add(batch)  # the first four are retries
    totals = replay.arm_totals()
    assert {arm: row["count"] for arm, row in totals.items()} == {"rl": 5, "heuristic": 5}
    assert totals["rl"]["latency_sum"] == pytest.approx(sum(r.latency_ms for r in batch if r.arm == "rl"))
    assert totals["rl"]["successes"] == sum(r.success for r in batch if r.arm == "rl")
    assert sum(totals["heuristic"]["buckets"].values()) == 5
