"""Prefix-cache awareness on the request path: prefix hashes in the request, the match each replica
had in the response, the blocks remembered for the chosen replica, a dead index store routed around,
and a 400 naming bad hashes."""

from __future__ import annotations

import uuid

import pytest

from agent_app.models import AgentConfig
from agent_app.prefix_index import RedisPrefixIndex, get_prefix_index
from agent_app.serving import policy_cache
from tests.api.test_named_clusters import EXTRAS, named, select

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def per_replica(settings):
    settings.RL_NETWORK = "per_replica"


def fresh_hashes(count: int) -> list[str]:
    run = uuid.uuid4().hex[:8]  # the index outlives a test: hashes of its own
    return [f"{run}{i:04x}" for i in range(count)]


def test_the_chosen_replica_is_remembered_and_its_match_reported(client):
    hashes = fresh_hashes(6)
    names = [f"p-{uuid.uuid4().hex[:6]}-{i}" for i in range(3)]
    body = {**named([4, 2, 9], names), "request": {"prefix_hashes": hashes, "prompt_tokens": 3000}}
    first = select(client, body)
    assert first["prefix_match"] == {"blocks": 0, "of": 6}
    policy_cache.refresh()  # what the serving thread does every SYNC_INTERVAL_SECONDS: the index is written
    held = get_prefix_index().match(names, hashes)
    assert held == [6 if i == first["replica_idx"] else 0 for i in range(3)]
    again = select(client, {**body, "request": {"prefix_hashes": hashes[:4] + fresh_hashes(2)}})
    expected = 4 if again["replica_idx"] == first["replica_idx"] else 0
    assert again["prefix_match"] == {"blocks": expected, "of": 6}


def test_a_dead_index_store_is_routed_around_and_said(client, monkeypatch):
    AgentConfig.objects.update_or_create(pool="default", defaults={"exploration_enabled": False})
    dead = RedisPrefixIndex(url="redis://127.0.0.1:1/0")  # nothing listens on port 1
    monkeypatch.setattr("agent_app.services.routing.get_prefix_index", lambda: dead)
    body = select(client, {**named([4, 2, 9]), "request": {"prefix_hashes": fresh_hashes(3)}})
    assert body["replica_idx"] == 1 and body["policy"] == "least_loaded"
    assert body["prefix_match"]["blocks"] is None and "did not answer" in body["prefix_match"]["reason"]


def test_without_hashes_nothing_is_matched(client):
    assert select(client, named([4, 2, 9]))["prefix_match"] is None


@pytest.mark.parametrize("hashes", [
    ["a"] * 513, "abc", [1.5], [True], [-1], [2**64], ["has space"], ["x" * 65], [{"h": 1}], [None],
])
def test_bad_prefix_hashes_get_a_400_naming_them(client, hashes):
    response = client.post("/select_replica", {**named([1, 2]), "request": {"prefix_hashes": hashes}},
                           format="json")
    assert response.status_code == 400 and "prefix_hashes" in response.json()["request"][0]


def test_integer_hashes_are_accepted(client):
    body = select(client, {**named([1, 2]), "request": {"prefix_hashes": [2**64 - 1, 0, 17]}})
    assert body["prefix_match"]["of"] == 3


def test_stats_report_the_index_and_its_memory_bound(client, settings):
    stats = client.get("/stats").json()["prefix_index"]
    assert stats["blocks_per_replica"] == settings.PREFIX_INDEX_BLOCKS_PER_REPLICA
    assert stats["memory_bound_bytes"] > 0 and stats["backend"] in {"redis", "memory"}
    assert EXTRAS  # the same extras as the named-cluster tests
