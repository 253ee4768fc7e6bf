"""Deciding from Slack without losing MFA (issue 19, capability 3), at the HTTP level: Slack
interactivity requests signed with a test signing secret are POSTed to the public endpoint, and the
Slack Web API (chat.postMessage, chat.update, chat.postEphemeral, views.open) is a local server. The
Slack user acts as the AccessGov user they linked with a one-time code made after a TOTP code."""

import hashlib
import hmac
import json
import re
import time
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.test import Client
from django.urls import reverse
from django_otp.plugins.otp_totp.models import TOTPDevice

from accessgov.integrations import slack as slack_module
from accessgov.models import AccessEvent, AccessRequest, Decision, Grant, SlackMessage, SlackUserLink, SlackWorkspace
from accessgov.services import access_requests as request_services
from tests.conftest import totp_code
from tests.support.fake_providers import SLACK_BOT_TOKEN
from tests.support.integration_world import client_for

pytestmark = pytest.mark.django_db
SIGNING_SECRET = "slack-signing-test-secret"
TEAM = "T0TEST"


@pytest.fixture
def workspace(fake):
    return SlackWorkspace.objects.create(
        name="Acme",
        team_id=TEAM,
        api_base_url=fake.url + "/slack/api/",
        bot_token=SLACK_BOT_TOKEN,
        signing_secret=SIGNING_SECRET,
        channel="C0APPROVALS",
    )


def _signed(body: bytes, *, ts: str | None = None, secret: str = SIGNING_SECRET) -> dict:
    ts = ts or str(int(time.time()))
    signature = "v0=" + hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return {"HTTP_X_SLACK_REQUEST_TIMESTAMP": ts, "HTTP_X_SLACK_SIGNATURE": signature}


def _post(payload: dict, **sign) -> tuple:
    body = urlencode({"payload": json.dumps(payload)}).encode()
    headers = _signed(body, **sign)
    response = Client().post(
        reverse("slack_interactivity"), data=body, content_type="application/x-www-form-urlencoded", **headers
    )
    return response, body, headers


def _click(slack_user: str, access_request_id: int, action: str = slack_module.APPROVE, team: str = TEAM) -> dict:
    return {
        "type": "block_actions",
        "team": {"id": team},
        "user": {"id": slack_user},
        "channel": {"id": "C0APPROVALS"},
        "trigger_id": "trigger-1",
        "actions": [{"action_id": action, "value": str(access_request_id), "type": "button"}],
    }


def _post_view_submission(slack_user: str, callback: str, values: dict, metadata: dict | None = None) -> dict:
    return {
        "type": "view_submission",
        "team": {"id": TEAM},
        "user": {"id": slack_user},
        "view": {
            "callback_id": callback,
            "private_metadata": json.dumps(metadata or {}),
            "state": {"values": {k: {"value": {"type": "plain_text_input", "value": v}} for k, v in values.items()}},
        },
    }


def _link(user, slack_user: str, traveller) -> None:
    """The real flow: a TOTP code on the portal page makes a one-time code, typed into Slack's modal."""
    traveller.shift(timedelta(seconds=31))  # a fresh time step: each TOTP code works once
    device = TOTPDevice.objects.get(user=user, confirmed=True)
    page = client_for(user).post(reverse("slack_link"), {"otp_token": totp_code(device)})
    assert page.status_code == 200
    code = re.search(r'id="slack-link-code">([0-9A-F-]+)<', page.content.decode()).group(1)
    response, _, _ = _post(_post_view_submission(slack_user, slack_module.LINK_VIEW, {"code": code}))
    assert response.status_code == 200 and response.content == b""


def post_request(world, role, django_capture_on_commit_callbacks) -> AccessRequest:
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(world.requester).post(
            reverse("request_new"),
            {"role": role.pk, "duration": "1h", "justification": "Investigate the failed settlement batch"},
        )
    assert response.status_code == 302
    return AccessRequest.objects.get(requester=world.requester, role=role)


def _slack_calls(fake, method: str) -> list:
    return [call[3] for call in fake.calls_to(f"/slack/api/{method}")]


