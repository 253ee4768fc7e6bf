"""Requests per token (API_THROTTLE_RATE, e.g. "600/min"); read per request so tests can change it.

The counts live in Django's cache (per process unless a shared cache is configured)."""

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle

from accessgov.models import ApiToken


class TokenRateThrottle(SimpleRateThrottle):
    scope = "token"

    def get_rate(self) -> str:
        return settings.API_THROTTLE_RATE

    def get_cache_key(self, request, view) -> str | None:
        if not isinstance(request.auth, ApiToken):
            return None
        return f"throttle_api_token_{request.auth.pk}"
