"""Notifications: who is told what, by email (text + HTML, escaped) and a Slack-compatible webhook."""

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from django.test import override_settings

from accessgov import notifications
from accessgov.models import NotificationDelivery
from accessgov.services import access_requests as ar
from tests.support.requests import submit

pytestmark = pytest.mark.django_db
H = timedelta(hours=1)


def test_new_request_emails_every_approver_but_not_the_requester(world, mailoutbox, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        access_request = submit(world)
    assert sorted(m.to[0] for m in mailoutbox) == sorted([world.approver.email, world.approver2.email])
    message = mailoutbox[0]
    assert message.subject == f"[AccessGov] {world.requester.get_full_name()} requests {world.role}"
    # Every notification links to the inbox (issue 18): the approver decides from there.
    assert f"http://127.0.0.1:8000/inbox/#request-{access_request.pk}" in message.body
    html = message.alternatives[0][0]
    assert "Review the request" in html


def test_user_text_is_escaped_in_html_email(world, mailoutbox, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        submit(world, justification='<script>alert("x")</script> please')
    html = mailoutbox[0].alternatives[0][0]
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html


def test_decision_is_emailed_to_the_requester_with_the_reason(world, mailoutbox, django_capture_on_commit_callbacks):
    access_request = submit(world)
    with django_capture_on_commit_callbacks(execute=True):
        ar.access_request_deny(world.approver, access_request.pk, comment="Use the read replica")
    assert [m.to for m in mailoutbox] == [[world.requester.email]]
    assert mailoutbox[0].subject == f"[AccessGov] Denied: {world.role}"
    assert "Use the read replica" in mailoutbox[0].body


def test_an_approval_for_less_time_tells_the_requester_how_much_and_what_the_approver_said(
    world, mailoutbox, django_capture_on_commit_callbacks
):
    """A probe's finding: the requester learnt only the new end, not that it was shortened or why."""
    from accessgov.models import AccessEvent

    world.role.approvals_required = 1
    world.role.save()
    access_request = submit(world, duration=2 * H)
    with django_capture_on_commit_callbacks(execute=True):
        ar.access_request_approve(
            world.approver, access_request.pk, comment="Fix PAY-991 only, no schema changes", duration=H
        )
    [email] = mailoutbox
    body = " ".join(email.body.split())
    assert "approved 1 h of the 2 h you asked for" in body
    assert "Fix PAY-991 only, no schema changes" in body
    approved = AccessEvent.objects.get(access_request=access_request, event_type="request.approved")
    assert "of the" in approved.reason and "approver: Fix PAY-991 only" in approved.reason  # the inbox shows it


def test_a_scheduled_start_is_in_the_approvers_email(world, mailoutbox, django_capture_on_commit_callbacks):
    from django.utils import timezone

    starts = (timezone.now() + timedelta(days=1)).replace(second=0, microsecond=0)
    with django_capture_on_commit_callbacks(execute=True):
        submit(world, starts_at=starts)
    assert f"Starts: {starts:%Y-%m-%d %H:%M} UTC (scheduled)" in mailoutbox[0].body
    mailoutbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        submit(world, role=world.role_two)
    assert "Starts: when approved" in mailoutbox[0].body


def test_inactive_users_and_users_without_email_get_nothing(world, mailoutbox, django_capture_on_commit_callbacks):
    world.approver.is_active = False
    world.approver.save()
    world.approver2.email = ""
    world.approver2.save()
    with django_capture_on_commit_callbacks(execute=True):
        submit(world)
    assert mailoutbox == []


class _Receiver(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Receiver.received.append((self.headers["Content-Type"], json.loads(body)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def slack_receiver():
    _Receiver.received = []
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", _Receiver.received
    server.shutdown()


@override_settings(WEBHOOK_ALLOW_PRIVATE_TARGETS=True)  # the receiver is this test's, on 127.0.0.1
def test_slack_compatible_webhook_gets_the_system_notifications(
    world, slack_receiver, django_capture_on_commit_callbacks
):
    url, received = slack_receiver
    world.system.slack_webhook_url = url
    world.system.save()
    with django_capture_on_commit_callbacks(execute=True):
        access_request = submit(world)
    assert len(received) == 1
    content_type, body = received[0]
    assert content_type == "application/json"
    assert str(world.role) in body["text"]
    assert f"/inbox/#request-{access_request.pk}" in body["text"]


@override_settings(WEBHOOK_ALLOW_PRIVATE_TARGETS=True)  # the receiver is this test's, on 127.0.0.1
def test_the_slack_post_mentions_linked_recipients_who_want_slack_and_not_those_who_opted_out(
    world, slack_receiver, django_capture_on_commit_callbacks
):
    from accessgov.models import SlackUserLink, SlackWorkspace

    url, received = slack_receiver
    world.system.slack_webhook_url = url
    world.system.save()
    # Inactive: no approval message through the Slack app here, only the system's webhook post.
    workspace = SlackWorkspace.objects.create(name="Acme", team_id="T0TEST", channel="C0APPROVALS", is_active=False)
    SlackUserLink.objects.create(workspace=workspace, slack_user_id="U0APPROVER", user=world.approver)
    SlackUserLink.objects.create(workspace=workspace, slack_user_id="U0SECOND", user=world.approver2)
    world.approver2.notification_preferences = {"approvals": {"email": True, "slack": False}}
    world.approver2.save(update_fields=["notification_preferences"])
    with django_capture_on_commit_callbacks(execute=True):
        submit(world)
    text = received[0][1]["text"]
    assert "<@U0APPROVER>" in text and "U0SECOND" not in text


@override_settings(WEBHOOK_ALLOW_PRIVATE_TARGETS=True)
def test_a_failed_webhook_is_recorded_and_left_pending_for_the_task_to_retry(world, mailoutbox):
    world.system.slack_webhook_url = "http://127.0.0.1:9/hook"  # nothing listens on the discard port
    world.system.save()
    access_request = submit(world)
    result = notifications.dispatch("request_submitted", access_request.pk, notification_id="n-1")
    assert (result.sent, result.pending) == (2, 1)
    assert "could not be reached" in result.errors[0]
    slack = NotificationDelivery.objects.get(channel="slack")
    assert slack.status == "pending" and slack.attempts == 1 and "could not be reached" in slack.last_error
    assert len(mailoutbox) == 2
    from accessgov.tasks import notify

    assert notify.autoretry_for == (Exception,)
    assert notify.max_retries == 8


def test_notification_about_a_deleted_object_is_a_quiet_no_op():
    assert notifications.dispatch("request_submitted", 999999, notification_id="n-1").sent == 0


def test_each_person_reads_the_times_of_an_email_in_their_own_time_zone(
    world, mailoutbox, django_capture_on_commit_callbacks
):
    """A probe's finding: every email was in UTC, for a New York approver and a Berlin requester alike."""
    from datetime import UTC, datetime

    import time_machine

    world.approver.time_zone = "America/New_York"
    world.approver.save()
    world.approver2.time_zone = "not/a zone"  # unknown: UTC
    world.approver2.save()
    at_0430 = time_machine.travel(datetime(2026, 12, 7, 4, 30, tzinfo=UTC), tick=False)
    with at_0430, django_capture_on_commit_callbacks(execute=True):
        submit(world)
    by_person = {m.to[0]: " ".join(m.body.split()) for m in mailoutbox}
    lapses = "2026-12-08 04:30"  # the role's pending timeout (24 h) from 04:30 UTC
    assert f"Decide before {lapses} UTC" in by_person[world.approver2.email]
    assert "Decide before 2026-12-07 23:30 EST" in by_person[world.approver.email]
    assert "\u2063" not in "".join(by_person.values())  # no separator left anywhere
    assert "\u2063" not in mailoutbox[0].alternatives[0][0]


@override_settings(WEBHOOK_ALLOW_PRIVATE_TARGETS=True)  # the receiver is this test's, on 127.0.0.1
def test_a_slack_post_shows_each_reader_its_times_in_their_own_zone(
    world, slack_receiver, django_capture_on_commit_callbacks
):
    """A channel has many readers: its instants are Slack's date tokens (each reader's Slack shows them in their
    own zone), with the UTC text for a client that cannot; a typed separator stays text."""
    from datetime import UTC, datetime

    import time_machine

    url, received = slack_receiver
    world.system.slack_webhook_url = url
    world.system.save()
    at_0430 = datetime(2026, 12, 7, 4, 30, tzinfo=UTC)
    with time_machine.travel(at_0430, tick=False), django_capture_on_commit_callbacks(execute=True):
        submit(world, justification="see \u2063not a time\u2063 <!channel>")
    text = received[0][1]["text"]
    lapses = int((at_0430 + 24 * H).timestamp())  # the role's pending timeout
    assert f"Decide before <!date^{lapses}^{{date_num}} {{time}}|2026-12-08 04:30 UTC>, or it lapses." in text
    assert "&lt;!channel&gt;" in text and "<!channel>" not in text
    assert text.count("\u2063") == 2  # only the two typed: every instant became a token
