"""HTTP endpoints: validate with a serializer, call one service function, answer.

Refused training requests and unreachable backends are answered by agent_app.api.errors.
"""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from agent_app import metrics
from agent_app.api import serializers as io
from agent_app.api.hot_path import JsonOnlyAPIView, json_response
from agent_app.pools import DEFAULT_POOL, ensure_pool, pool_scope
from agent_app.services import dispatch
from agent_app.services.ab_testing import ab_results
from agent_app.services.experiences import record_experiences
from agent_app.services.routing import select_replica
from agent_app.services.stats import agent_stats, readiness
from agent_app.serving import policy_cache

# Every response an endpoint really gives is documented (tests/api/test_schema_fuzz.py checks it).
_INVALID = OpenApiResponse(io.ValidationErrorResponse, description="Refused: each field with its messages")
_NO_KEY = OpenApiResponse(io.ErrorResponse, description="No API key (outside OPEN_ENDPOINTS), or a bad one")
_UNAVAILABLE = OpenApiResponse(io.ErrorResponse, description="The database or the replay store is down")
_REFUSED = OpenApiResponse(io.ErrorResponse, description="Another trainer holds the lease, or the replay "
                                                         "buffer holds fewer experiences than a batch")
_TIMEOUT = OpenApiResponse(io.ErrorResponse, description="The training worker did not answer in time")
_NO_POOL = OpenApiResponse(io.ErrorResponse, description="No pool of that name (POOLS_AUTO_CREATE is off)")
_BODY_ERRORS = {
    400: _INVALID, 401: _NO_KEY, 404: _NO_POOL,
    413: OpenApiResponse(io.ErrorResponse, description="Body larger than MAX_BODY_BYTES"),
    415: OpenApiResponse(io.ErrorResponse, description="Body is not application/json"),
}
# The original specification's example bodies, shown on the OpenAPI page.
_SEED_SELECT = {"replica_loads": [5, 3, 7], "queue_depth": 12, "recent_latency_ms": 280.5,
                "current_rps": 8.2, "success_rate": 0.98}
_SEED_EXPERIENCE = {"state": [5, 3, 7, 12, 0.28, 8.2, 0.98, 0.5, 0.4, 0.5], "action": 1, "latency_ms": 265.3,
                    "success": True, "replica_loads": [5, 4, 7]}


def _query(serializer_class: type[serializers.Serializer], request) -> dict:
    """The validated query parameters, or a 400 naming each bad one."""
    query = serializer_class(data=request.query_params)
    query.is_valid(raise_exception=True)
    return dict(query.validated_data)


def _existing_pool(query: dict) -> str:
    """The query's pool (removed from it), checked to exist: PoolNotFound answers 404."""
    pool = query.pop("pool", DEFAULT_POOL)
    if pool not in policy_cache.known_pools:
        ensure_pool(pool)
    return pool


class SelectReplicaView(JsonOnlyAPIView):
    endpoint = "select_replica"

    @extend_schema(request=io.SelectReplicaRequest, responses={200: io.SelectReplicaResponse, **_BODY_ERRORS},
                   examples=[OpenApiExample("specification", _SEED_SELECT, request_only=True)])
    def post(self, request):
        return json_response(select_replica(**io.SelectReplicaRequest.validated(request.data)))


class RecordExperienceView(JsonOnlyAPIView):
    """One experience (the specification's body), or {"experiences": [...]} to report up to 1000 at once."""

    endpoint = "record_experience"

    @extend_schema(
        request=PolymorphicProxySerializer(
            component_name="ExperienceReport", resource_type_field_name=None, many=False,
            serializers=[io.ExperienceRequest, io.ExperienceBatchRequest],
        ),
        responses={201: io.RecordResponse, **_BODY_ERRORS, 503: _UNAVAILABLE},
        examples=[OpenApiExample("specification", _SEED_EXPERIENCE, request_only=True),
                  OpenApiExample("batch", {"experiences": [_SEED_EXPERIENCE]}, request_only=True)],
    )
    def post(self, request):
        is_batch = isinstance(request.data, dict) and "experiences" in request.data
        serializer = io.ExperienceBatchRequest if is_batch else io.ExperienceRequest
        try:
            validated = serializer.validated(request.data)
        except ValidationError:
            metrics.count_rejected(request.data)
            raise
        items = validated["experiences"] if is_batch else [validated]
        # A store that does not answer: 503; a pool that does not exist: 404 (api/errors.py).
        outcome = record_experiences(items=items, pool=validated.get("pool", DEFAULT_POOL))
        body = {"stored": outcome.stored, "duplicates": outcome.duplicates,
                "rewards": outcome.rewards, "buffer_size": outcome.buffer_size}
        return json_response(body, status=status.HTTP_201_CREATED)


