"""JSON parsing that turns oversized, malformed or absurdly nested bodies into clear 4xx errors."""

from __future__ import annotations

import json

from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import JSONParser


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "payload_too_large"


class BoundedJSONParser(JSONParser):
    """Reads at most MAX_BODY_BYTES. NaN and Infinity parse, so field validation can name them."""

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.MAX_BODY_BYTES
        body = stream.read(limit + 1) if stream is not None else b""
        if len(body) > limit:
            raise PayloadTooLarge(f"request body is larger than the {limit} bytes accepted")
        try:
            return json.loads(body.decode("utf-8"))
        except RecursionError:
            raise ParseError("JSON parse error: nested too deeply") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise ParseError(f"JSON parse error: {exc}") from None
