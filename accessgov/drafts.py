"""Nothing typed is lost when a session ends under a form (PRODUCT.md, everyday use).

A form sent after the session timed out (or was ended elsewhere) reaches the portal signed out: nothing may be
done with it, but what the person typed is kept — ``keep`` stores the form's fields in the new, signed-out
session (never a password, a code, a token or the CSRF token) together with the page the form was on, and the
sign-in returns there. The page that shows that form again takes the draft once (``take``) and fills the form
with it; nothing is submitted on the person's behalf. A draft is kept only for a form that carried a valid
CSRF token (another site cannot plant text in someone's forms), only for the person whose session timed out
(someone else signing in on the same browser next never sees it), one at a time, and for ``KEEP_SECONDS``.
"""

import json
import time
from urllib.parse import urlsplit

from django.http import HttpRequest, QueryDict
from django.middleware.csrf import CsrfViewMiddleware
from django.utils.http import url_has_allowed_host_and_scheme

SESSION_KEY = "accessgov_form_draft"
TIMED_OUT_USER = "accessgov_timed_out_user"  # set by the timeout (middleware): who was signed in
KEEP_SECONDS = 3600
NEVER_KEPT = ("csrf", "password", "otp", "token", "code", "secret")
MAX_CHARS = 20_000  # what a form of this portal can hold (a justification is at most 2,000)


def _came_from(request: HttpRequest) -> str | None:
    """The same-site page the form was on (htmx says so in HX-Current-URL; browsers in Referer), or None."""
    address = request.headers.get("HX-Current-URL") or request.headers.get("Referer") or ""
    if not address or not url_has_allowed_host_and_scheme(
        address, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return None
    parts = urlsplit(address)
    return parts.path + (f"?{parts.query}" if parts.query else "") if parts.path.startswith("/") else None


def _csrf_valid(request: HttpRequest) -> bool:
    def view(request):  # a stand-in: the check only asks whether the view is exempt
        return None

    return CsrfViewMiddleware(lambda r: None).process_view(request, view, (), {}) is None  # type: ignore[arg-type]


def keep(request: HttpRequest) -> str | None:
    """Keep a signed-out POST's fields for after the sign-in; returns the page to come back to (None when
    nothing was kept: not a form, no valid CSRF token, nothing typed, or too much)."""
    owner = request.session.get(TIMED_OUT_USER)
    if request.method != "POST" or owner is None or not _csrf_valid(request):
        return None  # only for the person whose session just timed out: never for whoever signs in next
    fields = {
        name: values
        for name, values in request.POST.lists()
        if not any(word in name.lower() for word in NEVER_KEPT) and any(v.strip() for v in values)
    }
    if not fields or sum(len(v) for values in fields.values() for v in values) > MAX_CHARS:
        return None
    page = _came_from(request) or request.path
    request.session[SESSION_KEY] = {
        "action": request.path,
        "page": page,
        "fields": fields,
        "at": time.time(),
        "user": owner,
    }
    return page


def _mine(request: HttpRequest, draft) -> bool:
    """Whether ``draft`` is the signed-in person's and still fresh (another person signing in on the same browser
    never sees it)."""
    user = getattr(request, "user", None)
    return (
        isinstance(draft, dict)
        and user is not None
        and draft.get("user") == user.pk
        and time.time() - float(draft.get("at", 0)) <= KEEP_SECONDS
    )


def take(request: HttpRequest, action: str) -> QueryDict | None:
    """The kept fields of the form that posts to ``action`` (a path), once; None when there is none. A HEAD
    request (a link checker, a prefetching proxy) sees the same page but leaves the draft for the GET."""
    draft = request.session.get(SESSION_KEY)
    if not isinstance(draft, dict) or draft.get("action") != action:
        return None
    _forget(request)
    if not _mine(request, draft):
        return None
    data = QueryDict(mutable=True)
    for name, values in (draft.get("fields") or {}).items():
        data.setlist(name, [str(v) for v in values])
    return data


def _forget(request: HttpRequest) -> None:
    """The draft is used up by the page that shows it — unless that page was asked for with HEAD."""
    if request.method != "HEAD":
        del request.session[SESSION_KEY]


def kept_action(request: HttpRequest) -> str | None:
    """The path the kept draft's form posts to, if there is a draft (to find which form on a page it fills)."""
    draft = request.session.get(SESSION_KEY)
    return draft.get("action") if isinstance(draft, dict) else None


def for_page(request: HttpRequest) -> str | None:
    """The kept draft as JSON, once, when this is the page its form was on and no view took it (the page's
    script, ``static/js/accessgov.js``, fills the form that posts to its action): every other form of the
    portal gets its text back too, not only those whose views fill it themselves."""
    draft = request.session.get(SESSION_KEY) if hasattr(request, "session") else None
    if not isinstance(draft, dict) or urlsplit(str(draft.get("page", ""))).path != request.path:
        return None
    _forget(request)
    if not _mine(request, draft):
        return None
    return json.dumps({"action": draft.get("action", ""), "fields": draft.get("fields") or {}})
