"""Offline training from logged JSONL/CSV experiences, with row validation by line number."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from agent_app.rl import (
    DQNAgent,
    OfflineDataError,
    compute_reward,
    load_experiences,
    next_state_after,
    routing_config,
    train_offline,
)
from agent_app.rl.toy_tasks import RoutingBandit
from tests.conftest import SEED_EXPERIENCE


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_specification_record_experience_rows_get_reward_and_next_state(tmp_path: Path) -> None:
    data = load_experiences(_write_jsonl(tmp_path / "log.jsonl", [SEED_EXPERIENCE]), 10, 3)
    assert data.rewards[0] == pytest.approx(compute_reward(265.3, True, [5, 4, 7]))
    np.testing.assert_allclose(data.next_states[0], next_state_after(SEED_EXPERIENCE["state"], [5, 4, 7]))
    assert data.actions[0] == 1 and data.dones[0] == 0.0


def test_transition_rows_and_csv_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["state", "action", "reward", "next_state", "done"])
        writer.writerow(
            [
                json.dumps([1, 2, 3, 4, 5, 6, 1, 0, 0, 0]),
                2,
                0.5,
                json.dumps([1, 2, 4, 4, 5, 6, 1, 0, 0, 0]),
                "true",
            ]
        )
        state = json.dumps(SEED_EXPERIENCE["state"])
        writer.writerow([state, 0, -10, state, 0])
    data = load_experiences(path, 10, 3)
    assert data.actions.tolist() == [2, 0]
    assert data.rewards.tolist() == [0.5, -10.0]
    assert data.dones.tolist() == [1.0, 0.0]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"action": 3}, "'action' must be an integer in \\[0, 3\\)"),
        ({"state": [1, 2, 3]}, "'state' must be a list of 10 numbers"),
        ({"latency_ms": "fast"}, "'latency_ms' must be a number"),
        ({"latency_ms": float("nan")}, "'latency_ms' must be a finite number"),
        ({"success": "maybe"}, "'success' must be true/false"),
        ({"replica_loads": [1, 2]}, "'replica_loads' must be a list of 3 numbers"),
    ],
)
def test_an_invalid_row_is_reported_with_its_line_number(
    tmp_path: Path, bad: dict, message: str
) -> None:
    path = _write_jsonl(tmp_path / "log.jsonl", [SEED_EXPERIENCE, SEED_EXPERIENCE, SEED_EXPERIENCE | bad])
    with pytest.raises(OfflineDataError, match=rf"log.jsonl:3: {message}"):
        load_experiences(path, 10, 3)


def test_a_missing_field_and_broken_json_name_the_line(tmp_path: Path) -> None:
    row = {k: v for k, v in SEED_EXPERIENCE.items() if k != "success"}
    with pytest.raises(OfflineDataError, match=r":1: missing field 'success'"):
        load_experiences(_write_jsonl(tmp_path / "a.jsonl", [row]), 10, 3)
    (tmp_path / "b.jsonl").write_text(json.dumps(SEED_EXPERIENCE) + "\n\n{not json\n")
    with pytest.raises(OfflineDataError, match=r"b.jsonl:3: not valid JSON"):
        load_experiences(tmp_path / "b.jsonl", 10, 3)


def test_training_from_a_log_alone_learns_to_route(tmp_path: Path) -> None:
    env = RoutingBandit(3, seed=0)
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(3000):  # a log written by a random router, in the specification's API shape
        raw = env.sample_state()
        action = int(rng.integers(3))
        env_reward, next_raw = env.step(raw, action)
        latency_ms = 1000.0 * (1.0 - env_reward) if env_reward > -10 else 100.0
        rows.append(
            {
                "state": raw.tolist(),
                "action": action,
                "latency_ms": max(latency_ms, 0.0),
                "success": env_reward > -10,
                "replica_loads": next_raw[:3].tolist(),
            }
        )
    path = _write_jsonl(tmp_path / "router.jsonl", rows)
    agent = DQNAgent(routing_config(3, hidden_sizes=(64, 64), device="cpu", seed=0))
    progress: list[int] = []
    result = train_offline(agent, path, steps=600, progress=lambda s, loss: progress.append(s))
    assert result.rows == 3000 and result.steps == 600 and progress[-1] == 600
    assert result.losses[-100:].mean() < result.losses[:100].mean()

    def greedy(raw: np.ndarray) -> int:
        return agent.greedy(env.encode(raw))

    random_router = np.random.default_rng(1)
    learned = env.evaluate(greedy)
    assert learned > env.evaluate(lambda raw: int(random_router.integers(3))) + 0.1


def test_missing_or_empty_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(OfflineDataError, match="file not found"):
        load_experiences(tmp_path / "none.jsonl", 10, 3)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(OfflineDataError, match="no experiences"):
        load_experiences(tmp_path / "empty.jsonl", 10, 3)
