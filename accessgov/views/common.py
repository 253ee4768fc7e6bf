"""Helpers shared by views: turning service errors into answers, and the step-up code of a form."""

import re
from datetime import datetime

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from accessgov import otp
from accessgov.exceptions import AccessGovError, NotAuthorized, PolicyViolation, TransitionNotAllowed


def status_for(error: AccessGovError) -> int:
    if isinstance(error, NotAuthorized):
        return 403
    if isinstance(error, TransitionNotAllowed):
        return 409
    if isinstance(error, PolicyViolation):
        return 400
    return 400


def refused(request: HttpRequest, error: AccessGovError | str, back: str, status: int | None = None) -> HttpResponse:
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


def step_up_with_code(request: HttpRequest, code: str) -> tuple[datetime | None, str]:
    """The moment of this session's last TOTP code, after using a freshly typed one if any (verified
    now, replay-safe); returns (time, error). An empty field passes on the session's last code,
    sign-in included; whether it still counts is the service's call (otp.ensure_step_up)."""
    code = (code or "").strip().replace(" ", "")
    if not code:
        return otp.session_code_at(request), ""
    if not re.fullmatch(r"[0-9]{6}", code, re.ASCII):
        return None, "Enter the 6 digits from your authenticator app."
    result = otp.verify_code(request.user, code, allow_backup=False)
    if not result.ok:
        otp.record_failure(request, request.user, "step-up")
        return None, result.message
    otp.mark_verified(request, result.device)
    return otp.session_code_at(request), ""


def confirmed(request: HttpRequest) -> bool:
    """True on the second POST of a destructive action: the person has read what it will do."""
    return request.POST.get("confirm") == "yes"


def confirm_page(
    request: HttpRequest,
    *,
    title: str,
    consequences: list[str],
    confirm_label: str,
    back: str,
    keep: tuple[str, ...] = (),
) -> HttpResponse:
    """The confirmation step of a destructive action, as a plain page: what will happen (with counts),
    a button that posts the same form again with ``confirm=yes`` and the fields named in ``keep``,
    and a way back. Works without JavaScript."""
    fields = [(name, value) for name in keep for value in request.POST.getlist(name)]
    context = {
        "title": title,
        "consequences": consequences,
        "confirm_label": confirm_label,
        "back": back,
        "action": request.path,
        "fields": fields,
    }
    return render(request, "accessgov/confirm.html", context)


def plural(count: int, word: str, words: str | None = None) -> str:
    return f"{count} {word if count == 1 else (words or word + 's')}"
