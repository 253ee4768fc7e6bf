"""GitHub Issues as a role's ticket provider (issue 19, capability 2, the second provider), through the
portal's request form and the public webhook endpoint, against a local server speaking GitHub's REST API
(GET /repos/{owner}/{repo}/issues/{number}) and its signed ``issues`` webhook (X-Hub-Signature-256): the
issue must exist, be open, be in an allowed repository, carry an allowed label and (optionally) be assigned
to the requester; a ticket-bound grant ends when the issue closes (signed webhook, or one sweep). Abuse:
forged or missing signatures, a replayed delivery, an unknown repository, malformed references and a huge
body. Our client is never patched."""

import hashlib
import hmac
import json
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse

from accessgov.models import AccessEvent, AccessRequest, ChangeRequest, Grant, TicketProvider
from accessgov.services import access_requests as request_services
from accessgov.services import changes
from accessgov.services.integrations import integrations_sweep
from tests.conftest import verify_session
from tests.support.admin_forms import post_admin_form
from tests.support.fake_providers import GITHUB_TOKEN
from tests.support.integration_world import T0, client_for

pytestmark = pytest.mark.django_db
SECRET = "github-webhook-test-secret"
ISSUE = "acme/payments#42"


@pytest.fixture
def github_role(world, github_provider, fake):
    role = world.role
    role.ticket_required = True
    role.ticket_provider = github_provider
    role.ticket_projects = "acme/payments, acme/infra"
    role.ticket_bound = True
    role.save()
    fake.state.github_issues = {
        "acme/payments#42": {
            "title": "Rotate the payments DB credentials",
            "state": "open",
            "labels": ["incident", "sev2"],
            "assignees": ["requester"],
        },
        "acme/payments#7": {"title": "Old work", "state": "closed", "state_reason": "completed"},
        "acme/website#1": {"title": "Not an ops repository", "state": "open"},
        "acme/payments#9": {"title": "Someone else's", "state": "open", "labels": ["chore"], "assignees": ["bob"]},
        "acme/payments#10": {"title": "A pull request", "state": "open", "pull_request": True},
    }
    return role


def _request(world, ticket):
    return client_for(world.requester).post(
        reverse("request_new"),
        {
            "role": world.role.pk,
            "duration": "1h",
            "justification": "Rotate credentials per the issue",
            "ticket": ticket,
        },
    )


def test_an_open_github_issue_is_accepted_and_its_title_and_link_are_shown_to_approvers(
    world, github_role, fake, at_t0
):
    response = _request(world, ISSUE)
    assert response.status_code == 302, response.content.decode()[:500]
    access_request = AccessRequest.objects.get(requester=world.requester)
    assert access_request.ticket == ISSUE and access_request.ticket_bound
    assert access_request.ticket_title == "Rotate the payments DB credentials"
    assert access_request.ticket_url == "https://github.com/acme/payments/issues/42"
    queue = client_for(world.approver).get(reverse("approvals")).content.decode()
    assert "Rotate the payments DB credentials" in queue
    submitted = AccessEvent.objects.get(access_request=access_request, event_type=AccessEvent.Type.REQUEST_SUBMITTED)
    assert submitted.data["ticket_status"] == "open"
    ((method, path, _query, _body, headers),) = fake.calls_to("/github/")
    assert (method, path) == ("GET", "/github/repos/acme/payments/issues/42")
    headers = {name.lower(): value for name, value in headers.items()}
    assert headers["accept"] == "application/vnd.github+json" and headers["x-github-api-version"] == "2022-11-28"
    assert headers["authorization"] == f"Bearer {GITHUB_TOKEN}"


