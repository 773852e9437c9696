"""Gateway client for the RL Agent Service: ask which replica (remote or local inference), fall
back to a heuristic when the agent cannot answer in time, and report outcomes in the background.

    from rlagent_client import RLAgentClient
    client = RLAgentClient.from_env()          # USE_RL_AGENT, RL_AGENT_URL, RL_AGENT_API_KEY, ...
    decision = client.select([5, 3, 7], queue_depth=12, recent_latency_ms=280.5, current_rps=8.2,
                             success_rate=0.98)
    ...  # send the request to replica decision.replica_idx
    client.report(decision, latency_ms=265.3, success=True, replica_loads_after=[5, 4, 7])

Needs only the standard library and NumPy (no Django, no torch).
"""

from rlagent_client.client import RLAgentClient
from rlagent_client.config import ClientConfig
from rlagent_client.decision import Decision
from rlagent_client.fallback import (
    CircuitBreaker,
    RoundRobin,
    least_loaded,
    make_heuristic,
    power_of_two,
    random_choice,
)

__all__ = [
    "CircuitBreaker", "ClientConfig", "Decision", "RLAgentClient", "RoundRobin", "least_loaded",
    "make_heuristic", "power_of_two", "random_choice",
]
