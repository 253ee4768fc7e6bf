"""Tickets that are real (issue 19, capability 2), through the portal's request form and the public
webhook endpoint, against a local server speaking Jira's REST API: the ticket must exist, be open, be in
an allowed project/type and (optionally) assigned to the requester; its title and link are stored and
shown to approvers; a ticket-bound grant ends when the ticket closes (signed webhook, or one sweep)."""

import hashlib
import hmac
import json
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse

from accessgov.models import AccessEvent, AccessRequest, Grant, User
from accessgov.services import access_requests as request_services
from accessgov.services.integrations import integrations_sweep
from tests.support.integration_world import T0, client_for

pytestmark = pytest.mark.django_db
SECRET = "jira-webhook-test-secret"


@pytest.fixture
def ticket_role(world, jira_provider, fake):
    role = world.role
    role.ticket_required = True
    role.ticket_provider = jira_provider
    role.ticket_projects = "OPS, INC"
    role.ticket_bound = True
    role.save()
    fake.state.jira_issues = {
        "OPS-42": {
            "summary": "Rotate the payments DB credentials",
            "status": "In Progress",
            "assignee": world.requester.email,
        },
        "OPS-7": {"summary": "Old work", "status": "Done"},
        "HR-1": {"summary": "Not an ops ticket", "status": "To Do"},
        "OPS-9": {"summary": "Someone else's", "status": "To Do", "assignee": "other@example.com", "type": "Epic"},
    }
    return role


def _request(world, ticket):
    return client_for(world.requester).post(
        reverse("request_new"),
        {
            "role": world.role.pk,
            "duration": "1h",
            "justification": "Rotate credentials per the ticket",
            "ticket": ticket,
        },
    )


def test_an_open_ticket_is_accepted_and_its_title_and_link_are_shown_to_approvers(world, ticket_role, fake, at_t0):
    response = _request(world, "OPS-42")
    assert response.status_code == 302
    access_request = AccessRequest.objects.get(requester=world.requester)
    assert access_request.ticket_title == "Rotate the payments DB credentials"
    assert access_request.ticket_url == f"{fake.url}/jira/browse/OPS-42"
    assert access_request.ticket_bound
    queue = client_for(world.approver).get(reverse("approvals")).content.decode()
    assert "Rotate the payments DB credentials" in queue and f"{fake.url}/jira/browse/OPS-42" in queue
    detail = client_for(world.approver).get(reverse("request_detail", args=[access_request.pk])).content.decode()
    assert "access ends when it closes" in detail
    submitted = AccessEvent.objects.get(access_request=access_request, event_type=AccessEvent.Type.REQUEST_SUBMITTED)
    assert submitted.data["ticket_status"] == "In Progress"


@pytest.mark.parametrize(
    ("ticket", "why"),
    [
        ("OPS-404", "does not exist"),
        ("OPS-7", "is closed (Done)"),
        ("HR-1", "not in an allowed project"),
        ("", "requires a ticket"),
        ("ops-42' OR 1=1", "does not exist"),
    ],
)
def test_a_missing_closed_or_foreign_ticket_is_refused(world, ticket_role, at_t0, ticket, why):
    response = _request(world, ticket)
    assert response.status_code == 400
    assert why in response.content.decode()
    assert not AccessRequest.objects.filter(requester=world.requester).exists()


def test_type_and_assignee_rules(world, ticket_role, at_t0):
    ticket_role.ticket_issue_types = "Task, Bug"
    ticket_role.ticket_assigned_to_requester = True
    ticket_role.save()
    refused = _request(world, "OPS-9")
    assert refused.status_code == 400 and "is a Epic" in refused.content.decode()
    ticket_role.ticket_issue_types = ""
    ticket_role.save()
    refused = _request(world, "OPS-9")
    assert refused.status_code == 400 and "must be assigned to you" in refused.content.decode()
    # Jira names the assignee by address: while another active account has the requester's, it is nobody's.
    twin = User.objects.create(username="twin", email=world.requester.email)
    assert "must be assigned to you" in _request(world, "OPS-42").content.decode()
    User.objects.filter(pk=twin.pk).update(is_active=False)
    assert _request(world, "OPS-42").status_code == 302


