"""Signing in (password, then TOTP), enrolment, backup codes, step-up, and account security."""

import io
import logging
import time

import qrcode
import qrcode.image.svg
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login, logout, update_session_auth_hash
from django.contrib.auth.forms import PasswordChangeForm, SetPasswordForm
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render, resolve_url
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST
from django_otp import user_has_device

from accessgov import otp, recovery
from accessgov.exceptions import TransitionNotAllowed
from accessgov.forms import OTPCodeForm, SignInForm
from accessgov.middleware import SESSION_LAST_SEEN_AT, SESSION_STARTED_AT
from accessgov.services import users as user_services

logger = logging.getLogger("accessgov.security")


def _next_url(request: HttpRequest) -> str:
    """The on-site page to continue to after a step (never an external or scheme-relative URL). Only a
    path: redirect() reads anything else as a URL pattern name ("next=foo" was a NoReverseMatch, a 500)."""
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    if candidate.startswith("/") and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return resolve_url(settings.LOGIN_REDIRECT_URL)


def _with_next(name: str, next_url: str) -> str:
    url = reverse(name)
    return f"{url}?{urlencode({'next': next_url})}" if next_url else url


@sensitive_post_parameters("password")
@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def login_view(request: HttpRequest) -> HttpResponse:
    """Step 1: username and password. Success leaves a password-only session with a new id."""
    next_url = _next_url(request)
    if request.user.is_authenticated and request.user.is_verified():
        return redirect(next_url)
    form = SignInForm(request, data=request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.get_user()
        login(request, user)  # rotates the session id
        now = time.time()
        request.session[SESSION_STARTED_AT] = now
        request.session[SESSION_LAST_SEEN_AT] = now
        step = "accounts:otp" if user_has_device(user) else "accounts:enrol"
        return redirect(_with_next(step, next_url if next_url != resolve_url(settings.LOGIN_REDIRECT_URL) else ""))
    return render(request, "accounts/login.html", {"form": form, "next": request.GET.get("next", "")})


@sensitive_post_parameters("otp_token")
@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def otp_view(request: HttpRequest) -> HttpResponse:
    """Step 2: a TOTP code (or a backup code). Success verifies the session and rotates its id."""
    user = request.user
    if user.is_verified():
        return redirect(_next_url(request))
    if not user_has_device(user):
        return redirect("accounts:enrol")
    form = OTPCodeForm(request.POST or None, allow_backup=True)
    if request.method == "POST" and form.is_valid():
        result = otp.verify_code(user, form.cleaned_data["otp_token"], allow_backup=True)
        if result.ok:
            otp.mark_verified(request, result.device)
            if not form.is_totp:
                left = otp.backup_codes_left(user)
                messages.warning(request, f"You signed in with a backup code. {left} backup codes left.")
            return redirect(_next_url(request))
        otp.record_failure(request, user, "sign-in")
        form.add_error("otp_token", result.message)
    return render(request, "accounts/otp.html", {"form": form, "next": request.GET.get("next", "")})


@sensitive_post_parameters("otp_token")
@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def enrol_view(request: HttpRequest) -> HttpResponse:
    """First sign-in: add an authenticator app (QR code + the secret as text), confirm with a code.
    The secret belongs to this session (otp.pending_enrolment_device)."""
    user = request.user
    device = otp.pending_enrolment_device(request)
    if device is None:
        return redirect(_next_url(request))
    form = OTPCodeForm(request.POST or None, allow_backup=False)
    if request.method == "POST" and form.is_valid():
        try:
            result = otp.verify_code_pending(device, form.cleaned_data["otp_token"])
            codes = otp.complete_enrolment(request, device) if result.ok else []
        except otp.EnrolmentSuperseded:
            messages.info(request, "Your authenticator was set up in another session. Sign in with it.")
            return redirect(_next_url(request))
        if result.ok:
            request.session["new_backup_codes"] = codes
            messages.success(request, "Your authenticator app is set up.")
            return redirect(_with_next("accounts:backup_codes", request.GET.get("next", "")))
        otp.record_failure(request, user, "enrolment")
        form.add_error("otp_token", result.message)
    context = {
        "form": form,
        "secret": otp.base32_secret(device),
        "otpauth_uri": device.config_url,
        "next": request.GET.get("next", ""),
    }
    return render(request, "accounts/enrol.html", context)


@never_cache
@require_http_methods(["GET"])
def enrol_qr_view(request: HttpRequest) -> HttpResponse:
    """The QR code of the device this session is enrolling, as SVG (an image from 'self', so CSP
    allows it). 404 for a user who already has an authenticator."""
    device = otp.pending_enrolment_device(request)
    if device is None:
        raise Http404("No authenticator is being set up in this session.")
    image = qrcode.make(device.config_url, image_factory=qrcode.image.svg.SvgPathImage, box_size=8)
    buffer = io.BytesIO()
    image.save(buffer)
    return HttpResponse(buffer.getvalue(), content_type="image/svg+xml")


@sensitive_post_parameters("otp_token")
@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def backup_codes_view(request: HttpRequest) -> HttpResponse:
    """Backup codes are shown once, right after they are made; POST replaces them with new ones, with a
    current code from the authenticator app: new codes are a second factor, and a stolen session alone must
    not mint one (as resetting the authenticator asks for a code, and changing the password for the old one)."""
    form = OTPCodeForm(request.POST if request.method == "POST" else None, allow_backup=False)
    if request.method == "POST" and form.is_valid():
        result = otp.verify_code(request.user, form.cleaned_data["otp_token"], allow_backup=False)
        if result.ok:
            otp.code_accepted(request)
            request.session["new_backup_codes"] = otp.new_backup_codes(request.user)
            logger.info("backup codes regenerated user=%s", request.user.pk)
            return redirect("accounts:backup_codes")
        otp.record_failure(request, request.user, "backup-codes")
        form.add_error("otp_token", result.message)
    codes = request.session.pop("new_backup_codes", None) if request.method == "GET" else None  # not on HEAD
    context = {"codes": codes, "left": otp.backup_codes_left(request.user), "next": _next_url(request), "form": form}
    return render(request, "accounts/backup_codes.html", context, status=400 if form.errors else 200)


@sensitive_post_parameters("otp_token")
@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def step_up_view(request: HttpRequest) -> HttpResponse:
    """Confirm a fresh TOTP code (step-up) before a sensitive action; the code must be new."""
    form = OTPCodeForm(request.POST or None, allow_backup=False)
    if request.method == "POST" and form.is_valid():
        result = otp.verify_code(request.user, form.cleaned_data["otp_token"], allow_backup=False)
        if result.ok:
            otp.mark_verified(request, result.device)
            return redirect(_next_url(request))
        otp.record_failure(request, request.user, "step-up")
        form.add_error("otp_token", result.message)
    return render(request, "accounts/step_up.html", {"form": form, "next": request.GET.get("next", "")})


@never_cache
@require_http_methods(["GET"])
def security_view(request: HttpRequest) -> HttpResponse:
    device = otp.confirmed_totp_device(request.user)
    context = {
        "device": device,
        "backup_codes_left": otp.backup_codes_left(request.user),
        "reset_form": OTPCodeForm(allow_backup=False),
    }
    return render(request, "accounts/security.html", context)


@sensitive_post_parameters("old_password", "new_password1", "new_password2")
@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def password_change_view(request: HttpRequest) -> HttpResponse:
    """Change the password; every other session of the user ends (the session hash changes)."""
    form = PasswordChangeForm(request.user, request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = user_services.user_password_change(
            request.user, form.cleaned_data["new_password1"], client_address=getattr(request, "client_address", None)
        )
        update_session_auth_hash(request, user)
        logger.info("password changed user=%s client=%s", user.pk, getattr(request, "client_address", None))
        messages.success(request, "Your password was changed. Your other sessions have been signed out.")
        return redirect("accounts:security")
    return render(request, "accounts/password_change.html", {"form": form})


LINK_REFUSED = (
    "It was used already, it has expired, or the account changed since it was sent. Ask an administrator for a new one."
)


# The form's own address: the link's token moves into the session first (Django's password-reset pattern), so
# it never sits in the address of a page that could be logged (a refused form, a CSRF failure) or sent as a
# Referer.
RECOVER_FORM_TOKEN = "set-password"  # noqa: S105 - the form's address, not a secret
RECOVER_SESSION_KEY = "_recovery_link_token"


@sensitive_post_parameters("new_password1", "new_password2")
@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def recover_view(request: HttpRequest, uidb64: str, token: str) -> HttpResponse:
    """The one-time link of an approved account recovery (``accessgov.recovery``): choose a new password,
    then sign in as always (password, then the authenticator — or enrol a new one if the recovery removed
    it). Open without signing in: the link is the proof. A link that does not work is a 400 that says so,
    never which part was wrong."""
    if token != RECOVER_FORM_TOKEN:
        if recovery.user_for(uidb64, token) is None:
            return render(request, "accounts/recover.html", {"message": LINK_REFUSED}, status=400)
        request.session[RECOVER_SESSION_KEY] = token
        return redirect("accounts:recover", uidb64=uidb64, token=RECOVER_FORM_TOKEN)
    user = recovery.user_for(uidb64, request.session.get(RECOVER_SESSION_KEY, ""))
    if user is None:
        return render(request, "accounts/recover.html", {"message": LINK_REFUSED}, status=400)
    form = SetPasswordForm(user, request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user_services.user_password_set_from_link(
                user.pk, form.cleaned_data["new_password1"], client_address=getattr(request, "client_address", None)
            )
        except TransitionNotAllowed as error:
            return render(request, "accounts/recover.html", {"message": str(error)}, status=409)
        request.session.pop(RECOVER_SESSION_KEY, None)
        logger.info("password chosen through a recovery link user=%s", user.pk)
        messages.success(request, "Your new password is set. Sign in with it.")
        return redirect("accounts:login")
    context = {"form": form, "account": user, "needs_authenticator": not user_has_device(user)}
    return render(request, "accounts/recover.html", context, status=400 if form.errors else 200)


@sensitive_post_parameters("otp_token")
@never_cache
@require_POST
def authenticator_reset_view(request: HttpRequest) -> HttpResponse:
    """Replace the authenticator: proven with a current code, it removes the device and backup codes,
    ends the user's other sessions, and sends this session to enrolment."""
    form = OTPCodeForm(request.POST, allow_backup=False)
    if form.is_valid():
        result = otp.verify_code(request.user, form.cleaned_data["otp_token"], allow_backup=False)
        if result.ok:
            otp.code_accepted(request)
            otp.reset_devices(request)
            messages.info(request, "Your old authenticator was removed. Set up the new one now.")
            return redirect("accounts:enrol")
        otp.record_failure(request, request.user, "authenticator-reset")
        form.add_error("otp_token", result.message)
    context = {
        "device": otp.confirmed_totp_device(request.user),
        "backup_codes_left": otp.backup_codes_left(request.user),
        "reset_form": form,
    }
    return render(request, "accounts/security.html", context, status=400)


@never_cache
@require_POST
def keep_alive_view(request: HttpRequest) -> HttpResponse:
    """The idle-timeout warning's "Stay signed in" (accessgov.js): a signed-in request, which restarts the
    idle clock (SessionTimeoutMiddleware; the absolute timeout still counts). Changes nothing else."""
    request.session[SESSION_LAST_SEEN_AT] = time.time()
    return HttpResponse(status=204)


@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def logout_view(request: HttpRequest) -> HttpResponse:
    """GET asks for confirmation (a link cannot sign anyone out); POST signs out."""
    if request.method == "POST":
        logout(request)
        messages.info(request, "You have signed out.")
        return HttpResponseRedirect(reverse("accounts:login"))
    return render(request, "accounts/logout.html")
