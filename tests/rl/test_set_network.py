"""The per-replica (set) Q-network: equivariance, any cluster size, torch and NumPy twins agree,
features of one replica never depend on another, and the masked TD target."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from agent_app.rl.agent import DQNAgent
from agent_app.rl.buffers import Batch
from agent_app.rl.config import DQNConfig, per_replica_config
from agent_app.rl.replica_features import (
    CONTEXT_DIM,
    LEARNED_REPLICA,
    REPLICA_DIM,
    ReplicaFeatures,
    ReplicaStats,
    compact_observation,
    compact_size,
    compact_with_loads,
    encode_context,
    encode_observation,
    encode_rows,
    is_compact,
    learned_columns,
    pad_compact,
    replicas_from_body,
    split_observation,
    with_loads,
)
from agent_app.rl.set_inference import ABSENT_Q, SET_DIMS_KEY, NumpySetQNetwork
from agent_app.rl.set_network import SetQNetwork, export_set_numpy

MAX = 8


def _replicas(rng: np.random.Generator, n: int) -> list[ReplicaFeatures]:
    return [ReplicaFeatures(load=float(rng.integers(0, 50)), running=float(rng.integers(0, 30)),
                            waiting=None if i % 2 else float(rng.integers(0, 10)),
                            kv_cache_usage=float(rng.random()), tpot_ms=float(rng.uniform(10, 80)))
            for i in range(n)]


def _context(rng: np.random.Generator) -> list[float]:
    return encode_context(rng.random(7).tolist(), 400, 150)


def _net() -> SetQNetwork:
    torch.manual_seed(0)
    return SetQNetwork(REPLICA_DIM, CONTEXT_DIM, MAX, (32, 32))


@pytest.mark.parametrize("n", [1, 3, 8])
def test_permuting_the_replicas_permutes_the_q_values(n: int) -> None:
    rng = np.random.default_rng(n)
    replicas, context = _replicas(rng, n), _context(rng)
    net = _net()
    order = rng.permutation(n)
    obs = encode_observation(replicas, context, MAX)
    permuted = encode_observation([replicas[i] for i in order], context, MAX)
    with torch.no_grad():
        q = net(torch.from_numpy(obs[None]))[0].numpy()
        q_perm = net(torch.from_numpy(permuted[None]))[0].numpy()
    np.testing.assert_allclose(q_perm[:n], q[:n][order], rtol=1e-5, atol=1e-5)
    assert (q[n:] == ABSENT_Q).all() and (q[:n] > ABSENT_Q / 2).all()


def test_the_numpy_twin_equals_the_torch_network() -> None:
    rng = np.random.default_rng(0)
    net = _net()
    twin = NumpySetQNetwork(export_set_numpy(net))
    batch = np.stack([encode_observation(_replicas(rng, n), _context(rng), MAX) for n in (1, 2, 5, 8)])
    with torch.no_grad():
        expected = net(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(twin.q_values(batch), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(twin.q_values(batch[2]), expected[2], rtol=1e-4, atol=1e-4)
    assert twin.greedy(batch[1]) in (0, 1)


def test_adding_or_removing_a_replica_leaves_the_others_features_alone() -> None:
    rng = np.random.default_rng(1)
    replicas, context = _replicas(rng, 4), _context(rng)
    rows4, mask4, ctx4 = split_observation(encode_observation(replicas, context, MAX), MAX)
    rows5, mask5, ctx5 = split_observation(encode_observation([*replicas, replicas[0]], context, MAX), MAX)
    rows3, mask3, _ = split_observation(encode_observation(replicas[:3], context, MAX), MAX)
    np.testing.assert_array_equal(rows5[:4], rows4[:4])
    np.testing.assert_array_equal(rows3[:3], rows4[:3])
    np.testing.assert_array_equal(ctx4, ctx5)
    assert mask3.sum() == 3 and mask4.sum() == 4 and mask5.sum() == 5
    assert (rows3[3:] == 0).all()


def test_missing_signals_are_marked_absent_not_zero() -> None:
    bare = ReplicaFeatures(load=20.0).encode()
    full = ReplicaFeatures(load=20.0, running=0.0, waiting=0.0, kv_cache_usage=0.0, tpot_ms=0.0,
                           ttft_ms_per_ktok=0.0, failure_rate=0.0, latency_ms=0.0,
                           prefix_match=0.0).encode()
    assert len(bare) == len(full) == REPLICA_DIM
    assert bare[0] == full[0] == pytest.approx(0.2)
    assert bare[1:] == [0.0] * (REPLICA_DIM - 1)  # value 0, flag 0
    assert full[2::2] == [1.0] * ((REPLICA_DIM - 1) // 2)  # value 0, flag 1
    _, old = replicas_from_body({"replica_loads": [3, 4]})
    assert [r.load for r in old] == [3.0, 4.0] and old[0].running is None


def test_learned_statistics_follow_the_replica_by_name() -> None:
    stats = ReplicaStats(decay=0.5)
    stats.observe("slow", True, latency_ms=2100.0, ttft_ms=100.0, prompt_tokens=1000, output_tokens=21)
    stats.observe("slow", False, latency_ms=50.0)
    body = {"replica_loads": [1, 2], "replicas": [{"name": "fast", "load": 1}, {"name": "slow", "load": 2}]}
    names, features = replicas_from_body(body, stats)
    assert names == ["fast", "slow"]
    assert features[0].tpot_ms is None and features[0].failure_rate is None
    assert features[1].tpot_ms == pytest.approx(100.0)  # (2100 - 100) / 20
    assert features[1].ttft_ms_per_ktok == pytest.approx(100.0)
    assert features[1].failure_rate == pytest.approx(0.5)
    assert features[1].latency_ms == pytest.approx(2100.0)  # successful requests only


def test_next_observation_replaces_only_the_loads() -> None:
    rng = np.random.default_rng(2)
    obs = encode_observation(_replicas(rng, 3), _context(rng), MAX)
    after = with_loads(obs, [10, 20, 30], MAX)
    rows, mask, ctx = split_observation(after, MAX)
    np.testing.assert_allclose(rows[:3, 0], [0.1, 0.2, 0.3])
    before = split_observation(obs, MAX)
    np.testing.assert_array_equal(rows[:, 1:], before[0][:, 1:])
    np.testing.assert_array_equal(ctx, before[2])
    with pytest.raises(ValueError, match="3 replicas"):
        with_loads(obs, [1, 2], MAX)


def test_config_checks_the_per_replica_layout() -> None:
    config = per_replica_config(MAX, hidden_sizes=(16, 16))
    assert config.n_actions == MAX and config.network == "per_replica"
    assert DQNConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="state_dim"):
        config.replace(state_dim=config.state_dim + 1)
    with pytest.raises(ValueError, match="network"):
        config.replace(network="transformer")


def test_masked_td_target_ignores_absent_replicas() -> None:
    # Double DQN off and on: the target's max must not pick the (huge) score of an empty slot.
    for double in (False, True):
        agent = DQNAgent(per_replica_config(MAX, hidden_sizes=(16, 16), gamma=0.5, double_dqn=double,
                                            batch_size=2, device="cpu", seed=0, lr=1e-9))
        rng = np.random.default_rng(3)
        obs = np.stack([encode_observation(_replicas(rng, 2), _context(rng), MAX) for _ in range(2)])
        with torch.no_grad():
            for layer in (agent.online.out, agent.target.out):
                layer.bias.fill_(5.0)  # every present replica scores about 5
        batch = Batch(obs, np.array([0, 1]), np.zeros(2, np.float32), obs, np.zeros(2, np.float32))
        q_present = agent.q_values(obs)[:, :2]
        _, td = agent.train_on_batch(batch)
        chosen = q_present[[0, 1], [0, 1]]
        target = 0.5 * (q_present.max(axis=1) if not double else q_present[np.arange(2),
                                                                            q_present.argmax(axis=1)])
        np.testing.assert_allclose(td, chosen - target, rtol=1e-3, atol=1e-3)


def test_exploration_picks_only_present_replicas() -> None:
    agent = DQNAgent(per_replica_config(MAX, hidden_sizes=(16, 16), device="cpu", seed=0, epsilon_start=1.0))
    rng = np.random.default_rng(4)
    obs = encode_observation(_replicas(rng, 3), _context(rng), MAX)
    actions = {agent.act(obs).action for _ in range(200)}
    assert actions == {0, 1, 2}
    assert agent.numpy_network().greedy(obs) in (0, 1, 2)


def test_a_per_replica_agent_survives_a_checkpoint(tmp_path) -> None:
    from agent_app.rl.checkpoint import load_checkpoint, save_checkpoint

    agent = DQNAgent(per_replica_config(MAX, hidden_sizes=(16, 16), device="cpu", seed=0))
    rng = np.random.default_rng(5)
    obs = encode_observation(_replicas(rng, 5), _context(rng), MAX)
    restored = load_checkpoint(save_checkpoint(agent, tmp_path / "set.pt"))
    assert restored.config == agent.config
    np.testing.assert_allclose(restored.q_values(obs), agent.q_values(obs), rtol=1e-6)


def test_only_the_slots_in_use_are_computed_yet_every_present_slot_is_scored() -> None:
    rng = np.random.default_rng(6)
    net = _net()
    obs = encode_observation(_replicas(rng, 4), _context(rng), MAX)
    _, mask, _ = split_observation(obs, MAX)
    mask[1] = 0.0  # a gap: slots 0, 2 and 3 present
    with torch.no_grad():
        q = net(torch.from_numpy(obs[None]))[0].numpy()
    np.testing.assert_allclose(q, NumpySetQNetwork(export_set_numpy(net)).q_values(obs), rtol=1e-4, atol=1e-4)
    assert (q[[0, 2, 3]] > ABSENT_Q / 2).all() and q[1] == q[4] == ABSENT_Q


def test_compact_observations_pad_to_the_flat_layout_and_score_alike() -> None:
    net = _net()
    numpy_net = NumpySetQNetwork(export_set_numpy(net))
    replicas = [ReplicaFeatures(load=10.0 * i, failure_rate=0.1 * i) for i in range(5)]
    context = encode_context([0.1] * 7, 800, 200)
    compact = compact_observation([r.encode() for r in replicas], context)
    assert is_compact(compact) and len(compact) == compact_size(5)
    flat = pad_compact([compact], MAX)[0]
    np.testing.assert_allclose(flat, encode_observation(replicas, context, MAX))
    rows = np.array([r.encode() for r in replicas], dtype=np.float32)
    np.testing.assert_allclose(numpy_net.score(rows, context), numpy_net.q_values(flat)[:5], atol=1e-5)
    moved = compact_with_loads(compact, [50, 40, 30, 20, 10])
    assert pad_compact([moved], MAX)[0][0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="2 loads for 5 replicas"):
        compact_with_loads(compact, [1, 2])


def test_rows_of_a_whole_cluster_encode_as_each_replica_alone() -> None:
    rng = np.random.default_rng(5)
    replicas = _replicas(rng, 6) + [ReplicaFeatures(load=1e9, failure_rate=float("nan"), latency_ms=2e5)]
    names = ("running", "waiting", "kv_cache_usage", "tpot_ms", "failure_rate", "latency_ms")
    signals = {name: [getattr(r, name) for r in replicas] for name in names}
    rows = encode_rows([r.load for r in replicas], signals)
    np.testing.assert_allclose(rows, np.array([r.encode() for r in replicas], dtype=np.float32), rtol=1e-6)


def _random_set_weights(rng: np.random.Generator, g_widths: tuple[int, ...],
                        f_widths: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Weights of any layout the NumPy twin reads, wider than torch's initialisation so that every
    ReLU both clips and passes."""
    weights = {SET_DIMS_KEY: np.array([REPLICA_DIM, CONTEXT_DIM, MAX])}

    def add(name: str, fan_in: int, fan_out: int) -> None:
        weights[f"{name}.weight"] = (rng.standard_normal((fan_out, fan_in)) * 2 / math.sqrt(fan_in)).astype(
            np.float32)
        weights[f"{name}.bias"] = rng.standard_normal(fan_out).astype(np.float32)

    width = REPLICA_DIM
    for index, out in enumerate(g_widths):
        add(f"g.{2 * index}", width, out)
        width = out
    width = 3 * width + CONTEXT_DIM
    for index, out in enumerate(f_widths):
        add(f"f.{2 * index}", width, out)
        width = out
    add("out", width, 1)
    return weights


