"""The simulated DQN sees each replica's prefix match as the service computes it: the leading
blocks the index says a replica holds, by name, remembered for the chosen replica."""

from __future__ import annotations

import numpy as np
import pytest

from agent_app.rl.replica_features import OPTIONAL_REPLICA, split_observation
from simulator.service_prefix import SERVICE_BLOCKS, SERVICE_HASHES, ServicePrefixIndex

torch = pytest.importorskip("torch")

from simulator.dqn_policy import DQNPolicy  # noqa: E402
from simulator.runner import run_policy  # noqa: E402

SLOT = 1 + 2 * OPTIONAL_REPLICA.index("prefix_match")  # (value, present) after the load
MAX = 4
SMALL = {"config_overrides": {"network": "per_replica", "max_replicas": MAX,
                              "hidden_sizes": [16, 16], "batch_size": 32}}


def test_the_match_counts_leading_blocks_and_stops_at_the_first_miss() -> None:
    index = ServicePrefixIndex()
    index.remember("a", [1, 2, 3, 4])
    index.remember("b", [1, 9, 3, 4])  # holds 3 and 4, but not after 1 -> 2
    assert index.shares(["a", "b", "c"], [1, 2, 3, 4]) == [1.0, 0.25, 0.0]
    assert index.shares(["a", "b"], [1, 2, 7, 8]) == [0.5, 0.25]
    assert index.shares(["a"], [5, 1, 2]) == [0.0]  # a miss on the first block matches nothing


def test_the_index_is_by_name_and_forgets_the_least_recent_tail_first() -> None:
    index = ServicePrefixIndex(blocks_per_replica=4, max_hashes=None)
    index.remember("a", [1, 2, 3])
    index.remember("a", [7, 8])  # 5 blocks for 4 places: the oldest tail, 3, goes
    assert index.held("a") == 4
    assert index.shares(["a"], [1, 2, 3]) == [pytest.approx(2 / 3)]
    assert index.shares(["a"], [7, 8]) == [1.0]
    index.remember("a", [1, 2])  # reused: the most recent again, 7 and 8 now the oldest
    index.remember("a", [5])  # the tail 8 goes before its head 7
    assert index.shares(["a"], [7, 8]) == [0.5] and index.shares(["a"], [1, 2]) == [1.0]
    index.forget("a")
    assert index.held("a") == 0


def test_the_index_matches_only_what_a_gateway_sends() -> None:
    index = ServicePrefixIndex(max_hashes=2)
    index.remember("a", [1, 2, 3])
    assert index.held("a") == 2  # the third hash is never sent
    assert index.shares(["a"], [1, 2, 3, 4]) == [1.0]  # the share of the two sent
    assert SERVICE_BLOCKS == 1024 and SERVICE_HASHES == 64
    assert index.shares(["a"], []) is None and index.shares(["a"], None) is None


class Context:
    num_replicas = max_replicas = 3

    def raw_state(self) -> list[float]:
        return [1.0, 5.0, 2.0, 0.0, 0.1, 1.0, 1.0, 0.2, 0.3, 0.5]


def _body(hashes: list[int] | None, names: tuple[str, ...] = ("r0", "r1", "r2")) -> dict:
    request = {"prompt_tokens": 2048, "max_tokens": 100}
    if hashes is not None:
        request["prefix_hashes"] = hashes
    return {"replica_loads": [1, 5, 2], "queue_depth": 0, "recent_latency_ms": 100,
            "current_rps": 1, "success_rate": 1, "request": request,
            "replicas": [{"name": n, "load": load} for n, load in zip(names, (1, 5, 2), strict=True)]}


def _decide(policy: DQNPolicy, body: dict) -> tuple[int, np.ndarray]:
    """The replica chosen and the (n, 2) prefix_match (value, present) the network saw."""
    action = policy.choose(body, np.random.default_rng(0))
    obs, names, _ = policy._pending.popitem()[1]
    rows, _, _ = split_observation(obs, MAX)
    return action, rows[: len(names), SLOT:SLOT + 2]


def _policy(**kwargs: object) -> DQNPolicy:
    policy = DQNPolicy(train_requests=0, seed=0, gate=False, **SMALL, **kwargs)
    policy.start(Context())
    policy.set_mode("eval")
    return policy


def test_the_policy_sees_each_replicas_match_and_remembers_its_choice() -> None:
    policy = _policy()
    first, seen = _decide(policy, _body([10, 11, 12, 13]))
    assert seen.tolist() == [[0.0, 1.0]] * 3  # present, and nobody holds anything yet
    chosen = f"r{first}"
    assert policy.prefix_index.held(chosen) == 4
    _, seen = _decide(policy, _body([10, 11, 99, 98]))
    expected = [[0.5 if f"r{i}" == chosen else 0.0, 1.0] for i in range(3)]
    assert seen.tolist() == expected  # two leading blocks of four, on the replica chosen before
    # By name, not position: the same replica offered elsewhere in the list keeps its match.
    names = ("x", chosen, "y")
    _, seen = _decide(policy, _body([10, 11, 12, 13], names))
    assert seen[:, 0].tolist() == [0.0, 1.0, 0.0]


def test_the_feature_is_absent_without_hashes_or_when_off() -> None:
    policy = _policy()
    _, seen = _decide(policy, _body(None))
    assert seen.tolist() == [[0.0, 0.0]] * 3  # unknown, as the service leaves it
    off = _policy(prefix_match=False)
    assert off.prefix_index is None
    _, seen = _decide(off, _body([1, 2]))
    assert seen.tolist() == [[0.0, 0.0]] * 3
    assert "prefix_match" not in off.describe() and "prefix_match" in policy.describe()


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="per-replica"):
        DQNPolicy(prefix_match=True)  # the fixed network has no per-replica features
    with pytest.raises(ValueError, match="unknown prefix_match"):
        DQNPolicy(prefix_match={"blocks": 3}, **SMALL)
    assert DQNPolicy().prefix_index is None  # the mlp: off by default
    scaled = DQNPolicy(prefix_match={"scale": 2.0, "blocks_per_replica": 16}, **SMALL)
    assert scaled.prefix_scale == 2.0 and scaled.prefix_index.blocks_per_replica == 16


def test_a_trace_with_hashes_fills_the_index_as_it_routes() -> None:
    policy = DQNPolicy(train_requests=0, seed=1, **SMALL)
    run_policy("trace:mooncake-synthetic", policy, 200, seed=1)
    held = [policy.prefix_index.held(f"r{i}") for i in range(4)]
    assert sum(held) > 0 and max(held) <= SERVICE_BLOCKS
    policy.start(policy.context)  # the next run's replicas start empty, and so does the index
    assert [policy.prefix_index.held(f"r{i}") for i in range(4)] == [0, 0, 0, 0]
    azure = DQNPolicy(train_requests=0, seed=1, **SMALL)
    run_policy("trace:azure-code", azure, 200, seed=1)
    assert [azure.prefix_index.held(f"r{i}") for i in range(4)] == [0, 0, 0, 0]
