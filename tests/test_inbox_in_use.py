"""A break-glass use is acknowledged once it has ended (``break_glass_acknowledge`` refuses while it is in use, the
follow-ups page says "In use" and disables the button). Until then it is nobody's to do: the inbox's "Needs me",
its badge, the home page's "to acknowledge" and the overdue banners leave it out; from its end (released, or
expired though not swept) it is there."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection
from django.test import Client
from django.urls import reverse

from accessgov import inbox, permissions, selectors
from accessgov.models import BreakGlassFollowUp, Grant, Role
from accessgov.services import grants as gs
from tests.conftest import verify_session

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
H = timedelta(hours=1)
US = timedelta(microseconds=1)


def break_glass(world) -> Grant:
    Role.objects.filter(pk=world.role.pk).update(break_glass_allowed=True)
    with time_machine.travel(T0, tick=False):
        return gs.break_glass_activate(
            world.requester,
            role=Role.objects.get(pk=world.role.pk),
            justification="Prod is down, INC-9",
            duration=H,
            step_up_at=T0,
        )


def badge(user, now: datetime) -> dict:
    user._permission_memo = {}
    permissions.scope(user)
    counts = inbox.badge_counts_portable(user, now)
    if connection.vendor == "postgresql":  # the badge's one statement counts what its ORM twin counts
        assert inbox.badge_counts_postgresql(user, now) == counts, user.username
    return counts


def seen_by(user, now: datetime) -> dict:
    """What ``user`` is shown at ``now``: the inbox's list and its count, the badge, the home page."""
    with time_machine.travel(now, tick=False):
        needs_me = inbox.needs_me(user, now)
        client = verify_session(Client(), user)
        page = client.get(reverse("inbox"))
        home = client.get(reverse("home")).content.decode()
        return {
            "listed": [f.grant_id for f in needs_me.follow_ups],
            "count": needs_me.count,
            "badge": badge(user, now)["follow_ups"],
            "nav": page.context["nav"]["inbox"]["follow_ups"],
            "on_page": "used break-glass on" in page.content.decode(),
            "on_home": "to acknowledge" in home,
            "overdue": selectors.overdue_follow_up_count(user, now),
        }


NOTHING = {"listed": [], "count": 0, "badge": 0, "nav": 0, "on_page": False, "on_home": False, "overdue": 0}


def test_a_break_glass_use_in_use_is_not_in_the_inbox_and_is_there_from_its_expiry_unswept(world):
    grant = break_glass(world)
    end = grant.expires_at
    for persona in (world.approver, world.owner, world.auditor):
        assert seen_by(persona, T0 + timedelta(minutes=10)) == NOTHING, persona.username
        assert seen_by(persona, end - US) == NOTHING, persona.username
        shown = seen_by(persona, end)  # expired by the clock; the sweeper has not run
        assert Grant.objects.get(pk=grant.pk).status == Grant.Status.ACTIVE
        assert shown == {**NOTHING, "listed": [grant.pk], "count": 1, "badge": 1, "nav": 1, "on_page": True,
                         "on_home": True}, persona.username  # fmt: skip
    with time_machine.travel(end, tick=False):  # and it can be done then
        gs.break_glass_acknowledge(world.auditor, grant.follow_up.pk, comment="Checked the session log")
    assert seen_by(world.approver, end + H) == NOTHING


def test_a_released_use_is_in_the_inbox_at_once(world):
    grant = break_glass(world)
    released_at = T0 + timedelta(minutes=12)
    with time_machine.travel(released_at, tick=False):
        gs.grant_release(world.requester, grant.pk)
    shown = seen_by(world.approver, released_at + timedelta(seconds=1))
    assert (shown["listed"], shown["badge"], shown["on_page"]) == ([grant.pk], 1, True)


def test_an_overdue_follow_up_is_not_counted_overdue_while_the_use_goes_on(world):
    """The follow-ups page calls an in-use follow-up "In use", not "Overdue": so do the home and queue banners
    (for an auditor, read through ``overdue_follow_ups``; for an approver, the precompiled read)."""
    grant = break_glass(world)
    BreakGlassFollowUp.objects.filter(grant=grant).update(due_at=T0 + timedelta(minutes=5))
    for persona in (world.approver, world.auditor):
        assert seen_by(persona, T0 + timedelta(minutes=30))["overdue"] == 0, persona.username
        assert seen_by(persona, grant.expires_at)["overdue"] == 1, persona.username
    with time_machine.travel(T0 + timedelta(minutes=30), tick=False):
        follow_ups = verify_session(Client(), world.auditor).get(reverse("break_glass_follow_ups")).content.decode()
    assert "In use" in follow_ups and "Overdue" not in follow_ups
