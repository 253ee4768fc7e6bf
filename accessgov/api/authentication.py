"""Who is calling: an API token (``Authorization: Bearer agv_…``) for /api/v1/, and, for the schema
only, a portal session that has passed the OTP step. A password-only session never authenticates."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, SessionAuthentication, get_authorization_header

from accessgov.services import tokens as token_services


class BearerTokenAuthentication(BaseAuthentication):
    """``Authorization: Bearer <secret>``; answers (user, ApiToken). Refuses revoked, expired and
    unknown tokens with a reason (401); no header means "not this scheme" (None)."""

    keyword = "bearer"

    def authenticate(self, request):
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword.encode():
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(
                "Malformed Authorization header: expected 'Bearer <token>'.", code="token_invalid"
            )
        try:
            secret = parts[1].decode("ascii")
        except UnicodeDecodeError as exc:
            raise exceptions.AuthenticationFailed("That is not an AccessGov token.", code="token_invalid") from exc
        result = token_services.api_token_authenticate(
            secret, client_address=getattr(request._request, "client_address", None)
        )
        if result.token is None:
            raise exceptions.AuthenticationFailed(result.message, code=result.code)
        return (result.token.user, result.token)

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="accessgov"'


class VerifiedSessionAuthentication(SessionAuthentication):
    """The portal session, but only once it has passed the OTP step (used by the schema and docs)."""

    def authenticate(self, request):
        user = getattr(request._request, "user", None)
        if user is None or not user.is_authenticated or not user.is_active:
            return None
        if not user.is_verified():
            return None
        self.enforce_csrf(request)
        return (user, None)


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "accessgov.api.authentication.BearerTokenAuthentication"
    name = "apiToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "agv_p_… (personal) or agv_s_… (service account)",
            "description": "An API token made under Account → API tokens (or by an admin for a service account).",
        }


class VerifiedSessionScheme(OpenApiAuthenticationExtension):
    target_class = "accessgov.api.authentication.VerifiedSessionAuthentication"
    name = "portalSession"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "cookie", "name": "accessgov_session"}