def test_a_request_is_posted_with_buttons_and_updated_for_everyone_when_decided_in_the_portal(
    world, workspace, fake, at_t0, django_capture_on_commit_callbacks
):
    access_request = post_request(world, world.role, django_capture_on_commit_callbacks)
    posted = _slack_calls(fake, "chat.postMessage")
    assert len(posted) == 1 and posted[0]["channel"] == "C0APPROVALS"
    buttons = next(b for b in posted[0]["blocks"] if b["type"] == "actions")["elements"]
    assert {(b["action_id"], b.get("value")) for b in buttons[:2]} == {
        (slack_module.APPROVE, str(access_request.pk)),
        (slack_module.DENY, str(access_request.pk)),
    }
    assert SlackMessage.objects.get(access_request=access_request).shown_state == "pending:0"
    with django_capture_on_commit_callbacks(execute=True):
        request_services.access_request_approve(world.approver, access_request.pk, comment="go")
    updated = _slack_calls(fake, "chat.update")
    assert updated and "Approved" in json.dumps(updated[-1]["blocks"])
    assert not [b for b in updated[-1]["blocks"] if b["type"] == "actions"]  # no buttons left


def test_a_linked_approver_approves_in_slack_and_progress_is_shown(
    world, workspace, fake, at_t0, django_capture_on_commit_callbacks
):
    _link(world.approver, "U0APPROVER", at_t0)
    link = SlackUserLink.objects.get(user=world.approver)
    assert link.slack_user_id == "U0APPROVER"
    assert AccessEvent.objects.filter(event_type=AccessEvent.Type.SLACK_LINKED, actor=world.approver).exists()
    access_request = post_request(world, world.role_two, django_capture_on_commit_callbacks)  # 2 approvals
    with django_capture_on_commit_callbacks(execute=True):
        response, _, _ = _post(_click("U0APPROVER", access_request.pk))
    assert response.status_code == 200
    decision = Decision.objects.get(access_request=access_request)
    assert decision.approver == world.approver
    approval = AccessEvent.objects.get(access_request=access_request, event_type=AccessEvent.Type.DECISION_APPROVE)
    assert approval.actor == world.approver and approval.data["via"]["slack"]["user"] == "U0APPROVER"
    assert "Approvals: 1 of 2" in json.dumps(_slack_calls(fake, "chat.update")[-1]["blocks"])
    with django_capture_on_commit_callbacks(execute=True):
        request_services.access_request_approve(world.approver2, access_request.pk, comment="second")
    access_request.refresh_from_db()
    assert access_request.status == AccessRequest.Status.APPROVED
    assert "Approved" in json.dumps(_slack_calls(fake, "chat.update")[-1]["blocks"])


def test_forged_or_replayed_slack_requests_are_refused(
    world, workspace, fake, at_t0, django_capture_on_commit_callbacks
):
    _link(world.approver, "U0APPROVER", at_t0)
    access_request = post_request(world, world.role, django_capture_on_commit_callbacks)
    payload = _click("U0APPROVER", access_request.pk)
    # Signed with another secret; too old; from the future; no signature at all.
    assert _post(payload, secret="not-the-secret")[0].status_code == 401
    assert _post(payload, ts=str(int(time.time()) - 6 * 60))[0].status_code == 401
    assert _post(payload, ts=str(int(time.time()) + 6 * 60))[0].status_code == 401
    assert _post(payload, ts="not-a-number")[0].status_code == 401
    signed = urlencode({"payload": json.dumps(payload)}).encode()
    odd = {**_signed(signed), "HTTP_X_SLACK_SIGNATURE": "v0=é"}
    assert (
        Client()
        .post(reverse("slack_interactivity"), data=signed, content_type="application/x-www-form-urlencoded", **odd)
        .status_code
        == 401
    )
    body = urlencode({"payload": json.dumps(payload)}).encode()
    assert (
        Client()
        .post(reverse("slack_interactivity"), data=body, content_type="application/x-www-form-urlencoded")
        .status_code
        == 401
    )
    # A body changed after signing.
    headers = _signed(body)
    tampered = body.replace(str(access_request.pk).encode(), b"9999")
    assert (
        Client()
        .post(
            reverse("slack_interactivity"), data=tampered, content_type="application/x-www-form-urlencoded", **headers
        )
        .status_code
        == 401
    )
    # Signed, but for another workspace's team.
    assert _post(_click("U0APPROVER", access_request.pk, team="T0OTHER"))[0].status_code == 401
    access_request.refresh_from_db()
    assert access_request.is_pending
    # A genuine request works once; the same bytes again are a replay.
    with django_capture_on_commit_callbacks(execute=True):
        response, body, headers = _post(payload)
    assert response.status_code == 200
    replay = Client().post(
        reverse("slack_interactivity"), data=body, content_type="application/x-www-form-urlencoded", **headers
    )
    assert replay.status_code == 401
    assert Decision.objects.filter(access_request=access_request).count() == 1


