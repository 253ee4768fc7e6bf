"""Signing in through the company's identity provider (OIDC code flow with PKCE, state and nonce), and a
signed-in person linking their account to it. After the provider, the portal's own TOTP step follows
(``accounts:otp``, or enrolment) unless the provider is set to accept its MFA and the ID token proves it.

The flow's secrets (state → nonce and PKCE verifier) are kept in the session by mozilla-django-oidc's
helper; which provider and what for (sign in, or link) beside them. A state works once, within ten
minutes, in the browser that started it.
"""

import logging
import time

import django_otp
import requests
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.core.exceptions import SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, resolve_url
from django.urls import reverse
from django.utils.crypto import get_random_string
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST
from django_otp import user_has_device
from mozilla_django_oidc.utils import add_state_and_verifier_and_nonce_to_session, generate_code_challenge

from accessgov.identity import oidc
from accessgov.middleware import SESSION_LAST_SEEN_AT, SESSION_STARTED_AT
from accessgov.models import IdentityProvider
from accessgov.services.identity import SignInRefused
from accessgov.views.common import refused

logger = logging.getLogger("accessgov.security")

SESSION_FLOWS = "sso_flows"
SESSION_SSO = "sso"  # on a session signed in through a provider: which, when, amr/acr, MFA accepted
OIDC_STATES = "oidc_states"  # mozilla-django-oidc's per-state nonce and PKCE verifier
FLOW_MAX_AGE_SECONDS = 600
MAX_FLOWS = 10
BACKEND = "accessgov.identity.oidc.OIDCBackend"


def _provider(slug: str) -> IdentityProvider:
    provider = IdentityProvider.objects.filter(slug=slug, is_enabled=True).first()
    if provider is None:
        raise Http404("No such identity provider.")
    return provider


def _safe_next(request: HttpRequest, candidate: str) -> str:
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return ""


def _unavailable(request: HttpRequest, provider: IdentityProvider, error: Exception) -> HttpResponse:
    logger.warning("sso provider unavailable idp=%s error=%s", provider.slug, error.__class__.__name__)
    message = (
        f"{provider.name} cannot be reached right now, so nobody can sign in through it. "
        "Try again in a minute; break-glass accounts can still sign in with their password."
    )
    return refused(request, message, reverse("accounts:login"), status=503)


def _start(request: HttpRequest, provider: IdentityProvider, *, intent: str, next_url: str) -> HttpResponse:
    try:
        document = oidc.discovery(provider)
        oidc.signing_algorithm(document)
    except oidc.ProviderUnavailable as error:
        return _unavailable(request, provider, error)
    state, nonce, verifier = get_random_string(32), get_random_string(32), get_random_string(64)
    params = {
        "response_type": "code",
        "scope": provider.scopes,
        "client_id": provider.client_id,
        "redirect_uri": oidc.callback_url(request, provider),
        "state": state,
        "nonce": nonce,
        "code_challenge": generate_code_challenge(verifier, "S256"),
        "code_challenge_method": "S256",
    }
    add_state_and_verifier_and_nonce_to_session(request, state, params, verifier)
    now = time.time()
    flows = {
        key: flow
        for key, flow in (request.session.get(SESSION_FLOWS) or {}).items()
        if now - flow.get("at", 0) < FLOW_MAX_AGE_SECONDS
    }
    flows = dict(sorted(flows.items(), key=lambda item: item[1]["at"])[-(MAX_FLOWS - 1) :])
    flows[state] = {
        "provider": provider.slug,
        "intent": intent,
        "next": next_url,
        "user": request.user.pk if intent == "link" else None,
        "at": now,
    }
    request.session[SESSION_FLOWS] = flows
    endpoint = document["authorization_endpoint"]
    return redirect(f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(params)}")


@never_cache
@require_GET
def sso_start_view(request: HttpRequest, slug: str) -> HttpResponse:
    """ "Sign in with <provider>": off to the provider with a fresh state, nonce and PKCE challenge."""
    provider = _provider(slug)
    next_url = _safe_next(request, request.GET.get("next", ""))
    if request.user.is_authenticated and request.user.is_verified():
        return redirect(next_url or resolve_url(settings.LOGIN_REDIRECT_URL))
    return _start(request, provider, intent="sign-in", next_url=next_url)


