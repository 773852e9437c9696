"""Self-test like the specification's `python agent.py`: `python -m agent_app.rl [--steps N] [--seed S]`
trains briefly on built-in tasks and exits 0 if the DQN learned, 1 if not."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from agent_app.rl.agent import DQNAgent
from agent_app.rl.config import DQNConfig, routing_config
from agent_app.rl.toy_tasks import ChainMDP, RoutingBandit

NUM_REPLICAS = 3


def routing_check(steps: int, seed: int) -> bool:
    """Online epsilon-greedy training on the routing bandit; True if it learned."""
    env = RoutingBandit(NUM_REPLICAS, seed=seed)
    agent = DQNAgent(routing_config(NUM_REPLICAS, seed=seed, device="cpu"))
    print(f"[routing] {NUM_REPLICAS} replicas, state {agent.config.state_dim}, default config")
    losses: list[float] = []
    for _ in range(steps + agent.config.batch_size):
        raw = env.sample_state()
        state = env.encode(raw)
        decision = agent.act(state, explore=True)
        reward, next_raw = env.step(raw, decision.action)
        agent.observe(state, decision.action, reward, env.encode(next_raw))
        result = agent.train_step()
        if result is not None:
            losses.append(result.loss)
            if len(losses) % 500 == 0:
                recent = np.mean(losses[-100:])
                print(
                    f"  step {len(losses):5d}  loss(last 100) {recent:.4f}  "
                    f"epsilon {result.epsilon:.3f}"
                )
    window = max(1, min(200, len(losses) // 4))
    first, last = float(np.mean(losses[:window])), float(np.mean(losses[-window:]))

    def greedy(raw: np.ndarray) -> int:
        return agent.greedy(env.encode(raw))

    policy_rng = np.random.default_rng(seed + 1)
    learned = env.evaluate(greedy)
    random_policy = env.evaluate(lambda raw: int(policy_rng.integers(NUM_REPLICAS)))
    least_loaded = env.evaluate(lambda raw: int(np.argmin(raw[:NUM_REPLICAS])))
    loss_ok = last < first
    policy_ok = learned > random_policy + 0.05
    print(f"  loss fell: {first:.4f} (first {window} steps) -> {last:.4f} (last {window})")
    print(
        f"  mean reward over 500 fixed states: greedy DQN {learned:.3f} | random "
        f"{random_policy:.3f} | least-loaded heuristic {least_loaded:.3f}"
    )
    print(
        f"  [{'ok' if loss_ok else 'FAIL'}] loss fell  [{'ok' if policy_ok else 'FAIL'}] "
        "greedy beats random by > 0.05"
    )
    return loss_ok and policy_ok


def chain_agent(gamma: float, seed: int = 0, length: int = 5) -> DQNAgent:
    """A small agent for the chain MDP (one-hot states, two actions)."""
    return DQNAgent(
        DQNConfig(
            state_dim=length,
            n_actions=2,
            hidden_sizes=(32, 32),
            gamma=gamma,
            batch_size=32,
            buffer_capacity=1000,
            target_update_interval=50,
            device="cpu",
            seed=seed,
        )
    )


def chain_check(seed: int, gamma: float = 0.9, steps: int = 1500) -> bool:
    """Q-learning on every transition of a 5-state chain; True if Q is near Q*."""
    chain = ChainMDP(length=5)
    agent = chain_agent(gamma, seed, chain.length)
    for _ in range(20):
        for state, action, reward, next_state, done in chain.all_transitions():
            agent.observe(state, action, reward, next_state, done)
    for _ in range(steps):
        agent.train_step()
    q = agent.q_values(np.eye(chain.length, dtype=np.float32))
    expected = chain.analytic_q(gamma)
    error = float(np.abs(q - expected).max())
    ok = error < 0.05
    print(f"[chain] 5 states, gamma {gamma}: max |Q - Q*| = {error:.4f} after {steps} steps")
    print(f"  [{'ok' if ok else 'FAIL'}] Q within 0.05 of the analytic values")
    return ok


def main(argv: list[str] | None = None) -> int:
    """Train the default routing DQN on a routing bandit and a small net on a 5-state chain;
    pass if the loss fell, greedy beats random routing and chain Q is near Q*."""
    parser = argparse.ArgumentParser(prog="python -m agent_app.rl", description=main.__doc__)
    parser.add_argument("--steps", type=int, default=2000, help="routing gradient steps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # tiny batches: threads cost more than they give
    started = time.perf_counter()
    ok = routing_check(args.steps, args.seed) and chain_check(args.seed)
    elapsed = time.perf_counter() - started
    print(
        f"self-test {'PASSED' if ok else 'FAILED'} in {elapsed:.1f} s (torch {torch.__version__})"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
