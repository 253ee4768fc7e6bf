"""Destructive actions ask first (issue 18, item 1): a plain POST without ``confirm=yes`` answers a page
that says what will happen, with counts, and changes nothing; the confirmed POST does it."""

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accessgov.models import AccessEvent, ApiToken, Eligibility, Grant, ReviewCampaign
from accessgov.services import access_requests as ar
from accessgov.services import reviews
from accessgov.services import tokens as token_services
from tests.conftest import verify_session

pytestmark = pytest.mark.django_db
H = timedelta(hours=1)


def as_(user) -> Client:
    return verify_session(Client(), user)


def _grant(world) -> Grant:
    access_request = ar.access_request_submit(
        world.requester, role=world.role, duration=H, justification="Investigating incident INC-42 on payments"
    )
    ar.access_request_approve(world.approver, access_request.pk)
    return Grant.objects.get(access_request=access_request)


def _events() -> int:
    return AccessEvent.objects.count()


def test_release_asks_first_and_changes_nothing_until_confirmed(world):
    grant = _grant(world)
    client = as_(world.requester)
    before = _events()
    response = client.post(reverse("grant_release", args=[grant.pk]))
    page = response.content.decode()
    assert response.status_code == 200
    assert "Release your access to Payments DB · read-write?" in page
    assert "1 grant ends now" in page and 'name="confirm" value="yes"' in page
    grant.refresh_from_db()
    assert grant.status == Grant.Status.ACTIVE and _events() == before
    assert client.post(reverse("grant_release", args=[grant.pk]), {"confirm": "yes"}).status_code == 302
    grant.refresh_from_db()
    assert grant.end_reason == Grant.EndReason.RELEASED and grant.ended_at is not None


def test_revoke_asks_first_keeping_the_reason_and_a_missing_reason_stays_on_the_form(world):
    grant = _grant(world)
    client = as_(world.owner)
    url = reverse("grant_revoke", args=[grant.pk])
    response = client.post(url, {"reason": ""})
    page = response.content.decode()
    assert response.status_code == 400
    assert 'aria-invalid="true"' in page and "Say why you revoke this access" in page and "autofocus" in page
    response = client.post(url, {"reason": "Incident closed"})
    page = response.content.decode()
    assert response.status_code == 200
    assert "1 grant ends now: requester loses access" in page
    assert 'name="reason" value="Incident closed"' in page
    grant.refresh_from_db()
    assert grant.ended_at is None
    assert client.post(url, {"reason": "Incident closed", "confirm": "yes"}).status_code == 302
    grant.refresh_from_db()
    assert grant.status == Grant.Status.REVOKED and grant.end_reason == Grant.EndReason.REVOKED


def test_revoke_by_someone_who_may_not_is_refused_before_any_confirmation(world):
    grant = _grant(world)
    assert as_(world.requester).post(reverse("grant_revoke", args=[grant.pk]), {"reason": "x"}).status_code == 403


def test_ending_eligibility_says_how_many_people_lose_it_and_what_is_withdrawn(world, make_user):
    from django.contrib.auth.models import Group

    group = Group.objects.create(name="payments on-call")
    members = [make_user(f"oncall{i}") for i in range(3)]
    for member in members:
        member.groups.add(group)
    eligibility = Eligibility.objects.create(role=world.role, group=group, starts_at=timezone.now() - H)
    ar.access_request_submit(members[0], role=world.role, duration=H, justification="Investigating the payout batch")
    client = as_(world.owner)
    url = reverse("eligibility_end", args=[eligibility.pk])
    page = client.post(url, {"reason": "Rota ended"}).content.decode()
    assert "End group payments on-call&#x27;s eligibility for Payments DB · read-write?" in page
    assert "3 people lose eligibility" in page
    assert "1 pending request on this role from them is withdrawn" in page
    eligibility.refresh_from_db()
    assert eligibility.ends_at is None
    assert client.post(url, {"reason": "Rota ended", "confirm": "yes"}).status_code == 302
    eligibility.refresh_from_db()
    assert eligibility.ends_at is not None


