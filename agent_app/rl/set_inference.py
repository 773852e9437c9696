"""NumPy forward pass of the per-replica Q-network (no torch), for serving; the same arithmetic
as set_network.SetQNetwork."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SET_DIMS_KEY = "meta.set_dims"
# Q of an empty replica slot: far below any reward, finite so softmax and argmax stay well defined.
ABSENT_Q = -1e9


def _layers(weights: dict[str, np.ndarray], prefix: str) -> list[tuple[np.ndarray, np.ndarray]]:
    out, index = [], 0
    while f"{prefix}.{index}.weight" in weights:
        w = np.asarray(weights[f"{prefix}.{index}.weight"], dtype=np.float32)
        b = np.asarray(weights[f"{prefix}.{index}.bias"], dtype=np.float32)
        out.append((np.ascontiguousarray(w.T), b))
        index += 2  # Sequential interleaves Linear and ReLU
    if not out:
        raise ValueError(f"weights are missing array '{prefix}.0.weight'")
    return out


class NumpySetQNetwork:
    """Q-values of every replica slot for one flat observation (or a batch of them)."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        if SET_DIMS_KEY not in weights:
            raise ValueError(f"weights are missing array {SET_DIMS_KEY!r}")
        self.replica_dim, self.context_dim, self.max_replicas = (int(v) for v in weights[SET_DIMS_KEY])
        self.state_dim = self.max_replicas * (self.replica_dim + 1) + self.context_dim
        self.n_actions = self.max_replicas
        self._g, self._f = _layers(weights, "g"), _layers(weights, "f")
        try:
            self._out = (np.asarray(weights["out.weight"], np.float32).T, np.asarray(weights["out.bias"],
                                                                                     np.float32))
        except KeyError as exc:
            raise ValueError(f"weights are missing array {exc.args[0]!r}") from None
        # For `score`: the first scoring layer split by what it reads, a replica's own embedding (a
        # product per replica) and the pooled embeddings with the context (one product per call,
        # added to every replica's); the output layer as a vector, so its product is the scores.
        first_w, self._first_b = self._f[0]
        width = self._g[-1][0].shape[1]
        self._first_own = np.ascontiguousarray(first_w[:width])
        self._first_shared = np.ascontiguousarray(first_w[width:])
        self._out_w, self._out_b = np.ascontiguousarray(self._out[0][:, 0]), self._out[1]

    def q_values(self, state: np.ndarray | Sequence[float]) -> np.ndarray:
        x = np.asarray(state, dtype=np.float32)
        if x.shape[-1] != self.state_dim or x.ndim not in (1, 2):
            raise ValueError(f"state must have {self.state_dim} values, got shape {x.shape}")
        q = self._forward(np.atleast_2d(x))
        return q[0] if x.ndim == 1 else q

    def score(self, rows: np.ndarray, context: np.ndarray | Sequence[float]) -> np.ndarray:
        """Q-values of n replicas given their feature rows (n, replica_dim) and the context, without
        padding: the first scoring layer is split so the pooled part is computed once, not per replica.
        Every intermediate is a fresh array (updated in place), so threads may score at once; products
        are ndarray.dot, the same BLAS call as the @ operator without its ufunc dispatch."""
        h = np.asarray(rows, dtype=np.float32)
        for w_t, b in self._g:
            h = h.dot(w_t)
            h += b
            np.maximum(h, 0.0, out=h)
        # The mean as ndarray.mean computes it (a float32 sum over rows, then / n), without its wrapper.
        pooled = np.concatenate([np.add.reduce(h, axis=0) / len(h), np.maximum.reduce(h, axis=0), context],
                                dtype=np.float32)
        shared = pooled.dot(self._first_shared)
        shared += self._first_b
        z = h.dot(self._first_own)
        z += shared
        np.maximum(z, 0.0, out=z)
        for w_t, b in self._f[1:]:
            z = z.dot(w_t)
            z += b
            np.maximum(z, 0.0, out=z)
        q = z.dot(self._out_w)
        q += self._out_b
        return q

    def _forward(self, x: np.ndarray) -> np.ndarray:
        n, d = self.max_replicas, self.replica_dim
        rows = x[:, : n * d].reshape(-1, n, d)
        mask, context = x[:, n * d : n * d + n], x[:, n * d + n :]
        h = rows
        for w_t, b in self._g:
            h = np.maximum(h @ w_t + b, 0.0)
        h = h * mask[..., None]
        count = np.maximum(mask.sum(axis=1, keepdims=True), 1.0)
        pooled = np.concatenate([h.sum(axis=1) / count, h.max(axis=1), context], axis=-1)
        z = np.concatenate([h, np.broadcast_to(pooled[:, None, :], (*h.shape[:2], pooled.shape[-1]))],
                           axis=-1)
        for w_t, b in self._f:
            z = np.maximum(z @ w_t + b, 0.0)
        q = (z @ self._out[0] + self._out[1])[..., 0]
        return np.where(mask < 0.5, np.float32(ABSENT_Q), q).astype(np.float32)

    def greedy(self, state: np.ndarray | Sequence[float]) -> int:
        return int(np.argmax(self.q_values(state)))
