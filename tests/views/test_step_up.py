"""Step-up (issue 14, item 8): one rule — a TOTP code entered in the last OTP_STEP_UP_WINDOW, the code
of the sign-in included — applied by every path (decide form, approver queue, API, break-glass,
services), and pages that say what is true about it."""

import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.test import Client, override_settings
from django.urls import reverse

from accessgov.exceptions import StepUpRequired
from accessgov.models import AccessRequest
from accessgov.services import access_requests as ar
from accessgov.services import grants as gs
from tests.conftest import sign_in
from tests.support.api_helpers import api_client, make_token, post_json

pytestmark = pytest.mark.django_db
T0 = datetime(2027, 3, 1, 10, 0, 15, tzinfo=UTC)  # mid TOTP step
H = timedelta(hours=1)


@pytest.fixture
def step_up_world(world):
    world.role.step_up_required = True
    world.role.save(update_fields=["step_up_required"])
    world.role_two.break_glass_allowed = True
    world.role_two.save(update_fields=["break_glass_allowed"])
    return world


def signed_in_at(user, at: datetime) -> Client:
    """A session whose sign-in (password + a real TOTP code) happened at ``at``."""
    with time_machine.travel(at, tick=False):
        return sign_in(Client(), user)


def pending(w) -> AccessRequest:
    return ar.access_request_submit(
        w.requester, role=w.role, duration=H, justification="Investigating INC-42 on payments"
    )


def code_help(page: str) -> str:
    """The help sentence under the authenticator code field of the decide form."""
    return " ".join(re.search(r'<p class="help" id="otp-help-\d+">(.*?)</p>', page, re.S).group(1).split())


def test_within_the_window_after_sign_in_the_form_says_no_code_is_needed_and_an_empty_field_passes(step_up_world):
    w = step_up_world
    with time_machine.travel(T0 - timedelta(minutes=1), tick=False):
        access_request = pending(w)
    approver = signed_in_at(w.approver, T0)
    with time_machine.travel(T0 + timedelta(minutes=2, seconds=10), tick=False):
        page = approver.get(reverse("request_detail", args=[access_request.pk])).content.decode()
        assert code_help(page) == (
            "Medium-risk role. Not needed: you entered a code 2 minutes ago (a code counts for 5 minutes)."
        )
        assert "fresh code is required" not in page
        assert "Authenticator code (not needed now)" in page
        response = approver.post(reverse("request_approve", args=[access_request.pk]), {"comment": "ok"})
    assert response.status_code == 302
    access_request.refresh_from_db()
    assert access_request.status == AccessRequest.Status.APPROVED
    assert access_request.decisions.get().step_up_at == T0  # the sign-in code is the one that counted


def test_after_the_window_the_form_says_a_code_is_required_and_an_empty_field_is_refused(step_up_world):
    w = step_up_world
    with time_machine.travel(T0 - timedelta(minutes=1), tick=False):
        access_request = pending(w)
    approver = signed_in_at(w.approver, T0)
    with time_machine.travel(T0 + timedelta(minutes=5, seconds=1), tick=False):
        page = approver.get(reverse("request_detail", args=[access_request.pk])).content.decode()
        assert code_help(page) == (
            "Medium-risk role. Required: the 6-digit code from your authenticator (a code counts for 5 minutes)."
        )
        response = approver.post(reverse("request_approve", args=[access_request.pk]), {"comment": "ok"})
    assert response.status_code == 403
    assert f"Deciding on {w.role} needs a code from your authenticator entered in the last 5 minutes." in (
        response.content.decode()
    )
    assert not access_request.decisions.exists()


def test_the_approver_queue_says_the_same_as_the_request_page(step_up_world):
    w = step_up_world
    with time_machine.travel(T0 - timedelta(minutes=1), tick=False):
        pending(w)
    approver = signed_in_at(w.approver, T0)
    with time_machine.travel(T0 + timedelta(seconds=40), tick=False):
        page = approver.get(reverse("approvals")).content.decode()
    assert code_help(page) == (
        "Medium-risk role. Not needed: you entered a code less than a minute ago (a code counts for 5 minutes)."
    )


