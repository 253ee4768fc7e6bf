"""Review pages as reviewers, auditors and others see them; bulk keep with confirmation; evidence CSV."""

import csv
import io
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accessgov.models import AccessEvent, ReviewItem
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
    assert as_(world.auditor).post(reverse("review_close", args=[campaign.pk])).status_code == 302
    response = as_(world.auditor).get(reverse("review_export", args=[campaign.pk]))
    body = b"".join(response.streaming_content).decode().removeprefix("\ufeff")
    rows = list(csv.DictReader(io.StringIO(body, newline="")))
    assert [r["item"] for r in rows] == [str(i.pk) for i in campaign.items.order_by("pk")]
    first = rows[0]
    assert first["decision"] == "revoke" and first["comment"] == "'=No longer needed"
    assert first["outcome"] == "revoked" and first["applied_at"].endswith("Z")
    assert rows[1]["outcome"] == "revoked" and rows[1]["decision"] == ""  # unanswered: no-response policy
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