@pytest.mark.parametrize(("g_widths", "f_widths"), [((64, 64), (64, 64)), ((32, 32), (32,)), ((16,), (16,)),
                                                    ((24, 8), (40, 12, 6))])
def test_scoring_rows_equals_the_padded_forward_pass(g_widths, f_widths) -> None:
    # score() splits the first scoring layer and updates arrays in place; q_values() pads, masks and
    # concatenates as the torch network does: both must give the same Q-values on random inputs.
    rng = np.random.default_rng(len(g_widths) * 10 + len(f_widths))
    numpy_net = NumpySetQNetwork(_random_set_weights(rng, g_widths, f_widths))
    for n in (1, 2, 3, 5, MAX):
        rows = rng.uniform(-1, 2, (n, REPLICA_DIM)).astype(np.float32)
        context = rng.uniform(-1, 2, CONTEXT_DIM).tolist()
        flat = pad_compact([compact_observation(rows, context)], MAX)[0]
        expected = numpy_net.q_values(flat)[:n]
        np.testing.assert_allclose(numpy_net.score(rows, context), expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(numpy_net.score(rows, np.float32(context)), expected, rtol=1e-5, atol=1e-5)
        assert numpy_net.score(rows, context).dtype == np.float32


def test_scoring_leaves_its_inputs_alone_and_is_safe_from_several_threads() -> None:
    rng = np.random.default_rng(8)
    numpy_net = NumpySetQNetwork(_random_set_weights(rng, (32, 32), (32,)))
    cases = [(rng.uniform(0, 1, (n, REPLICA_DIM)).astype(np.float32), rng.uniform(0, 1, CONTEXT_DIM))
             for n in rng.integers(1, MAX + 1, 64)]
    copies = [(rows.copy(), context.copy()) for rows, context in cases]
    alone = [numpy_net.score(rows, context) for rows, context in cases]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda case: numpy_net.score(*case), cases * 20))
    for index, scores in enumerate(together):
        np.testing.assert_array_equal(scores, alone[index % len(cases)])
    for (rows, context), (rows_before, context_before) in zip(cases, copies, strict=True):
        np.testing.assert_array_equal(rows, rows_before)
        np.testing.assert_array_equal(context, context_before)


