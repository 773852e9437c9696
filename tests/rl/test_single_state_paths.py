"""The plain-Python single-state paths of the hot path give what the NumPy forms give."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent_app.rl import NumpyQNetwork, StateScales, normalize_state, softmax_confidence
from agent_app.rl.inference import DUELING_KEY
from agent_app.rl.state import normalize_one


def random_weights(rng: np.random.Generator, dueling: bool, state_dim: int = 10, n: int = 3) -> dict:
    weights, width = {}, state_dim
    for index, out in zip((0, 2, 4), (32, 64, 16), strict=True):
        scale = 2 / math.sqrt(width)  # roughly torch's initialisation, a little wider
        weights[f"hidden.{index}.weight"] = (rng.standard_normal((out, width)) * scale).astype(np.float32)
        weights[f"hidden.{index}.bias"] = rng.standard_normal(out).astype(np.float32)
        width = out
    heads = ("value", "advantage") if dueling else ("out",)
    for head in heads:
        rows = 1 if head == "value" else n
        weights[f"{head}.weight"] = (rng.standard_normal((rows, width)) / math.sqrt(width)).astype(np.float32)
        weights[f"{head}.bias"] = rng.standard_normal(rows).astype(np.float32)
    weights[DUELING_KEY] = np.array(int(dueling))
    return weights


@pytest.mark.parametrize("scales", [StateScales(), StateScales(rps_log=False, rps_scale=50.0),
                                    StateScales(clip=None), StateScales(clip=0.5)])
def test_normalize_one_equals_normalize_state_within_float32_rounding(scales: StateScales) -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        raw = [*rng.uniform(0, 400, 3), rng.uniform(0, 300), rng.uniform(0, 5), rng.uniform(0, 5000),
               *rng.uniform(0, 1, 4)]
        fast = normalize_one([float(v) for v in raw], 3, scales)
        assert isinstance(fast, list) and all(type(v) is float for v in fast)
        np.testing.assert_allclose(fast, normalize_state(raw, 3, scales), rtol=2e-6, atol=1e-7)


def test_normalize_one_refuses_a_state_of_the_wrong_length_and_keeps_nan_as_numpy_does() -> None:
    with pytest.raises(ValueError, match="10 values"):
        normalize_one([1.0] * 9, 3)
    raw = [1.0, 2.0, 3.0, 4.0, 0.1, -1.0, math.nan, 0.5, 0.5, 0.5]
    with np.errstate(all="ignore"):
        expected = normalize_state(raw, 3)
    np.testing.assert_array_equal(np.isnan(normalize_one(raw, 3)), np.isnan(expected))
    assert normalize_one(raw, 3)[5] == expected[5] == -10.0  # log1p(-1) = -inf, clipped


@pytest.mark.parametrize("dueling", [False, True])
def test_a_list_state_gives_the_q_values_of_an_array_and_of_the_batch_path(dueling: bool) -> None:
    rng = np.random.default_rng(1)
    net = NumpyQNetwork(random_weights(rng, dueling))
    states = rng.uniform(-1, 1, (20, 10)).astype(np.float32)
    batch = net.q_values(states)
    for row, expected in zip(states, batch, strict=True):
        np.testing.assert_allclose(net.q_values(row.tolist()), expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(net.q_values(row), expected, rtol=1e-5, atol=1e-5)
    first = net.q_values(states[0].tolist())
    net.q_values(states[1].tolist())
    np.testing.assert_allclose(first, batch[0], rtol=1e-5, atol=1e-5)  # not a reused buffer
    with pytest.raises(ValueError, match=r"shape \(10,\)"):
        net.q_values([0.0] * 9)


def test_softmax_confidence_in_python_equals_the_numpy_formula() -> None:
    rng = np.random.default_rng(2)
    for _ in range(200):
        q = rng.standard_normal(rng.integers(1, 8)) * rng.choice([0.01, 1, 100])
        action = int(rng.integers(len(q)))
        shifted = np.exp(q - q.max())
        assert softmax_confidence(q, action) == pytest.approx(shifted[action] / shifted.sum(), rel=1e-12)
        assert softmax_confidence(q.astype(np.float32).tolist(), action) == pytest.approx(
            softmax_confidence(q.astype(np.float32), action), rel=1e-12)
    for broken in ([math.inf, 1.0], [-math.inf, -math.inf], [1.0, math.nan], [math.nan, 1.0]):
        assert softmax_confidence(broken, 0) == 0.0
