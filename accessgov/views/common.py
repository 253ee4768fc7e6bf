"""Helpers shared by views: turning service errors into answers, and step-up freshness."""

import re
from datetime import UTC, datetime

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


def step_up_at(request: HttpRequest) -> datetime | None:
    """When this session last entered a TOTP code (for step-up decisions), or None."""
    verified_at = request.session.get(otp.SESSION_OTP_VERIFIED_AT)
    if not verified_at or not otp.otp_is_fresh(request):
        return None
    return datetime.fromtimestamp(float(verified_at), tz=UTC)


def step_up_with_code(request: HttpRequest, code: str) -> tuple[datetime | None, str]:
    """Use a freshly typed code for step-up (verified now, replay-safe); returns (time, error)."""
    code = (code or "").strip().replace(" ", "")
    if not code:
        return step_up_at(request), ""
    if not re.fullmatch(r"[0-9]{6}", code, re.ASCII):
        return None, "Enter the 6 digits from your authenticator app."
    result = otp.verify_code(request.user, code, allow_backup=False)
    if not result.ok:
        otp.record_failure(request, request.user, "step-up")
        return None, result.message
    otp.mark_verified(request, result.device)
    return step_up_at(request), ""
