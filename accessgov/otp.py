"""The OTP side of signing in: verifying codes, enrolment, backup codes, step-up freshness.

Built directly on django-otp's TOTPDevice/StaticDevice (replay protection via ``last_t``, throttling
via ThrottlingMixin). See docs/DECISIONS.md for why not django-two-factor-auth's wizard views.
"""

import logging
from base64 import b32encode
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import django_otp
from django.conf import settings
from django.contrib.auth import logout, update_session_auth_hash
from django.db import transaction
from django.http import HttpRequest
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from accessgov import clock, inputs
from accessgov.exceptions import AccessGovError, StepUpRequired
from accessgov.models import User
from accessgov.precompiled import Precompiled

logger = logging.getLogger("accessgov.security")

T = TypeVar("T")

SESSION_OTP_VERIFIED_AT = "otp_verified_at"
SESSION_OTP_FAILURES = "otp_failures"
SESSION_ENROL_DEVICE = "otp_enrol_device_id"
BACKUP_CODE_COUNT = 10


@dataclass(frozen=True)
class Verification:
    ok: bool
    device: TOTPDevice | StaticDevice | None = None
    message: str = ""
    gone: bool = False  # the device was removed or replaced (another session) before its code was checked


def confirmed_totp_device(user: User) -> TOTPDevice | None:
    return TOTPDevice.objects.filter(user=user, confirmed=True).first()


def verify_code(user: User, token: str, *, allow_backup: bool) -> Verification:
    """Check ``token`` against the user's confirmed devices.

    A 6-digit token is a TOTP code (accepted once: django-otp refuses any time step at or before
    the last accepted one); an 8-character token is a single-use backup code. Each failure counts
    towards the device's throttle, which makes further attempts wait exponentially longer.
    """
    if inputs.ascii_digits(token):
        devices = list(TOTPDevice.objects.filter(user=user, confirmed=True))
    elif allow_backup:
        devices = list(StaticDevice.objects.filter(user=user, confirmed=True))
    else:
        devices = []
    if not devices:
        return Verification(False, message="That code is not valid.")
    result = Verification(False, message="That code is not valid.")
    for device in devices:
        result = _verify_on(device, token)
        if result.ok:
            return result
    return result


def verify_code_pending(device: TOTPDevice, token: str) -> Verification:
    """Check a code against the device being enrolled (throttled and replay-safe like sign-in). Raises
    EnrolmentSuperseded when another session finished enrolling (and removed this pending device) first."""
    result = _verify_on(device, token)
    if result.gone:
        raise EnrolmentSuperseded
    return result


def _verify_on(device: TOTPDevice | StaticDevice, token: str) -> Verification:
    """One check of ``token`` on ``device``, on its locked row: django-otp reads the last accepted time step
    (or the backup codes) and the throttle, then saves them, so two requests at the same moment could both
    accept one code, and parallel guesses each count once (the HTTP probe: a code used twice in 2 runs of 4).
    The lock makes them one after the other: the second sees the code spent and the throttle raised."""
    with transaction.atomic():
        locked = type(device).objects.select_for_update().filter(pk=device.pk).first()
        if locked is None:
            return Verification(
                False, message="That authenticator was replaced in another session: start again.", gone=True
            )
        device = locked
        allowed, data = device.verify_is_allowed()
        if not allowed:
            wait = 0
            if data and data.get("locked_until"):
                wait = max(1, int((data["locked_until"] - clock.now()).total_seconds()))
            return Verification(
                False,
                message=f"Too many wrong codes. Wait {wait} second{'s' if wait != 1 else ''} before trying again.",
            )
        if device.verify_token(token):
            return Verification(True, device=device)
    return Verification(False, message="That code is not valid (or has been used already).")


