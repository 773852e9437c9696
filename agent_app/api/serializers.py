"""Input and output serializers per endpoint; bounds follow the original specification's state table."""

from __future__ import annotations

import copy
from collections.abc import Mapping

from django.conf import settings
from rest_framework import serializers
from rest_framework.fields import empty

from agent_app.api.cluster_fields import (
    MAX_TOKENS,
    REPLICA_NAME,
    LoadListField,
    ReplicaListField,
    RequestFeaturesField,
)
from agent_app.api.fast_validation import plan_for, validate_many
from agent_app.api.fields import (
    QueryIntegerField,
    QueryRegexField,
    StrictBooleanField,
    StrictFloatField,
    StrictIntegerField,
    StrictRegexField,
    VectorField,
)
from agent_app.decisions import InvalidDecision, decode_decision
from agent_app.pools import DEFAULT_POOL, NAME_RULE
from agent_app.pools import NAME_PATTERN as POOL_NAME
from agent_app.rl.replica_features import compact_size, is_compact
from agent_app.rl.state import EXTRA_FEATURES

MAX_LOAD = 1e6  # loads and queue depth are 0-100 as specified; larger readings are clipped, not refused
MAX_LATENCY_MS = 3_600_000.0
MAX_RPS = 1e7
MAX_BATCH = 1000
MAX_DECISION_ID = 32_768  # a decision over 256 named replicas, with their features
DECISION_LOADS = "one per replica of the decision"  # a count only the decision_id knows
ONE_POOL_PER_BATCH = "send one batch per pool"  # an item's pool must be its batch's
# A decision_id is unpadded URL-safe base64 (agent_app/decisions.py); the schema states the
# alphabet and the bounds, validation enforces the same, and the signature says the rest.
DECISION_ID_PATTERN = r"\A[A-Za-z0-9_-]+\Z"
_UNIT = (0.0, 1.0)
# Bounds of the state's values after the N loads, by name: a feature added to the state without
# bounds here fails at once.
EXTRA_BOUNDS = {
    "queue_depth": (0.0, MAX_LOAD), "latency_s": (0.0, MAX_LATENCY_MS / 1000), "rps": (0.0, MAX_RPS),
    "success_rate": _UNIT, "memory": _UNIT, "cpu": _UNIT, "time_of_day": _UNIT,
}


def state_bounds() -> list[tuple[float, float]]:
    """Bounds of each raw state value: N loads, queue, latency (s), rps, success, memory, cpu, time."""
    return [(0.0, MAX_LOAD)] * settings.NUM_REPLICAS + [EXTRA_BOUNDS[name] for name in EXTRA_FEATURES]


