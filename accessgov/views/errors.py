"""The server error answer (``handler500``): fail closed, say so clearly, give a reference id.

Whatever went wrong - a bug, the database or the broker unreachable in the middle of a permission or
policy check - the request changed nothing (its transaction rolled back) and granted nothing. The person
gets a page (or, for the API and JSON clients, a JSON body) with a random reference id and no stack
trace; the same id is in the error log line, together with the exception.
"""

import logging
import secrets
import sys

from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError
from django.db import OperationalError as DatabaseUnavailable
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.template import loader
from kombu.exceptions import OperationalError as BrokerUnavailable

logger = logging.getLogger("accessgov.errors")

# Errors that mean "a service is down", not "a bug": answered 503 so clients and load balancers retry.
UNAVAILABLE = (DatabaseUnavailable, InterfaceError, BrokerUnavailable)
REFERENCE_HEADER = "X-Error-Reference"


def new_reference() -> str:
    """A random, unguessable id that links what the person sees to the log line (12 hex digits)."""
    return secrets.token_hex(6)


def wants_json(request: HttpRequest) -> bool:
    """API calls (except the docs page) and clients that ask for JSON rather than HTML."""
    if request.path_info.startswith("/api/") and not request.path_info.startswith("/api/docs/"):
        return True
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/html" not in accept


def server_error(request: HttpRequest) -> HttpResponse:
    """Django's handler500: runs inside the ``except`` that caught the error. It renders without a
    request context (no context processors, no session, no database), so it works when those are
    what failed."""
    reference = new_reference()
    error = sys.exc_info()[1]
    unavailable = isinstance(error, UNAVAILABLE)
    status = 503 if unavailable else 500
    logger.error(
        "server error reference=%s status=%s method=%s path=%s",
        reference,
        status,
        request.method,
        request.path,
        exc_info=error is not None,
    )
    if wants_json(request):
        body = {
            "error": {
                "code": "unavailable" if unavailable else "server_error",
                "message": "The request was not carried out (nothing was changed). "
                f"Try again; if it keeps failing, give your administrator the reference {reference}.",
                "reference": reference,
            }
        }
        response: HttpResponse = JsonResponse(body, status=status)
    else:
        try:
            html = loader.get_template("500.html").render({"reference": reference, "unavailable": unavailable})
        except Exception:  # the template itself is broken: still answer, still with the reference
            html = f"<!doctype html><title>Error</title><p>Something went wrong. Reference: {reference}</p>"
        response = HttpResponse(html, status=status)
    response[REFERENCE_HEADER] = reference
    if unavailable:
        response["Retry-After"] = "30"
    return response


def bad_request(request: HttpRequest, exception: Exception | None = None, *, message: str = "") -> HttpResponse:
    """Django's handler400 (a SuspiciousOperation: a body over DATA_UPLOAD_MAX_MEMORY_SIZE, too many
    fields, …) and the answer to input refused before any view (``middleware.RefuseNulMiddleware``).
    413 for a body that is too large, else 400; the API's JSON error format for API calls."""
    too_large = isinstance(exception, RequestDataTooBig)
    status = 413 if too_large else 400
    if too_large:
        message = too_large_message()
    message = message or "The request could not be understood."
    if wants_json(request):
        code = "too_large" if too_large else "invalid"
        return JsonResponse({"error": {"code": code, "message": message}}, status=status)
    return render(request, "400.html", {"message": message}, status=status)


def too_large_message() -> str:
    from django.conf import settings

    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE / (1024 * 1024)
    return f"The request body is too large: at most {limit:g} MB is accepted."


def method_not_allowed(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    """A view's bare 405 (``require_POST`` and friends answer with no body) given its reason: which
    methods the address takes, and — for a person who followed or reloaded a link to an action — that
    actions are the buttons on their pages, with a link to the nearest page above it. The ``Allow`` header
    is kept; the API's JSON error format for API calls."""
    allowed = [method for method in response.get("Allow", "").replace(" ", "").split(",") if method]
    takes = " or ".join(allowed) or "no method"
    message = f"This address takes {takes}, not {request.method}."
    if allowed == ["POST"]:
        message += " It carries out an action: use the button on the page that offers it."
    if wants_json(request):
        answer: HttpResponse = JsonResponse({"error": {"code": "method_not_allowed", "message": message}}, status=405)
    else:
        action = allowed == ["POST"]
        context = {"message": message, "action": action, "page": _page_above(request.path_info) if action else None}
        answer = render(request, "405.html", context, status=405)
    if response.has_header("Allow"):
        answer["Allow"] = response["Allow"]
    return answer


def _page_above(path: str) -> str | None:
    """The nearest address above ``path`` that is a page (``/grants/7/release/`` → ``/grants/7/``)."""
    from django.urls import Resolver404, resolve

    parts = [part for part in path.split("/") if part]
    for cut in range(len(parts) - 1, 0, -1):
        candidate = "/" + "/".join(parts[:cut]) + "/"
        try:
            resolve(candidate)
        except Resolver404:
            continue
        return candidate
    return None


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """Django's CSRF_FAILURE_VIEW: the product's 403 page (Django's own has an inline style the CSP blocks),
    saying what to do; the API's JSON error format for JSON clients. The reason goes to the log only."""
    message = (
        "This form was sent without a valid security token: it may have been open for a long time, or sent "
        "from another site. Nothing was done. Go back, reload the page, and send it again."
    )
    if wants_json(request):
        return JsonResponse({"error": {"code": "csrf_failed", "message": message}}, status=403)
    return render(request, "403.html", {"exception": message}, status=403)