def mark_verified(request: HttpRequest, device: TOTPDevice | StaticDevice) -> None:
    """Finish the OTP step: bind the device to the session, rotate the session id, note the time.

    Only a TOTP code counts as "fresh" for step-up; a backup code gets you in but not past step-up.
    """
    django_otp.login(request, device)
    request.session.cycle_key()
    request.session.pop(SESSION_OTP_FAILURES, None)
    if isinstance(device, TOTPDevice):
        # On the clock step-up is judged by (the database's, accessgov.clock): the web host's own clock could
        # put a code typed a moment ago "in the future" of that judgement (the probe: break-glass refused).
        request.session[SESSION_OTP_VERIFIED_AT] = clock.now().timestamp()


class SignedOutForWrongCodes(Exception):
    """``record_failure`` ended the session for wrong codes in a row; ``middleware.OTPRequiredMiddleware``
    turns it into the sign-in page with this message, wherever in a view it was raised."""


def code_accepted(request: HttpRequest) -> None:
    """A right code at a step that does not sign in again (new backup codes, authenticator reset): the wrong
    codes before it no longer count towards the lock, which is for wrong codes in a row."""
    request.session.pop(SESSION_OTP_FAILURES, None)


def record_failure(request: HttpRequest, user: User, step: str) -> None:
    """Count a wrong code in this session, at any step (sign-in, enrolment, step-up, a form's code, backup
    codes, authenticator reset). OTP_MAX_FAILURES_PER_SESSION wrong codes in a row end the session (logged at
    ERROR) and raise SignedOutForWrongCodes. Only the sign-in step locked before: a stolen signed-in session
    could keep guessing step-up codes (the HTTP probe)."""
    failures = int(request.session.get(SESSION_OTP_FAILURES, 0)) + 1
    request.session[SESSION_OTP_FAILURES] = failures
    client = getattr(request, "client_address", None)
    logger.warning("otp failure step=%s user=%s client=%s failures=%d", step, user.pk, client, failures)
    if failures < settings.OTP_MAX_FAILURES_PER_SESSION:
        return
    logger.error("otp step locked step=%s user=%s client=%s", step, user.pk, client)
    logout(request)
    raise SignedOutForWrongCodes(
        "Too many wrong codes. The sign-in was stopped; start again."
        if step == "sign-in"
        else "Too many wrong codes: you were signed out. Sign in again."
    )


# --- Step-up: the one rule, used by every path (pages, API, services) ---------------------------
#
# A step-up action (deciding on a role with step_up_required, break-glass) needs a TOTP code entered in
# the last OTP_STEP_UP_WINDOW, and the code entered at sign-in counts. In the portal that is this
# session's last code (sign-in, the step-up page, or the code field of the form); an API token has no
# sign-in, so the only code the API knows is the one sent with the call. Services judge the moment
# they are given with ``ensure_step_up``; pages describe it with ``step_up_note``.


