"""Typed input is kept on errors (issue 18, item 2): the refusal is shown next to its field on the
same form, with everything typed, instead of a dead-end page."""

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accessgov.models import BreakGlassFollowUp, Eligibility
from accessgov.services import grants as gs
from tests.conftest import verify_session

pytestmark = pytest.mark.django_db


def as_(user) -> Client:
    return verify_session(Client(), user)


def test_eligibility_form_keeps_role_reason_and_end_date_on_an_error(world):
    Eligibility.objects.create(role=world.role, user=world.outsider, starts_at=timezone.now() - timedelta(days=1))
    data = {"role": world.role.pk, "user": world.outsider.pk, "ends_at": "2031-05-01T09:30", "reason": "On-call Q2"}
    response = as_(world.owner).post(reverse("eligibility_add", args=[world.system.slug]), data)
    page = response.content.decode()
    assert response.status_code == 409
    assert "is already eligible for" in page
    assert f'<option value="{world.role.pk}" selected>' in page
    assert f'<option value="{world.outsider.pk}" selected>' in page
    assert 'value="2031-05-01T09:30"' in page and 'value="On-call Q2"' in page


def test_eligibility_form_field_error_sits_next_to_the_field(world):
    data = {"role": world.role.pk, "ends_at": "2031-05-01T09:30", "reason": "On-call Q2"}
    response = as_(world.owner).post(reverse("eligibility_add", args=[world.system.slug]), data)
    page = response.content.decode()
    assert response.status_code == 400
    assert "Choose either a user or a group." in page and 'value="On-call Q2"' in page


def test_an_owner_is_not_offered_to_themselves_and_choosing_themselves_says_why(world):
    """A probe's finding: the owner's own name was in the list, and choosing it led to a refusal."""
    page = as_(world.owner).get(reverse("system_detail", args=[world.system.slug])).content.decode()
    people = page.split('name="user"')[1].split("</select>")[0]
    assert f'value="{world.owner.pk}"' not in people and f'value="{world.outsider.pk}"' in people
    data = {"role": world.role.pk, "user": world.owner.pk, "reason": "Me, please"}
    response = as_(world.owner).post(reverse("eligibility_add", args=[world.system.slug]), data)
    assert response.status_code == 400 and "Nobody makes themselves eligible" in response.content.decode()
    assert not Eligibility.objects.filter(user=world.owner).exists()


def test_break_glass_acknowledge_without_a_comment_stays_on_the_form(world):
    world.role.break_glass_allowed = True
    world.role.save(update_fields=["break_glass_allowed"])
    grant = gs.break_glass_activate(
        world.requester,
        role=world.role,
        justification="INC-9: payments down",
        duration=timedelta(minutes=30),
        step_up_at=timezone.now(),
    )
    follow_up = BreakGlassFollowUp.objects.get(grant=grant)
    response = as_(world.approver).post(reverse("follow_up_acknowledge", args=[follow_up.pk]), {"reason": "  "})
    page = response.content.decode()
    assert response.status_code == 400
    assert "Write what you checked" in page
    assert f'id="ack-{follow_up.pk}-error"' in page and 'aria-invalid="true"' in page and "autofocus" in page
    follow_up.refresh_from_db()
    assert follow_up.acknowledged_at is None


def test_queue_count_follows_the_filters_and_clear_resets_them(world):
    from accessgov.services import access_requests as ar

    ar.access_request_submit(
        world.requester, role=world.role, duration=timedelta(hours=1), justification="Investigating INC-42 on payments"
    )
    client = as_(world.approver)
    page = client.get(reverse("approvals")).content.decode()
    assert "1 waiting, oldest first." in page and "Clear" not in page
    page = client.get(reverse("approvals"), {"risk": "critical"}).content.decode()
    assert "0 of 1 waiting match these filters" in page
    assert "Nothing matches these filters; 1 other request waits" in page
    assert f'href="{reverse("approvals")}">Clear' in page


def test_an_owner_renews_an_eligibility_from_its_row_and_ending_one_asks_why(world):
    """A probe's finding: "renew it or let it go" led to a page that could only end it."""
    from accessgov.models import AccessEvent

    now = timezone.now()
    current = Eligibility.objects.create(
        role=world.role, user=world.outsider, starts_at=now - timedelta(days=80), ends_at=now + timedelta(days=5)
    )
    owner = as_(world.owner)
    page = owner.get(reverse("system_detail", args=[world.system.slug]) + f"?renew={current.pk}").content.decode()
    assert f'href="?renew={current.pk}#add-eligibility"' in page
    assert f'<option value="{world.outsider.pk}" selected>' in page and 'value="Renewed"' in page
    later = (now + timedelta(days=95)).strftime("%Y-%m-%dT%H:%M")
    data = {"role": world.role.pk, "user": world.outsider.pk, "ends_at": later, "reason": "Renewed for Q1"}
    response = owner.post(reverse("eligibility_add", args=[world.system.slug]), data, follow=True)
    assert response.status_code == 200 and "may now request" in response.content.decode()
    renewed = Eligibility.objects.active(timezone.now()).get(role=world.role, user=world.outsider)
    assert renewed.pk != current.pk and renewed.ends_at > current.ends_at
    current.refresh_from_db()
    assert current.ends_at <= timezone.now()
    ended = AccessEvent.objects.get(event_type="eligibility.ended", data__eligibility_id=current.pk)
    assert ended.reason.startswith("Renewed until") and ended.data["renewed_by"] == renewed.pk
    # Ending one asks why; an empty reason ends nothing.
    end = reverse("eligibility_end", args=[renewed.pk])
    assert "Why (recorded" in owner.post(end).content.decode()
    refused = owner.post(end, {"confirm": "yes", "reason": "  "})
    assert refused.status_code == 400 and Eligibility.objects.active(timezone.now()).filter(pk=renewed.pk).exists()
    owner.post(end, {"confirm": "yes", "reason": "Moved to the platform team"})
    assert AccessEvent.objects.get(event_type="eligibility.ended", data__eligibility_id=renewed.pk).reason == (
        "Moved to the platform team"
    )
