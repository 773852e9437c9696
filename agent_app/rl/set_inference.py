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

    def q_values(self, state: np.ndarray | Sequence[float]) -> np.ndarray:
        x = np.asarray(state, dtype=np.float32)
        if x.shape[-1] != self.state_dim or x.ndim not in (1, 2):
            raise ValueError(f"state must have {self.state_dim} values, got shape {x.shape}")
        q = self._forward(np.atleast_2d(x))
        return q[0] if x.ndim == 1 else q

    def score(self, rows: np.ndarray, context: np.ndarray | Sequence[float]) -> np.ndarray:
        """Q-values of n replicas given their feature rows (n, replica_dim) and the context, without
        padding: the first scoring layer is split so the pooled part is computed once, not per replica."""
        h = np.asarray(rows, dtype=np.float32)
        for w_t, b in self._g:
            h = np.maximum(h @ w_t + b, 0.0)
        w_t, b = self._f[0] if self._f else self._out
        width = h.shape[1]
        pooled = np.concatenate([h.mean(axis=0), h.max(axis=0), np.asarray(context, dtype=np.float32)])
        z = h @ w_t[:width] + (pooled @ w_t[width:] + b)
        if not self._f:
            return z[:, 0]
        z = np.maximum(z, 0.0)
        for w_t, b in self._f[1:]:
            z = np.maximum(z @ w_t + b, 0.0)
        return (z @ self._out[0] + self._out[1])[:, 0]

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
