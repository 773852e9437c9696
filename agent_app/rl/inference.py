"""Per-request inference in NumPy only (no torch import) and the weights wire format; web
workers import just this for `/select_replica`."""

from __future__ import annotations

import io
import threading
from collections.abc import Sequence

import numpy as np

# Names shared with network.export_numpy: "hidden.<i>.weight/bias", "out.*" or
# "value.*" + "advantage.*", and this flag.
DUELING_KEY = "meta.dueling"
_ZERO = np.float32(0.0)


class NumpyQNetwork:
    """The same forward pass in NumPy; equal to QNetwork to 1e-5 and several times faster for
    one state because it skips torch's per-op dispatch.

    The dueling head is folded into one linear layer at load time (the mean subtraction is
    linear), so a dueling net costs the same as a plain one. Scratch buffers for the single-state
    path are per thread, so one instance is safe to share between threads.
    """

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        try:
            dueling = bool(int(np.asarray(weights.get(DUELING_KEY, 0))))
            index = 0
            mats: list[np.ndarray] = []
            biases: list[np.ndarray] = []
            while f"hidden.{index}.weight" in weights:
                mats.append(_as_matrix(weights[f"hidden.{index}.weight"]))
                biases.append(_as_vector(weights[f"hidden.{index}.bias"]))
                index += 2  # Sequential interleaves Linear and ReLU.
            if dueling:
                value_w = _as_matrix(weights["value.weight"])
                value_b = _as_vector(weights["value.bias"])
                adv_w = _as_matrix(weights["advantage.weight"])
                adv_b = _as_vector(weights["advantage.bias"])
                # Q = V + A - mean(A) = h @ (Wv + Wa - mean_rows(Wa)).T + (bv + ba - mean(ba)).
                out_w = value_w + adv_w - adv_w.mean(axis=0, keepdims=True)
                out_b = value_b + adv_b - adv_b.mean()
            else:
                out_w = _as_matrix(weights["out.weight"])
                out_b = _as_vector(weights["out.bias"])
        except KeyError as exc:
            raise ValueError(f"weights are missing array {exc.args[0]!r}") from None
        if not mats:
            raise ValueError("weights contain no hidden layers ('hidden.0.weight' missing)")
        mats.append(out_w)
        biases.append(out_b)
        for i in range(1, len(mats)):
            if mats[i].shape[1] != mats[i - 1].shape[0] or biases[i].shape[0] != mats[i].shape[0]:
                raise ValueError(f"layer {i} shape {mats[i].shape} does not fit the previous layer")
        # Stored transposed and contiguous so x @ W_t is a plain row-major GEMV.
        self._weights_t = [np.ascontiguousarray(m.T, dtype=np.float32) for m in mats]
        self._biases = [np.ascontiguousarray(b, dtype=np.float32) for b in biases]
        # For one state: each layer's bias as a last row, fed by a constant 1 at the end of its
        # input, so a layer is one GEMV and one ReLU (half the NumPy calls of the serving path).
        self._augmented = [np.vstack([w_t, b[None, :]]) for w_t, b in zip(self._weights_t, self._biases,
                                                                            strict=True)]
        self.state_dim = int(mats[0].shape[1])
        self.n_actions = int(out_w.shape[0])
        self.dueling = dueling
        self._local = threading.local()

    def _scratch(self) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray, np.ndarray]], np.ndarray]:
        # This thread's buffers, built once: each layer's input ends in a constant 1 (the bias row);
        # the state is written into the first, each layer writes its output into the next's head.
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            inputs = [np.ones(w.shape[0], dtype=np.float32) for w in self._augmented]
            layers = [(inputs[i], w, inputs[i + 1][:-1]) for i, w in enumerate(self._augmented[:-1])]
            scratch = self._local.scratch = (inputs[0][:-1], layers, inputs[-1])
        return scratch

    def q_values(self, state: np.ndarray | Sequence[float]) -> np.ndarray:
        """Q-values for one state (shape (n_actions,)) or a batch (shape (B, n_actions))."""
        if type(state) is not list or not state or type(state[0]) not in (float, int):
            x = np.asarray(state, dtype=np.float32)
            if x.ndim == 2:
                return self._forward_batch(x)
            if x.shape != (self.state_dim,):
                raise ValueError(f"state must have shape ({self.state_dim},), got {x.shape}")
        elif len(state) != self.state_dim:
            raise ValueError(f"state must have shape ({self.state_dim},), got ({len(state)},)")
        head, layers, last = self._scratch()
        head[:] = state
        for layer_input, weights, out in layers:
            np.dot(layer_input, weights, out=out)
            np.maximum(out, _ZERO, out=out)
        return np.dot(last, self._augmented[-1])  # a fresh array: safe to hand to the caller

    def _forward_batch(self, x: np.ndarray) -> np.ndarray:
        if x.shape[1] != self.state_dim:
            raise ValueError(f"states must have shape (B, {self.state_dim}), got {x.shape}")
        last = len(self._weights_t) - 1
        h = x
        for i, (w_t, b) in enumerate(zip(self._weights_t, self._biases, strict=True)):
            h = h @ w_t
            h += b
            if i < last:
                np.maximum(h, _ZERO, out=h)
        return h

    def greedy(self, state: np.ndarray | Sequence[float]) -> int:
        """Index of the highest Q-value for one state."""
        return int(np.argmax(self.q_values(state)))


def weights_to_bytes(weights: dict[str, np.ndarray]) -> bytes:
    """Serialise named arrays with np.savez (uncompressed: weights are ~140 KB, speed wins)."""
    buffer = io.BytesIO()
    np.savez(buffer, **{name: np.asarray(array) for name, array in weights.items()})
    return buffer.getvalue()


def weights_from_bytes(blob: bytes) -> dict[str, np.ndarray]:
    """Inverse of `weights_to_bytes`; refuses pickled objects (allow_pickle=False)."""
    try:
        archive = np.load(io.BytesIO(blob), allow_pickle=False)
    except Exception as exc:  # ValueError, OSError, zipfile.BadZipFile...: all mean "corrupt"
        raise ValueError(f"not a weights archive: {exc}") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError("not a weights archive: expected an .npz archive of named arrays")
    with archive:
        try:
            return {name: archive[name] for name in archive.files}
        except Exception as exc:
            raise ValueError(f"not a weights archive: {exc}") from exc


def _as_matrix(array: np.ndarray) -> np.ndarray:
    matrix = np.asarray(array, dtype=np.float32)
    if matrix.ndim != 2:
        raise ValueError(f"expected a 2-D weight matrix, got shape {matrix.shape}")
    return matrix


def _as_vector(array: np.ndarray) -> np.ndarray:
    vector = np.asarray(array, dtype=np.float32)
    if vector.ndim != 1:
        raise ValueError(f"expected a 1-D bias vector, got shape {vector.shape}")
    return vector
