"""Sum-tree invariants and the batched descent."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_app.rl import SumTree


@pytest.mark.parametrize("capacity", [1, 7, 32, 1000, 1025, 10_000, 70_000])
def test_every_node_is_the_sum_of_its_children(capacity: int) -> None:
    tree = SumTree(capacity)
    rng = np.random.default_rng(capacity)
    for _ in range(20):
        idx = rng.integers(0, capacity, 50)
        tree.update(idx, rng.random(50) * 10)
        tree.check_invariants()
    leaves = tree.get(np.arange(capacity))
    assert tree.total == pytest.approx(leaves.sum(), rel=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 299), st.floats(0, 1e3, allow_nan=False)),
        min_size=1,
        max_size=200,
    )
)
def test_invariants_hold_after_any_sequence_of_updates(updates: list[tuple[int, float]]) -> None:
    tree = SumTree(300, fanout=4, max_root_fanout=8)  # several levels on a small tree
    reference = np.zeros(300)
    for index, value in updates:
        tree.update(index, value)
        reference[index] = value
    tree.check_invariants()
    np.testing.assert_array_equal(tree.get(np.arange(300)), reference)
    assert tree.total == pytest.approx(reference.sum(), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize(("capacity", "fanout", "root"), [(10_000, 32, 1024), (5000, 4, 8)])
def test_find_returns_the_leaf_whose_interval_holds_the_target(
    capacity: int, fanout: int, root: int
) -> None:
    rng = np.random.default_rng(1)
    priorities = rng.random(capacity) + 0.01
    tree = SumTree(capacity, fanout, root)
    tree.update(np.arange(capacity), priorities)
    bounds = np.cumsum(priorities)
    # Targets strictly inside intervals, away from float ties at the boundaries.
    leaves = rng.integers(0, capacity, 500)
    targets = bounds[leaves] - priorities[leaves] * rng.uniform(0.01, 0.99, 500)
    np.testing.assert_array_equal(tree.find(targets), leaves)


def test_zero_priority_leaves_are_never_sampled() -> None:
    tree = SumTree(100)
    tree.update(np.arange(0, 100, 2), 1.0)  # odd leaves stay 0
    idx = tree.sample(10_000, np.random.default_rng(0))
    assert (idx % 2 == 0).all()


def test_duplicate_indices_keep_the_tree_consistent() -> None:
    tree = SumTree(64)
    tree.update(np.array([3, 3, 3]), np.array([1.0, 2.0, 5.0]))
    tree.check_invariants()
    assert tree.total == tree.get(np.array([3]))[0]


def test_invalid_updates_are_refused() -> None:
    tree = SumTree(10)
    with pytest.raises(IndexError):
        tree.update(10, 1.0)
    with pytest.raises(ValueError, match="finite"):
        tree.update(0, float("nan"))
    with pytest.raises(ValueError, match="finite"):
        tree.update(0, -1.0)
    with pytest.raises(ValueError, match="all zero"):
        tree.sample(4, np.random.default_rng(0))