def test_closing_a_review_counts_revoked_items_grants_that_end_and_people_who_lose_eligibility(world):
    grant = _grant(world)
    campaign = reviews.review_campaign_create(
        world.auditor,
        name="Q4 review",
        systems=[world.system],
        due_at=timezone.now() + timedelta(days=7),
        no_response=ReviewCampaign.NoResponse.REVOKE,
    )
    client = as_(world.auditor)
    url = reverse("review_close", args=[campaign.pk])
    page = client.post(url).content.decode()
    total = campaign.items.count()
    assert f"{total} items revoked ({total} of them unanswered, by the no-response rule)." in page
    assert "1 active grant ends now." in page
    assert "1 person loses eligibility." in page
    assert "The review is due" in page
    campaign.refresh_from_db()
    grant.refresh_from_db()
    assert campaign.status == ReviewCampaign.Status.OPEN and grant.ended_at is None
    assert client.post(url, {"confirm": "yes"}).status_code == 302
    campaign.refresh_from_db()
    grant.refresh_from_db()
    assert campaign.status == ReviewCampaign.Status.CLOSED and grant.status == Grant.Status.REVOKED


def test_token_revoke_asks_first(world):
    token, _ = token_services.api_token_create(
        world.requester,
        user=world.requester,
        name="deploy job",
        kind=ApiToken.Kind.PERSONAL,
        expires_at=timezone.now() + timedelta(days=7),
        scopes=[ApiToken.Scope.REQUESTS_READ],
    )
    client = as_(world.requester)
    url = reverse("accounts:token_revoke", args=[token.pk])
    assert "1 token stops working now" in client.post(url).content.decode()
    token.refresh_from_db()
    assert token.revoked_at is None
    assert client.post(url, {"confirm": "yes"}).status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None


def test_cancelling_a_request_asks_first_and_says_what_is_lost(world):
    access_request = ar.access_request_submit(
        world.requester, role=world.role_two, duration=H, justification="Investigating incident INC-42 on payments"
    )
    client = as_(world.requester)
    url = reverse("request_cancel", args=[access_request.pk])
    before = _events()
    response = client.post(url)
    page = response.content.decode()
    assert response.status_code == 200
    assert f"Cancel your request #{access_request.pk} for" in page
    assert "approvers no longer see it" in page and 'name="confirm" value="yes"' in page
    access_request.refresh_from_db()
    assert access_request.status == "pending" and _events() == before
    assert client.post(url, {"confirm": "yes"}).status_code == 302
    access_request.refresh_from_db()
    assert access_request.status == "cancelled" and _events() == before + 1


def test_cancelling_counts_decisions_already_given(world):
    access_request = ar.access_request_submit(  # role_two needs two approvals: one given, still pending
        world.requester, role=world.role_two, duration=H, justification="Investigating incident INC-42 on payments"
    )
    ar.access_request_approve(world.approver, access_request.pk)
    page = as_(world.requester).post(reverse("request_cancel", args=[access_request.pk])).content.decode()
    assert "1 decision already given on it will count for nothing" in page


def test_cancel_is_refused_before_any_confirmation_for_others_and_for_a_decided_request(world):
    access_request = ar.access_request_submit(
        world.requester, role=world.role, duration=H, justification="Investigating incident INC-42 on payments"
    )
    url = reverse("request_cancel", args=[access_request.pk])
    response = as_(world.approver).post(url)
    assert response.status_code == 403 and 'name="confirm"' not in response.content.decode()
    ar.access_request_approve(world.approver, access_request.pk)
    response = as_(world.requester).post(url)
    assert response.status_code == 409
    assert "already approved" in response.content.decode() and 'name="confirm"' not in response.content.decode()
