"""A LiteLLM Router plugin: the RL agent picks which deployment of a model group serves each
request (deployments are the agent's replicas), LiteLLM's own simple-shuffle picks whenever the
agent cannot answer in time, and every outcome (latency, TTFT when streamed, success) is reported
from LiteLLM's success and failure callbacks. Model groups can each have their own replica pool
(`pools=`). Needs `pip install ".[litellm]"`; see docs/litellm.md.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import random
import threading
import weakref
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rlagent_client.client import RLAgentClient
from rlagent_client.decision import HEURISTIC, Decision
from rlagent_client.traffic import Traffic

try:
    from litellm.integrations.custom_logger import CustomLogger
    from litellm.types.router import CustomRoutingStrategyBase
except ImportError as exc:  # the extra is optional: say how to get it
    raise ImportError('rlagent_client.litellm_strategy needs LiteLLM: pip install ".[litellm]"') from exc

METADATA_KEY = "rlagent_pick"  # in the request's metadata: ties LiteLLM's callbacks to the decision
MAX_PENDING = 100_000  # picks awaiting an outcome; beyond, the oldest is forgotten (never reported)
LITELLM_POLICY = "litellm_simple_shuffle"
Deployment = Mapping[str, Any]


def deployment_name(deployment: Deployment) -> str:
    """A deployment's replica name: its `model_info.id` (set it to the replica's name)."""
    info = deployment.get("model_info") or {}
    return str(info.get("id") or deployment.get("litellm_params", {}).get("api_base") or "")


def simple_shuffle(deployments: Sequence[Deployment], rng: random.Random) -> int:
    """LiteLLM's default strategy: random, weighted by the first of weight, rpm, tpm that any
    deployment sets, else uniform."""
    for key in ("weight", "rpm", "tpm"):
        weights = [float((d.get("litellm_params") or {}).get(key) or 0) for d in deployments]
        if max(weights, default=0.0) > 0:
            return rng.choices(range(len(deployments)), weights=weights)[0]
    return rng.randrange(len(deployments))


@dataclasses.dataclass
class Pick:
    """One routed request until LiteLLM reports how it went."""

    decision: Decision | None  # None: the model group has one deployment, nothing was decided
    names: list[str]
    deployment: str
    client: RLAgentClient  # the one that decided (its pool's): the outcome is reported to it


class _Outcomes(CustomLogger):
    """The process's one listener to LiteLLM's outcome callbacks (LiteLLM keeps one callback per
    class, so strategies share it): each event goes to the strategy that made the pick."""

    def __init__(self) -> None:
        super().__init__()
        # Weak: a strategy lives as long as its router does, not longer.
        self.strategies: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()

    def log_success_event(self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._route(kwargs, response_obj, start_time, end_time, True)

    def log_failure_event(self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._route(kwargs, response_obj, start_time, end_time, False)

    async def async_log_success_event(self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any
                                      ) -> None:
        self._route(kwargs, response_obj, start_time, end_time, True)

    async def async_log_failure_event(self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any
                                      ) -> None:
        self._route(kwargs, response_obj, start_time, end_time, False)

    def _route(self, kwargs: dict, response: Any, start: Any, end: Any, success: bool) -> None:
        key = ((kwargs.get("litellm_params") or {}).get("metadata") or {}).get(METADATA_KEY)
        strategy = self.strategies.get(str(key).split(":", 1)[0]) if key else None
        if strategy is not None:
            strategy.outcome(str(key), kwargs, response, start, end, success)


_listener_lock = threading.Lock()
_listener: _Outcomes | None = None


def _outcomes() -> _Outcomes:
    """The listener, added to `litellm.callbacks` once."""
    import litellm

    global _listener
    with _listener_lock:
        if _listener is None:
            _listener = _Outcomes()
        if _listener not in litellm.callbacks:
            litellm.callbacks.append(_listener)
        return _listener


class RLAgentRoutingStrategy(CustomRoutingStrategyBase):
    """`RLAgentRoutingStrategy(router, client).install()`; one per Router.

    `pools` maps a model group to the service's replica pool that routes it (its own agent, whose
    replicas are the group's deployments); a group it does not name is routed in the client's own
    pool (RL_AGENT_POOL, else the default pool), as every group is without `pools`."""

    _serial = itertools.count()

    def __init__(self, router: Any, client: RLAgentClient, *, pools: Mapping[str, str] | None = None,
                 name_of: Callable[[Deployment], str] = deployment_name, send_request_size: bool = False,
                 history: int = 1000, seed: int | None = None) -> None:
        self.id = f"s{next(self._serial)}"
        self.router = router
        self.client = client
        self.pools = dict(pools or {})
        # One client per pool (client.for_pool: its own breaker and reporter); a bad name raises here.
        self._clients = {group: client.for_pool(pool) for group, pool in self.pools.items()}
        self.name_of = name_of
        # The request's prompt and output sizes go in the body's `request` (the per-replica form).
        self.send_request_size = send_request_size
        self.traffic = Traffic()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._pending: dict[str, Pick] = {}
        self.history: deque[dict[str, Any]] = deque(maxlen=history)  # the latest picks, oldest first
        self.counts: Counter[str] = Counter()

    def install(self) -> RLAgentRoutingStrategy:
        """Route the router's requests with the agent and listen to LiteLLM's outcome callbacks."""
        register = getattr(self.router, "register_plugin", None) or self.router.set_custom_routing_strategy
        register(self)  # register_plugin in current releases; set_custom_routing_strategy before
        _outcomes().strategies[self.id] = self
        return self

    def uninstall(self) -> None:
        """Stop handling outcomes (the router keeps the strategy until given another)."""
        _outcomes().strategies.pop(self.id, None)

    # -- picking (CustomRoutingStrategyBase) ------------------------------------------------------

    async def async_get_available_deployment(
        self, model: str, messages: list[dict[str, str]] | None = None, input: Any = None,  # noqa: A002
        specific_deployment: bool | None = False, request_kwargs: dict[str, Any] | None = None,
    ) -> Deployment:
        deployments = self._deployments(model, specific_deployment)
        client = self.client_for(deployments)
        if len(deployments) == 1:
            return self._routed(deployments, None, request_kwargs, client)
        # The client blocks for at most its timeout; a thread keeps the event loop serving meanwhile.
        decision = await asyncio.to_thread(self._decide, client, deployments, messages, request_kwargs)
        return self._routed(deployments, decision, request_kwargs, client)

    def get_available_deployment(
        self, model: str, messages: list[dict[str, str]] | None = None, input: Any = None,  # noqa: A002
        specific_deployment: bool | None = False, request_kwargs: dict[str, Any] | None = None,
    ) -> Deployment:
        deployments = self._deployments(model, specific_deployment)
        client = self.client_for(deployments)
        decision = None if len(deployments) == 1 else self._decide(client, deployments, messages,
                                                                   request_kwargs)
        return self._routed(deployments, decision, request_kwargs, client)

    def client_for(self, deployments: Sequence[Deployment]) -> RLAgentClient:
        """The client of the pool that routes these deployments' model group."""
        return self._clients.get(str(deployments[0].get("model_name")), self.client)

    def _deployments(self, model: str, specific: bool | None) -> list[Deployment]:
        registry = getattr(self.router, "registry", None)
        if registry is not None:
            found = registry().deployments(model) or []
        else:  # releases before the registry
            found = self.router.get_model_list(model_name=model) or []
        if specific or not found:
            every = registry().deployments() if registry is not None else self.router.get_model_list()
            found = [d for d in every or [] if deployment_name(d) == model] or found
        if not found:
            raise ValueError(f"no deployment serves model {model!r}")
        return sorted(found, key=self.name_of)  # a stable replica order, whatever the router's

    def _decide(self, client: RLAgentClient, deployments: Sequence[Deployment], messages: Any,
                request_kwargs: Any) -> Decision:
        names = [self.name_of(d) for d in deployments]
        loads, queue_depth, latency_ms, rps, success_rate = self.traffic.observe(names)
        request = self._request_size(messages, request_kwargs or {}) if self.send_request_size else None
        user = (request_kwargs or {}).get("user")
        return client.select(loads, queue_depth, latency_ms, rps, success_rate, replica_names=names,
                             request=request, request_key=None if user is None else str(user))

    def _routed(self, deployments: Sequence[Deployment], decision: Decision | None,
                request_kwargs: dict[str, Any] | None, client: RLAgentClient) -> Deployment:
        names = [self.name_of(d) for d in deployments]
        if decision is not None and decision.decided_by == HEURISTIC:
            # The agent did not decide (timeout, error, open circuit, heuristic arm): LiteLLM does.
            index = simple_shuffle(deployments, self._rng)
            decision = dataclasses.replace(decision, replica_idx=index, replica_name=names[index],
                                           policy=LITELLM_POLICY)
        index = 0 if decision is None else decision.replica_idx
        chosen = names[index]
        by = "only" if decision is None else ("litellm" if decision.policy == LITELLM_POLICY else "agent")
        with self._lock:
            self.counts[by] += 1
            self.history.append({"deployment": chosen, "by": by, "pool": client.config.pool,
                                 "reason": None if decision is None else decision.reason})
        if request_kwargs is not None:  # without them no callback can be tied to this pick
            key = f"{self.id}:{next(self._ids)}"
            metadata = request_kwargs.get("metadata")
            if not isinstance(metadata, dict):
                metadata = request_kwargs["metadata"] = {}
            metadata[METADATA_KEY] = key
            self.traffic.begin(chosen)
            with self._lock:
                self._pending[key] = Pick(decision, names, chosen, client)
                overflow = len(self._pending) > MAX_PENDING
                forgotten = self._pending.pop(next(iter(self._pending))) if overflow else None
            if forgotten is not None:
                self.traffic.end(forgotten.deployment, forgotten.names, None, False)
        return deployments[index]

    @staticmethod
    def _request_size(messages: Any, request_kwargs: Mapping[str, Any]) -> dict[str, int]:
        words = sum(len(str(m.get("content") or "").split()) for m in messages or [] if isinstance(m, dict))
        size = {"prompt_tokens": round(words * 4 / 3)}  # about 4 tokens per 3 English words
        limit = request_kwargs.get("max_tokens") or request_kwargs.get("max_completion_tokens")
        if limit is not None:
            size["max_tokens"] = int(limit)
        return size

    # -- outcomes (LiteLLM's callbacks, through the listener) ---------------------------------------

    def outcome(self, key: str, kwargs: dict, response: Any, start: Any, end: Any, success: bool) -> None:
        """Report how the pick `key` went: latency, TTFT when streamed, output tokens, success."""
        with self._lock:
            pick = self._pending.pop(key, None)
        if pick is None:
            return  # not routed by this strategy, or already reported (sync and async both fire)
        latency_ms = (end - start).total_seconds() * 1000
        ttft_ms = None
        first = kwargs.get("completion_start_time")
        if kwargs.get("stream") and first is not None:
            ttft_ms = max(0.0, (first - start).total_seconds() * 1000)
        usage = getattr(response, "usage", None) if success else None
        tokens = getattr(usage, "completion_tokens", None)
        loads_after = self.traffic.end(pick.deployment, pick.names, latency_ms, success)
        if pick.decision is None:
            return
        pick.client.report(pick.decision, latency_ms, success, loads_after, ttft_ms=ttft_ms,
                           output_tokens=tokens if isinstance(tokens, int) else None)
        with self._lock:
            self.counts["reported"] += 1

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"picks": dict(self.counts), "pending": len(self._pending),
                    "traffic": self.traffic.snapshot()}
