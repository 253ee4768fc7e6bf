"""OpenID Connect sign-in, on mozilla-django-oidc (docs/DECISIONS.md, "Identity from the IdP").

What mozilla-django-oidc does here: the code exchange at the token endpoint, choosing the signing key
from the provider's JWKS by ``kid`` and ``alg``, the signature check with the one expected algorithm,
the nonce check, and (its utils) the per-state session store of nonce and PKCE verifier and the S256
challenge. What this module adds, because the library leaves it out: discovery (the provider's
endpoints and keys come from ``<issuer>/.well-known/openid-configuration``, whose ``issuer`` must be
the configured one), several providers from the database instead of one from settings, and the claim
checks the library skips (``iss``, ``aud``/``azp``, ``exp`` and ``iat`` required), and a whole-call time
limit on every call to the provider (discovery, token endpoint, keys: ``net.deadline`` of OIDC_TIMEOUT): a
provider trickling its answer cannot hold the sign-in page. Accounts are found by the provider's stable
subject through ``services.identity``, never by e-mail.
"""

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import jwt
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.exceptions import SuspiciousOperation
from django.urls import reverse
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from accessgov import net
from accessgov.identity.models import IdentityProvider
from accessgov.services import identity as identity_services

logger = logging.getLogger("accessgov.security")

ALGORITHMS = ("RS256", "ES256", "PS256")  # never "none" and never a shared-secret HS* algorithm
LEEWAY_SECONDS = 60
SESSION_REQUEST = "_sso_request"  # set on the request by the callback view: (provider, intent, link user)


class ProviderUnavailable(Exception):
    """The provider's discovery document, keys or token endpoint could not be read in time (or made no sense)."""


@contextmanager
def _provider_call(what: str) -> Iterator[None]:
    """One call to the provider (``what``: discovery, token endpoint, keys) within OIDC_TIMEOUT seconds in all —
    the name lookup, connecting, TLS and the whole answer (``net.deadline``; requests' own timeout bounds one
    socket read only). Raises ProviderUnavailable when the time is up."""
    try:
        with net.deadline(settings.OIDC_TIMEOUT):
            yield
    except TimeoutError as error:
        raise ProviderUnavailable(f"{what}: no complete answer within {settings.OIDC_TIMEOUT} s") from error


def discovery(provider: IdentityProvider) -> dict:
    """The provider's discovery document (cached OIDC_DISCOVERY_CACHE_SECONDS). Raises ProviderUnavailable
    when it cannot be read or does not name the configured issuer (OpenID Connect Discovery 1.0, 4.3)."""
    key = f"oidc-discovery:{provider.pk}:{provider.issuer}"
    document = cache.get(key)
    if document is not None:
        return document
    url = provider.issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        with _provider_call("discovery"):
            response = requests.get(url, timeout=settings.OIDC_TIMEOUT, allow_redirects=False)
            response.raise_for_status()
            document = response.json()
    except (requests.RequestException, ValueError) as error:
        raise ProviderUnavailable(f"discovery at {url} failed: {error.__class__.__name__}") from error
    if not isinstance(document, dict) or document.get("issuer") != provider.issuer:
        raise ProviderUnavailable("the discovery document names another issuer")
    for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        if not isinstance(document.get(name), str) or not document[name].startswith(("https://", "http://")):
            raise ProviderUnavailable(f"the discovery document has no usable {name}")
    cache.set(key, document, settings.OIDC_DISCOVERY_CACHE_SECONDS)
    return document


def signing_algorithm(document: dict) -> str:
    offered = document.get("id_token_signing_alg_values_supported") or ["RS256"]
    for alg in ALGORITHMS:
        if alg in offered:
            return alg
    raise ProviderUnavailable("the provider signs ID tokens with no algorithm this portal accepts")


def callback_url(request, provider: IdentityProvider) -> str:
    return request.build_absolute_uri(reverse("sso:callback", kwargs={"slug": provider.slug}))


