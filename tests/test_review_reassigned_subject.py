"""A review.reassigned event says whose access the item is about, as review.decided and review.applied do:
the item kind, its eligibility or grant, and the subject (a user or a group); an item about a grant names
the grant, so the audit trail's CSV fills its grantee column."""

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from accessgov.models import AccessEvent, Eligibility, Grant
from accessgov.services import access_requests as ar
from accessgov.services import reviews
from tests.conftest import verify_session

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 9, 1, 9, 0, tzinfo=UTC)


def part(data: dict, expected: dict) -> dict:
    return {key: data.get(key, "<missing>") for key in expected}


def test_a_reassignment_names_whose_access_the_item_is_about_and_its_grant(world, make_user):
    team = Group.objects.create(name="sre")
    deputy = make_user("deputy")
    with time_machine.travel(T0, tick=False):
        group_eligibility = Eligibility.objects.create(role=world.role, group=team, starts_at=T0)
        access_request = ar.access_request_submit(
            world.requester, role=world.role, duration=timedelta(hours=4), justification="Investigating INC-42"
        )
        ar.access_request_approve(world.approver, access_request.pk)
        grant = Grant.objects.get(access_request=access_request)
    with time_machine.travel(T0 + timedelta(hours=1), tick=False):
        campaign = reviews.review_campaign_create(
            world.auditor,
            name="Q3 review",
            systems=[world.system],
            due_at=T0 + timedelta(days=14),
            long_grant_threshold=timedelta(minutes=30),
        )
        grant_item = campaign.items.get(grant__isnull=False)
        group_item = campaign.items.get(subject_group=team)
        reviews.review_item_reassign(world.auditor, grant_item.pk, reviewer=deputy)
        reviews.review_item_reassign(world.auditor, group_item.pk, reviewer=deputy)

    about_grant = AccessEvent.objects.get(event_type="review.reassigned", data__item_id=grant_item.pk)
    assert about_grant.grant_id == grant.pk
    expected = {
        "item_kind": "grant",
        "grant_id": grant.pk,
        "eligibility_id": None,
        "subject_user_id": world.requester.pk,
        "subject_username": "requester",
        "to": deputy.pk,
    }
    assert part(about_grant.data, expected) == expected
    about_group = AccessEvent.objects.get(event_type="review.reassigned", data__item_id=group_item.pk)
    assert about_group.grant_id is None
    expected = {
        "item_kind": "eligibility",
        "eligibility_id": group_eligibility.pk,
        "grant_id": None,
        "subject_group_id": team.pk,
        "subject_group_name": "sre",
        "to": deputy.pk,
    }
    assert part(about_group.data, expected) == expected

    # The audit trail's CSV names the grantee of a reassignment of an item about a grant.
    with time_machine.travel(T0 + timedelta(hours=2), tick=False):
        response = verify_session(Client(), world.auditor).get(
            reverse("audit_export"), {"event_type": "review.reassigned"}
        )
    body = b"".join(response.streaming_content).decode().removeprefix("\ufeff")
    rows = list(csv.DictReader(io.StringIO(body, newline="")))
    assert len(rows) == 2
    assert {r["grantee"] for r in rows if r["grant_id"] == str(grant.pk)} == {"requester"}
    assert {r["grantee"] for r in rows if not r["grant_id"]} == {""}  # a group's eligibility: no one person