@never_cache
@require_POST
def sso_link_view(request: HttpRequest, slug: str) -> HttpResponse:
    """A signed-in person (password and TOTP) links their account to their account at the provider:
    proving both is what makes the link; no admin can link someone else's account."""
    return _start(request, _provider(slug), intent="link", next_url=reverse("accounts:security"))


def _take_flow(request: HttpRequest, state: str) -> tuple[dict | None, dict | None]:
    """The flow and its secrets for ``state``, removed from the session either way (a state works once)."""
    flows = dict(request.session.get(SESSION_FLOWS) or {})
    secrets = dict(request.session.get(OIDC_STATES) or {})
    flow, secret = flows.pop(state, None), secrets.pop(state, None)
    request.session[SESSION_FLOWS], request.session[OIDC_STATES] = flows, secrets
    return flow, secret


@never_cache
@require_GET
def sso_callback_view(request: HttpRequest, slug: str) -> HttpResponse:
    """The provider sends the browser back here with a code: exchange it, verify the ID token (signature,
    issuer, audience, expiry, nonce), find the account, start a session — then the TOTP step, unless the
    provider's proven MFA is accepted."""
    provider = _provider(slug)
    back = reverse("accounts:login")
    state = request.GET.get("state", "")
    flow, secret = _take_flow(request, state) if isinstance(state, str) and 0 < len(state) <= 100 else (None, None)
    if request.GET.get("error"):
        logger.info("sso refused by provider idp=%s error=%s", provider.slug, request.GET.get("error", "")[:60])
        return refused(request, f"{provider.name} did not sign you in.", back, status=403)
    if (
        flow is None
        or secret is None
        or flow.get("provider") != provider.slug
        or time.time() - flow.get("at", 0) > FLOW_MAX_AGE_SECONDS
        or not request.GET.get("code")
    ):
        return refused(
            request,
            "This sign-in answer is not valid (already used, too old, or started in another browser). Start again.",
            back,
            status=400,
        )
    link_user = None
    if flow["intent"] == "link":
        user = request.user
        if not (user.is_authenticated and user.is_verified() and user.pk == flow.get("user")):
            return refused(request, "Sign in again to link your account.", back, status=403)
        link_user = user
    setattr(request, oidc.SESSION_REQUEST, {"provider": provider, "link_user": link_user})
    try:
        result = oidc.OIDCBackend().authenticate_callback(
            request, nonce=secret["nonce"], code_verifier=secret.get("code_verifier")
        )
    except SuspiciousOperation as error:
        logger.warning(
            "sso answer refused idp=%s reason=%s client=%s",
            provider.slug,
            error,
            getattr(request, "client_address", None),
        )
        return refused(
            request, f"AccessGov could not verify {provider.name}'s answer, so nobody was signed in.", back, status=403
        )
    except requests.HTTPError as error:
        status = error.response.status_code if error.response is not None else 502
        if 400 <= status < 500:
            logger.warning("sso code refused by provider idp=%s status=%s", provider.slug, status)
            return refused(request, f"{provider.name} refused the sign-in. Start again.", back, status=403)
        return _unavailable(request, provider, error)
    except (requests.RequestException, oidc.ProviderUnavailable) as error:
        return _unavailable(request, provider, error)
    except SignInRefused as error:
        logger.warning("sso sign-in refused idp=%s reason=%s", provider.slug, error)
        return refused(request, str(error), back, status=403)
    if result is None:
        return refused(request, "Nobody was signed in. Start again.", back, status=400)
    if result.linked:
        messages.success(request, f"Your account is linked to {provider.name}: you can sign in with it now.")
        return redirect(flow["next"] or "accounts:security")
    return _signed_in(request, result, flow["next"])


def _signed_in(request: HttpRequest, result, next_url: str) -> HttpResponse:
    login(request, result.user, backend=BACKEND)  # a new session id
    now = time.time()
    request.session[SESSION_STARTED_AT] = now
    request.session[SESSION_LAST_SEEN_AT] = now
    request.session[SESSION_SSO] = {
        "idp": result.provider.slug,
        "amr": result.amr,
        "acr": result.acr,
        "mfa_from_idp": result.mfa_device is not None,
        "at": now,
    }
    if result.mfa_device is not None:
        django_otp.login(request, result.mfa_device)
        request.session.cycle_key()
        return redirect(next_url or resolve_url(settings.LOGIN_REDIRECT_URL))
    step = reverse("accounts:otp" if user_has_device(result.user) else "accounts:enrol")
    return redirect(f"{step}?{urlencode({'next': next_url})}" if next_url else step)
