"""Review pages as reviewers, auditors and others see them; bulk keep with confirmation; evidence CSV."""

import csv
import io
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accessgov.models import AccessEvent, Grant, ReviewItem
from accessgov.services import reviews
from tests.conftest import verify_session

pytestmark = pytest.mark.django_db


def as_(user) -> Client:
    return verify_session(Client(), user)


@pytest.fixture
def campaign(world):
    return reviews.review_campaign_create(
        world.auditor, name="Q4 review", systems=[world.system], due_at=timezone.now() + timedelta(days=14)
    )


def test_reviewer_and_auditor_see_the_campaign_others_get_404(world, campaign):
    url = reverse("review_detail", args=[campaign.pk])
    page = as_(world.owner).get(url).content.decode()
    assert "Your items" in page and "requester" in page and "Close and apply" not in page
    assert "Close and apply" in as_(world.auditor).get(url).content.decode()
    assert as_(world.outsider).get(url).status_code == 404
    assert "Q4 review" in as_(world.owner).get(reverse("reviews")).content.decode()
    assert "Q4 review" not in as_(world.outsider).get(reverse("reviews")).content.decode()


def test_reviewer_keeps_and_revokes_from_the_page(world, campaign):
    keep, revoke = campaign.items.order_by("pk")
    client = as_(world.owner)
    assert client.post(reverse("review_item_decide", args=[keep.pk]), {"decision": "keep"}).status_code == 302
    response = client.post(reverse("review_item_decide", args=[revoke.pk]), {"decision": "revoke", "comment": ""})
    assert response.status_code == 400 and "Say why" in response.content.decode()
    client.post(reverse("review_item_decide", args=[revoke.pk]), {"decision": "revoke", "comment": "Left the team"})
    assert list(campaign.items.order_by("pk").values_list("decision", flat=True)) == ["keep", "revoke"]
    assert (
        as_(world.approver).post(reverse("review_item_decide", args=[keep.pk]), {"decision": "keep"}).status_code == 404
    )


def test_bulk_keep_asks_for_confirmation_first(world, campaign):
    ids = [str(i) for i in campaign.items.values_list("pk", flat=True)]
    client = as_(world.owner)
    response = client.post(reverse("review_bulk_keep", args=[campaign.pk]), {"items": ids})
    assert response.status_code == 200 and "Yes, keep them" in response.content.decode()
    assert not campaign.items.exclude(decision="").exists()
    response = client.post(reverse("review_bulk_keep", args=[campaign.pk]), {"items": ids, "confirm": "yes"})
    assert response.status_code == 302
    assert set(campaign.items.values_list("decision", flat=True)) == {"keep"}


def test_auditor_closes_and_exports_the_evidence(world, campaign):
    item = campaign.items.order_by("pk").first()
    reviews.review_item_decide(world.owner, item.pk, decision="revoke", comment="=No longer needed")
    assert as_(world.owner).post(reverse("review_close", args=[campaign.pk])).status_code == 403
    assert as_(world.auditor).post(reverse("review_close", args=[campaign.pk]), {"confirm": "yes"}).status_code == 302
    response = as_(world.auditor).get(reverse("review_export", args=[campaign.pk]))
    body = b"".join(response.streaming_content).decode().removeprefix("\ufeff")
    rows = list(csv.DictReader(io.StringIO(body, newline="")))
    assert [r["item"] for r in rows] == [str(i.pk) for i in campaign.items.order_by("pk")]
    first = rows[0]
    assert first["decision"] == "revoke" and first["comment"] == "'=No longer needed"
    assert first["outcome"] == "revoked" and first["applied_at"].endswith("Z")
    assert rows[1]["outcome"] == "revoked" and rows[1]["decision"] == ""  # unanswered: no-response policy
    # What each item certifies, and why it came out so, in the file itself (a probe's finding).
    # Named as the evidence pack's review_items.csv names them.
    assert (first["item_kind"], first["eligibility_id"], first["grant_id"]) == (
        "eligibility",
        str(item.eligibility_id),
        "",
    )
    assert (first["decided_by"], first["answered"], first["no_response_rule"]) == ("owner", "true", "")
    assert (rows[1]["decided_by"], rows[1]["answered"], rows[1]["no_response_rule"]) == ("", "false", "revoke")
    assert AccessEvent.objects.filter(event_type="export.created", data__report="access review").count() == 1
    assert as_(world.owner).get(reverse("review_export", args=[campaign.pk])).status_code == 403
    page = as_(world.owner).get(reverse("review_detail", args=[campaign.pk])).content.decode()
    assert "Closed" in page and 'name="decision"' not in page
    assert ReviewItem.objects.filter(campaign=campaign, applied_at__isnull=True).count() == 0


def test_campaign_counts_are_not_inflated_for_a_reviewer(world, campaign):
    first = campaign.items.order_by("pk").first()
    reviews.review_item_decide(world.owner, first.pk, decision="keep")
    page = as_(world.owner).get(reverse("reviews")).content.decode()
    assert "1 of 2 answered" in page and "1 of your 2 items left" in page


