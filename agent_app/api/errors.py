"""Errors the views leave to DRF: a body over the size limit (413), a pool that does not exist
(404), a refused training request, and a backend that stops answering (a 503 naming it, never a
500)."""

from __future__ import annotations

import logging
import time
from collections import Counter

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from agent_app.outages import OUTAGES, describe_outage
from agent_app.pools import PoolNotFound
from agent_app.services.refusals import TrainingRefused

log = logging.getLogger(__name__)
RETRY_AFTER_SECONDS = 5
LOG_EVERY_SECONDS = 10  # an outage refuses thousands of requests: one line this often, with the count

_last_logged = float("-inf")
_refused_since_logged = Counter()


def exception_handler(exc, context):
    """DRF's handler, plus: a training refusal -> its status with its context; the database, Redis
    or the replay store down -> 503. Every 503 says when to retry."""
    if isinstance(exc, RequestDataTooBig):  # Django's own size check, before the parser sees the body
        detail = f"request body is larger than the {settings.MAX_BODY_BYTES} bytes accepted"
        return _answer({"detail": detail}, status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, PoolNotFound):
        return _answer({"detail": str(exc), "pool": exc.name}, status.HTTP_404_NOT_FOUND)
    if isinstance(exc, TrainingRefused):
        return _answer({"detail": str(exc), **exc.context}, exc.status_code)
    if isinstance(exc, OUTAGES):
        detail = describe_outage(exc)
        _log_refusal(detail)
        return _answer({"detail": detail}, status.HTTP_503_SERVICE_UNAVAILABLE)
    return drf_exception_handler(exc, context)


def _answer(body: dict, code: int) -> Response:
    unavailable = code == status.HTTP_503_SERVICE_UNAVAILABLE
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if unavailable else None
    return Response(body, status=code, headers=headers)


def _log_refusal(detail: str) -> None:
    global _last_logged
    _refused_since_logged[detail.split(":", 1)[0]] += 1
    now = time.monotonic()
    if now - _last_logged >= LOG_EVERY_SECONDS:
        counts = ", ".join(f"{n} x {what}" for what, n in _refused_since_logged.items())
        log.error("answered 503 since the last report: %s; latest: %s", counts, detail)
        _refused_since_logged.clear()
        _last_logged = now
