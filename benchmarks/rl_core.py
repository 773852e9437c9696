"""Benchmark of the RL core against reference implementations run in the same process.

    .venv/bin/python benchmarks/rl_core.py [--rounds 15] [--steps 200] [--strict]

(a) learner gradient steps/s (default config, batch 64, sampling included) vs a plain eager
    PyTorch DQN loop written inline below the way reference implementations write it;
(b) cost per training step of the prioritized buffer over the uniform one;
(c) single-state decision time of NumpyQNetwork vs an eager torch no_grad forward;
(d) the per-replica network's whole decision over 32 named replicas in NumPy (target <= 50 us).
Runs alternate between the contenders in rounds and report medians, because shared machines
are noisy; only the ratios are meaningful across machines.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent_app.rl import DQNAgent, DQNConfig, routing_config  # noqa: E402
from agent_app.rl.config import per_replica_config  # noqa: E402
from agent_app.rl.replica_features import (  # noqa: E402
    compact_observation,
    encode_context,
    encode_rows,
    pad_compact,
)

NUM_REPLICAS = 3
TARGETS = {"learner": 1.3, "per_overhead": 1.25, "decision": 3.0, "cluster_decision_us": 50.0}


def timed_rounds(contenders: dict[str, Callable[[], object]], rounds: int, calls: int) -> dict:
    """Median seconds per call of each contender, alternating contenders every round."""
    for fn in contenders.values():  # warm-up: allocator, caches, lazy init
        for _ in range(max(20, calls // 5)):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            samples[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(values) for name, values in samples.items()}


def fill(agent: DQNAgent, rng: np.random.Generator) -> None:
    n, dim = agent.config.buffer_capacity, agent.config.state_dim
    agent.buffer.add_batch(
        rng.random((n, dim), dtype=np.float32),
        rng.integers(0, agent.config.n_actions, n),
        rng.random(n, dtype=np.float32),
        rng.random((n, dim), dtype=np.float32),
        (rng.random(n) < 0.01).astype(np.float32),
    )


def reference_learner(config: DQNConfig, data: list[tuple]) -> Callable[[], float]:
    """The same algorithm as the default config, written as reference implementations do:
    nn.Sequential, default torch.optim.Adam, a Python list sampled with random.sample,
    torch.tensor over the sampled rows, .item() for the loss."""
    torch.manual_seed(0)

    def make() -> nn.Sequential:
        layers: list[nn.Module] = []
        width = config.state_dim
        for size in config.hidden_sizes:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        return nn.Sequential(*layers, nn.Linear(width, config.n_actions))

    q_net, target_net = make(), make()
    target_net.load_state_dict(q_net.state_dict())
    optimizer = torch.optim.Adam(q_net.parameters(), lr=config.lr)
    state = {"epsilon": config.epsilon_start, "steps": 0}

    def step() -> float:
        batch = random.sample(data, config.batch_size)
        states = torch.tensor([t[0] for t in batch], dtype=torch.float32)
        actions = torch.tensor([t[1] for t in batch], dtype=torch.int64)
        rewards = torch.tensor([t[2] for t in batch], dtype=torch.float32)
        next_states = torch.tensor([t[3] for t in batch], dtype=torch.float32)
        dones = torch.tensor([t[4] for t in batch], dtype=torch.float32)
        with torch.no_grad():
            next_actions = q_net(next_states).argmax(dim=1, keepdim=True)
            next_q = target_net(next_states).gather(1, next_actions).squeeze(1)
            td_target = rewards + config.gamma * next_q * (1 - dones)
        old_val = q_net(states).gather(1, actions.unsqueeze(1)).squeeze(1)
        loss = nn.functional.mse_loss(old_val, td_target)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(q_net.parameters(), config.max_grad_norm)
        optimizer.step()
        state["steps"] += 1
        state["epsilon"] = max(config.epsilon_min, state["epsilon"] * config.epsilon_decay)
        if state["steps"] % config.target_update_interval == 0:
            target_net.load_state_dict(q_net.state_dict())
        return loss.item()

    return step


def bench_learner(rounds: int, calls: int) -> float:
    config = routing_config(NUM_REPLICAS, seed=0, device="cpu")
    agent = DQNAgent(config)
    fill(agent, np.random.default_rng(0))
    b = agent.buffer
    data = [
        (
            b.states[i].tolist(),
            int(b.actions[i]),
            float(b.rewards[i]),
            b.next_states[i].tolist(),
            bool(b.dones[i]),
        )
        for i in range(len(b))
    ]
    random.seed(0)
    times = timed_rounds(
        {"core": agent.train_step, "reference": reference_learner(config, data)}, rounds, calls
    )
    ratio = times["reference"] / times["core"]
    print("(a) learner, default config (state 10, 3 actions, 128x128x128, batch 64, Double DQN,")
    print("    MSE, clip 10, 10k-row buffer), sampling included, 1 torch thread")
    print(
        f"    core DQNAgent.train_step   {1 / times['core']:8.0f} steps/s "
        f"({times['core'] * 1e6:7.1f} us/step, Adam {_adam_kind(agent)})"
    )
    print(
        f"    reference eager loop       {1 / times['reference']:8.0f} steps/s "
        f"({times['reference'] * 1e6:7.1f} us/step, default Adam, list + random.sample)"
    )
    print(f"    speed-up {ratio:.2f}x  (target >= {TARGETS['learner']}x)")
    return ratio


def bench_per(rounds: int, calls: int) -> float:
    uniform = DQNAgent(routing_config(NUM_REPLICAS, seed=0, device="cpu"))
    prioritized = DQNAgent(routing_config(NUM_REPLICAS, seed=0, device="cpu", prioritized=True))
    for agent in (uniform, prioritized):
        fill(agent, np.random.default_rng(0))
    times = timed_rounds(
        {"uniform": uniform.train_step, "per": prioritized.train_step}, rounds, calls
    )
    ratio = times["per"] / times["uniform"]
    print("(b) prioritized replay (sum-tree sample + IS weights + priority update) vs uniform,")
    print("    full training step, same config otherwise")
    print(
        f"    uniform {times['uniform'] * 1e6:7.1f} us/step   prioritized "
        f"{times['per'] * 1e6:7.1f} us/step"
    )
    print(
        f"    PER costs {100 * (ratio - 1):+.1f}% per step  (target <= "
        f"+{100 * (TARGETS['per_overhead'] - 1):.0f}%)"
    )
    return ratio


def bench_decision(rounds: int, calls: int) -> float:
    agent = DQNAgent(routing_config(NUM_REPLICAS, seed=0, device="cpu"))
    numpy_net = agent.numpy_network()
    torch_net = agent.online
    state = np.random.default_rng(0).random(agent.config.state_dim, dtype=np.float32)

    def eager_torch() -> np.ndarray:
        with torch.no_grad():
            return torch_net(torch.from_numpy(state).unsqueeze(0))[0].numpy()

    assert np.allclose(numpy_net.q_values(state), eager_torch(), atol=1e-5)
    times = timed_rounds(
        {"numpy": lambda: numpy_net.q_values(state), "torch": eager_torch}, rounds, calls * 10
    )
    ratio = times["torch"] / times["numpy"]
    print("(c) one decision (Q-values of one state, default network)")
    print(
        f"    NumpyQNetwork.q_values {times['numpy'] * 1e6:6.1f} us   eager torch no_grad "
        f"forward {times['torch'] * 1e6:6.1f} us"
    )
    print(f"    NumPy is {ratio:.1f}x faster  (target >= {TARGETS['decision']}x)")
    return ratio


def bench_cluster_decision(rounds: int, calls: int, replicas: int = 32) -> float:
    """The per-replica network's whole decision for a named cluster, as /select_replica makes it:
    encode the rows and the context, score every replica, pick the best."""
    agent = DQNAgent(per_replica_config(64, seed=0, device="cpu"))
    numpy_net, torch_net = agent.numpy_network(), agent.online
    rng = np.random.default_rng(0)
    loads = rng.integers(0, 60, replicas).astype(float).tolist()
    signals = {"running": rng.integers(0, 30, replicas).tolist(),
               "latency_ms": rng.uniform(500, 9000, replicas).tolist()}
    extras = rng.random(7).tolist()

    def numpy_decision() -> int:
        rows = encode_rows(loads, signals)
        scores = numpy_net.score(rows, encode_context(extras, 812, 256))
        return int(scores.argmax())

    flat = torch.from_numpy(pad_compact([compact_observation(encode_rows(loads, signals),
                                                             encode_context(extras, 812, 256))], 64))

    def eager_torch() -> int:
        with torch.no_grad():
            return int(torch_net(flat)[0].argmax())

    assert numpy_decision() == eager_torch()
    times = timed_rounds({"numpy": numpy_decision, "torch": eager_torch}, rounds, calls * 5)
    print(f"(d) one decision over {replicas} named replicas (per-replica network: features, scores, argmax)")
    print(f"    NumPy {times['numpy'] * 1e6:6.1f} us (target <= {TARGETS['cluster_decision_us']} us)   "
          f"eager torch forward alone {times['torch'] * 1e6:6.1f} us")
    return times["numpy"] * 1e6


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _adam_kind(agent: DQNAgent) -> str:
    group = agent.optimizer.param_groups[0]
    return "fused" if group.get("fused") else "foreach" if group.get("foreach") else "for-loop"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=200, help="calls per contender per round")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"RL core benchmark: torch {torch.__version__}, numpy {np.__version__}, "
        f"python {platform.python_version()}, {_cpu_name()} ({os.cpu_count()} cores), "
        f"{torch.get_num_threads()} torch thread; medians of {args.rounds} alternating rounds"
    )
    results = {
        "learner": bench_learner(args.rounds, args.steps),
        "per_overhead": bench_per(args.rounds, args.steps),
        "decision": bench_decision(args.rounds, args.steps),
        "cluster_decision_us": bench_cluster_decision(args.rounds, args.steps),
    }
    met = {
        "learner": results["learner"] >= TARGETS["learner"],
        "per_overhead": results["per_overhead"] <= TARGETS["per_overhead"],
        "decision": results["decision"] >= TARGETS["decision"],
        "cluster_decision_us": results["cluster_decision_us"] <= TARGETS["cluster_decision_us"],
    }
    print("summary: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in met.items()))
    return 1 if args.strict and not all(met.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
