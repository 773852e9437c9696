"""Q-network shapes, the NumPy twin's equality with torch, and the weights wire format."""

from __future__ import annotations

import io
import pickle
import threading

import numpy as np
import pytest
import torch

from agent_app.rl import (
    NumpyQNetwork,
    QNetwork,
    export_numpy,
    weights_from_bytes,
    weights_to_bytes,
)


def _net(dueling: bool, seed: int = 0) -> QNetwork:
    torch.manual_seed(seed)
    return QNetwork(10, 3, (128, 128, 128), dueling=dueling)


@pytest.mark.parametrize("dueling", [False, True])
def test_default_network_maps_n_plus_7_inputs_to_n_q_values(dueling: bool) -> None:
    net = _net(dueling)
    assert net(torch.zeros(5, 10)).shape == (5, 3)
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears[:3]] == [128, 128, 128]


def test_dueling_head_is_value_plus_centred_advantage() -> None:
    net = _net(True)
    x = torch.randn(4, 10)
    with torch.no_grad():
        h = net.hidden(x)
        a = net.advantage(h)
        expected = net.value(h) + a - a.mean(dim=1, keepdim=True)
        torch.testing.assert_close(net(x), expected)


@pytest.mark.parametrize("dueling", [False, True])
def test_numpy_forward_equals_torch_to_1e_5(dueling: bool) -> None:
    net = _net(dueling, seed=3)
    # Make the weights less tame than the init so differences would show.
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3.0)
    twin = NumpyQNetwork(export_numpy(net))
    states = np.random.default_rng(0).uniform(-2, 2, (32, 10)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(states)).numpy()
    for state, q in zip(states, expected, strict=True):
        np.testing.assert_allclose(twin.q_values(state), q, atol=1e-5, rtol=0)
    np.testing.assert_allclose(twin.q_values(states), expected, atol=1e-5, rtol=0)
    assert twin.greedy(states[0]) == int(expected[0].argmax())


def test_numpy_result_is_not_overwritten_by_the_next_call() -> None:
    twin = NumpyQNetwork(export_numpy(_net(False)))
    first = twin.q_values(np.zeros(10, dtype=np.float32))
    saved = first.copy()
    twin.q_values(np.ones(10, dtype=np.float32))
    np.testing.assert_array_equal(first, saved)


def test_numpy_network_is_safe_to_share_between_threads() -> None:
    net = _net(False)
    twin = NumpyQNetwork(export_numpy(net))
    states = np.random.default_rng(1).random((8, 10), dtype=np.float32)
    expected = twin.q_values(states)
    errors: list[str] = []

    def worker(row: int) -> None:
        for _ in range(300):
            if not np.allclose(twin.q_values(states[row]), expected[row], atol=1e-6):
                errors.append(f"thread {row} saw another thread's result")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_numpy_network_refuses_a_state_of_the_wrong_size() -> None:
    twin = NumpyQNetwork(export_numpy(_net(False)))
    with pytest.raises(ValueError, match="shape"):
        twin.q_values(np.zeros(9, dtype=np.float32))


@pytest.mark.parametrize("dueling", [False, True])
def test_weights_survive_bytes_round_trip(dueling: bool) -> None:
    weights = export_numpy(_net(dueling))
    restored = weights_from_bytes(weights_to_bytes(weights))
    assert restored.keys() == weights.keys()
    for name, array in weights.items():
        np.testing.assert_array_equal(restored[name], array)
        assert restored[name].dtype == array.dtype
    twin = NumpyQNetwork(restored)
    assert twin.dueling is dueling and twin.n_actions == 3 and twin.state_dim == 10


def test_weights_from_bytes_refuses_garbage_and_pickles() -> None:
    with pytest.raises(ValueError, match="not a weights archive"):
        weights_from_bytes(b"definitely not an npz")
    with pytest.raises(ValueError, match="not a weights archive"):
        weights_from_bytes(pickle.dumps({"a": 1}))
    buffer = io.BytesIO()
    np.savez(buffer, evil=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="not a weights archive"):
        weights_from_bytes(buffer.getvalue())


def test_incomplete_weights_name_the_missing_array() -> None:
    weights = export_numpy(_net(False))
    del weights["out.bias"]
    with pytest.raises(ValueError, match="out.bias"):
        NumpyQNetwork(weights)
