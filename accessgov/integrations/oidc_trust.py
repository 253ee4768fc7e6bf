"""Verifying a CI job's OIDC identity token (GitHub Actions, GitLab …) with PyJWT against its issuer's
published keys: discovery (``<issuer>/.well-known/openid-configuration``) gives the ``jwks_uri``; the key
set is kept OIDC_JWKS_CACHE_SECONDS per process and fetched again at once (at most every
MIN_REFETCH_SECONDS) when a token names a key it does not hold — that is how rotation is followed.
(Wall-clock seconds, so a clock travelling in tests moves the cache too.)

Only RS256 is accepted; ``exp``, ``iat``, ``iss``, ``aud`` and ``jti`` are required; the audience and
the required claims are those of a trust policy for the token's issuer."""

import threading
import time
from dataclasses import dataclass

import jwt
from django.conf import settings

from accessgov import inputs
from accessgov.integrations.http import ProviderError, ensure_allowed_url, request_json
from accessgov.models import OidcTrustPolicy

ALGORITHMS = ["RS256"]
MAX_TOKEN_BYTES = 8192
MIN_REFETCH_SECONDS = 60
LEEWAY_SECONDS = 30
REQUIRED = ["exp", "iat", "iss", "aud", "jti"]
# A CI job's identity token lives minutes (GitHub Actions) to a job's timeout (GitLab). One that is valid for
# longer is refused: each is exchanged once, and its use is remembered at least a day
# (services.integrations.integrations_sweep), which must outlast it.
MAX_IDENTITY_TOKEN_SECONDS = 6 * 3600
MAX_JTI_LENGTH = 200  # the length OidcTokenUse keeps: a longer one is refused, never cut


class TokenRefused(Exception):
    """The identity token cannot be exchanged; ``str`` says why (fit for the caller, no secret)."""


@dataclass
class _KeySet:
    fetched_at: float
    keys: dict[str, jwt.PyJWK]


_cache: dict[str, _KeySet] = {}
_lock = threading.Lock()


def jwks_cache_clear() -> None:
    with _lock:
        _cache.clear()


def _fetch_keys(issuer: str) -> _KeySet:
    discovery_url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    status, discovery = request_json("GET", discovery_url, provider=issuer)
    if status != 200 or not isinstance(discovery, dict):
        raise ProviderError(f"{issuer} has no OpenID configuration (HTTP {status}).")
    if str(discovery.get("issuer", "")).rstrip("/") != issuer.rstrip("/"):
        raise ProviderError(f"{issuer}'s OpenID configuration names another issuer.")
    jwks_uri = discovery.get("jwks_uri")
    if not isinstance(jwks_uri, str):
        raise ProviderError(f"{issuer}'s OpenID configuration has no jwks_uri.")
    ensure_allowed_url(jwks_uri)
    status, jwks = request_json("GET", jwks_uri, provider=issuer)
    if status != 200 or not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise ProviderError(f"{issuer}'s key set cannot be read (HTTP {status}).")
    keys = {}
    for data in jwks["keys"]:
        if not isinstance(data, dict) or not data.get("kid") or data.get("kty") != "RSA":
            continue
        if data.get("use", "sig") != "sig":
            continue
        try:
            keys[str(data["kid"])] = jwt.PyJWK(data, algorithm="RS256")
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            continue
    return _KeySet(fetched_at=time.time(), keys=keys)


def signing_key(issuer: str, kid: str) -> jwt.PyJWK:
    """The issuer's key ``kid``, from the cache or fetched (again). Raises TokenRefused for a key the
    issuer does not publish, ProviderError when the issuer cannot be asked."""
    with _lock:
        cached = _cache.get(issuer)
        now = time.time()
        fresh = cached is not None and now - cached.fetched_at < settings.OIDC_JWKS_CACHE_SECONDS
        if fresh and kid in cached.keys:
            return cached.keys[kid]
        if cached is None or not fresh or now - cached.fetched_at >= MIN_REFETCH_SECONDS:
            cached = _fetch_keys(issuer)
            _cache[issuer] = cached
        if kid in cached.keys:
            return cached.keys[kid]
    raise TokenRefused("The token is signed with a key its issuer does not publish.")


def _claim_matches(expected: str, actual: object) -> bool:
    if not isinstance(actual, str):
        return False
    if expected.endswith("*"):
        return actual.startswith(expected[:-1])
    return actual == expected


def _audiences(claims: dict) -> list[str]:
    aud = claims.get("aud")
    if isinstance(aud, str):
        return [aud]
    return [a for a in aud if isinstance(a, str)] if isinstance(aud, list) else []


def verify(token: str) -> tuple[OidcTrustPolicy, dict]:
    """Check ``token`` and find the active trust policy it satisfies. Raises TokenRefused (the token is
    not acceptable: malformed, unknown issuer or key, bad signature, expired, wrong audience, a required
    claim does not match) or ProviderError (the issuer's keys cannot be fetched: refused too)."""
    if not token or len(token) > MAX_TOKEN_BYTES:
        raise TokenRefused("That is not an identity token.")
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except (jwt.PyJWTError, RecursionError):
        raise TokenRefused("That is not an identity token.") from None
    # Claims are read before the signature is checked (the issuer names the keys): text no database can
    # compare (an unpaired surrogate, a NUL) or nesting past 32 levels is refused here, not at a query.
    if inputs.json_problem(header) is not None or inputs.json_problem(unverified) is not None:
        raise TokenRefused("That is not an identity token.")
    if header.get("alg") not in ALGORITHMS:
        raise TokenRefused("Only RS256-signed identity tokens are accepted.")
    issuer = unverified.get("iss")
    if not isinstance(issuer, str) or len(issuer) > 200:
        raise TokenRefused("No trust policy accepts tokens from this issuer.")
    policies = list(OidcTrustPolicy.objects.filter(is_active=True, issuer=issuer).select_related("service_account"))
    if not policies:
        raise TokenRefused("No trust policy accepts tokens from this issuer.")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise TokenRefused("The token names no signing key.")
    key = signing_key(issuer, kid)
    try:
        claims = jwt.decode(
            token,
            key=key.key,
            algorithms=ALGORITHMS,
            issuer=issuer,
            leeway=LEEWAY_SECONDS,
            options={"require": REQUIRED, "verify_aud": False},
        )
    except jwt.ExpiredSignatureError:
        raise TokenRefused("The identity token has expired.") from None
    except jwt.InvalidSignatureError:
        raise TokenRefused("The identity token's signature is not valid.") from None
    except jwt.PyJWTError as error:
        raise TokenRefused(f"The identity token is not acceptable ({error.__class__.__name__}).") from None
    if claims["exp"] - time.time() > MAX_IDENTITY_TOKEN_SECONDS:
        raise TokenRefused("The identity token is valid for more than 6 hours: ask the CI for a short-lived one.")
    jti = claims["jti"]
    if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_LENGTH:
        raise TokenRefused(f"The identity token's jti must be text of 1 to {MAX_JTI_LENGTH} characters.")
    audiences = _audiences(claims)
    by_audience = [p for p in policies if p.audience in audiences]
    if not by_audience:
        raise TokenRefused("The token's audience is not one a trust policy accepts.")
    for policy in sorted(by_audience, key=lambda p: p.pk):
        if all(_claim_matches(value, claims.get(name)) for name, value in policy.required_claims.items()):
            return policy, claims
    raise TokenRefused("The token's claims (repository, ref, environment, workflow …) match no trust policy.")
