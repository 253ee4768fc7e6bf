"""Request-wide guards: the real client address (also for the change log), no-store caching, session
timeouts, and the OTP requirement."""

import logging
import time
from collections.abc import Callable
from functools import lru_cache, partial

from auditlog.middleware import AuditlogMiddleware as _StockAuditlogMiddleware
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.urls import Resolver404, resolve, reverse
from django.utils import timezone
from django.utils.functional import SimpleLazyObject
from django.utils.http import urlencode
from django_otp.middleware import OTPMiddleware
from whitenoise.middleware import WhiteNoiseFileResponse

from accessgov import drafts, inputs, net, otp, permissions, signed_in
from accessgov.views.errors import bad_request, method_not_allowed

logger = logging.getLogger("accessgov.security")

# Views a visitor may reach without signing in at all.
# /metrics checks its own bearer token; Slack's, Jira's and GitHub's endpoints check the provider's signature.
PUBLIC_VIEWS = frozenset(
    {
        "accounts:login",
        "healthz",
        "healthz_ready",
        "metrics",
        "sso:start",
        "sso:callback",
        "slack_interactivity",
        "jira_webhook",
        "github_webhook",
    }
)
# Views whose link is the proof (an account recovery's one-time link): open to someone not signed in, and
# to a verified session; a password-only session goes to the OTP step first, as everywhere.
LINK_PROVEN_VIEWS = frozenset({"accounts:recover"})
# Views a password-only session may reach: the OTP step, enrolment, sign-out.
HALF_AUTHENTICATED_VIEWS = frozenset({"accounts:otp", "accounts:enrol", "accounts:enrol_qr", "accounts:logout"})
# The REST API authenticates every call itself (an API token; the schema also a verified session) and
# answers JSON 401/403, never a redirect. The session's sign-in state gives it nothing.
API_NAMESPACE = "api"
# SCIM (the identity provider's provisioning client) likewise authenticates its token itself.
SCIM_NAMESPACE = "scim"

SESSION_STARTED_AT = "auth_started_at"
SESSION_LAST_SEEN_AT = "auth_last_seen_at"
# Writing the session on every request costs a database write, so the last activity is written when it is
# older than a sixtieth of the idle timeout (30 s of the default 30 min; 1 s of a 1-minute timeout), at most
# once a minute: the idle timeout then fires at most that much early.
LAST_SEEN_RESOLUTION_SECONDS = 60
LAST_SEEN_RESOLUTION_FRACTION = 60


def last_seen_resolution(idle_seconds: float) -> float:
    """How stale the recorded last activity may be before a request writes it again."""
    return min(LAST_SEEN_RESOLUTION_SECONDS, idle_seconds / LAST_SEEN_RESOLUTION_FRACTION)


Handler = Callable[[HttpRequest], HttpResponse]


def view_name(request: HttpRequest) -> str | None:
    try:
        return resolve(request.path_info).view_name
    except Resolver404:
        return None


class ClientAddressMiddleware:
    """Set ``request.client_address`` once, from ``net.client_address`` (proxy-aware)."""

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.client_address = net.client_address(request)  # type: ignore[attr-defined]
        return self.get_response(request)


class RefuseNulMiddleware:
    """A NUL character anywhere a view, the session or the sign-in lockout could read it (the path, a
    query or form parameter's name or value, a cookie, a header) answers 400 before any of them runs.
    PostgreSQL refuses NUL in text, so a NUL that reached a query was a 500; no legitimate input has one.
    JSON bodies are the API's to check (DRF's CharField refuses NUL)."""

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        where = _where_nul(request)
        if where:
            logger.info("refused a NUL character in %s path=%r", where, request.path)
            return bad_request(request, message=f"The request has a NUL character in {where}; it is not accepted.")
        return self.get_response(request)


class AdminDateDrillDownMiddleware:
    """The admin's date drill-down (``?occurred_at__year=…&…__month=…&…__day=…``, on the events, requests,
    audit-log and sign-in-log lists) builds a datetime from the numbers and the next year, month or day
    after it; Django catches only some of what that raises (a year of 9999 or 10**20 was a 500). A value
    that is not a day a list can hold answers 400 before the admin reads it."""

    BOUNDS = {"year": (1, 9998), "month": (1, 12), "day": (1, 31)}

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.GET and request.path.startswith(_admin_prefix()):
            for key, values in request.GET.lists():
                part = key.rpartition("__")[2]
                if part in self.BOUNDS and not all(_within(value, *self.BOUNDS[part]) for value in values):
                    return bad_request(request, message=f"{key} must be a {part} from the date drill-down.")
        return self.get_response(request)


def _within(value: str, low: int, high: int) -> bool:
    return value.isascii() and value.isdigit() and len(value) <= 4 and low <= int(value) <= high