@pytest.mark.parametrize(
    ("ticket", "why"),
    [
        ("acme/payments#404", "does not exist"),
        ("acme/payments#7", "is closed (closed (completed))"),
        ("acme/website#1", "not in an allowed project"),
        ("acme/payments#10", "does not exist"),  # a pull request is not an issue
        ("", "requires a ticket reference"),
        ("unknown-org/secret-repo#3", "does not exist in GitHub"),
        ("acme/payments", "Name the GitHub issue as owner/repo#123"),
        ("acme/payments#0", "Name the GitHub issue as owner/repo#123"),
        ("acme/../payments#1", "Name the GitHub issue as owner/repo#123"),
        ("acme/payments#1 OR 1=1", "Name the GitHub issue as owner/repo#123"),
        ("-acme/payments#1", "Name the GitHub issue as owner/repo#123"),
        ("acme/payments#99999999999", "Name the GitHub issue as owner/repo#123"),
        ("OPS-42", "Name the GitHub issue as owner/repo#123"),
    ],
)
def test_a_missing_closed_foreign_or_malformed_github_reference_is_refused(
    world, github_role, fake, at_t0, ticket, why
):
    response = _request(world, ticket)
    assert response.status_code == 400
    assert why in response.content.decode(), response.content.decode()[:3000]
    assert not AccessRequest.objects.filter(requester=world.requester).exists()
    if "owner/repo#123" in why:
        assert fake.calls_to("/github/") == []  # refused before asking GitHub


def test_an_unknown_repository_is_a_404_at_github_and_refused(world, github_role, fake, at_t0):
    github_role.ticket_projects = ""
    github_role.save()
    response = _request(world, "unknown-org/secret-repo#3")
    assert response.status_code == 400 and "does not exist in GitHub" in response.content.decode()


def test_labels_are_the_type_and_assignees_are_matched_by_login(world, github_role, at_t0):
    github_role.ticket_issue_types = "incident, bug"
    github_role.ticket_assigned_to_requester = True
    github_role.save()
    refused = _request(world, "acme/payments#9")
    assert refused.status_code == 400 and "is labelled chore; allowed: incident, bug" in refused.content.decode()
    github_role.ticket_issue_types = ""
    github_role.save()
    refused = _request(world, "acme/payments#9")
    assert refused.status_code == 400 and "must be assigned to you" in refused.content.decode()
    github_role.ticket_issue_types = "Incident"
    github_role.save()
    assert _request(world, ISSUE).status_code == 302


@pytest.mark.parametrize("failure", [503, 401])
def test_github_unavailable_refuses_the_request_it_cannot_confirm(world, github_role, fake, at_t0, failure):
    if failure == 401:
        github_role.ticket_provider.api_token = "wrong-token"
        github_role.ticket_provider.save()
    else:
        fake.state.github_fail = failure
    response = _request(world, ISSUE)
    assert response.status_code == 400
    assert "could not be confirmed" in response.content.decode()
    assert "wrong-token" not in response.content.decode()
    assert not AccessRequest.objects.filter(requester=world.requester).exists()


def _approved_grant(world, django_capture_on_commit_callbacks) -> Grant:
    with django_capture_on_commit_callbacks(execute=True):
        assert _request(world, ISSUE).status_code == 302
        access_request = AccessRequest.objects.get(requester=world.requester)
        request_services.access_request_approve(world.approver, access_request.pk, comment="ok")
    return Grant.objects.get(access_request=access_request)


def test_a_closed_github_issue_ends_its_grant_within_one_sweep(
    world, github_role, fake, at_t0, django_capture_on_commit_callbacks
):
    grant = _approved_grant(world, django_capture_on_commit_callbacks)
    assert integrations_sweep(T0 + timedelta(minutes=1))["ticket_closed"] == 0
    fake.state.github_issues[ISSUE].update(state="closed", state_reason="completed")
    with django_capture_on_commit_callbacks(execute=True):
        assert integrations_sweep(T0 + timedelta(minutes=2))["ticket_closed"] == 1
    grant.refresh_from_db()
    assert grant.status == Grant.Status.REVOKED and grant.end_reason == Grant.EndReason.TICKET_CLOSED
    event = AccessEvent.objects.get(grant=grant, event_type=AccessEvent.Type.GRANT_TICKET_CLOSED)
    assert event.data["ticket"] == ISSUE and event.data["ticket_status"] == "closed (completed)"
    assert event.data["provider"] == "GitHub"
    assert grant.outbox_items.filter(action="remove").exists()


