"""The service's URLs plus /bench/constant, the smallest DRF endpoint, as the reference.

The constant sits in the same include as the service's API routes (one level deep, as in the
service's own URLs), so /bench/constant and /select_replica pay the same URL resolution.
"""

from django.urls import include, path
from rest_framework.response import Response
from rest_framework.views import APIView

from agent_app.api.urls import urlpatterns as api_urls
from rlagent_project.urls import urlpatterns as service_urls

CONSTANT = {"replica_idx": 1, "replica_name": "replica-2", "confidence": 0.73, "exploration": False}


class ConstantView(APIView):
    """Parses the same JSON body and answers a constant: the floor any DRF endpoint pays."""

    endpoint = "select_replica"

    def post(self, request):
        request.data  # noqa: B018  (parse the body, as the real endpoint does)
        return Response(CONSTANT)


urlpatterns = [
    path("", include([path("bench/constant", ConstantView.as_view()), *api_urls])),
    *service_urls,
]