@lru_cache(maxsize=1)
def _admin_prefix() -> str:
    return reverse("admin:index")


def _has_nul(pairs) -> bool:
    return any("\x00" in key or any("\x00" in value for value in values) for key, values in pairs)


def _where_nul(request: HttpRequest) -> str:
    if "\x00" in request.path:
        return "the address"
    if _has_nul(request.GET.lists()):
        return "a query parameter"
    if _has_nul((key, [value]) for key, value in request.COOKIES.items()):
        return "a cookie"
    if any(
        "\x00" in value for key, value in request.META.items() if key.startswith("HTTP_") and isinstance(value, str)
    ):
        return "a header"
    if request.method not in ("GET", "HEAD", "OPTIONS") and request.content_type in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ):
        # Read (and cache) the raw body first, so it stays readable after parsing: signed endpoints (Slack)
        # verify request.body. Bounded by DATA_UPLOAD_MAX_MEMORY_SIZE (the portal takes no file uploads).
        request.body  # noqa: B018
        if _has_nul(request.POST.lists()):
            return "a form field"
        if any("\x00" in (upload.name or "") for _, uploads in request.FILES.lists() for upload in uploads):
            return "a file name"
    return ""


class AuditlogMiddleware(_StockAuditlogMiddleware):
    """django-auditlog's middleware, recording the ledger's client address (``net.client_address``:
    ``X-Forwarded-For`` only behind TRUSTED_PROXY_COUNT proxies, and only the entry they wrote).

    The stock one (3.4.1, which has no setting for this) takes the first ``X-Forwarded-For`` entry,
    which any client writes: the change log named whatever address the client chose, and a value that
    is not an address made the change log's insert fail, so every model-changing request answered
    500 on PostgreSQL. No port is recorded: ``X-Forwarded-Port`` is a header any client writes too."""

    @staticmethod
    def _get_remote_addr(request):
        if settings.AUDITLOG_DISABLE_REMOTE_ADDR:
            return None
        return getattr(request, "client_address", None) or net.client_address(request)

    @staticmethod
    def _get_remote_port(request) -> None:
        return None


class NoStoreMiddleware:
    """``Cache-Control: no-store`` on every response that may carry someone's data: any response to a
    request with a session cookie or an ``Authorization`` header, and any response whose view did not
    choose its own caching. Decided from the request's headers alone (never by loading the session), so
    it also holds for the error page of a request whose session could not be read. Static files (whitenoise's
    answers, the same for everyone) keep their long cache lifetimes, and their own policy: the file's
    (``settings._static_file_headers``), none on a 304 — which updates the headers a browser stored for the
    file, so the pages' policy there would replace the file's sandbox."""

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if isinstance(response, WhiteNoiseFileResponse):
            response._csp_exempt = True  # django-csp's mark: keep the file's policy
            return response
        if "no-store" in response.get("Cache-Control", ""):
            return response  # the view chose it already (e.g. never_cache, "private, no-store")
        credentials = settings.SESSION_COOKIE_NAME in request.COOKIES or "Authorization" in request.headers
        if credentials or not response.has_header("Cache-Control"):
            response["Cache-Control"] = "no-store"
        return response


class SignedInMiddleware(OTPMiddleware):
    """django-otp's middleware, with ``request.user`` (user and verifying device) loaded in one read by
    ``signed_in.user_of`` instead of Django's ``get_user`` then the device's own query. Installed after
    Django's AuthenticationMiddleware, whose lazy user it replaces unread; ``request.auser`` (async views)
    keeps the stock path."""

    def _install_lazy_accessors(self, request: HttpRequest) -> None:
        super()._install_lazy_accessors(request)
        request.user = SimpleLazyObject(partial(signed_in.user_of, request))  # type: ignore[assignment]  # lazy, as Django sets it


# Sent by the parts of a page that refresh themselves (hx-trigger "every"): not activity for the idle timeout.
POLL_HEADER = "X-AccessGov-Poll"


class SessionTimeoutMiddleware:
    """End sessions idle for SESSION_IDLE_TIMEOUT or older than SESSION_ABSOLUTE_TIMEOUT."""

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.user.is_authenticated:
            now = time.time()
            session = request.session
            started = session.setdefault(SESSION_STARTED_AT, now)
            last_seen = session.setdefault(SESSION_LAST_SEEN_AT, now)
            idle = settings.SESSION_IDLE_TIMEOUT.total_seconds()
            absolute = settings.SESSION_ABSOLUTE_TIMEOUT.total_seconds()
            if now - last_seen > idle or now - started > absolute:
                reason = "idle" if now - last_seen > idle else "absolute"
                logger.info("session ended by %s timeout user=%s", reason, request.user.pk)
                ended_for = request.user.pk
                logout(request)
                # Whose form a POST arriving now carries (accessgov.drafts keeps it only for them).
                request.session[drafts.TIMED_OUT_USER] = ended_for
                messages.info(request, "Your session has ended. Please sign in again.")
            elif now - last_seen >= last_seen_resolution(idle) and request.headers.get(POLL_HEADER) != "1":
                # A page refreshing itself (the live page, an evidence pack's progress) is not the person.
                session[SESSION_LAST_SEEN_AT] = now
        return self.get_response(request)


