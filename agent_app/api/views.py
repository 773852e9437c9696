"""HTTP endpoints: validate with a serializer, call one service function, answer."""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from agent_app import metrics
from agent_app.api import serializers as io
from agent_app.replay import StoreUnavailable, get_replay_store
from agent_app.services import training
from agent_app.services.ab_testing import ab_results
from agent_app.services.experiences import record_experiences
from agent_app.services.routing import select_replica
from agent_app.services.stats import agent_stats, readiness
from agent_app.serving import policy_cache

_ERROR = OpenApiResponse(io.ErrorResponse, description="Validation error naming the field")


def unavailable(exc: Exception) -> Response:
    return Response({"detail": str(exc)}, status=status.HTTP_503_SERVICE_UNAVAILABLE)


class SelectReplicaView(APIView):
    endpoint = "select_replica"

    @extend_schema(request=io.SelectReplicaRequest, responses={200: io.SelectReplicaResponse, 400: _ERROR})
    def post(self, request):
        data = io.SelectReplicaRequest(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(select_replica(**data.validated_data))


class RecordExperienceView(APIView):
    """One experience (the seed's body), or {"experiences": [...]} to report up to 1000 at once."""

    endpoint = "record_experience"

    @extend_schema(
        request=io.ExperienceRequest,
        responses={201: io.RecordResponse, 400: _ERROR, 503: io.ErrorResponse},
        description="Also accepts the batch form {\"experiences\": [ ...up to 1000 bodies... ]}.",
    )
    def post(self, request):
        is_batch = isinstance(request.data, dict) and "experiences" in request.data
        serializer = (io.ExperienceBatchRequest if is_batch else io.ExperienceRequest)(data=request.data)
        metrics.count_rejected(serializer)
        serializer.is_valid(raise_exception=True)
        items = serializer.validated_data["experiences"] if is_batch else [serializer.validated_data]
        try:
            outcome = record_experiences(items=items)
            buffer_size = get_replay_store().size()
        except StoreUnavailable as exc:
            return unavailable(exc)
        body = {"stored": outcome.stored, "duplicates": outcome.duplicates,
                "rewards": outcome.rewards, "buffer_size": buffer_size}
        return Response(body, status=status.HTTP_201_CREATED)


class TrainView(APIView):
    endpoint = "train"

    @extend_schema(
        parameters=[io.TrainQuery], request=None,
        responses={200: io.TrainResponse, 400: _ERROR, 409: io.ErrorResponse, 503: io.ErrorResponse,
                   504: io.ErrorResponse},
    )
    def post(self, request):
        query = io.TrainQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        try:
            result = training.request_training(**query.validated_data)
        except training.TrainingRefused as exc:
            return Response({"detail": str(exc), **exc.context}, status=exc.status_code)
        except StoreUnavailable as exc:
            return unavailable(exc)
        return Response(result)


class SaveModelView(APIView):
    endpoint = "save_model"

    @extend_schema(request=None, responses={200: io.SaveModelResponse, 409: io.ErrorResponse})
    def post(self, request):
        try:
            return Response(training.request_checkpoint())
        except training.TrainingRefused as exc:
            return Response({"detail": str(exc), **exc.context}, status=exc.status_code)


class StatsView(APIView):
    endpoint = "stats"

    @extend_schema(responses={200: io.StatsResponse})
    def get(self, request):
        return Response(agent_stats())


class ModelWeightsView(APIView):
    """The published weights (npz, no pickle) for gateways that decide locally; ETag per version."""

    endpoint = "select_replica"  # as open as routing itself: it reveals what routing does

    @extend_schema(responses={(200, "application/octet-stream"): OpenApiResponse(description="npz weights"),
                              304: OpenApiResponse(description="Not modified"),
                              404: io.ErrorResponse})
    def get(self, request):
        policy_cache.ensure_started()
        snap = policy_cache.snapshot
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

    @extend_schema(responses={200: OpenApiResponse(description="Per-arm outcomes and the rl-heuristic diff")})
    def get(self, request):
        try:
            return Response(ab_results())
        except StoreUnavailable as exc:
            return unavailable(exc)


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

    @extend_schema(responses={200: OpenApiResponse(description="Ready"),
                              503: OpenApiResponse(description="Not ready")})
    def get(self, request):
        checks = readiness()
        return Response(checks, status=200 if checks["ready"] else 503)
