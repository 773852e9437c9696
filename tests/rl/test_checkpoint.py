"""Checkpoints: bit-exact round trip, atomic writes, and clear refusals (never unpickling)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from agent_app.rl import (
    CheckpointError,
    CheckpointFormatError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    DQNAgent,
    load_checkpoint,
    read_checkpoint,
    routing_config,
    save_checkpoint,
)
from tests.rl.conftest import random_batch


def _trained_agent(replicas: int = 3, steps: int = 30, **overrides: object) -> DQNAgent:
    config = routing_config(
        replicas,
        hidden_sizes=(32, 32),
        batch_size=16,
        buffer_capacity=500,
        target_update_interval=7,
        device="cpu",
        seed=0,
        **overrides,
    )
    agent = DQNAgent(config)
    batch = random_batch(np.random.default_rng(0), 100, config.state_dim, replicas)
    agent.buffer.add_batch(
        batch.states, batch.actions, batch.rewards, batch.next_states, batch.dones
    )
    for _ in range(steps):
        agent.train_step()
    return agent


def _assert_same_agent(a: DQNAgent, b: DQNAgent) -> None:
    for net in ("online", "target"):
        sa, sb = getattr(a, net).state_dict(), getattr(b, net).state_dict()
        assert sa.keys() == sb.keys()
        for key in sa:
            assert torch.equal(sa[key], sb[key]), f"{net}.{key}"
    oa, ob = a.optimizer.state_dict(), b.optimizer.state_dict()
    for pid, state in oa["state"].items():
        for key, value in state.items():
            assert torch.equal(value, ob["state"][pid][key]), f"optimizer {key}"
    assert a.epsilon == b.epsilon and a.steps_done == b.steps_done


def test_save_then_load_round_trips_bit_exactly(tmp_path: Path) -> None:
    agent = _trained_agent()
    path = save_checkpoint(agent, tmp_path / "agent.pt", extra={"model_version": 4})
    restored = load_checkpoint(path)
    _assert_same_agent(agent, restored)
    assert restored.config == agent.config
    assert read_checkpoint(path)["extra"] == {"model_version": 4}


def test_a_restored_agent_continues_exactly_like_the_original(tmp_path: Path) -> None:
    agent = _trained_agent(prioritized=False)
    restored = load_checkpoint(save_checkpoint(agent, tmp_path / "a.pt"))
    restored.buffer = agent.buffer  # the buffer lives in Redis/DB, not in the checkpoint
    batch = random_batch(np.random.default_rng(9), 16, 10, 3)
    for _ in range(12):  # crosses a target sync (interval 7)
        assert agent.train_on_batch(batch)[0] == restored.train_on_batch(batch)[0]
    _assert_same_agent(agent, restored)


def test_expected_config_wins_for_hyperparameters(tmp_path: Path) -> None:
    agent = _trained_agent()
    path = save_checkpoint(agent, tmp_path / "a.pt")
    restored = load_checkpoint(path, expected_config=agent.config.replace(lr=0.05, gamma=0.1))
    assert restored.config.gamma == 0.1
    assert restored.optimizer.param_groups[0]["lr"] == 0.05
    assert restored.steps_done == agent.steps_done


def test_a_gpu_checkpoint_loads_on_a_machine_without_cuda(tmp_path: Path) -> None:
    path = save_checkpoint(_trained_agent(steps=3), tmp_path / "a.pt")
    payload = torch.load(path, weights_only=True)
    payload["config"] = payload["config"].replace('"device": "cpu"', '"device": "cuda"')
    torch.save(payload, path)
    if not torch.cuda.is_available():
        assert load_checkpoint(path).device == "cpu"
    assert load_checkpoint(path, device="cpu").device == "cpu"


def test_missing_file_raises_not_found(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


@pytest.mark.parametrize("keep", [0, 10, 0.5, -1])
def test_truncated_file_raises_a_clear_corruption_error(tmp_path: Path, keep: float) -> None:
    path = save_checkpoint(_trained_agent(steps=1), tmp_path / "a.pt")
    data = path.read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else keep
    path.write_bytes(data[:cut])
    with pytest.raises(CheckpointError, match=r"truncated or corrupt|not a checkpoint"):
        load_checkpoint(path)


def test_flipped_bytes_raise_a_checkpoint_error(tmp_path: Path) -> None:
    path = save_checkpoint(_trained_agent(steps=1), tmp_path / "a.pt")
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_a_foreign_torch_file_is_not_our_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "foreign.pt"
    torch.save({"model": torch.nn.Linear(2, 2).state_dict()}, path)
    with pytest.raises(CheckpointFormatError, match="not an RL agent checkpoint"):
        load_checkpoint(path)


def test_another_format_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.pt"
    torch.save({"format": "rl-agent-service/dqn", "format_version": 99}, path)
    with pytest.raises(CheckpointFormatError, match="version 99"):
        load_checkpoint(path)


def test_a_checkpoint_for_another_number_of_replicas_names_both(tmp_path: Path) -> None:
    path = save_checkpoint(_trained_agent(replicas=5, steps=1), tmp_path / "five.pt")
    expected = routing_config(3, hidden_sizes=(32, 32), device="cpu")
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(path, expected_config=expected)
    message = str(info.value)
    assert "5 replicas" in message and "state 12" in message
    assert "3 replicas" in message and "state 10" in message


def test_a_checkpoint_for_another_architecture_names_both(tmp_path: Path) -> None:
    path = save_checkpoint(_trained_agent(steps=1), tmp_path / "a.pt")
    expected = routing_config(3, hidden_sizes=(64, 64), dueling=True, device="cpu")
    with pytest.raises(CheckpointMismatchError, match=r"hidden 32x32.*hidden 64x64, dueling"):
        load_checkpoint(path, expected_config=expected)


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_a_malicious_pickle_is_refused_and_never_runs(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"format": "rl-agent-service/dqn", "format_version": 1, "x": _Exploit(marker)}
    if writer == "pickle":
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path)
    with pytest.raises(CheckpointFormatError, match="not a checkpoint of ours"):
        load_checkpoint(path)
    assert not marker.exists()


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path: Path, monkeypatch) -> None:
    agent = _trained_agent(steps=1)
    path = save_checkpoint(agent, tmp_path / "a.pt")
    good = path.read_bytes()

    def failing_save(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(agent, path)
    assert path.read_bytes() == good  # the old checkpoint is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt"]


def test_a_copy_is_written_atomically_byte_for_byte(tmp_path: Path, monkeypatch) -> None:
    from agent_app.rl.checkpoint import copy_checkpoint

    source = save_checkpoint(_trained_agent(steps=1), tmp_path / "a-v000001.pt")
    target = copy_checkpoint(source, tmp_path / "a.pt")
    assert target.read_bytes() == source.read_bytes()
    _assert_same_agent(load_checkpoint(source), load_checkpoint(target))

    def failing_fsync(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    before = target.read_bytes()
    with pytest.raises(OSError, match="disk full"):
        copy_checkpoint(tmp_path / "a-v000001.pt", target)
    assert target.read_bytes() == before  # the copy in place is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-v000001.pt", "a.pt"]