def test_learned_statistics_by_name_encode_as_the_same_signals_given_by_replica() -> None:
    learned = {"a": {"latency_ms": 900.0, "failure_rate": 0.1, "requests": 4.0},
               "b": {"tpot_ms": 35.0, "ttft_ms_per_ktok": 120.0, "latency_ms": 2.5e6},
               "idle": {"requests": 0.0}}
    names = ["b", "unknown", "a", "idle"]
    loads = [10.0, 0.0, 55.0, 1e9]
    reported = {"running": [3.0, None, 1.0, 0.0], "kv_cache_usage": [0.5, 0.2, None, 1.0]}
    by_replica = {key: [learned.get(name, {}).get(key) for name in names] for key in LEARNED_REPLICA}
    expected = encode_rows(loads, {**reported, **by_replica})
    np.testing.assert_array_equal(encode_rows(loads, reported, names, learned), expected)
    np.testing.assert_array_equal(encode_rows(loads, reported, names, {}), encode_rows(loads, reported))
    features = [ReplicaFeatures(load=load, running=reported["running"][i],
                                kv_cache_usage=reported["kv_cache_usage"][i],
                                **{key: by_replica[key][i] for key in LEARNED_REPLICA})
                for i, load in enumerate(loads)]
    one_by_one = np.array([f.encode() for f in features], dtype=np.float32)
    np.testing.assert_allclose(expected, one_by_one, rtol=1e-6)
    with pytest.raises(ValueError, match="3 names for 4 loads"):
        encode_rows(loads, {}, names[:3], learned)


def test_learned_statistics_are_tabled_once_per_mapping_and_a_new_mapping_is_read_afresh() -> None:
    first = {"a": {"latency_ms": 100.0}}
    assert learned_columns(first) is learned_columns(first)
    refreshed = {"a": {"latency_ms": 300.0}}  # the serving snapshot's next refresh: a new mapping
    rows = encode_rows([1.0], {}, ["a"], refreshed)
    assert learned_columns(refreshed) is not learned_columns(first)
    np.testing.assert_array_equal(rows, encode_rows([1.0], {"latency_ms": [300.0]}))
    np.testing.assert_array_equal(encode_rows([1.0], {}, ["a"], first),
                                  encode_rows([1.0], {"latency_ms": [100.0]}))
