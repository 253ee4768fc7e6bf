"""POST /api/v1/oidc/token/: a CI job trades its OIDC identity token (``Authorization: Bearer <JWT>``) for
a short-lived AccessGov service token. Nothing else authenticates this endpoint: the identity token is
verified against a four-eyed trust policy (accessgov.integrations.oidc_trust) before anything is written."""

from dataclasses import dataclass

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from accessgov.api.query import QueryParametersMixin
from accessgov.api.schema import ErrorSerializer
from accessgov.api.serializers import EmptyInputSerializer
from accessgov.integrations import oidc_trust
from accessgov.integrations.http import ProviderError
from accessgov.models import ApiToken, OidcTrustPolicy
from accessgov.services import integrations as integration_services


class AddressRateThrottle(SimpleRateThrottle):
    """Exchanges per client address, at API_THROTTLE_RATE."""

    scope = "oidc"

    def get_rate(self) -> str:
        from django.conf import settings

        return settings.API_THROTTLE_RATE

    def get_cache_key(self, request, view) -> str | None:
        return f"throttle_oidc_{getattr(request._request, 'client_address', None)}"


class IssuerUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The identity token's issuer cannot be reached to check its keys; try again."
    default_code = "issuer_unavailable"


@dataclass(frozen=True)
class VerifiedIdentity:
    policy: OidcTrustPolicy
    claims: dict


class OidcIdentityAuthentication(BaseAuthentication):
    """``Authorization: Bearer <OIDC identity token>``, verified against the trust policies; answers
    (the policy's service account, VerifiedIdentity). AccessGov API tokens are not accepted here."""

    def authenticate(self, request):
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != b"bearer":
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("Expected 'Bearer <identity token>'.", code="token_invalid")
        try:
            token = parts[1].decode("ascii")
        except UnicodeDecodeError as exc:
            raise exceptions.AuthenticationFailed("That is not an identity token.", code="token_invalid") from exc
        if token.startswith(ApiToken.SECRET_PREFIX):
            raise exceptions.AuthenticationFailed(
                "Send the CI's OIDC identity token here, not an AccessGov token.", code="token_invalid"
            )
        try:
            policy, claims = oidc_trust.verify(token)
        except oidc_trust.TokenRefused as error:
            raise exceptions.AuthenticationFailed(str(error), code="token_refused") from error
        except ProviderError as error:
            raise IssuerUnavailable(f"{error} Try again.") from error
        return (policy.service_account, VerifiedIdentity(policy, claims))

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="accessgov-oidc"'


class OidcIdentityScheme(OpenApiAuthenticationExtension):
    target_class = "accessgov.api.oidc.OidcIdentityAuthentication"
    name = "oidcIdentityToken"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "bearerFormat": "JWT (a CI job's OIDC identity token)"}


class OidcTokenExchangeView(QueryParametersMixin, APIView):
    authentication_classes = [OidcIdentityAuthentication]
    permission_classes = [IsAuthenticated]
    throttle_classes = [AddressRateThrottle]
    metadata_class = None

    @extend_schema(
        operation_id="oidc_token_exchange",
        summary="Trade a CI job's OIDC identity token for a short-lived service token",
        request=EmptyInputSerializer,
        responses={
            201: inline_serializer(
                "OidcTokenAnswer",
                {
                    "token": serializers.CharField(),
                    "expires_at": serializers.DateTimeField(),
                    "service_account": serializers.CharField(),
                    "trust_policy": serializers.CharField(),
                    "scopes": serializers.ListField(child=serializers.CharField()),
                    "roles": serializers.ListField(child=serializers.CharField()),
                },
            ),
            400: OpenApiResponse(
                ErrorSerializer,
                description="Refused: the identity token was already exchanged, or the policy is unusable",
            ),
            401: OpenApiResponse(
                ErrorSerializer, description="token_refused (with the reason) or token_invalid: not a trusted identity"
            ),
            503: OpenApiResponse(
                ErrorSerializer, description="issuer_unavailable: the issuer's keys cannot be fetched; try again"
            ),
        },
    )
    def post(self, request):
        serializer = EmptyInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        identity: VerifiedIdentity = request.auth
        exchanged = integration_services.oidc_token_issue(
            identity.policy, identity.claims, client_address=getattr(request._request, "client_address", None)
        )
        token = exchanged.token
        return Response(
            {
                "token": exchanged.secret,
                "expires_at": token.expires_at,
                "service_account": token.user.get_username(),
                "trust_policy": identity.policy.name,
                "scopes": token.scopes,
                "roles": [f"{r.system.slug}/{r.name}" for r in token.roles.select_related("system")],
            },
            status=status.HTTP_201_CREATED,
            headers={"Cache-Control": "no-store"},
        )