@override_settings(OTP_STEP_UP_WINDOW=timedelta(minutes=10))
def test_a_configured_window_is_the_one_every_path_applies_and_states(step_up_world):
    w = step_up_world
    with time_machine.travel(T0 - timedelta(minutes=1), tick=False):
        access_request = pending(w)
    approver = signed_in_at(w.approver, T0)
    with time_machine.travel(T0, tick=False):
        _, secret = make_token(w.approver)
    later = T0 + timedelta(minutes=7)
    with time_machine.travel(later, tick=False):
        # Break-glass (service): the window and its wording are the setting's, not a hard-coded 5.
        with pytest.raises(StepUpRequired, match=r"^Break-glass needs a code .* in the last 10 minutes\.$"):
            gs.break_glass_activate(
                w.requester, role=w.role_two, justification="Prod is down, INC-9", duration=H, step_up_at=None
            )
        grant = gs.break_glass_activate(
            w.requester,
            role=w.role_two,
            justification="Prod is down, INC-9",
            duration=H,
            step_up_at=later - timedelta(minutes=9),
        )
        assert grant.is_break_glass
        # The API (no code sent: a token has no sign-in) states the same window.
        response = post_json(api_client(secret), f"/api/v1/requests/{access_request.pk}/approve/", {"comment": "ok"})
        assert response.status_code == 403
        assert response.json()["error"]["message"].endswith("entered in the last 10 minutes.")
        # The page: the sign-in code of 7 minutes ago still counts, and the form says so.
        page = approver.get(reverse("request_detail", args=[access_request.pk])).content.decode()
        assert code_help(page).endswith("Not needed: you entered a code 7 minutes ago (a code counts for 10 minutes).")
        assert approver.post(reverse("request_approve", args=[access_request.pk]), {"comment": "ok"}).status_code == 302


def test_the_api_applies_the_same_rule_in_the_same_words_and_a_token_brings_no_sign_in(step_up_world):
    """The approver signed in to the portal a minute ago; their token still needs a code in the body,
    and the refusal is the pages' sentence, word for word."""
    w = step_up_world
    with time_machine.travel(T0 - timedelta(minutes=1), tick=False):
        first = pending(w)
    approver = signed_in_at(w.approver, T0 - timedelta(minutes=20))  # its code no longer counts
    with time_machine.travel(T0, tick=False):
        _, secret = make_token(w.approver)
        signed_in_at(w.approver, T0)  # a fresh sign-in elsewhere (another browser)
        api = post_json(api_client(secret), f"/api/v1/requests/{first.pk}/approve/", {"comment": "ok"})
        page = approver.post(reverse("request_approve", args=[first.pk]), {"comment": "ok"})
    assert api.status_code == 403 and page.status_code == 403
    assert api.json()["error"]["code"] == "step_up_required"
    message = api.json()["error"]["message"]
    assert message == f"Deciding on {w.role} needs a code from your authenticator entered in the last 5 minutes."
    assert message in page.content.decode()
    assert not first.decisions.exists()


def test_a_code_typed_while_the_sign_in_code_is_fresh_is_checked_not_ignored(step_up_world):
    """The sign-in code counts for the window; a code typed anyway is verified: a wrong one, or the sign-in
    code itself again, is refused with nothing activated (it used to be dropped, and the form said success)."""
    w = step_up_world
    requester = signed_in_at(w.requester, T0)
    device = w.requester.totpdevice_set.get()
    from tests.conftest import totp_code

    sign_in_code = totp_code(device, at=T0.timestamp())
    body = {"role": w.role_two.pk, "duration": "15m", "justification": "Prod is down, INC-9"}
    with time_machine.travel(T0 + timedelta(minutes=1), tick=False):
        page = requester.get(reverse("break_glass")).content.decode()
        assert "Authenticator code (not needed now)" in page and "break-glass always needs one" not in page
        for typed in ("000000", sign_in_code, "²²²²²²"):
            response = requester.post(reverse("break_glass"), {**body, "otp_token": typed})
            assert response.status_code in (400, 403), typed
            assert not w.requester.grants.filter(is_break_glass=True).exists()
        # Nothing typed: the fresh sign-in code counts, and is the one recorded.
        assert requester.post(reverse("break_glass"), {**body, "otp_token": ""}).status_code == 302
    grant = w.requester.grants.get(is_break_glass=True)
    assert (
        grant.access_request.events.get(event_type="break_glass.activated")
        .data["step_up_at"]
        .startswith("2027-03-01T10:00")
    )