def _delivery(action: str = "closed", full_name: str = "acme/payments", number: int = 42) -> bytes:
    """An ``issues`` delivery as GitHub documents it (the fields we read, and some we do not)."""
    return json.dumps(
        {
            "action": action,
            "issue": {"number": number, "title": "Rotate", "state": "closed", "html_url": "https://github.com/x"},
            "repository": {"id": 1, "name": full_name.split("/")[1], "full_name": full_name, "private": True},
            "sender": {"login": "someone"},
        }
    ).encode()


def _sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _webhook(provider_id, body: bytes, signature: str | None, *, event="issues", delivery="d-1"):
    headers = {"HTTP_X_GITHUB_EVENT": event}
    if signature is not None:
        headers["HTTP_X_HUB_SIGNATURE_256"] = signature
    if delivery is not None:
        headers["HTTP_X_GITHUB_DELIVERY"] = delivery
    return Client().post(
        reverse("github_webhook", args=[provider_id]), data=body, content_type="application/json", **headers
    )


def test_a_signed_github_issues_webhook_ends_the_grant_when_the_issue_closed(
    world, github_role, fake, at_t0, django_capture_on_commit_callbacks
):
    grant = _approved_grant(world, django_capture_on_commit_callbacks)
    fake.state.github_issues[ISSUE].update(state="closed", state_reason="completed")
    body = _delivery()
    with django_capture_on_commit_callbacks(execute=True):
        response = _webhook(github_role.ticket_provider_id, body, _sign(body))
    assert response.status_code == 200 and response.json() == {"ticket": ISSUE, "grants_ended": 1}
    grant.refresh_from_db()
    assert grant.end_reason == Grant.EndReason.TICKET_CLOSED
    event = AccessEvent.objects.get(grant=grant, event_type="grant.ticket_closed")
    assert (
        event.actor_label == "system:github-webhook" and event.reason == f"Ticket {ISSUE} closed (closed (completed))."
    )


def test_a_forged_or_unsigned_github_webhook_is_refused_and_changes_nothing(
    world, github_role, fake, at_t0, django_capture_on_commit_callbacks, jira_provider
):
    grant = _approved_grant(world, django_capture_on_commit_callbacks)
    fake.state.github_issues[ISSUE].update(state="closed")  # even a true claim needs the signature
    body = _delivery()
    sha1 = "sha1=" + hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
    for signature in (None, "", _sign(body, "guessed-secret"), "sha256=" + "0" * 64, _sign(body + b" "), sha1,
                      "sha256=é", _sign(body)[:-2], _sign(body) + "00"):  # fmt: skip
        assert _webhook(github_role.ticket_provider_id, body, signature).status_code == 401, signature
    assert _webhook(999, body, _sign(body)).status_code == 401
    # A Jira provider's id on the GitHub endpoint (and the other way round) is not a GitHub provider.
    jira_provider.webhook_secret = SECRET
    jira_provider.save()
    assert _webhook(jira_provider.pk, body, _sign(body)).status_code == 401
    jira = Client().post(
        reverse("jira_webhook", args=[github_role.ticket_provider_id]),
        data=body,
        content_type="application/json",
        HTTP_X_HUB_SIGNATURE=_sign(body),
    )
    assert jira.status_code == 401
    grant.refresh_from_db()
    assert grant.status == Grant.Status.ACTIVE