def test_an_unlinked_slack_user_cannot_decide_and_is_asked_to_link(
    world, workspace, fake, at_t0, django_capture_on_commit_callbacks
):
    access_request = post_request(world, world.role, django_capture_on_commit_callbacks)
    response, _, _ = _post(_click("U0STRANGER", access_request.pk))
    assert response.status_code == 200
    opened = _slack_calls(fake, "views.open")
    assert opened and opened[-1]["view"]["callback_id"] == slack_module.LINK_VIEW
    # A decision modal submitted by an unlinked user (or a wrong link code) decides nothing.
    metadata = {"request": access_request.pk, "outcome": "approve"}
    refused, _, _ = _post(_post_view_submission("U0STRANGER", slack_module.DECIDE_VIEW, {"comment": "ok"}, metadata))
    assert refused.json()["response_action"] == "errors"
    wrong_code, _, _ = _post(
        _post_view_submission("U0STRANGER", slack_module.LINK_VIEW, {"code": "AAAAAA-BBBBBB-CCCCCC"})
    )
    assert "not valid" in wrong_code.json()["errors"]["code"]
    access_request.refresh_from_db()
    assert access_request.is_pending and not SlackUserLink.objects.exists()


def test_a_link_code_works_once_and_expires(world, workspace, at_t0):
    at_t0.shift(timedelta(seconds=31))
    device = TOTPDevice.objects.get(user=world.approver, confirmed=True)
    without_code = client_for(world.approver).post(reverse("slack_link"), {"otp_token": ""})
    assert without_code.status_code == 403 and not re.search(r'id="slack-link-code"', without_code.content.decode())
    page = client_for(world.approver).post(reverse("slack_link"), {"otp_token": totp_code(device)}).content.decode()
    code = re.search(r'id="slack-link-code">([0-9A-F-]+)<', page).group(1)
    at_t0.shift(timedelta(minutes=11))
    expired, _, _ = _post(_post_view_submission("U0APPROVER", slack_module.LINK_VIEW, {"code": code}))
    assert "not valid" in expired.json()["errors"]["code"]
    _link(world.approver, "U0APPROVER", at_t0)
    link = SlackUserLink.objects.get(user=world.approver)
    assert link.slack_user_id == "U0APPROVER"
    # Only its owner removes a link, and that is recorded.
    client_for(world.requester).post(reverse("slack_link"), {"unlink": str(link.pk)})
    assert SlackUserLink.objects.filter(pk=link.pk).exists()
    client_for(world.approver).post(reverse("slack_link"), {"unlink": str(link.pk)})
    assert not SlackUserLink.objects.filter(pk=link.pk).exists()
    assert AccessEvent.objects.filter(event_type=AccessEvent.Type.SLACK_UNLINKED, actor=world.approver).exists()


