"""What the two hot endpoints skip of DRF: Accept parsing and the Response/renderer machinery.

Measured per /select_replica request: DRF's Response, its template-response rendering and the
Accept negotiation cost about as much as the routing decision itself. These endpoints only ever
answer JSON, so a success is rendered straight to bytes; errors still take DRF's exception
handler and JSON renderer, so a 400 names the field exactly as everywhere else.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpResponse
from rest_framework.views import APIView


class JsonOnlyAPIView(APIView):
    """An APIView whose answers are JSON whatever Accept says (never a 406)."""

    def perform_content_negotiation(self, request, force=False):
        renderer = self.get_renderers()[0]  # the project's one renderer: JSON
        return renderer, renderer.media_type


def json_response(body: dict[str, Any], status: int = 200) -> HttpResponse:
    """`body` as DRF's JSONRenderer writes it (compact, NaN refused), without building a Response."""
    return HttpResponse(json.dumps(body, allow_nan=False, separators=(",", ":")),
                        content_type="application/json", status=status)
