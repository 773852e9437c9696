"""API keys: checked against the digests the serving snapshot holds, so no query per request."""

from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.db import DatabaseError
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed, NotAuthenticated
from rest_framework.permissions import BasePermission

from agent_app.models import ApiKey
from agent_app.serving import policy_cache

KEY_PREFIX = "rlk_"


def digest(raw_key: str) -> str:
    # Keys are 256-bit random tokens, so one SHA-256 is enough: there is no password to brute-force.
    return hashlib.sha256(raw_key.encode()).hexdigest()


def create_api_key(*, name: str) -> tuple[ApiKey, str]:
    """A new key; the raw value is returned once and only its digest is stored."""
    raw = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey.objects.create(name=name, prefix=raw[:12], digest=digest(raw))
    return key, raw


def _known_key(key_digest: str) -> bool:
    """In the snapshot, or created since its last refresh: a gateway that creates a key and uses it
    at once must not be refused for a refresh interval. Only an unknown key costs a query."""
    if key_digest in policy_cache.snapshot.api_key_digests:
        return True
    try:
        return ApiKey.objects.filter(digest=key_digest, active=True).exists()
    except DatabaseError:
        return False  # the database is down: only the keys the snapshot holds are known


class ApiKeyAuthentication(BaseAuthentication):
    """`Authorization: Bearer <key>` or `X-API-Key: <key>`."""

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        raw = header[7:].strip() if header.lower().startswith("bearer ") else ""
        raw = raw or request.META.get("HTTP_X_API_KEY", "").strip()
        if not raw:
            return None
        policy_cache.ensure_started()
        if not _known_key(digest(raw)):
            raise AuthenticationFailed("invalid or revoked API key")
        return (None, raw)

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="rl-agent"'


class ApiKeyOrOpenEndpoint(BasePermission):
    """A valid key, or an endpoint listed in OPEN_ENDPOINTS (open inside a trusted network)."""

    message = "this endpoint needs an API key: send 'Authorization: Bearer <key>'"

    def has_permission(self, request, view) -> bool:
        if view.endpoint in settings.OPEN_ENDPOINTS or request.auth is not None:
            return True
        raise NotAuthenticated(self.message)
