"""Hostile text in every free-text field a person can set is shown as text: escaped in every page that
shows it (checked on every response by the crawl, tests/security/test_crawl.py), in the HTML part of
every email, verbatim (never as markup or extra header lines) in the text part, escaped for Slack, and
formula-neutralised but otherwise exact in every CSV export."""

import csv
import io
import json

import pytest
from django.core import mail
from django.test import Client, override_settings
from django.urls import reverse
from django.utils.html import escape

from accessgov import notifications
from tests.conftest import verify_session
from tests.support.crawl import inline_script_problems, raw_markup
from tests.support.security_world import FIELDS, IMG, SCRIPT, marker, payload

pytestmark = pytest.mark.django_db


def test_hostile_text_in_emails_is_escaped_in_html_and_verbatim_in_text(hostile):
    assert len(mail.outbox) > 10
    html_seen = text_seen = ""
    for message in mail.outbox:
        assert "\n" not in message.subject and "\r" not in message.subject
        (html, mimetype), *_ = message.alternatives
        assert mimetype == "text/html"
        assert raw_markup(html) == [], message.subject
        assert inline_script_problems(html) == [], message.subject
        assert "&lt;" not in message.body, "the text part is plain text: shown as typed, not as entities"
        html_seen += html
        text_seen += message.body
    in_emails = {
        "requester first name",
        "system name",
        "role name",
        "justification",
        "ticket",
        "denial comment",
        "break-glass reason",
        "review name",
    }
    assert {f for f in FIELDS if escape(marker(f)) in html_seen} >= in_emails
    assert {f for f in FIELDS if marker(f) in text_seen} >= in_emails


def test_a_newline_in_a_name_never_adds_an_email_header(world, django_capture_on_commit_callbacks):
    from datetime import timedelta

    from accessgov.services import access_requests

    world.role.name = "read-write\r\nBcc: everyone@example.com"
    world.role.save()
    mail.outbox = []
    with django_capture_on_commit_callbacks(execute=True):
        access_requests.access_request_submit(
            world.requester, role=world.role, duration=timedelta(minutes=30), justification="Nightly batch fix"
        )
    assert mail.outbox, "the notification was sent despite the odd name"
    for message in mail.outbox:
        headers = message.message().as_string().split("\n\n", 1)[0]
        assert "Bcc:" not in headers.replace("Subject:", "")
        assert message.bcc == []
        assert "\n" not in message.subject


@override_settings(WEBHOOK_ALLOW_PRIVATE_TARGETS=True)  # the receiver is this test's, on 127.0.0.1
def test_slack_messages_show_user_text_as_typed(world):
    from datetime import timedelta

    from accessgov.services import access_requests
    from tests.support.receivers import SlackReceiver

    with SlackReceiver() as receiver:
        world.system.slack_webhook_url = receiver.url
        world.system.save()
        access_request = access_requests.access_request_submit(
            world.requester,
            role=world.role,
            duration=timedelta(minutes=30),
            justification="<!channel> <https://evil.example|Approve here> & more",
        )
        notifications.send_slack(notifications.request_submitted(access_request))
    text = receiver.posts[0]["json"]["text"]
    assert "&lt;!channel&gt; &lt;https://evil.example|Approve here&gt; &amp; more" in text
    assert "<!channel>" not in text and "<https://evil.example" not in text
    assert text.endswith("|Open>")  # the portal's own link still works


EXPORTS = [
    ("audit_export", []),
    ("report_access_export", []),
    ("report_approvals_export", []),
    ("report_break_glass_export", []),
    ("report_denied_export", []),
]


def _cells(response) -> list[str]:
    body = b"".join(response.streaming_content).decode("utf-8-sig")
    return [cell for row in csv.reader(io.StringIO(body)) for cell in row]


def test_hostile_text_in_csv_exports_is_formula_neutralised_and_otherwise_exact(world, hostile):
    client = verify_session(Client(), world.auditor)
    urls = [reverse(name, args=args) for name, args in EXPORTS]
    urls.append(reverse("review_export", args=[hostile.campaign_id]))
    payloads = {payload(field): field for field in FIELDS}
    found, problems = set(), []
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        for cell in _cells(response):
            if SCRIPT not in cell and IMG not in cell:
                continue
            if cell.startswith(("=", "+", "-", "@", "\t", "\r")):
                problems.append(f"{url}: formula cell {cell[:60]!r}")
            if cell.startswith("'") and cell[1:] in payloads:
                found.add(payloads[cell[1:]])
            elif cell.startswith("{") or cell.startswith("'{"):
                # Structured columns are JSON: every string inside keeps the payload exactly.
                found |= {field for text, field in payloads.items() if json.dumps(text)[1:-1] in cell}
    assert problems == [], "\n".join(problems)
    in_exports = {"justification", "ticket", "denial comment", "system name", "role name", "review comment"}
    assert found >= in_exports, f"not seen in any export: {in_exports - found}"