@pytest.mark.parametrize("failure", [503, 401])
def test_jira_unavailable_refuses_the_request_it_cannot_confirm(world, ticket_role, fake, at_t0, failure):
    fake.state.jira_fail = failure
    if failure == 401:
        fake.state.jira_fail = 0
        ticket_role.ticket_provider.api_token = "wrong-token"
        ticket_role.ticket_provider.save()
    response = _request(world, "OPS-42")
    assert response.status_code == 400
    assert "could not be confirmed" in response.content.decode() or "could not answer" in response.content.decode()
    assert "wrong-token" not in response.content.decode()
    assert not AccessRequest.objects.filter(requester=world.requester).exists()


def _approved_grant(world, django_capture_on_commit_callbacks) -> Grant:
    with django_capture_on_commit_callbacks(execute=True):
        assert _request(world, "OPS-42").status_code == 302
        access_request = AccessRequest.objects.get(requester=world.requester)
        request_services.access_request_approve(world.approver, access_request.pk, comment="ok")
    return Grant.objects.get(access_request=access_request)


def test_a_closed_ticket_ends_its_grant_within_one_sweep(
    world, ticket_role, fake, at_t0, django_capture_on_commit_callbacks
):
    grant = _approved_grant(world, django_capture_on_commit_callbacks)
    assert integrations_sweep(T0 + timedelta(minutes=1))["ticket_closed"] == 0
    grant.refresh_from_db()
    assert grant.status == Grant.Status.ACTIVE
    fake.state.jira_issues["OPS-42"]["status"] = "Done"
    with django_capture_on_commit_callbacks(execute=True):
        assert integrations_sweep(T0 + timedelta(minutes=2))["ticket_closed"] == 1
    grant.refresh_from_db()
    assert grant.status == Grant.Status.REVOKED
    assert grant.end_reason == Grant.EndReason.TICKET_CLOSED
    event = AccessEvent.objects.get(grant=grant, event_type=AccessEvent.Type.GRANT_TICKET_CLOSED)
    assert event.data["ticket"] == "OPS-42" and event.data["ticket_status"] == "Done"
    assert grant.outbox_items.filter(action="remove").exists()


def test_a_jira_outage_during_the_sweep_ends_nothing(
    world, ticket_role, fake, at_t0, django_capture_on_commit_callbacks
):
    grant = _approved_grant(world, django_capture_on_commit_callbacks)
    fake.state.jira_fail = 503
    assert integrations_sweep(T0 + timedelta(minutes=1))["ticket_closed"] == 0
    grant.refresh_from_db()
    assert grant.status == Grant.Status.ACTIVE


def _webhook(provider_id, body: bytes, signature: str | None):
    headers = {"HTTP_X_HUB_SIGNATURE": signature} if signature is not None else {}
    return Client().post(
        reverse("jira_webhook", args=[provider_id]), data=body, content_type="application/json", **headers
    )


def _sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_a_signed_jira_webhook_ends_the_grant_when_the_ticket_closed(
    world, ticket_role, fake, at_t0, django_capture_on_commit_callbacks
):
    grant = _approved_grant(world, django_capture_on_commit_callbacks)
    fake.state.jira_issues["OPS-42"]["status"] = "Closed"
    body = json.dumps({"webhookEvent": "jira:issue_updated", "issue": {"key": "OPS-42"}}).encode()
    with django_capture_on_commit_callbacks(execute=True):
        response = _webhook(ticket_role.ticket_provider_id, body, _sign(body))
    assert response.status_code == 200 and response.json()["grants_ended"] == 1
    grant.refresh_from_db()
    assert grant.end_reason == Grant.EndReason.TICKET_CLOSED
    assert AccessEvent.objects.get(grant=grant, event_type="grant.ticket_closed").actor_label == "system:jira-webhook"