def test_approving_your_own_request_from_slack_is_refused(
    world, workspace, fake, at_t0, django_capture_on_commit_callbacks
):
    from guardian.shortcuts import assign_perm

    assign_perm("accessgov.approve_role", world.requester, world.role)  # even an approver of the role
    _link(world.requester, "U0REQUESTER", at_t0)
    access_request = post_request(world, world.role, django_capture_on_commit_callbacks)
    response, _, _ = _post(_click("U0REQUESTER", access_request.pk))
    assert response.status_code == 200
    told = _slack_calls(fake, "chat.postEphemeral")
    assert told and "cannot decide your own request" in told[-1]["text"]
    metadata = {"request": access_request.pk, "outcome": "approve"}
    via_modal, _, _ = _post(_post_view_submission("U0REQUESTER", slack_module.DECIDE_VIEW, {"comment": "me"}, metadata))
    assert "own request" in via_modal.json()["errors"]["comment"]
    access_request.refresh_from_db()
    assert access_request.is_pending and not Decision.objects.filter(access_request=access_request).exists()


def test_a_step_up_role_approved_in_slack_needs_a_fresh_code(
    world, workspace, fake, at_t0, django_capture_on_commit_callbacks
):
    world.role.step_up_required = True
    world.role.save()
    _link(world.approver, "U0APPROVER", at_t0)
    access_request = post_request(world, world.role, django_capture_on_commit_callbacks)
    device = TOTPDevice.objects.get(user=world.approver, confirmed=True)
    used_for_linking = totp_code(device)  # the code spent a moment ago to make the link code
    # The button opens a modal that asks for the code; it decides nothing by itself.
    response, _, _ = _post(_click("U0APPROVER", access_request.pk))
    assert response.status_code == 200
    modal = _slack_calls(fake, "views.open")[-1]["view"]
    assert modal["callback_id"] == slack_module.DECIDE_VIEW and any(
        b.get("block_id") == "code" for b in modal["blocks"]
    )
    assert not Decision.objects.filter(access_request=access_request).exists()
    metadata = {"request": access_request.pk, "outcome": "approve"}
    for values in ({"comment": "ok"}, {"code": ""}, {"code": "000000"}, {"code": "12ab56"}, {"code": used_for_linking}):
        refused, _, _ = _post(_post_view_submission("U0APPROVER", slack_module.DECIDE_VIEW, values, metadata))
        assert refused.json()["response_action"] == "errors", values
    access_request.refresh_from_db()
    assert access_request.is_pending
    at_t0.shift(timedelta(seconds=31))
    with django_capture_on_commit_callbacks(execute=True):
        accepted, _, _ = _post(
            _post_view_submission("U0APPROVER", slack_module.DECIDE_VIEW, {"code": totp_code(device)}, metadata)
        )
    assert accepted.status_code == 200 and accepted.content == b""
    decision = Decision.objects.get(access_request=access_request)
    assert decision.step_up_at is not None
    access_request.refresh_from_db()
    assert access_request.status == AccessRequest.Status.APPROVED


def test_deny_from_slack_needs_a_comment(world, workspace, fake, at_t0, django_capture_on_commit_callbacks):
    _link(world.approver, "U0APPROVER", at_t0)
    access_request = post_request(world, world.role, django_capture_on_commit_callbacks)
    _post(_click("U0APPROVER", access_request.pk, action=slack_module.DENY))
    assert _slack_calls(fake, "views.open")[-1]["view"]["callback_id"] == slack_module.DECIDE_VIEW
    metadata = {"request": access_request.pk, "outcome": "deny"}
    no_comment, _, _ = _post(_post_view_submission("U0APPROVER", slack_module.DECIDE_VIEW, {"comment": ""}, metadata))
    assert no_comment.json()["response_action"] == "errors"
    with django_capture_on_commit_callbacks(execute=True):
        _post(
            _post_view_submission(
                "U0APPROVER", slack_module.DECIDE_VIEW, {"comment": "Use the read-only role"}, metadata
            )
        )
    access_request.refresh_from_db()
    assert access_request.status == AccessRequest.Status.DENIED
    assert "Use the read-only role" in json.dumps(_slack_calls(fake, "chat.update")[-1]["blocks"])


