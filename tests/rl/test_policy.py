"""The least-loaded fallback and the softmax confidence: one definition, used by the RL core, the
service and the gateway client alike."""

from __future__ import annotations

import random

import numpy as np
import pytest

from agent_app.rl.policy import least_loaded, softmax_confidence


def test_least_loaded_picks_the_lowest_load_and_breaks_ties_at_random() -> None:
    assert least_loaded([5, 3, 7]) == 1
    assert {least_loaded([1, 4, 1]) for _ in range(200)} == {0, 2}
    picks = [least_loaded([2, 2, 2], random.Random(7)) for _ in range(5)]
    assert picks == [least_loaded([2, 2, 2], random.Random(7)) for _ in range(5)]  # a seeded rng repeats


def test_softmax_confidence_is_one_over_n_for_ties_near_one_for_a_clear_best_and_zero_when_not_finite():
    assert softmax_confidence(np.zeros(4), 2) == pytest.approx(0.25)
    assert softmax_confidence([0.0, 50.0, 0.0], 1) == pytest.approx(1.0)
    assert softmax_confidence(np.array([1e30, 1e30], dtype=np.float32), 0) == pytest.approx(0.5)
    assert softmax_confidence([np.nan, 1.0], 1) == 0.0


def test_the_agent_the_service_and_the_client_share_one_definition() -> None:
    import agent_app.rl
    import rlagent_client
    from agent_app.rl import agent

    assert agent.softmax_confidence is softmax_confidence is agent_app.rl.softmax_confidence
    assert rlagent_client.least_loaded is least_loaded is agent_app.rl.least_loaded
