"""Authenticator codes are spent last (issue 18, item 3): every other rule of a step-up action is
checked before the typed code is verified, so a refusal for another reason (a bad duration, "already
holds this role") leaves the code usable, and the corrected resubmit with the SAME code succeeds.
Typed input is kept on those refusals (item 2). Real TOTP codes, a fixed instant."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.test import Client
from django.urls import reverse
from django_otp.plugins.otp_totp.models import TOTPDevice

from accessgov.models import AccessRequest, Eligibility, Grant
from accessgov.services import access_requests as ar
from accessgov.services import grants as gs
from tests.conftest import totp_code, verify_session
from tests.support.api_helpers import api_client, make_token, post_json

pytestmark = pytest.mark.django_db
T0 = datetime(2027, 3, 1, 10, 0, 15, tzinfo=UTC)  # mid TOTP step
H = timedelta(hours=1)


@pytest.fixture
def step_up_world(world):
    for role in (world.role, world.role_two):
        role.step_up_required = True
        role.break_glass_allowed = True
        role.save(update_fields=["step_up_required", "break_glass_allowed"])
    return world


def code_of(user) -> str:
    return totp_code(TOTPDevice.objects.get(user=user, confirmed=True))


def pending(w) -> AccessRequest:
    return ar.access_request_submit(
        w.requester, role=w.role, duration=H, justification="Investigating INC-42 on payments"
    )


def test_break_glass_duration_error_keeps_the_code_and_the_same_code_then_works(step_up_world):
    w = step_up_world
    with time_machine.travel(T0, tick=False):
        client = verify_session(Client(), w.requester)
        code = code_of(w.requester)
        data = {"role": w.role_two.pk, "duration": "3h", "justification": "INC-77: payments down", "otp_token": code}
        response = client.post(reverse("break_glass"), data)
        page = response.content.decode()
        assert response.status_code == 400
        assert (
            "Break-glass access lasts at most 1 h (Payments DB · admin allows 2 h)." in page
            and 'aria-invalid="true"' in page
        )
        assert "INC-77: payments down" in page  # what was typed is kept
        assert not Grant.objects.exists()
        response = client.post(reverse("break_glass"), {**data, "duration": "30m"})
    assert response.status_code == 302, response.content.decode()
    grant = Grant.objects.get()
    assert grant.is_break_glass and grant.expires_at - grant.starts_at == timedelta(minutes=30)


def test_approval_duration_error_keeps_comment_duration_and_code(step_up_world):
    w = step_up_world
    with time_machine.travel(T0 - timedelta(minutes=1), tick=False):
        access_request = pending(w)
    with time_machine.travel(T0, tick=False):
        client = verify_session(Client(), w.approver)
        code = code_of(w.approver)
        url = reverse("request_approve", args=[access_request.pk])
        data = {"comment": "OK for the payout fix", "duration": "3h", "otp_token": code}
        response = client.post(url, data)
        page = response.content.decode()
        assert response.status_code == 400
        assert "OK for the payout fix" in page and 'value="3h"' in page
        assert 'id="duration-error-' in page and "autofocus" in page
        # The kept form returns to the request's page after the decision, not to this POST's URL.
        assert f'name="back" value="{reverse("request_detail", args=[access_request.pk])}"' in page
        response = client.post(url, {**data, "duration": "30m"})
    assert response.status_code == 302
    access_request.refresh_from_db()
    assert access_request.status == AccessRequest.Status.APPROVED
    assert access_request.approved_duration == timedelta(minutes=30)
    assert access_request.decisions.get().step_up_at == T0


def test_already_holds_this_role_conflict_does_not_spend_the_code(step_up_world):
    w = step_up_world
    with time_machine.travel(T0 - timedelta(minutes=2), tick=False):
        access_request = pending(w)
        gs.break_glass_activate(
            w.requester,
            role=w.role,
            justification="INC-78: payments down",
            duration=timedelta(minutes=30),
            step_up_at=T0 - timedelta(minutes=2),
        )
    with time_machine.travel(T0, tick=False):
        client = verify_session(Client(), w.approver)
        code = code_of(w.approver)
        url = reverse("request_approve", args=[access_request.pk])
        response = client.post(url, {"comment": "ok", "otp_token": code}, headers={"HX-Request": "true"})
        page = response.content.decode()
        assert response.status_code == 409
        assert "already holds this role" in page and ">ok</textarea>" in page
        assert not access_request.decisions.exists()
        # The code was not spent: the same code still passes step-up elsewhere (the step-up page).
        response = client.post(reverse("accounts:step_up"), {"otp_token": code, "next": "/"})
    assert response.status_code == 302


def test_a_wrong_code_is_refused_next_to_its_field_and_keeps_comment_and_duration(step_up_world):
    w = step_up_world
    with time_machine.travel(T0 - timedelta(minutes=1), tick=False):
        access_request = pending(w)
    with time_machine.travel(T0, tick=False):
        client = verify_session(Client(), w.approver)
        wrong = f"{(int(code_of(w.approver)) + 1) % 1_000_000:06d}"
        response = client.post(
            reverse("request_approve", args=[access_request.pk]),
            {"comment": "Fine for the fix", "duration": "30m", "otp_token": wrong},
        )
    page = response.content.decode()
    assert response.status_code == 403
    assert "Fine for the fix" in page and 'value="30m"' in page and 'id="otp-error-' in page
    access_request.refresh_from_db()
    assert access_request.status == AccessRequest.Status.PENDING


def test_api_approval_refused_for_duration_keeps_the_code_for_the_corrected_call(step_up_world):
    w = step_up_world
    with time_machine.travel(T0 - timedelta(minutes=1), tick=False):
        access_request = pending(w)
        _, secret = make_token(w.approver)
    with time_machine.travel(T0, tick=False):
        api = api_client(secret)
        code = code_of(w.approver)
        url = f"/api/v1/requests/{access_request.pk}/approve/"
        response = post_json(api, url, {"comment": "ok", "duration_seconds": 3 * 3600, "otp_code": code})
        assert response.status_code == 400, response.content
        response = post_json(api, url, {"comment": "ok", "duration_seconds": 1800, "otp_code": code})
    assert response.status_code == 200, response.content
    access_request.refresh_from_db()
    assert access_request.status == AccessRequest.Status.APPROVED


def test_a_refusal_before_any_code_is_needed_still_commits_what_it_found(step_up_world):
    """Approving a request whose requester is no longer eligible withdraws it (committed) and says so;
    the rehearsal must not swallow that withdrawal."""
    w = step_up_world
    with time_machine.travel(T0 - timedelta(minutes=1), tick=False):
        access_request = pending(w)
        Eligibility.objects.filter(user=w.requester).delete()
    with time_machine.travel(T0, tick=False):
        client = verify_session(Client(), w.approver)
        response = client.post(
            reverse("request_approve", args=[access_request.pk]), {"comment": "ok", "otp_token": code_of(w.approver)}
        )
    assert response.status_code == 409
    access_request.refresh_from_db()
    assert access_request.status != AccessRequest.Status.PENDING
