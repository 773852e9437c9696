"""The service's URLs plus /bench/constant, the smallest DRF endpoint, as the reference."""

from django.urls import include, path
from rest_framework.response import Response
from rest_framework.views import APIView

CONSTANT = {"replica_idx": 1, "replica_name": "replica-2", "confidence": 0.73, "exploration": False}


class ConstantView(APIView):
    """Parses the same JSON body and answers a constant: the floor any DRF endpoint pays."""

    endpoint = "select_replica"

    def post(self, request):
        request.data  # noqa: B018  (parse the body, as the real endpoint does)
        return Response(CONSTANT)


urlpatterns = [
    path("bench/constant", ConstantView.as_view()),
    path("", include("rlagent_project.urls")),
]
