"""n-step transitions: hand-computed returns, truncation at done, out-of-order streams."""

from __future__ import annotations

import pytest

from agent_app.rl import NStepAccumulator, Transition

GAMMA = 0.5


def _t(i: int, reward: float, done: bool = False) -> Transition:
    return Transition(
        state=[float(i)], action=i % 2, reward=reward, next_state=[i + 1.0], done=done
    )


def test_three_step_return_is_the_discounted_sum() -> None:
    acc = NStepAccumulator(3, GAMMA)
    assert acc.add(_t(0, 1.0)) == []
    assert acc.add(_t(1, 2.0)) == []
    (out,) = acc.add(_t(2, 4.0))
    assert out.reward == pytest.approx(1.0 + 0.5 * 2.0 + 0.25 * 4.0)
    assert out.state == [0.0] and out.action == 0
    assert out.next_state == [3.0]  # bootstrap from the state after t+n-1
    assert out.discount == pytest.approx(GAMMA**3) and out.steps == 3 and not out.done


def test_a_terminal_transition_truncates_the_window() -> None:
    acc = NStepAccumulator(3, GAMMA)
    acc.add(_t(0, 1.0))
    out = acc.add(_t(1, 2.0, done=True))
    # Both windows that contain the terminal are complete at once.
    by_start = {o.state[0]: o for o in out}
    assert by_start[0.0].reward == pytest.approx(1.0 + 0.5 * 2.0)
    assert by_start[0.0].done and by_start[0.0].steps == 2
    assert by_start[1.0].reward == pytest.approx(2.0) and by_start[1.0].steps == 1
    # The next episode does not leak into the previous one.
    assert acc.add(_t(2, 100.0), seq=2) == []


def test_out_of_order_arrival_gives_the_same_transitions_as_in_order() -> None:
    rewards = [1.0, -2.0, 3.0, 0.5, 4.0, 1.5]
    in_order = NStepAccumulator(3, GAMMA)
    expected = []
    for i, r in enumerate(rewards):
        expected += in_order.add(_t(i, r), seq=i)
    shuffled = NStepAccumulator(3, GAMMA)
    got = []
    for i in [3, 0, 5, 1, 4, 2]:
        got += shuffled.add(_t(i, rewards[i]), seq=i)
    key = lambda o: o.state[0]  # noqa: E731
    assert sorted(got, key=key) == sorted(expected, key=key)
    assert [o.state[0] for o in sorted(got, key=key)] == [0.0, 1.0, 2.0, 3.0]
    assert sorted(got, key=key)[1].reward == pytest.approx(-2.0 + 0.5 * 3.0 + 0.25 * 0.5)


def test_streams_are_chained_separately() -> None:
    acc = NStepAccumulator(2, GAMMA)
    assert acc.add(_t(0, 1.0), stream_key="gw-a", seq=0) == []
    assert acc.add(_t(0, 10.0), stream_key="gw-b", seq=0) == []
    (a,) = acc.add(_t(1, 2.0), stream_key="gw-a", seq=1)
    (b,) = acc.add(_t(1, 20.0), stream_key="gw-b", seq=1)
    assert a.reward == pytest.approx(1.0 + 0.5 * 2.0)
    assert b.reward == pytest.approx(10.0 + 0.5 * 20.0)


def test_a_lost_report_truncates_after_max_delay() -> None:
    acc = NStepAccumulator(3, GAMMA, max_delay=4)
    out = acc.add(_t(0, 1.0), seq=0)
    out += acc.add(_t(2, 5.0), seq=2)  # seq 1 never arrives
    out += acc.add(_t(3, 1.0), seq=3)
    assert out == []  # 0 and 1 still wait for seq 1
    out = acc.add(_t(4, 1.0), seq=4)  # completes 2..4, and the stream is max_delay past 0
    by_start = {o.state[0]: o for o in out}
    assert sorted(by_start) == [0.0, 2.0]
    first = by_start[0.0]
    assert first.steps == 1 and first.reward == pytest.approx(1.0)
    assert first.discount == pytest.approx(GAMMA)
    assert by_start[2.0].steps == 3
    assert [o.state[0] for o in acc.add(_t(5, 1.0), seq=5)] == [3.0]  # window 3, 4, 5


def test_flush_emits_every_pending_transition_truncated() -> None:
    acc = NStepAccumulator(3, GAMMA)
    acc.add(_t(0, 1.0))
    acc.add(_t(1, 2.0))
    out = sorted(acc.flush(), key=lambda o: o.state[0])
    assert [o.steps for o in out] == [2, 1]
    assert out[0].reward == pytest.approx(2.0) and out[0].discount == pytest.approx(0.25)
    assert acc.pending_count() == 0


def test_one_step_passes_transitions_straight_through() -> None:
    acc = NStepAccumulator(1, GAMMA)
    (out,) = acc.add(_t(5, 3.0), seq=5)
    assert out.reward == 3.0 and out.discount == GAMMA and out.steps == 1


def test_a_duplicate_sequence_number_is_refused() -> None:
    acc = NStepAccumulator(3, GAMMA)
    acc.add(_t(0, 1.0), seq=0)
    with pytest.raises(ValueError, match="duplicate"):
        acc.add(_t(0, 1.0), seq=0)
