"""Fake LLM replicas that speak vLLM: OpenAI-compatible completions (streamed or whole) timed by a
batch-limited scheduler with a prefix cache, and vLLM's `/metrics`, `/load` and SGLang's `/get_load`.

Run one alone: `python -m examples.fake_replica --port 8001 --speed 0.5 --max-batch 8`.
"""

from examples.fake_replica.engine import BLOCK_TOKENS, Engine, ReplicaProfile, count_tokens
from examples.fake_replica.server import FakeReplica

__all__ = ["BLOCK_TOKENS", "Engine", "FakeReplica", "ReplicaProfile", "count_tokens"]
