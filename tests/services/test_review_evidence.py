"""What an access review's events and its CSV say (issue 6, probe): whose access each decision is about,
and that a "keep" never lengthens an eligibility an owner limited — with the old and new end in the ledger."""

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from accessgov.models import AccessEvent, Eligibility, Grant, ReviewItem
from accessgov.services import access_requests as ar
from accessgov.services import reviews
from tests.conftest import verify_session

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 9, 1, 9, 0, tzinfo=UTC)
KEEP_FOR = timedelta(days=100)
CLOSE = T0 + timedelta(days=15)


def as_(user) -> Client:
    return verify_session(Client(), user)


def csv_rows(response) -> list[dict[str, str]]:
    body = b"".join(response.streaming_content).decode().removeprefix("\ufeff")
    return list(csv.DictReader(io.StringIO(body, newline="")))


def open_campaign(w, **kw):
    return reviews.review_campaign_create(
        w.auditor, name="Q3 review", systems=[w.system], due_at=T0 + timedelta(days=14), keep_for=KEEP_FOR, **kw
    )


def eligible(make_user, w, name: str, ends_at: datetime | None) -> Eligibility:
    return Eligibility.objects.create(
        role=w.role, user=make_user(name), starts_at=datetime(2026, 1, 1, tzinfo=UTC), ends_at=ends_at
    )


def part(data: dict, expected: dict) -> dict:
    """``data``'s values for the keys ``expected`` names (compared whole, so a failure shows the difference)."""
    return {key: data.get(key, "<missing>") for key in expected}


def applied(item: ReviewItem) -> AccessEvent:
    return AccessEvent.objects.get(event_type="review.applied", data__item_id=item.pk)


def test_a_keep_never_lengthens_an_eligibility_and_the_ledger_records_each_end_it_moves(world, make_user):
    with time_machine.travel(T0, tick=False):
        bob = eligible(make_user, world, "bob", datetime(2026, 12, 12, tzinfo=UTC))  # ends before close + 100 days
        carol = eligible(make_user, world, "carol", datetime(2027, 9, 1, tzinfo=UTC))  # ends after it
        dave = eligible(make_user, world, "dave", datetime(2026, 10, 30, tzinfo=UTC))  # revoked
        erin = eligible(make_user, world, "erin", T0 + timedelta(days=5))  # runs out during the campaign
        standing = Eligibility.objects.get(role=world.role, user=world.requester)
        campaign = open_campaign(world)
        items = {i.eligibility_id: i for i in campaign.items.filter(role=world.role)}
        for eligibility in (bob, carol, standing):
            reviews.review_item_decide(world.owner, items[eligibility.pk].pk, decision="keep")
        for eligibility in (dave, erin):
            reviews.review_item_decide(world.owner, items[eligibility.pk].pk, decision="revoke", comment="Left team")
    with time_machine.travel(CLOSE, tick=False):
        reviews.review_campaign_close(world.auditor, campaign.pk)
    for eligibility in (bob, carol, dave, erin, standing):
        eligibility.refresh_from_db()
    # The owner's earlier end stands; a later one (or none) is brought down to close + keep_for.
    assert bob.ends_at == datetime(2026, 12, 12, tzinfo=UTC)
    assert carol.ends_at == standing.ends_at == CLOSE + KEEP_FOR
    assert dave.ends_at == CLOSE
    assert erin.ends_at == T0 + timedelta(days=5)  # a revoke does not move an end that has passed either
    # The ledger says what moved, from what to what (django-auditlog does not see the close's update()).
    assert "eligibility_ends_after" not in applied(items[bob.pk]).data
    assert "eligibility_ends_after" not in applied(items[erin.pk]).data
    expected = {
        "eligibility_ends_before": "2027-09-01T00:00:00+00:00",
        "eligibility_ends_after": (CLOSE + KEEP_FOR).isoformat(),
    }
    assert part(applied(items[carol.pk]).data, expected) == expected
    assert applied(items[standing.pk]).data["eligibility_ends_before"] is None
    assert applied(items[standing.pk]).data["eligibility_ends_after"] == (CLOSE + KEEP_FOR).isoformat()
    assert applied(items[dave.pk]).data["eligibility_ends_before"] == "2026-10-30T00:00:00+00:00"
    assert applied(items[dave.pk]).data["eligibility_ends_after"] == CLOSE.isoformat()
    # Exactly one event per item, as before.
    assert AccessEvent.objects.filter(event_type="review.applied").count() == campaign.items.count()
    # The review CSV shows the same.
    with time_machine.travel(CLOSE + timedelta(hours=1), tick=False):
        rows = {r["item"]: r for r in csv_rows(as_(world.auditor).get(reverse("review_export", args=[campaign.pk])))}
    assert (
        rows[str(items[carol.pk].pk)]["eligibility_ends_before"],
        rows[str(items[carol.pk].pk)]["eligibility_ends_after"],
    ) == (
        "2027-09-01T00:00:00Z",
        "2026-12-25T09:00:00Z",
    )
    assert (
        rows[str(items[bob.pk].pk)]["eligibility_ends_before"],
        rows[str(items[bob.pk].pk)]["eligibility_ends_after"],
    ) == ("", "")
    assert rows[str(items[standing.pk].pk)]["eligibility_ends_before"] == ""


def test_review_events_name_whose_access_was_decided_and_its_grant(world):
    team = Group.objects.create(name="sre")
    with time_machine.travel(T0, tick=False):
        group_eligibility = Eligibility.objects.create(role=world.role, group=team, starts_at=T0)
        access_request = ar.access_request_submit(
            world.requester, role=world.role, duration=timedelta(hours=4), justification="Investigating INC-42"
        )
        ar.access_request_approve(world.approver, access_request.pk)
        grant = Grant.objects.get(access_request=access_request)
    with time_machine.travel(T0 + timedelta(hours=1), tick=False):
        campaign = open_campaign(world, long_grant_threshold=timedelta(minutes=30))
        grant_item = campaign.items.get(grant__isnull=False)
        group_item = campaign.items.get(subject_group=team)
        reviews.review_item_decide(world.owner, grant_item.pk, decision="keep")
        reviews.review_item_decide(world.owner, group_item.pk, decision="revoke", comment="Team disbanded")
        reviews.review_campaign_close(world.auditor, campaign.pk)
    for event_type in ("review.decided", "review.applied"):
        about_grant = AccessEvent.objects.get(event_type=event_type, data__item_id=grant_item.pk)
        assert about_grant.grant_id == grant.pk
        expected = {
            "item_kind": "grant",
            "grant_id": grant.pk,
            "eligibility_id": None,
            "subject_user_id": world.requester.pk,
            "subject_username": "requester",
        }
        assert part(about_grant.data, expected) == expected
        about_group = AccessEvent.objects.get(event_type=event_type, data__item_id=group_item.pk)
        assert about_group.grant_id is None
        expected = {
            "item_kind": "eligibility",
            "eligibility_id": group_eligibility.pk,
            "grant_id": None,
            "subject_group_id": team.pk,
            "subject_group_name": "sre",
        }
        assert part(about_group.data, expected) == expected
    # The audit trail's CSV names the grantee of a decision about a grant.
    with time_machine.travel(T0 + timedelta(hours=2), tick=False):
        response = as_(world.auditor).get(reverse("audit_export"), {"event_type": "review.decided"})
    rows = csv_rows(response)
    assert len(rows) == 2
    assert {r["grantee"] for r in rows if not r["grant_id"]} == {""}  # about a group's eligibility: no grantee
    assert {r["grantee"] for r in rows if r["grant_id"] == str(grant.pk)} == {"requester"}