class TrainView(APIView):
    endpoint = "train"

    @extend_schema(
        parameters=[io.TrainQuery], request=None,
        responses={200: io.TrainResponse, 400: _INVALID, 401: _NO_KEY, 404: _NO_POOL, 409: _REFUSED,
                   503: _UNAVAILABLE, 504: _TIMEOUT},
    )
    def post(self, request):
        query = _query(io.TrainQuery, request)
        pool = _existing_pool(query)
        return Response(dispatch.request_training(**query, pool=pool))


class SaveModelView(APIView):
    endpoint = "save_model"

    @extend_schema(parameters=[io.PoolQuery], request=None,
                   responses={200: io.SaveModelResponse, 400: _INVALID, 401: _NO_KEY, 404: _NO_POOL,
                              409: _REFUSED, 503: _UNAVAILABLE, 504: _TIMEOUT})
    def post(self, request):
        return Response(dispatch.request_checkpoint(pool=_existing_pool(_query(io.PoolQuery, request))))


class StatsView(APIView):
    endpoint = "stats"

    @extend_schema(parameters=[io.PoolQuery],
                   responses={200: io.StatsResponse, 400: _INVALID, 401: _NO_KEY, 404: _NO_POOL,
                              503: _UNAVAILABLE})
    def get(self, request):
        with pool_scope(_existing_pool(_query(io.PoolQuery, request))):
            return Response(agent_stats())


class ModelWeightsView(APIView):
    """The published weights (npz, no pickle) for gateways that decide locally; ETag per version."""

    endpoint = "select_replica"  # as open as routing itself: it reveals what routing does

    @extend_schema(
        parameters=[
            io.PoolQuery,
            OpenApiParameter("If-None-Match", str, OpenApiParameter.HEADER,
                             description="The ETag of the weights held: 304 while they are current"),
            OpenApiParameter("ETag", str, OpenApiParameter.HEADER, response=[200, 304]),
            OpenApiParameter("X-Model-Version", str, OpenApiParameter.HEADER, response=[200, 304],
                             pattern=r"^[0-9]+$"),
            OpenApiParameter("X-Model-Ready", str, OpenApiParameter.HEADER, response=[200, 304],
                             enum=["true", "false"]),
        ],
        responses={(200, "application/octet-stream"): OpenApiResponse(OpenApiTypes.BINARY,
                                                                      description="npz weights"),
                   304: OpenApiResponse(description="Not modified"), 400: _INVALID, 401: _NO_KEY,
                   404: OpenApiResponse(io.ErrorResponse, description="No model published yet, or no "
                                                                      "such pool")},
    )
    def get(self, request):
        policy_cache.ensure_started()
        snap = policy_cache.snapshot_for(_query(io.PoolQuery, request).get("pool", DEFAULT_POOL))
        if snap.weights_blob is None:
            return Response({"detail": snap.fallback_reason or "no model published"}, status=404)
        etag = f'"v{snap.model_version}"'
        headers = {"ETag": etag, "X-Model-Version": str(snap.model_version),
                   "X-Model-Ready": "true" if snap.fallback_reason is None else "false"}
        if request.headers.get("If-None-Match") == etag:
            return HttpResponse(status=304, headers=headers)
        return HttpResponse(snap.weights_blob, content_type="application/octet-stream", headers=headers)


class AbResultsView(APIView):
    endpoint = "stats"

    @extend_schema(parameters=[io.PoolQuery],
                   responses={200: OpenApiResponse(io.AbResultsResponse, description="Outcomes per arm"),
                              400: _INVALID, 401: _NO_KEY, 404: _NO_POOL, 503: _UNAVAILABLE})
    def get(self, request):
        with pool_scope(_existing_pool(_query(io.PoolQuery, request))):
            return Response(ab_results())


class HealthView(APIView):
    """Liveness: the process answers."""

    endpoint = "health"
    authentication_classes: list = []
    permission_classes: list = []

    @extend_schema(responses=inline_serializer("Health", {"status": serializers.CharField()}))
    def get(self, request):
        return Response({"status": "ok"})


class ReadyView(APIView):
    """Readiness: the database, the replay store and the broker answer; the model state is shown."""

    endpoint = "health"
    authentication_classes: list = []
    permission_classes: list = []

    @extend_schema(responses={200: OpenApiResponse(io.ReadinessResponse, description="Ready"),
                              503: OpenApiResponse(io.ReadinessResponse, description="Not ready")})
    def get(self, request):
        checks = readiness()
        return Response(checks, status=200 if checks["ready"] else 503)