class OTPRequiredMiddleware:
    """Every URL needs a password and a verified OTP device, except PUBLIC_VIEWS (and static files,
    which whitenoise serves before this runs). Password-only sessions go to the OTP step, or to
    enrolment when the user has no device yet. Unknown URLs redirect too (no existence oracle)."""

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        name = view_name(request)
        if name in PUBLIC_VIEWS or (name or "").startswith((f"{API_NAMESPACE}:", f"{SCIM_NAMESPACE}:")):
            return self.get_response(request)
        user = request.user
        if not user.is_authenticated:
            if name in LINK_PROVEN_VIEWS:
                return self.get_response(request)
            # A form sent after the session ended: keep what was typed, and come back to its page after sign-in.
            back = drafts.keep(request)
            if back:
                messages.info(
                    request, "Nothing was sent. What you typed is kept: sign in again and it is filled in for you."
                )
            return self._deny(request, redirect_to_login(back or request.get_full_path(), settings.LOGIN_URL))
        if user.is_verified():  # type: ignore[attr-defined]  # SignedInMiddleware sets it
            permissions.start_request_memo(user)
            return self.get_response(request)
        if name in HALF_AUTHENTICATED_VIEWS:
            return self.get_response(request)
        from django_otp import user_has_device

        target = "accounts:otp" if user_has_device(user) else "accounts:enrol"
        query = urlencode({"next": request.get_full_path()}) if request.method == "GET" else ""
        response = redirect(f"{_reverse(target)}?{query}" if query else _reverse(target))
        return self._deny(request, response)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        """A step deep in a view (a form's code field, a bulk decision) ended the session for wrong codes in a
        row: to the sign-in page, saying why (the view cannot go on: its person is signed out)."""
        if not isinstance(exception, otp.SignedOutForWrongCodes):
            return None
        messages.error(request, str(exception))
        return self._deny(request, redirect(settings.LOGIN_URL))

    @staticmethod
    def _deny(request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if request.headers.get("HX-Request"):
            # htmx follows redirects inside the swap target; ask it to navigate the whole page.
            hx = HttpResponse(status=204)
            hx["HX-Redirect"] = response["Location"]
            return hx
        if request.path_info.startswith("/api/") and view_name(request) != "api_docs":
            body = {"error": {"code": "not_authenticated", "message": "Send an API token: Authorization: Bearer …"}}
            return JsonResponse(body, status=401, headers={"WWW-Authenticate": 'Bearer realm="accessgov"'})
        return response


class TimeZoneMiddleware:
    """Show times in the person's own zone (issue 18): activate ``User.time_zone`` for this request, read
    from the user row the authentication middleware loaded already (no query of its own). Nobody signed
    in, no zone chosen yet, or a zone this system no longer knows: UTC. The API and SCIM answer in UTC
    whoever calls them (machines parse them), so they are left alone; CSV exports write UTC themselves."""

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        zone = None
        if not request.path_info.startswith(("/api/", "/scim/")):
            user = getattr(request, "user", None)
            if user is not None and user.is_authenticated:
                zone = inputs.zone_named(getattr(user, "time_zone", ""))
        if zone is None:
            timezone.deactivate()
        else:
            timezone.activate(zone)
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()


def _reverse(name: str) -> str:
    from django.urls import reverse

    return reverse(name)


class DemoNotFoundMiddleware:
    """In the demo (``settings.DEMO``, which runs with DEBUG on) a page that does not exist gets the
    product's 404 page, not Django's debug list of every URL pattern. Outside the demo: nothing (with
    DEBUG off Django renders templates/404.html itself)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if settings.DEMO and settings.DEBUG:
            try:
                resolve(request.path_info)
            except Resolver404:
                return self._not_found(request)
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        from django.http import Http404

        if settings.DEMO and settings.DEBUG and isinstance(exception, Http404):
            return self._not_found(request)
        return None

    @staticmethod
    def _not_found(request: HttpRequest) -> HttpResponse:
        from django.shortcuts import render

        return render(request, "404.html", status=404)


class MethodNotAllowedMiddleware:
    """Gives a view's bare 405 (Django's ``require_POST`` and ``require_http_methods`` answer with an
    empty body) a page or JSON body that says why (``views.errors.method_not_allowed``). Innermost, so
    the page has the signed-in navigation; responses that already carry a body (the API's) are left."""

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code == 405 and not getattr(response, "streaming", False) and not response.content:
            return method_not_allowed(request, response)
        return response