def test_a_forged_jira_webhook_is_refused_and_changes_nothing(
    world, ticket_role, fake, at_t0, django_capture_on_commit_callbacks
):
    grant = _approved_grant(world, django_capture_on_commit_callbacks)
    fake.state.jira_issues["OPS-42"]["status"] = "Done"  # even a true claim needs the signature
    body = json.dumps({"webhookEvent": "jira:issue_updated", "issue": {"key": "OPS-42"}}).encode()
    for signature in (None, "", _sign(body, "guessed-secret"), "sha256=" + "0" * 64, _sign(body + b" "), "sha256=é"):
        assert _webhook(ticket_role.ticket_provider_id, body, signature).status_code == 401
    assert _webhook(999, body, _sign(body)).status_code == 401
    grant.refresh_from_db()
    assert grant.status == Grant.Status.ACTIVE


def test_a_signed_webhook_claiming_a_closed_ticket_is_checked_against_jira(
    world, ticket_role, fake, at_t0, django_capture_on_commit_callbacks
):
    """The body's status is never trusted: Jira still says the ticket is open, so nothing ends (a replay
    of an old "closed" webhook can do no more)."""
    grant = _approved_grant(world, django_capture_on_commit_callbacks)
    body = json.dumps({"issue": {"key": "OPS-42", "fields": {"status": {"name": "Done"}}}}).encode()
    response = _webhook(ticket_role.ticket_provider_id, body, _sign(body))
    assert response.status_code == 200 and response.json()["grants_ended"] == 0
    grant.refresh_from_db()
    assert grant.status == Grant.Status.ACTIVE


def test_huge_or_malformed_webhook_bodies_are_refused_cleanly(world, ticket_role, at_t0):
    provider_id = ticket_role.ticket_provider_id
    huge = b"{" + b" " * (300 * 1024) + b"}"
    assert _webhook(provider_id, huge, _sign(huge)).status_code == 413
    deep = b"[" * 50_000 + b"]" * 50_000  # past Python's recursion limit: was a 500
    for body in (b"not json", b"\xff\xfe", b"[]", b'{"issue": {"key": "../../etc"}}', b'{"issue": 5}', deep):
        response = _webhook(provider_id, body, _sign(body))
        assert response.status_code in (400, 204), (body, response.status_code)


@pytest.mark.parametrize(
    ("ticket", "refusal"),
    [("OPS-7", "is closed"), ("OPS-404", "does not exist"), ("HR-1", "OPS, INC"), ("OPS-9", "must be assigned to you")],
)
def test_an_extension_s_ticket_is_checked_with_the_provider_like_a_request_s(
    world, ticket_role, fake, at_t0, ticket, refusal
):
    """An extension's ticket was only pattern-matched: a closed or missing one was accepted, and a static
    auto-approval rule then extended the grant at once."""
    from accessgov.models import AutoApprovalRule

    ticket_role.ticket_assigned_to_requester = True
    ticket_role.save()
    access_request = request_services.access_request_submit(
        world.requester,
        role=world.role,
        duration=timedelta(hours=1),
        justification="Rotate the credentials",
        ticket="OPS-42",
    )
    request_services.access_request_approve(world.approver, access_request.pk)
    grant = Grant.objects.get()
    AutoApprovalRule.objects.create(role=world.role, name="business hours")
    response = client_for(world.requester).post(
        reverse("grant_extend", args=[grant.pk]),
        {"duration": "30m", "justification": "Still rotating the credentials", "ticket": ticket},
    )
    assert response.status_code == 400
    assert refusal.lower() in response.content.decode().lower()
    assert not AccessRequest.objects.filter(kind="extension").exists()
    grant.refresh_from_db()
    assert grant.extension_count == 0
    # The ticket that is open, allowed and the requester's extends, and is recorded with its title.
    response = client_for(world.requester).post(
        reverse("grant_extend", args=[grant.pk]),
        {"duration": "30m", "justification": "Still rotating the credentials", "ticket": "OPS-42"},
    )
    assert response.status_code == 302
    extension = AccessRequest.objects.get(kind="extension")
    assert (extension.status, extension.ticket_title) == ("approved", "Rotate the payments DB credentials")
