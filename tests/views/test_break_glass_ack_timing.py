"""A break-glass follow-up is signed off once the access has ended, never while it is still in use (probe: a
use was acknowledged 37 s after it started and ran 30 minutes more, never reviewed)."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.test import Client
from django.urls import reverse

from accessgov.exceptions import NotAuthorized, TransitionNotAllowed
from accessgov.models import AccessEvent, BreakGlassFollowUp, Grant
from accessgov.services import grants as gs
from tests.conftest import verify_session

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
H = timedelta(hours=1)


def as_(user) -> Client:
    return verify_session(Client(), user)


def break_glass(world) -> Grant:
    world.role_two.break_glass_allowed = True
    world.role_two.save()
    with time_machine.travel(T0, tick=False):
        return gs.break_glass_activate(
            world.requester, role=world.role_two, justification="Prod is down, INC-9", duration=H, step_up_at=T0
        )


def acknowledged(grant: Grant) -> bool:
    return not BreakGlassFollowUp.objects.get(grant=grant).is_open


def test_a_break_glass_use_still_active_cannot_be_acknowledged(world):
    grant = break_glass(world)
    with (
        time_machine.travel(T0 + timedelta(seconds=37), tick=False),
        pytest.raises(TransitionNotAllowed, match=r"still active.*release it, or wait for it to end"),
    ):
        gs.break_glass_acknowledge(world.auditor, grant.follow_up.pk, comment="Looked at the incident")
    assert not acknowledged(grant)
    assert not AccessEvent.objects.filter(event_type="break_glass.acknowledged").exists()
    # Who may not acknowledge at all is still told so first (403, not "wait").
    with (
        time_machine.travel(T0 + timedelta(seconds=40), tick=False),
        pytest.raises(NotAuthorized, match="Someone other"),
    ):
        gs.break_glass_acknowledge(world.requester, grant.follow_up.pk, comment="fine")


def test_a_released_break_glass_use_is_acknowledged_as_before(world):
    grant = break_glass(world)
    with time_machine.travel(T0 + timedelta(minutes=20), tick=False):
        with pytest.raises(TransitionNotAllowed, match="still active"):
            gs.break_glass_acknowledge(world.auditor, grant.follow_up.pk, comment="Checked the session log")
        gs.grant_release(world.requester, grant.pk)
        gs.break_glass_acknowledge(world.auditor, grant.follow_up.pk, comment="Checked the session log")
    assert acknowledged(grant)
    assert AccessEvent.objects.filter(event_type="break_glass.acknowledged", grant=grant).count() == 1


def test_an_expired_use_is_acknowledged_even_before_the_sweeper_ends_it(world):
    """The clock decides (promise 8): at expires_at the access is over, swept or not."""
    grant = break_glass(world)
    with (
        time_machine.travel(T0 + H - timedelta(microseconds=1), tick=False),
        pytest.raises(TransitionNotAllowed, match="still active"),
    ):
        gs.break_glass_acknowledge(world.auditor, grant.follow_up.pk, comment="Checked the session log")
    with time_machine.travel(T0 + H, tick=False):
        assert Grant.objects.get(pk=grant.pk).status == Grant.Status.ACTIVE  # not swept
        gs.break_glass_acknowledge(world.auditor, grant.follow_up.pk, comment="Checked the session log")
    assert acknowledged(grant)


def test_the_follow_ups_page_waits_for_the_end_and_a_post_meanwhile_is_409(world):
    grant = break_glass(world)
    url = reverse("follow_up_acknowledge", args=[grant.follow_up.pk])
    with time_machine.travel(T0 + timedelta(minutes=5), tick=False):
        page = as_(world.auditor).get(reverse("break_glass_follow_ups")).content.decode()
        assert "In use" in page and "Still in use until" in page
        assert "disabled>Acknowledge after it ends</button>" in page
        response = as_(world.auditor).post(url, {"reason": "Looked at the incident channel"})
    assert response.status_code == 409
    body = response.content.decode()
    assert "still active" in body and "the follow-up stays open" in body
    assert "Looked at the incident channel" in body  # what was typed is kept
    assert not acknowledged(grant)
    with time_machine.travel(T0 + H + timedelta(minutes=1), tick=False):
        page = as_(world.auditor).get(reverse("break_glass_follow_ups")).content.decode()
        assert "In use" not in page and "disabled" not in page
        response = as_(world.auditor).post(url, {"reason": "Checked the session recording"})
    assert response.status_code == 302
    assert acknowledged(grant)
