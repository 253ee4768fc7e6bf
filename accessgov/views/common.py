"""Helpers shared by views: turning service errors into answers, and the step-up code of a form."""

import re
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from django.http import HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme

from accessgov import clock, otp
from accessgov.exceptions import (
    AccessGovError,
    NotAuthorized,
    PolicyViolation,
    StepUpRequired,
    TransitionNotAllowed,
)
from accessgov.http import PortalRequest


def status_for(error: AccessGovError) -> int:
    if isinstance(error, NotAuthorized):
        return 403
    if isinstance(error, TransitionNotAllowed):
        return 409
    if isinstance(error, PolicyViolation):
        return 400
    return 400


def refused(request: PortalRequest, error: AccessGovError | str, back: str, status: int | None = None) -> HttpResponse:
    """A refused action: the reason, a way back, and the right status (403 forbidden, 409 already
    decided/ended, 400 against policy)."""
    code = status or (status_for(error) if isinstance(error, AccessGovError) else 400)
    return render(request, "accessgov/refused.html", {"message": str(error), "back": back}, status=code)


def invalid_filters(form) -> HttpResponse:
    """The answer to an export whose filters do not parse: 400, each bad filter by its label."""
    problems = "; ".join(
        f"{form.fields[name].label if name in form.fields else 'Filters'}: {' '.join(errors)}"
        for name, errors in form.errors.items()
    )
    return HttpResponse(f"The filters are not valid: {problems}", status=400, content_type="text/plain; charset=utf-8")


T = TypeVar("T")


class CodeRefused(StepUpRequired):
    """The typed authenticator code is malformed, wrong, reused or throttled (its field shows why)."""


def act_with_step_up(request: PortalRequest, code: str, action: Callable[[datetime | None], T]) -> T:
    """Run ``action(step_up_at)`` spending a typed code last. Without a typed code the session's last
    code is passed as is (the service judges whether it is fresh enough). A typed code is always checked,
    even while the session's code is still fresh: a wrong or replayed code is refused, never silently
    ignored. The action is rehearsed first (``otp.rehearse``): a refusal for any other reason (a bad
    duration, "already holds this role", not allowed) is raised with the code unspent; only then is the
    code verified, and the action run for real with it. Raises the action's AccessGovError, or
    CodeRefused for the code itself."""
    code = (code or "").strip().replace(" ", "")
    session_at = otp.session_code_at(request)
    if not code:
        return action(session_at)
    if not re.fullmatch(r"[0-9]{6}", code, re.ASCII):
        raise CodeRefused("Enter the 6 digits from your authenticator app.")

    def spend_code() -> datetime:
        result = otp.verify_code(request.user, code, allow_backup=False)
        if not result.ok:
            otp.record_failure(request, request.user, "step-up")  # raises SignedOutForWrongCodes at the lock
            raise CodeRefused(result.message)
        otp.mark_verified(request, result.device)
        return otp.session_code_at(request) or clock.now()

    return otp.act_spending_code_last(action, code_at=session_at, spend_code=spend_code)


def local_time(instant) -> str:
    """An instant as the page's other times show it: in the viewer's time zone, with the zone's name."""
    local = timezone.localtime(instant)
    return f"{local:%Y-%m-%d %H:%M} {local.tzname()}"


def confirmed(request: PortalRequest) -> bool:
    """True on the second POST of a destructive action: the person has read what it will do."""
    return request.POST.get("confirm") == "yes"


def confirm_page(
    request: PortalRequest,
    *,
    title: str,
    consequences: list[str],
    confirm_label: str,
    back: str,
    keep: tuple[str, ...] = (),
    ask_reason: str = "",
    problem: str = "",
) -> HttpResponse:
    """The confirmation step of a destructive action, as a plain page: what will happen (with counts),
    a button that posts the same form again with ``confirm=yes`` and the fields named in ``keep``,
    and a way back. Works without JavaScript. ``ask_reason``: the label of a ``reason`` field to fill in
    (``problem``: why the last one was refused; the page then answers 400)."""
    fields = [
        (name, value) for name in keep for value in request.POST.getlist(name) if name != "reason" or not ask_reason
    ]
    context = {
        "title": title,
        "consequences": consequences,
        "confirm_label": confirm_label,
        "back": back,
        "action": request.path,
        "fields": fields,
        "ask_reason": ask_reason,
        "reason": request.POST.get("reason", ""),
        "problem": problem,
    }
    return render(request, "accessgov/confirm.html", context, status=400 if problem else 200)


def plural(count: int, word: str, words: str | None = None) -> str:
    return f"{count} {word if count == 1 else (words or word + 's')}"


def posted_back(request: PortalRequest, default: str) -> str:
    """Where a form returns to after it is done: the page it was on (its ``back`` field), on this site only —
    "/\\evil.example" passes a startswith("/") test and browsers follow it off-site — else ``default``."""
    back = request.POST.get("back") or ""
    if back.startswith("/") and url_has_allowed_host_and_scheme(back, allowed_hosts=None):
        return back
    return default