def test_slack_down_never_blocks_deciding_in_the_portal(
    world, workspace, fake, at_t0, django_capture_on_commit_callbacks
):
    fake.state.slack_fail = True
    access_request = post_request(world, world.role, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(world.approver).post(
            reverse("request_approve", args=[access_request.pk]), {"comment": "ok"}
        )
    assert response.status_code == 302
    access_request.refresh_from_db()
    assert access_request.status == AccessRequest.Status.APPROVED
    assert Grant.objects.filter(access_request=access_request, status=Grant.Status.ACTIVE).exists()
    assert not SlackMessage.objects.filter(access_request=access_request).exists()


def test_huge_or_malformed_slack_bodies_are_refused_cleanly(workspace, at_t0):
    url = reverse("slack_interactivity")
    huge = b"payload=" + b"a" * (70 * 1024)
    assert (
        Client().post(url, data=huge, content_type="application/x-www-form-urlencoded", **_signed(huge)).status_code
        == 413
    )
    for body in (b"payload=not-json", b"nothing=here", b"\xff\xfe", b"payload=%5B%5D", b"payload=" + b"%7B%7D"):
        response = Client().post(url, data=body, content_type="application/x-www-form-urlencoded", **_signed(body))
        assert response.status_code in (200, 400, 401), (body, response.status_code)
    assert Client().get(url).status_code == 405


@pytest.mark.parametrize("request_id", [1e999, -1e999, 10**30, -1, 0, 1.5, "\u0661", True, None, [1], {"a": 1}])
def test_a_signed_decide_modal_with_a_hostile_request_id_is_a_400(workspace, request_id):
    """The modal's metadata is ours, but comes back in a signed body we did not write: ``1e999`` (JSON for
    infinity) made ``int()`` raise OverflowError, a 500."""
    payload = _post_view_submission("U0APPROVER", slack_module.DECIDE_VIEW, {"comment": "ok"}, {"outcome": "approve"})
    payload["view"]["private_metadata"] = json.dumps({"request": request_id, "outcome": "approve"})
    response, _, _ = _post(payload)
    assert response.status_code == 400
    assert response.content == b"Malformed view."


def _shapes() -> dict:
    """Signed payloads whose parts have other shapes than Slack's (a probe got a 500 from each)."""
    click = _click("U0APPROVER", 1)
    submission = _post_view_submission("U0APPROVER", slack_module.LINK_VIEW, {"code": "x"})
    return {
        "user a string": {**click, "user": "U0APPROVER"},
        "user a list": {**click, "user": ["x"]},
        "team missing, user without team": {**click, "team": None, "user": {"id": "U0APPROVER"}},
        "actions an object": {**click, "actions": {"a": 1}},
        "actions a list of strings": {**click, "actions": ["approve"]},
        "view a string": {**submission, "view": "abc"},
        "state a string": {**submission, "view": {"callback_id": slack_module.LINK_VIEW, "state": "x"}},
        "code a list": {
            **submission,
            "view": {
                "callback_id": slack_module.LINK_VIEW,
                "state": {"values": {"code": {"value": {"value": ["123"]}}}},
            },
        },
        "values a list": {
            **submission,
            "view": {"callback_id": slack_module.LINK_VIEW, "state": {"values": [1, 2]}},
        },
        "channel a string": {**click, "channel": "C1"},
        "user id with a NUL": {**click, "user": {"id": "U\u0000"}},
        "user id with a lone surrogate": {**click, "user": {"id": "U\ud800"}},
        "metadata an object": {
            **submission,
            "view": {"callback_id": slack_module.DECIDE_VIEW, "private_metadata": {"request": 1}},
        },
    }


@pytest.mark.parametrize("shape", sorted(_shapes()))
def test_a_signed_payload_of_another_shape_is_answered_without_a_500(
    world, workspace, fake, at_t0, shape, django_capture_on_commit_callbacks
):
    access_request = post_request(world, world.role, django_capture_on_commit_callbacks)
    request_services.access_request_approve(world.approver, access_request.pk)  # decided: the "already" path
    payload = json.loads(json.dumps(_shapes()[shape]).replace('"value": "1"', f'"value": "{access_request.pk}"'))
    response, _, _ = _post(payload)
    assert response.status_code in (200, 400, 401), (shape, response.status_code, response.content[:200])
    assert Decision.objects.filter(access_request=access_request).count() == 1  # nothing decided again
