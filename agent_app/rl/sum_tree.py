"""Array-based sum-tree for proportional prioritized replay, with batched (vectorised) updates
and one stratified descent for a whole batch."""

from __future__ import annotations

import numpy as np


class SumTree:
    """Leaves hold priorities; every internal node holds the sum of its children.

    Wide rather than binary: with NumPy every level costs a few array calls whatever its
    width, so for 10k leaves two levels (313 nodes over blocks of 32 leaves) beat 14 binary
    levels.

    `levels[0]` is the root, `levels[1]` the root's children (at most `max_root_fanout`
    nodes), `levels[-1]` the leaves. Below the root every node has `fanout` children, so
    `levels[k + 1].reshape(-1, fanout)[j]` is the block of children of node j of level k.
    Sums are float64 and recomputed from the children on every update (never patched with
    deltas), so rounding error cannot drift.
    """

    def __init__(self, capacity: int, fanout: int = 32, max_root_fanout: int = 1024) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if fanout < 2 or max_root_fanout < 2:
            raise ValueError("fanout and max_root_fanout must be >= 2")
        self.capacity = capacity
        self.fanout = fanout
        sizes = []  # bottom-up: every level below the root's children, padded to blocks
        count = capacity
        while count > max_root_fanout:
            padded = -(-count // fanout) * fanout
            sizes.append(padded)
            count = padded // fanout
        sizes += [count, 1]
        # Stored top-down so a descent walks the list forwards.
        self.levels = [np.zeros(size, dtype=np.float64) for size in reversed(sizes)]
        self._blocks = [level.reshape(-1, fanout) for level in self.levels[2:]]
        # Prefix sums and block sums as small matrix products: NumPy's cumsum/sum along a
        # short last axis loops per row and costs several times one BLAS call.
        self._prefix = np.triu(np.ones((fanout, fanout)))
        self._ones = np.ones(fanout)

    @property
    def total(self) -> float:
        """Sum of all priorities (the root)."""
        return float(self.levels[0][0])

    def get(self, indices: np.ndarray) -> np.ndarray:
        """Priorities stored at `indices`."""
        return self.levels[-1][indices]

    def update(self, indices: np.ndarray | int, priorities: np.ndarray | float) -> None:
        """Set leaf priorities and recompute their ancestors, one vectorised pass per level.

        Duplicate indices are fine: the last value wins at the leaf and every ancestor is
        recomputed from its children, so duplicates only repeat identical work.
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        values = np.asarray(priorities, dtype=np.float64).reshape(-1)
        if idx.size == 0:
            return
        if idx.min() < 0 or idx.max() >= self.capacity:
            raise IndexError(f"leaf index out of range [0, {self.capacity})")
        if values.size not in (1, idx.size):
            raise ValueError(f"{values.size} priorities for {idx.size} indices")
        if not np.isfinite(values).all() or (values < 0).any():
            raise ValueError("priorities must be finite and >= 0")
        self.set_unchecked(idx, values)

    def set_unchecked(self, idx: np.ndarray, values: np.ndarray | float) -> None:
        """`update` without argument checks, for callers that validated already."""
        self.levels[-1][idx] = values
        node = idx
        for level in range(len(self.levels) - 2, 0, -1):
            node = node // self.fanout
            self.levels[level][node] = self._blocks[level - 1].take(node, axis=0) @ self._ones
        self.levels[0][0] = self.levels[1].sum()

    def find(self, targets: np.ndarray) -> np.ndarray:
        """Leaf index whose cumulative-priority interval contains each target (all at once).

        targets must lie in [0, total). One descent for the whole batch: every target shares
        the root, so its children need one prefix sum and a binary search; below, take the
        child blocks of the current nodes, prefix-sum them (one matrix product) and step into
        the first child whose running sum exceeds the remaining target.
        """
        remaining = np.array(targets, dtype=np.float64).reshape(-1)
        top = self.levels[1]
        running = np.cumsum(top)
        node = np.searchsorted(running, remaining, side="right")
        np.minimum(node, top.size - 1, out=node)
        remaining -= running.take(node) - top.take(node)
        row_starts = np.arange(remaining.shape[0]) * self.fanout
        for blocks in self._blocks:
            children = blocks.take(node, axis=0)  # (batch, fanout)
            running = children @ self._prefix  # inclusive prefix sums per row
            past = running > remaining[:, None]
            # A target equal to the block total (rounding) matches no child: take the last.
            past[:, -1] = True
            child = past.argmax(axis=1)
            flat = row_starts + child
            remaining -= running.take(flat) - children.take(flat)
            node = node * self.fanout + child
        # Rounding at the very end of [0, total) can walk into zero padding; the last real leaf
        # owns that end of the range. (A buffer that is not full clamps to its last slot.)
        np.minimum(node, self.capacity - 1, out=node)
        return node

    def sample(self, batch_size: int, rng: np.random.Generator) -> np.ndarray:
        """Stratified proportional sample: one uniform draw in each of batch_size equal slices
        of [0, total), so a batch covers the whole distribution (Schaul et al. 2016)."""
        total = self.total
        if total <= 0:
            raise ValueError("cannot sample from a sum-tree whose priorities are all zero")
        targets = (np.arange(batch_size) + rng.random(batch_size)) * (total / batch_size)
        np.minimum(targets, np.nextafter(total, 0.0), out=targets)
        return self.find(targets)

    def check_invariants(self, rtol: float = 1e-9) -> None:
        """Raise AssertionError unless every node equals the sum of its children."""
        if not np.isclose(self.levels[0][0], self.levels[1].sum(), rtol=rtol, atol=0.0):
            raise AssertionError("the root differs from the sum of its children")
        for parent, blocks in zip(self.levels[1:-1], self._blocks, strict=True):
            sums = blocks.sum(axis=1)
            if not np.allclose(parent[: sums.size], sums, rtol=rtol, atol=0.0):
                raise AssertionError("a node differs from the sum of its children")
            if (parent[sums.size :] != 0).any():
                raise AssertionError("padding nodes must stay zero")
        if (self.levels[-1][self.capacity :] != 0).any():
            raise AssertionError("padding leaves must stay zero")
