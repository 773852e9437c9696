"""What `select()` answers: the replica, who decided it and why, and what a report needs."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field

SERVICE, LOCAL, HEURISTIC = "service", "local", "heuristic"
ARM_RL, ARM_HEURISTIC = "rl", "heuristic"


@dataclass
class Decision:
    """One routing decision.

    decided_by: "service" (POST /select_replica answered), "local" (the published weights,
    in-process) or "heuristic" (the fallback policy).
    reason: None when the arm's policy decided as intended; otherwise why not, e.g. "timeout",
    "circuit_open", "error: http 503", "mode=heuristic", "canary: heuristic arm", or the
    service's own fallback_reason ("model has 40 of 100 training steps").
    policy: the service's policy ("dqn", "explore", "least_loaded", "scorer"), or the heuristic's name.
    arm: the A/B arm this request was assigned to ("rl" or "heuristic"); reports carry it, so the
    service compares arms as assigned (intent to treat), fallbacks included.
    """

    replica_idx: int
    replica_name: str
    decided_by: str
    reason: str | None
    policy: str
    arm: str
    state: list[float] | None = None  # the raw state (N + 7 values) the decision was made on
    decision_id: str | None = None  # the service's signed id (service decisions only)
    model_version: int | None = None
    confidence: float | None = None
    exploration: bool = False
    elapsed_ms: float = 0.0  # time select() took
    # Shadow mode: the agent's would-be decision, resolved in the background (None if skipped).
    shadow: Future[Decision] | None = field(default=None, repr=False)

    @property
    def fallback(self) -> bool:
        """True when the heuristic decided although the agent was meant to."""
        return self.decided_by == HEURISTIC and self.arm == ARM_RL

    def shadow_choice(self, timeout_s: float | None = 0.0) -> Decision | None:
        """The agent's would-be decision in shadow mode, if it has answered (waits up to timeout_s)."""
        if self.shadow is None:
            return None
        try:
            return self.shadow.result(timeout=timeout_s)
        except Exception:  # TimeoutError while pending; the call itself never raises
            return None

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly view (for logs and response headers)."""
        return {
            "replica_idx": self.replica_idx, "replica_name": self.replica_name,
            "decided_by": self.decided_by, "reason": self.reason, "policy": self.policy, "arm": self.arm,
            "model_version": self.model_version, "confidence": self.confidence,
            "exploration": self.exploration, "elapsed_ms": round(self.elapsed_ms, 3),
        }
