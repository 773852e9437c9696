"""The heuristic that routes whenever the model does not: a weighted score of each replica's queue,
KV-cache headroom and prefix affinity, in the spirit of llm-d's default scheduling profile.

Each replica scores

    queue * (lowest + 1) / (own + 1)  +  kv_cache * (1 - kv_cache_usage)  +  prefix * prefix_match

with weights 5, 2 and 4 (``ScorerWeights``), and the highest score wins, ties broken at random.

- The queue is what waits at a replica: its reported ``waiting`` (``vllm:num_requests_waiting``),
  else its load less its ``running``, else (when any replica reports neither) every replica's load.
  Requests already decoding barely slow a newcomer on a batching server; requests waiting for a
  batch slot or for KV blocks delay its first token, which is why llm-d scores the waiting queue.
  Unlike llm-d's min-max scale, which gives the shortest queue 1 and the longest 0 however close
  they are, the ratio to the shortest (the ``+ 1`` counts the request itself) tells a queue one
  request longer from one five times longer.
- The KV-cache term (``1 - kv_cache_usage``, llm-d's) steers away from a replica whose memory is
  nearly full: it will hold a newcomer back until blocks are freed, and it is also the replica
  serving slowly or many long contexts. A replica that does not report it is scored neutrally,
  at the mean of the others'.
- The prefix term is the share of the request's prefix blocks the replica likely holds (the
  service's prefix index), 0 where unknown: a held prefix skips most of the prefill.

Why these weights: a full prefix match (4) outweighs a queue less than five times the shortest
(counting the request itself; at five times, 5 x (1 - 1/5) = 4, they tie) and loses to a longer
one, so affinity wins among comparably busy replicas and a hot prefix cannot pile requests onto
one replica; llm-d's weights (queue 2, KV 2, prefix 3) never let a queue outweigh a full match.
On the simulator the scorer with these weights routed the heterogeneous clusters as llm-d does
and Mooncake's shared prefixes better than it (``simulator/README.md``, "Results: a queue-, KV-
and prefix-aware gate heuristic", which also lists the other weights tried).

With the loads alone it is exactly least-loaded (``agent_app.rl.policy.least_loaded``: the same
choice, the same random tie-breaks), so a caller of the original body is routed as before.
Plain Python and NumPy-free: it runs on the service's hot path, in the simulator and anywhere
the RL core's NumPy half does.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

_rng = random.Random()

Signal = Sequence[float | None] | None  # one value per replica; None for unknown (one or all)


@dataclass(frozen=True)
class ScorerWeights:
    """Weights of the three terms (see the module docstring for why these)."""

    queue: float = 5.0
    kv_cache: float = 2.0
    prefix: float = 4.0


DEFAULT_WEIGHTS = ScorerWeights()


def heuristic_scores(loads: Sequence[float], *, running: Signal = None, waiting: Signal = None,
                     kv_cache_usage: Signal = None, prefix_match: Signal = None,
                     weights: ScorerWeights = DEFAULT_WEIGHTS) -> list[float]:
    """Every replica's score (higher is better), from its load and whatever else is known of it."""
    n = len(loads)
    queues = _queues(loads, running, waiting)
    shortest = min(queues)
    scores = [weights.queue * (shortest + 1.0) / (q + 1.0) for q in queues]
    usage = _known(kv_cache_usage, n)
    if usage is not None:
        reported = [u for u in usage if u is not None]
        neutral = sum(reported) / len(reported)
        for i, u in enumerate(usage):
            scores[i] += weights.kv_cache * (1.0 - _unit(neutral if u is None else u))
    match = _known(prefix_match, n)
    if match is not None:
        for i, m in enumerate(match):
            scores[i] += weights.prefix * (0.0 if m is None else _unit(m))
    return scores


def best_replicas(loads: Sequence[float], *, running: Signal = None, waiting: Signal = None,
                  kv_cache_usage: Signal = None, prefix_match: Signal = None,
                  weights: ScorerWeights = DEFAULT_WEIGHTS) -> list[int]:
    """The indices of the replicas tied for the best score, in order: the least-loaded ones when
    nothing but the loads is known (compared as loads, so no rounding can split or make a tie)."""
    signals = (running, waiting, kv_cache_usage, prefix_match)
    if all(_known(signal, len(loads)) is None for signal in signals):
        low = min(loads)
        return [i for i, load in enumerate(loads) if load == low]
    scores = heuristic_scores(loads, running=running, waiting=waiting,
                              kv_cache_usage=kv_cache_usage, prefix_match=prefix_match,
                              weights=weights)
    best = max(scores)
    return [i for i, score in enumerate(scores) if score == best]


def near_best_replicas(loads: Sequence[float], margin: float, *, running: Signal = None,
                       waiting: Signal = None, kv_cache_usage: Signal = None, prefix_match: Signal = None,
                       weights: ScorerWeights = DEFAULT_WEIGHTS) -> list[int]:
    """The indices of the replicas scoring within ``margin`` of the best, in order: the choices the
    model is allowed when it routes (docs/design.md, "the model chooses among the heuristic's
    near-best")."""
    scores = heuristic_scores(loads, running=running, waiting=waiting, kv_cache_usage=kv_cache_usage,
                              prefix_match=prefix_match, weights=weights)
    floor = max(scores) - margin
    return [i for i, score in enumerate(scores) if score >= floor]


def heuristic_choice(loads: Sequence[float], *, running: Signal = None, waiting: Signal = None,
                     kv_cache_usage: Signal = None, prefix_match: Signal = None,
                     weights: ScorerWeights = DEFAULT_WEIGHTS,
                     rng: random.Random | None = None) -> int:
    """The replica the heuristic routes to: the best score, ties broken at random exactly as
    ``least_loaded`` breaks them (with the loads alone, the same choice for the same ``rng``)."""
    ties = best_replicas(loads, running=running, waiting=waiting, kv_cache_usage=kv_cache_usage,
                         prefix_match=prefix_match, weights=weights)
    return ties[0] if len(ties) == 1 else (rng or _rng).choice(ties)


def _queues(loads: Sequence[float], running: Signal, waiting: Signal) -> list[float]:
    """What waits at each replica: ``waiting``, else load - ``running``; the loads for every
    replica when any replica has neither (a waiting count and a load are not comparable)."""
    n = len(loads)
    waits, runs = _known(waiting, n), _known(running, n)
    queues = []
    for i, load in enumerate(loads):
        if waits is not None and waits[i] is not None:
            queues.append(max(0.0, float(waits[i])))
        elif runs is not None and runs[i] is not None:
            queues.append(max(0.0, float(load) - float(runs[i])))
        else:
            return [max(0.0, float(x)) for x in loads]
    return queues


def _known(signal: Signal, n: int) -> list[float | None] | None:
    """The signal per replica with non-finite values as unknown; None when nobody reported it."""
    if signal is None:
        return None
    if len(signal) != n:
        raise ValueError(f"{len(signal)} values for {n} replicas")
    values = [None if v is None or not math.isfinite(v) else float(v) for v in signal]
    return None if all(v is None for v in values) else values


def _unit(value: float) -> float:
    return 0.0 if value < 0.0 else 1.0 if value > 1.0 else value