def test_a_replayed_delivery_is_answered_without_acting_and_a_stale_closed_claim_is_checked_against_github(
    world, github_role, fake, at_t0, django_capture_on_commit_callbacks
):
    """The body's action is never trusted: GitHub still says the issue is open (it was reopened), so a
    correctly signed "closed" delivery ends nothing; the same delivery id again is a replay and GitHub is
    not even asked."""
    grant = _approved_grant(world, django_capture_on_commit_callbacks)
    body = _delivery("closed")
    first = _webhook(github_role.ticket_provider_id, body, _sign(body), delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958")
    assert first.status_code == 200 and first.json()["grants_ended"] == 0
    asked = len(fake.calls_to("/github/"))
    fake.state.github_issues[ISSUE].update(state="closed")
    replay = _webhook(
        github_role.ticket_provider_id, body, _sign(body), delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958"
    )
    assert replay.status_code == 200 and replay.json()["duplicate"] is True
    assert len(fake.calls_to("/github/")) == asked
    grant.refresh_from_db()
    assert grant.status == Grant.Status.ACTIVE  # the sweep (polling) still catches the real close


def test_a_delivery_for_an_unknown_repository_ends_nothing_and_asks_nothing(
    world, github_role, fake, at_t0, django_capture_on_commit_callbacks
):
    grant = _approved_grant(world, django_capture_on_commit_callbacks)
    before = len(fake.calls_to("/github/"))
    for full_name, number in (("unknown-org/secret-repo", 42), ("acme/payments", 43)):
        body = _delivery(full_name=full_name, number=number)
        response = _webhook(github_role.ticket_provider_id, body, _sign(body), delivery=f"{full_name}-{number}")
        assert response.status_code == 200 and response.json()["grants_ended"] == 0
    assert len(fake.calls_to("/github/")) == before
    grant.refresh_from_db()
    assert grant.status == Grant.Status.ACTIVE


def test_huge_malformed_or_other_github_deliveries_are_answered_cleanly(world, github_role, at_t0):
    provider_id = github_role.ticket_provider_id
    huge = b"{" + b" " * (300 * 1024) + b"}"
    assert _webhook(provider_id, huge, _sign(huge)).status_code == 413
    ping = json.dumps({"zen": "Keep it logically awesome.", "hook_id": 1}).encode()
    assert _webhook(provider_id, ping, _sign(ping), event="ping").status_code == 204
    nested = b"[" * 100_000 + b"]" * 100_000
    for body in (
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'{"issue": 5}',
        b'{"issue": {"number": "42"}, "repository": {"full_name": "acme/payments"}}',
        b'{"issue": {"number": 42}, "repository": {"full_name": "../../etc/passwd"}}',
        b'{"issue": {"number": true}, "repository": {"full_name": "acme/payments"}}',
        b'{"issue": {"number": 42, "pull_request": {}}, "repository": {"full_name": "acme/payments"}}',
        nested[: 200 * 1024],
    ):
        response = _webhook(provider_id, body, _sign(body))
        assert response.status_code == 400, (body[:60], response.status_code)
    body = _delivery()
    assert _webhook(provider_id, body, _sign(body), delivery=None).status_code == 400
    assert _webhook(provider_id, body, _sign(body), delivery="x" * 101).status_code == 400


def test_a_github_ticket_provider_is_added_in_the_admin_four_eyed_with_a_write_only_token(make_user, settings):
    settings.INTEGRATIONS_ALLOW_PRIVATE_URLS = True  # no DNS here: the guard would not resolve the name
    first = make_user("admin1", is_staff=True, is_superuser=True)
    second = make_user("admin2", is_staff=True, is_superuser=True)
    token, hook = "github_pat_admin-test-value-1234", "github-hook-secret-5678"
    response = post_admin_form(
        verify_session(Client(), first),
        reverse("admin:accessgov_ticketprovider_add"),
        "ticketprovider_form",
        name="GitHub",
        kind="github",
        base_url="https://api.github.com",
        api_token=token,
        webhook_secret=hook,
    )
    assert response.status_code == 302
    change = ChangeRequest.objects.get(kind=ChangeRequest.Kind.TICKET_PROVIDER)
    assert token not in str(change.changes) + str(change.payload) and hook not in str(change.payload)
    changes.change_approve(second, change.pk)
    provider = TicketProvider.objects.get()
    assert provider.kind == TicketProvider.Kind.GITHUB and provider.api_token == token
    page = verify_session(Client(), first).get(reverse("admin:accessgov_ticketprovider_change", args=[provider.pk]))
    assert token not in page.content.decode() and "GitHub Issues" in page.content.decode()