class OIDCBackend(OIDCAuthenticationBackend):
    """mozilla-django-oidc's backend, configured per provider from its discovery document. It is listed in
    AUTHENTICATION_BACKENDS so that sessions it started load their user (``get_user``)."""

    def __init__(self, *args, **kwargs) -> None:
        self.UserModel = get_user_model()
        self.provider: IdentityProvider | None = None

    def configure(self, provider: IdentityProvider) -> "OIDCBackend":
        document = discovery(provider)
        self.provider, self.document = provider, document
        self.OIDC_OP_TOKEN_ENDPOINT = document["token_endpoint"]
        self.OIDC_OP_USER_ENDPOINT = document.get("userinfo_endpoint")
        self.OIDC_OP_JWKS_ENDPOINT = document["jwks_uri"]
        self.OIDC_RP_CLIENT_ID = provider.client_id
        self.OIDC_RP_CLIENT_SECRET = provider.client_secret
        self.OIDC_RP_SIGN_ALGO = signing_algorithm(document)
        self.OIDC_RP_IDP_SIGN_KEY = None
        return self

    def get_settings(self, attr, *args):
        methods = (self.document or {}).get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        fixed = {
            "OIDC_VERIFY_SSL": True,
            "OIDC_TIMEOUT": settings.OIDC_TIMEOUT,
            "OIDC_PROXY": None,
            "OIDC_USE_NONCE": True,
            "OIDC_VERIFY_KID": True,
            "OIDC_ALLOW_UNSECURED_JWT": False,
            "OIDC_STORE_ACCESS_TOKEN": False,
            "OIDC_STORE_ID_TOKEN": False,
            "OIDC_TOKEN_USE_BASIC_AUTH": "client_secret_basic" in methods,
            # The library reverses this argument-less name for redirect_uri; get_token() puts the
            # provider's own callback URL (with its slug) in its place.
            "OIDC_AUTHENTICATION_CALLBACK_URL": "accounts:login",
        }
        if attr in fixed:
            return fixed[attr]
        if args:
            return args[0]
        raise SuspiciousOperation(f"{attr} is not a setting of this backend")

    document: dict | None = None

    def authenticate(self, request, **kwargs):
        """Never answers ``django.contrib.auth.authenticate()`` (the password form asks every backend):
        only the callback view signs anyone in through a provider, with ``authenticate_callback``."""
        return None

    def authenticate_callback(self, request, *, nonce: str, code_verifier: str | None):
        """The callback's one call: exchange the code, verify the ID token, find the account. Returns
        ``services.identity.SignIn``; raises SuspiciousOperation (the answer failed a check),
        requests.RequestException or ProviderUnavailable (the provider), SignInRefused (no account)."""
        self.configure(getattr(request, SESSION_REQUEST)["provider"])
        return super().authenticate(request, nonce=nonce, code_verifier=code_verifier)

    def get_token(self, payload):
        payload["redirect_uri"] = callback_url(self.request, self.provider)
        with _provider_call("token endpoint"):
            answer = super().get_token(payload)
        if not isinstance(answer, dict):
            raise SuspiciousOperation("The token endpoint's answer is not a JSON object.")
        return answer

    def retrieve_matching_jwk(self, token):
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise SuspiciousOperation("The ID token is not a JWT.") from error
        if not isinstance(header.get("kid"), str):
            raise SuspiciousOperation("The ID token names no signing key.")
        try:
            with _provider_call("keys"):
                return super().retrieve_matching_jwk(token)
        except (KeyError, TypeError, ValueError, jwt.PyJWTError) as error:
            raise SuspiciousOperation("The provider's keys could not be read.") from error

    def _verify_jws(self, payload, key):
        """Signature with the one expected algorithm (the library's check), and the claims it leaves
        out: issuer, audience (and ``azp`` when there are several), expiry, issue time and subject."""
        try:
            header = jwt.get_unverified_header(payload)
        except jwt.PyJWTError as error:
            raise SuspiciousOperation("The ID token is not a JWT.") from error
        if header.get("alg") != self.OIDC_RP_SIGN_ALGO:
            raise SuspiciousOperation(
                f"The ID token is signed with {header.get('alg')!r}, not {self.OIDC_RP_SIGN_ALGO}."
            )
        try:
            claims = jwt.decode(
                payload,
                key,
                algorithms=[self.OIDC_RP_SIGN_ALGO],
                audience=self.OIDC_RP_CLIENT_ID,
                issuer=self.provider.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as error:
            raise SuspiciousOperation(f"The ID token was refused: {error}") from error
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != self.OIDC_RP_CLIENT_ID:
            raise SuspiciousOperation("The ID token was issued to another client (azp).")
        return claims

    def verify_token(self, token, **kwargs):
        if not isinstance(token, str) or not token:
            raise SuspiciousOperation("The provider returned no ID token.")
        return super().verify_token(token, **kwargs)

    def get_or_create_user(self, access_token, id_token, payload):
        """The account of the verified ID token's subject (services.identity): linked, created just in
        time, or — for a link flow — linked to the signed-in person. The claims come from the signed ID
        token only (never the unsigned userinfo answer)."""

        sso = getattr(self.request, SESSION_REQUEST)
        return identity_services.sso_sign_in(
            self.provider,
            payload,
            link_user=sso.get("link_user"),
            client_address=getattr(self.request, "client_address", None),
        )

    def get_user(self, user_id):
        return self.UserModel._default_manager.filter(pk=user_id).first()