class LeanSerializer(serializers.Serializer):
    """A serializer for the hot paths: the same declared fields make the schema and the checks,
    without DRF's per-instance deep copy of every field and its per-field bookkeeping (the batch
    form validates up to 1000 bodies per request). Unknown keys are ignored, as in DRF.
    """

    def get_fields(self):
        return {name: copy.copy(field) for name, field in self._declared_fields.items()}

    @classmethod
    def validated(cls, data: object) -> dict:
        """The validated body, or a ValidationError naming each bad field (a 400).

        The fast path (agent_app/api/fast_validation.py) answers for a body it accepts without
        even building the serializer; the fields decide, and name the field, whenever it declines.
        """
        plan = plan_for(cls)
        fast = validate_many(plan, [data]) if plan else None
        if fast:
            return fast[0]
        serializer = cls(data=data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    def to_internal_value(self, data):
        if not isinstance(data, Mapping):
            raise serializers.ValidationError({"non_field_errors": ["expected a JSON object"]})
        values, errors = {}, {}
        for name, field in self.fields.items():
            if name not in data:
                if field.required:
                    errors[name] = ["This field is required."]
                elif field.default is not empty:
                    values[name] = field.get_default()
                continue
            try:
                values[name] = field.run_validation(data[name])
            except serializers.ValidationError as exc:
                errors[name] = exc.detail
        if errors:
            raise serializers.ValidationError(errors)
        return values


class LoadsField(VectorField):
    def get_bounds(self):
        return [(0.0, MAX_LOAD)] * settings.NUM_REPLICAS


class StateField(VectorField):
    def get_bounds(self):
        return state_bounds()


class ActionField(StrictIntegerField):
    def __init__(self, **kwargs) -> None:
        super().__init__(min_value=0, max_value=0, **kwargs)

    def get_limits(self) -> tuple[int, int]:
        return 0, settings.NUM_REPLICAS - 1

    def to_internal_value(self, data):
        self.min_value, self.max_value = self.get_limits()
        return super().to_internal_value(data)


def pool_field(*, query: bool = False) -> StrictRegexField:
    return (QueryRegexField if query else StrictRegexField)(
        POOL_NAME.pattern, required=False,
        help_text=f"The replica pool ({NAME_RULE}); without it, the default pool.",
    )


class SelectReplicaRequest(LeanSerializer):
    """The gateway's view of the cluster for one request: positional `replica_loads` (the original
    specification's body) or named `replicas` with optional signals, and optional request features."""

    replica_loads = LoadsField(required=False, help_text="Load of each replica, 0-100 (NUM_REPLICAS values); "
                                                         "or send `replicas` instead.")
    replicas = ReplicaListField(
        required=False,
        help_text="Instead of replica_loads: 1-256 replicas, each {name, load} and optionally running, "
                  "waiting (requests, as vLLM reports them) and kv_cache_usage (0-1); names unique.",
    )
    request = RequestFeaturesField(required=False, help_text="Optional: prompt_tokens and max_tokens.")
    pool = pool_field()
    queue_depth = StrictFloatField(min_value=0, max_value=MAX_LOAD, help_text="Jobs waiting, 0-100.")
    recent_latency_ms = StrictFloatField(min_value=0, max_value=MAX_LATENCY_MS)
    current_rps = StrictFloatField(min_value=0, max_value=MAX_RPS)
    success_rate = StrictFloatField(min_value=0, max_value=1)

    def validate(self, attrs):
        if "replica_loads" in attrs and "replicas" in attrs:
            raise serializers.ValidationError({"replicas": ["send replica_loads or replicas, not both"]})
        if "replica_loads" not in attrs and "replicas" not in attrs:
            raise serializers.ValidationError({"replica_loads": ["This field is required (or replicas)."]})
        return attrs


class SelectReplicaResponse(serializers.Serializer):
    replica_idx = serializers.IntegerField(help_text="Index in replica_loads or replicas.")
    replica_name = serializers.CharField()
    confidence = serializers.FloatField(help_text="Softmax probability of the chosen replica's Q-value.")
    exploration = serializers.BooleanField()
    policy = serializers.ChoiceField(
        choices=["dqn", "explore", "least_loaded", "scorer"],
        help_text="Who chose: the model, exploration, or the heuristic (least_loaded on loads alone; scorer "
                  "when queues, KV use or a prefix match were known).")
    fallback_reason = serializers.CharField(allow_null=True)
    model_version = serializers.IntegerField()
    decision_id = serializers.CharField(help_text="Send back to /record_experience instead of state+action.")
    state = serializers.ListField(child=serializers.FloatField())
    prefix_match = serializers.DictField(
        allow_null=True, help_text="With request.prefix_hashes: {blocks, of}, the prefix blocks the chosen "
                                   "replica likely holds (blocks null, with a reason, if the index is down).")


class ExperienceRequest(LeanSerializer):
    """One request's outcome: with state and action, or with the decision_id /select_replica returned."""

    experience_id = StrictRegexField(
        r"\A[A-Za-z0-9._:-]{1,128}\Z", required=False,
        help_text="Idempotency key: a retried report with the same id is stored once.",
    )
    decision_id = StrictRegexField(
        DECISION_ID_PATTERN, min_length=1, max_length=MAX_DECISION_ID, required=False,
        help_text="The decision_id /select_replica returned, instead of state and action.",
    )
    arm = StrictRegexField(
        r"\A[a-z0-9_-]{1,32}\Z", required=False,
        help_text="A/B arm that routed the request (e.g. rl, heuristic); outcomes are compared per arm.",
    )
    state = StateField(required=False)
    action = ActionField(required=False)
    replica = StrictRegexField(REPLICA_NAME.pattern, required=False,
                               help_text="With state: the chosen replica by name (one of REPLICA_NAMES), "
                                         "instead of action.")
    latency_ms = StrictFloatField(min_value=0, max_value=MAX_LATENCY_MS)
    success = StrictBooleanField()
    replica_loads = LoadListField(help_text="Replica loads after the request: NUM_REPLICAS values, or for a "
                                            "decision_id one per replica of the decision, in its order.")
    next_state = StateField(required=False)
    ttft_ms = StrictFloatField(min_value=0, max_value=MAX_LATENCY_MS, required=False,
                               help_text="Time to first token, when the gateway streamed the answer.")
    output_tokens = StrictIntegerField(min_value=0, max_value=MAX_TOKENS, required=False,
                                       help_text="Tokens generated (the answer's usage.completion_tokens).")
    pool = pool_field()

    def validate(self, attrs):
        if "decision_id" in attrs:
            if {"state", "action", "replica"} & attrs.keys():
                raise serializers.ValidationError("send either decision_id or state and action, not both")
            return self._from_decision(attrs)
        if "action" in attrs and "replica" in attrs:
            raise serializers.ValidationError({"replica": ["send either action or replica, not both"]})
        if "replica" in attrs:
            if attrs["replica"] not in settings.REPLICA_NAMES:
                unknown = f"{attrs['replica']!r} is not in REPLICA_NAMES"
                raise serializers.ValidationError({"replica": [unknown]})
            attrs["action"] = settings.REPLICA_NAMES.index(attrs["replica"])
        missing = [name for name in ("state", "action") if name not in attrs]
        if missing:
            raise serializers.ValidationError({name: "required without decision_id" for name in missing})
        if len(attrs["replica_loads"]) != settings.NUM_REPLICAS:
            raise serializers.ValidationError({"replica_loads": [
                f"must have NUM_REPLICAS={settings.NUM_REPLICAS} values, got {len(attrs['replica_loads'])}"]})
        attrs["replica"] = settings.REPLICA_NAMES[attrs["action"]]
        return attrs

    @staticmethod
    def _from_decision(attrs: dict) -> dict:
        try:
            decision = decode_decision(attrs.pop("decision_id"))
        except InvalidDecision as exc:
            raise serializers.ValidationError({"decision_id": str(exc)}) from None
        state = decision.state
        if is_compact(state):  # a per-replica network's decision: any cluster size
            n = int(-state[0])
            if len(state) != compact_size(n):
                raise serializers.ValidationError({"decision_id": "decision is malformed"})
        else:  # the fixed network's raw state; it trains only on NUM_REPLICAS (services/training.py)
            n = len(state) - len(EXTRA_FEATURES)
        if not decision.action < n:
            raise serializers.ValidationError({"decision_id": "decision is malformed"})
        _check_loads(attrs, n)
        attrs.update(state=state, action=decision.action, replica=decision.replica, routed_by=decision.arm,
                     prompt_tokens=decision.prompt_tokens, decided_at=decision.decided_at)
        return attrs


def _check_loads(attrs: dict, n: int) -> None:
    if len(attrs["replica_loads"]) != n:
        raise serializers.ValidationError({"replica_loads": [
            f"must have {n} values, {DECISION_LOADS}, got {len(attrs['replica_loads'])}"]})


class ExperienceBatchRequest(serializers.Serializer):
    experiences = ExperienceRequest(many=True, allow_empty=False, max_length=MAX_BATCH)
    pool = pool_field()

    @classmethod
    def validated(cls, data: object) -> dict:
        """As LeanSerializer.validated, every body of the batch at once."""
        items = data.get("experiences") if isinstance(data, dict) else None
        plan = plan_for(ExperienceRequest)
        validated = None
        pool = data.get("pool", DEFAULT_POOL) if isinstance(data, dict) else None
        if plan and type(items) is list and 0 < len(items) <= MAX_BATCH and type(pool) is str \
                and POOL_NAME.match(pool):
            fast = validate_many(plan, items)
            if fast:
                validated = {"experiences": fast, "pool": pool}
        if validated is None:
            serializer = cls(data=data)
            serializer.is_valid(raise_exception=True)
            validated = serializer.validated_data
        pool = validated.get("pool", DEFAULT_POOL)
        items = validated["experiences"]
        strays = [i for i, item in enumerate(items) if item.get("pool", pool) != pool]
        if strays:  # one batch, one pool: its buffer, its statistics
            raise serializers.ValidationError({"experiences": [
                f"items {strays[:10]} name another pool than the batch's {pool!r}; {ONE_POOL_PER_BATCH}"]})
        return validated


class RecordResponse(serializers.Serializer):
    stored = serializers.IntegerField(help_text="New experiences stored.")
    duplicates = serializers.IntegerField(help_text="Experiences whose experience_id was already stored.")
    rewards = serializers.ListField(child=serializers.FloatField())
    buffer_size = serializers.IntegerField()


class PoolQuery(serializers.Serializer):
    pool = pool_field(query=True)


class TrainQuery(PoolQuery):
    batch_size = QueryIntegerField(
        min_value=1, max_value=4096, required=False,
        help_text="Default: the admin's batch size, else TRAINING_BATCH_SIZE (256).",
    )
    iterations = QueryIntegerField(min_value=1, max_value=10_000, default=1)


class TrainResponse(serializers.Serializer):
    loss = serializers.FloatField(allow_null=True)
    epsilon = serializers.FloatField()
    buffer_size = serializers.IntegerField()
    steps_done = serializers.IntegerField()
    model_version = serializers.IntegerField()
    target_syncs = serializers.IntegerField()
    iterations = serializers.IntegerField(help_text="Gradient steps this run took.")
    time_limited = serializers.BooleanField(
        help_text="The run reached its time budget (0.6 x the task's soft time limit) before taking every "
                  "step asked, and published the steps it took."
    )


class SaveModelResponse(serializers.Serializer):
    path = serializers.CharField()
    versioned_path = serializers.CharField(help_text="This checkpoint's own file, kept beside MODEL_PATH.")
    version = serializers.IntegerField()
    steps_done = serializers.IntegerField()


class StatsResponse(serializers.Serializer):
    pool = serializers.CharField(help_text="The pool these figures are of.")
    epsilon = serializers.FloatField()
    steps_done = serializers.IntegerField()
    buffer_size = serializers.IntegerField(allow_null=True)
    avg_recent_reward = serializers.FloatField(allow_null=True)
    device = serializers.CharField()
    model_path = serializers.CharField()
    model_version = serializers.IntegerField()
    exploration = serializers.BooleanField()
    selections = serializers.DictField(child=serializers.DictField(child=serializers.IntegerField()))
    backends = serializers.DictField(child=serializers.CharField())
    last_loss = serializers.FloatField(allow_null=True)
    target_syncs = serializers.IntegerField()
    ab = serializers.DictField(allow_null=True, help_text="A/B results per arm (GET /ab_results).")
    routing = serializers.DictField(help_text="Who routes (the model or least-loaded) and the evidence.")
    prefix_index = serializers.DictField(help_text="The prefix index: store, blocks held, memory bound.")
    capacity = serializers.DictField(help_text="Replicas the pool needs for AUTOSCALE_TARGET_MS: off, no "
                                               "outcomes yet, or the recommendation and its reasoning.")
    replicas = serializers.DictField(
        child=serializers.DictField(child=serializers.FloatField()),
        help_text="Per replica: share of recent outcomes, requests (half-life weighted), latency_ms, "
                  "failure_rate, tpot_ms, ttft_ms_per_ktok: what the per-replica network sees.")


class ErrorResponse(serializers.Serializer):
    detail = serializers.CharField()


class ValidationErrorResponse(serializers.Serializer):
    """A 400's body: the schema is written out in agent_app/api/schema.py (field -> messages)."""


class AbArm(serializers.Serializer):
    count = serializers.IntegerField()
    success_rate = serializers.FloatField()
    latency_mean_ms = serializers.FloatField()
    latency_std_ms = serializers.FloatField()
    latency_p99_ms = serializers.FloatField()


class AbComparison(serializers.Serializer):
    baseline = serializers.CharField()
    candidate = serializers.CharField()
    latency_mean_diff_ms = serializers.FloatField()
    latency_mean_diff_ci95_ms = serializers.ListField(
        child=serializers.FloatField(), min_length=2, max_length=2
    )
    latency_p99_diff_ms = serializers.FloatField()
    success_rate_diff = serializers.FloatField()
    success_rate_diff_ci95 = serializers.ListField(child=serializers.FloatField(), min_length=2, max_length=2)
    candidate_is_faster = serializers.BooleanField()


class AbResultsResponse(serializers.Serializer):
    arms = serializers.DictField(child=AbArm())
    comparison = AbComparison(
        allow_null=True, help_text="rl minus heuristic; null until each arm has 2 outcomes."
    )


class ReadinessCheck(serializers.Serializer):
    ok = serializers.BooleanField()
    error = serializers.CharField(required=False)
    backend = serializers.CharField(required=False)


class ModelReadiness(serializers.Serializer):
    ok = serializers.BooleanField()
    version = serializers.IntegerField()
    fallback_reason = serializers.CharField(allow_null=True)


class CheckpointProblem(serializers.Serializer):
    version = serializers.IntegerField()
    path = serializers.CharField()
    status = serializers.ChoiceField(choices=["missing", "damaged", "incompatible"])
    problem = serializers.CharField()


class CheckpointReadiness(serializers.Serializer):
    ok = serializers.BooleanField(help_text="No damaged or missing checkpoint file (never affects `ready`).")
    usable = serializers.IntegerField(required=False, help_text="Checkpoints a rollback can use.")
    problems = CheckpointProblem(many=True, required=False)
    model_path = serializers.CharField(required=False, help_text="ok, missing, or damaged: why.")
    error = serializers.CharField(required=False)


class ReadinessResponse(serializers.Serializer):
    ready = serializers.BooleanField()
    model = ModelReadiness()
    database = ReadinessCheck()
    replay_store = ReadinessCheck()
    broker = ReadinessCheck()
    checkpoints = CheckpointReadiness()