@pytest.mark.parametrize("where", ["step-up page", "break-glass form", "backup codes"])
def test_five_wrong_codes_in_a_row_at_any_step_end_the_session(step_up_world, settings, caplog, where):
    """Promise 1: repeated failure locks the OTP step — every step, not only sign-in (a stolen signed-in session
    could keep guessing step-up codes, held back only by the device's throttle; the HTTP probe)."""
    w = step_up_world
    client = signed_in_at(w.requester, T0)
    post = {
        "step-up page": (reverse("accounts:step_up"), {}),
        "break-glass form": (
            reverse("break_glass"),
            {"role": w.role_two.pk, "duration": "15m", "justification": "Prod is down, INC-9"},
        ),
        "backup codes": (reverse("accounts:backup_codes"), {}),
    }[where]
    for attempt in range(settings.OTP_MAX_FAILURES_PER_SESSION):
        # Each guess after the device's throttle has passed (2^n seconds), so each one is checked.
        with time_machine.travel(T0 + timedelta(minutes=2 + 20 * attempt), tick=False):
            assert client.get(reverse("home")).status_code == 200, attempt  # still signed in before it
            response = client.post(post[0], {**post[1], "otp_token": f"{attempt:06d}"})
    assert response.status_code in (302, 400, 403)
    assert any("otp step locked step=" in r.getMessage() for r in caplog.records)
    with time_machine.travel(T0 + timedelta(minutes=2 + 20 * attempt, seconds=30), tick=False):
        assert client.get(reverse("home"))["Location"].startswith(reverse("accounts:login"))
    assert not w.requester.grants.filter(is_break_glass=True).exists()


def test_the_fifth_wrong_code_in_a_bulk_decision_signs_out_to_the_sign_in_page(step_up_world, settings):
    """The lock ended the session inside the bulk decision, which then built the queue for nobody: a 500 (the
    review of this change). It now goes to the sign-in page, saying why; nothing is decided."""
    w = step_up_world
    with time_machine.travel(T0 - timedelta(minutes=1), tick=False):
        access_request = pending(w)
    approver = signed_in_at(w.approver, T0)
    body = {"ids": [access_request.pk], "outcome": "approve", "comment": "ok"}
    for attempt in range(settings.OTP_MAX_FAILURES_PER_SESSION):
        with time_machine.travel(T0 + timedelta(minutes=2 + 20 * attempt), tick=False):
            response = approver.post(reverse("approvals_bulk_decide"), {**body, "otp_token": f"{attempt:06d}"})
    assert response.status_code == 302 and response["Location"] == reverse("accounts:login")
    assert AccessRequest.objects.get(pk=access_request.pk).status == AccessRequest.Status.PENDING
    with time_machine.travel(T0 + timedelta(minutes=2 + 20 * attempt, seconds=30), tick=False):
        page = approver.get(reverse("accounts:login")).content.decode()
        assert "Too many wrong codes: you were signed out." in page


def test_a_right_code_between_wrong_ones_starts_the_count_again(step_up_world, settings):
    """The lock is for wrong codes in a row: a right code at a step that does not sign in again (new backup
    codes) clears the count too."""
    from tests.conftest import totp_code

    w = step_up_world
    client = signed_in_at(w.requester, T0)
    device = w.requester.totpdevice_set.get()
    minute = 2
    for _ in range(settings.OTP_MAX_FAILURES_PER_SESSION - 1):
        with time_machine.travel(T0 + timedelta(minutes=minute), tick=False):
            client.post(reverse("accounts:step_up"), {"otp_token": "000000"})
        minute += 20
    with time_machine.travel(T0 + timedelta(minutes=minute), tick=False):
        right = client.post(reverse("accounts:backup_codes"), {"otp_token": totp_code(device)})
        assert right["Location"] == reverse("accounts:backup_codes")
    with time_machine.travel(T0 + timedelta(minutes=minute + 20), tick=False):
        client.post(reverse("accounts:step_up"), {"otp_token": "000000"})
        assert client.get(reverse("home")).status_code == 200  # one wrong code since the right one