def step_up_window_minutes() -> int:
    return max(1, int(settings.OTP_STEP_UP_WINDOW.total_seconds() // 60))


# How far a code's time may lie after the moment it is judged at, live: both are read from the database's
# clock, but each process measures its distance to it once a minute, a few milliseconds off either way.
CLOCK_TOLERANCE = timedelta(seconds=2)


def step_up_fresh(
    code_at: datetime | None, now: datetime, *, window: timedelta | None = None, tolerance: timedelta = timedelta(0)
) -> bool:
    """True when a TOTP code entered at ``code_at`` still counts for step-up at ``now``: within
    OTP_STEP_UP_WINDOW (or the ``window`` an evidence pack recorded it was built with), and not after
    ``now`` by more than ``tolerance`` (CLOCK_TOLERANCE for a live decision; none for recorded times)."""
    window = settings.OTP_STEP_UP_WINDOW if window is None else window
    return code_at is not None and code_at <= now + tolerance and now - code_at <= window


def ensure_step_up(code_at: datetime | None, now: datetime, *, action: str) -> None:
    """Raise StepUpRequired unless a code entered at ``code_at`` still counts at ``now``. ``action``
    names what needs it ("Deciding on Payments DB · admin", "Break-glass"). During a ``rehearse`` it
    only notes that the action needs a code (the code is checked after the rehearsal)."""
    asked = _REHEARSAL.get()
    if asked is not None:
        asked.append(action)
        return
    if not step_up_fresh(code_at, now, tolerance=CLOCK_TOLERANCE):
        raise StepUpRequired(
            f"{action} needs a code from your authenticator entered in the last {_minutes(step_up_window_minutes())}."
        )


# --- Spending a typed code last --------------------------------------------------------------------
#
# A typed code works once. Checking it before the action's own rules meant a duration error or a 409
# "already holds this role" burned it, and the corrected resubmit was refused. So an action with a
# typed code is first rehearsed: run in a transaction that is always rolled back, with ensure_step_up
# only noting that a code is needed. Every other rule runs there; only when the rehearsal passes is the
# code verified (and spent), and the action run for real.

_REHEARSAL: ContextVar[list[str] | None] = ContextVar("step_up_rehearsal", default=None)


class _Rehearsed(Exception):
    """Raised at the end of a rehearsal to roll it back."""


@dataclass(frozen=True)
class Rehearsal:
    needs_code: bool
    error: AccessGovError | None = None


def rehearse(action: Callable[[], object]) -> Rehearsal:
    """Run ``action`` in a transaction that is rolled back whatever happens (its on-commit side effects
    are dropped with it) and tell whether it asked for a step-up and which refusal it met, if any."""
    asked: list[str] = []
    token = _REHEARSAL.set(asked)
    error = None
    try:
        with transaction.atomic():
            try:
                action()
            except AccessGovError as refusal:
                error = refusal
            raise _Rehearsed
    except _Rehearsed:
        pass
    finally:
        _REHEARSAL.reset(token)
    return Rehearsal(needs_code=bool(asked), error=error)


def act_spending_code_last(
    action: Callable[[datetime | None], T], *, code_at: datetime | None, spend_code: Callable[[], datetime]
) -> T:
    """Run ``action(step_up_at)`` with a typed code spent last: the action is rehearsed with the code
    taken as good; a refusal for any other reason is raised with the code unspent. If the action needs
    no code it runs with ``code_at`` (the caller's last code, or None); otherwise ``spend_code()``
    verifies the code (raising if it is not good) and the action runs for real with its moment."""
    rehearsal = rehearse(lambda: action(clock.now()))
    if rehearsal.error is not None and rehearsal.needs_code:
        raise rehearsal.error
    if not rehearsal.needs_code:
        # Run for real: a refusal that commits what it found (a withdrawal) does so, with the same words.
        return action(code_at)
    return action(spend_code())


def session_code_at(request: HttpRequest) -> datetime | None:
    """When this session last entered a TOTP code (sign-in included; a backup code does not count),
    fresh or not: the service decides whether it still counts."""
    verified_at = request.session.get(SESSION_OTP_VERIFIED_AT)
    if not verified_at:
        return None
    # Never after now: noted by another process, whose measured distance to the database's clock differs by a few
    # milliseconds, it could be; recorded so (a decision's step_up_at), the evidence pack would judge it not fresh.
    return min(datetime.fromtimestamp(float(verified_at), tz=UTC), clock.now())


def step_up_note(code_at: datetime | None, now: datetime) -> tuple[bool, str]:
    """(needed, what to tell the person) for the code field of a step-up form, true at ``now``."""
    window = _minutes(step_up_window_minutes())
    if step_up_fresh(code_at, now, tolerance=CLOCK_TOLERANCE):
        seconds = int((now - code_at).total_seconds())
        ago = "less than a minute ago" if seconds < 60 else f"{_minutes(seconds // 60)} ago"
        return False, f"Not needed: you entered a code {ago} (a code counts for {window})."
    return True, f"Required: the 6-digit code from your authenticator (a code counts for {window})."


def _minutes(count: int) -> str:
    return f"{count} minute{'s' if count != 1 else ''}"


def pending_enrolment_device(request: HttpRequest) -> TOTPDevice | None:
    """The unconfirmed TOTP device this session is enrolling: made on the session's first visit and
    kept in the session, so every session has its own secret and none sees another's (a password-only
    session started elsewhere cannot read the secret the person is about to confirm). None when the
    user already has a confirmed device: nobody is shown a QR code for an account that has one."""
    user = request.user
    if confirmed_totp_device(user) is not None:
        return None
    device_id = request.session.get(SESSION_ENROL_DEVICE)
    device = None
    if isinstance(device_id, int):
        device = TOTPDevice.objects.filter(pk=device_id, user=user, confirmed=False).first()
    if device is None:
        # Pending devices of sessions that can no longer be alive are of no use to anyone.
        stale_before = clock.now() - settings.SESSION_ABSOLUTE_TIMEOUT
        TOTPDevice.objects.filter(user=user, confirmed=False, created_at__lt=stale_before).delete()
        device = TOTPDevice.objects.create(user=user, name="Authenticator app", confirmed=False)
        request.session[SESSION_ENROL_DEVICE] = device.pk
    return device


def base32_secret(device: TOTPDevice) -> str:
    return b32encode(device.bin_key).decode("ascii")


def new_backup_codes(user: User) -> list[str]:
    """Replace the user's backup codes with BACKUP_CODE_COUNT fresh single-use codes."""
    device, _ = StaticDevice.objects.get_or_create(user=user, defaults={"name": "Backup codes"})
    device.token_set.all().delete()
    codes = [StaticToken.random_token() for _ in range(BACKUP_CODE_COUNT)]
    StaticToken.objects.bulk_create(StaticToken(device=device, token=code) for code in codes)
    return codes


BACKUP_CODES = Precompiled(
    "backup_codes",
    lambda user_id: StaticToken.objects.filter(device__user_id=user_id, device__confirmed=True),
    user_id=int,
)


def backup_codes_left(user: User) -> int:
    """How many unused backup codes ``user`` has (shown on every home page: precompiled)."""
    return BACKUP_CODES.count(user_id=user.pk)


class EnrolmentSuperseded(Exception):
    """Another session of the user finished enrolling first; this session's secret is void."""


def complete_enrolment(request: HttpRequest, device: TOTPDevice) -> list[str]:
    """Confirm ``device`` (its code was just verified), replace any older device (and the pending
    devices of other sessions), issue backup codes, verify this session and end the user's other
    sessions (a new device is a credential change). Locks the user row, so two sessions confirming at
    once produce one device; the later one raises EnrolmentSuperseded, its own device gone: the session
    that won deleted it, but verifying this session's code saved it again (django-otp saves the device it
    checked, and a save that updates no row inserts it) when the win came between reading and verifying."""
    user = request.user
    with transaction.atomic():
        User.objects.select_for_update().filter(pk=user.pk).first()
        pending = TOTPDevice.objects.filter(pk=device.pk, user=user, confirmed=False)
        superseded = confirmed_totp_device(user) is not None or not pending.exists()
        if superseded:
            pending.delete()  # void now; committed with the lock released, before telling the session
        else:
            TOTPDevice.objects.filter(user=user).exclude(pk=device.pk).delete()
            device.confirmed = True
            device.save(update_fields=["confirmed"])
            codes = new_backup_codes(user)
            user.rotate_session_stamp()
    if superseded:
        raise EnrolmentSuperseded
    update_session_auth_hash(request, user)
    request.session.pop(SESSION_ENROL_DEVICE, None)
    mark_verified(request, device)
    logger.info("otp device enrolled user=%s client=%s", user.pk, getattr(request, "client_address", None))
    return codes


def reset_devices(request: HttpRequest) -> None:
    """Remove the user's authenticator and backup codes and end their other sessions; this session
    drops back to password-only, so the middleware sends it to enrolment next."""
    user = request.user
    with transaction.atomic():
        TOTPDevice.objects.filter(user=user).delete()
        StaticDevice.objects.filter(user=user).delete()
        user.rotate_session_stamp()
    update_session_auth_hash(request, user)
    request.session.pop(SESSION_OTP_VERIFIED_AT, None)
    logger.info("otp devices reset user=%s client=%s", user.pk, getattr(request, "client_address", None))