def test_auditor_opens_a_review_from_the_form_and_others_cannot(world):
    url = reverse("review_new")
    assert as_(world.owner).get(url).status_code == 403
    assert as_(world.outsider).post(url, {}).status_code == 403
    client = as_(world.auditor)
    assert "Open the review" in client.get(url).content.decode()
    due = (timezone.now() + timedelta(days=10)).strftime("%Y-%m-%dT%H:%M")
    form = {
        "name": "Payments SOX review",
        "systems": [world.system.pk],
        "due_at": due,
        "no_response": "keep_and_flag",
        "keep_days": "90",
        "grace_days": "1",
        "long_grant_days": "3",
    }
    response = client.post(url, form)
    campaign = world.system.review_campaigns.get(name="Payments SOX review")
    assert response.status_code == 302 and response["Location"] == reverse("review_detail", args=[campaign.pk])
    assert campaign.no_response == "keep_and_flag" and campaign.keep_for == timedelta(days=90)
    assert campaign.grace == timedelta(days=1) and campaign.long_grant_threshold == timedelta(days=3)
    assert campaign.items.count() == 2 and campaign.created_by == world.auditor


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"systems": []}, "This field is required"),
        ({"due_at": "2001-01-01T00:00"}, "The due date must be in the future"),
        ({"due_at": "tomorrow-ish"}, "Enter a valid date/time"),
        ({"keep_days": "0"}, "greater than or equal to 1"),
        ({"no_response": "shrug"}, "Select a valid choice"),
        ({"systems": ["999999"]}, "Select a valid choice"),
    ],
)
def test_bad_review_form_input_gets_a_clear_message_and_opens_nothing(world, change, message):
    form = {
        "name": "Bad",
        "systems": [world.system.pk],
        "due_at": (timezone.now() + timedelta(days=10)).strftime("%Y-%m-%dT%H:%M"),
        "no_response": "revoke",
        "keep_days": "90",
        "grace_days": "1",
        "long_grant_days": "3",
        **change,
    }
    response = as_(world.auditor).post(reverse("review_new"), form)
    assert response.status_code == 400 and message in response.content.decode()
    assert not world.system.review_campaigns.exists()


def test_auditor_reassigns_an_item_but_never_to_its_subject(world, campaign, make_user):
    from guardian.shortcuts import assign_perm

    item = campaign.items.get(subject_user=world.requester, role=world.role)
    url = reverse("review_item_reassign", args=[item.pk])
    assert as_(world.owner).post(url, {"reviewer": world.auditor.pk}).status_code == 403
    assert as_(world.outsider).post(url, {"reviewer": world.auditor.pk}).status_code == 404
    assert as_(world.auditor).post(url, {"reviewer": world.outsider.pk}).status_code == 400  # not a candidate
    response = as_(world.auditor).post(url, {"reviewer": world.auditor.pk})
    assert response.status_code == 302
    item.refresh_from_db()
    assert item.reviewer == world.auditor
    assert AccessEvent.objects.get(event_type="review.reassigned").data["to"] == world.auditor.pk
    # The requester becomes an owner too: not offered for their own item (a probe chose the offered subject and
    # hit a refusal), and refused as reviewer of it all the same.
    assign_perm("accessgov.own_system", world.requester, world.system)
    page = as_(world.auditor).get(reverse("review_detail", args=[campaign.pk])).content.decode()
    own = page.split(f'id="reviewer-{item.pk}"')[1].split("</select>")[0]
    assert f'value="{world.requester.pk}"' not in own and f'value="{world.auditor.pk}"' in own
    response = as_(world.auditor).post(url, {"reviewer": world.requester.pk})
    assert response.status_code == 400 and "subject of this item" in response.content.decode()


def test_decision_helpers_show_last_use_frequency_and_groups_in_constant_queries(
    world, campaign, django_assert_max_num_queries
):
    from django.contrib.auth.models import Group

    from accessgov.services import access_requests as ar

    team = Group.objects.create(name="payments-team")
    world.requester.groups.add(team)
    access_request = ar.access_request_submit(
        world.requester, role=world.role, duration=timedelta(hours=1), justification="Investigating INC-7"
    )
    ar.access_request_approve(world.approver, access_request.pk)
    client = as_(world.owner)
    url = reverse("review_detail", args=[campaign.pk])
    page = client.get(url).content.decode()
    assert "payments-team" in page
    assert (
        f'last granted <a href="{reverse("grant_detail", args=[Grant.objects.get(access_request=access_request).pk])}">'
        in page
    )
    assert "1 grant in 90 days" in page and "never used" in page  # the other role was never used
    with django_assert_max_num_queries(40) as few:
        client.get(url)
    from accessgov.models import Eligibility
    from tests.support.factories import RoleFactory

    for _ in range(20):
        Eligibility.objects.create(role=RoleFactory(system=world.system), user=world.requester)
    more = reviews.review_campaign_create(
        world.auditor, name="Bigger", systems=[world.system], due_at=timezone.now() + timedelta(days=14)
    )
    with django_assert_max_num_queries(len(few.captured_queries)):
        client.get(reverse("review_detail", args=[more.pk]))


def test_a_group_item_names_the_groups_active_members(world, make_user):
    """A probe's finding: "group: requester · 4 members", without who they are (Entra lists them)."""
    from django.contrib.auth.models import Group

    from accessgov.models import Eligibility

    team = Group.objects.create(name="payments on-call")
    for name in ("zoe", "mia", "leo"):
        make_user(name).groups.add(team)
    gone = make_user("gone")
    gone.groups.add(team)
    gone.is_active = False
    gone.save()
    Eligibility.objects.create(role=world.role, group=team, starts_at=timezone.now() - timedelta(days=1))
    campaign = reviews.review_campaign_create(
        world.auditor, name="With a group", systems=[world.system], due_at=timezone.now() + timedelta(days=14)
    )
    page = " ".join(as_(world.auditor).get(reverse("review_detail", args=[campaign.pk])).content.decode().split())
    assert 'group: payments on-call</strong><br><span class="muted">4 members · active: leo, mia, zoe</span>' in page
