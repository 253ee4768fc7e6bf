"""Removing a person from a group in the admin is a mover, exactly like the identity provider's SCIM
removal (issue 20): eligibility that came only from that group stops counting, the grants that depended on
it are revoked with removal at the target, pending requests for those roles are withdrawn — and the same
service (services.users.user_groups_leave) does it for both."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from accessgov.exceptions import NotAuthorized
from accessgov.models import AccessEvent, AccessRequest, Eligibility, Grant, OutboxItem
from accessgov.services import access_requests as ar
from accessgov.services import users
from tests.conftest import verify_session
from tests.support.admin_forms import post_admin_form
from tests.support.factories import RoleFactory

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
H = timedelta(hours=1)


@pytest.fixture(autouse=True)
def _clock():
    with time_machine.travel(T0, tick=True):
        yield


@pytest.fixture
def admin(make_user):
    return make_user("admin1", is_staff=True, is_superuser=True)


@pytest.fixture
def mover(world):
    """The requester: read-write only through the group "payments-oncall" (with an active grant from it),
    admin through their own eligibility (an active grant too), and a pending request for a third role that
    only the group makes them eligible for."""
    group = Group.objects.create(name="payments-oncall")
    world.requester.groups.add(group)
    Eligibility.objects.filter(user=world.requester, role=world.role).delete()
    Eligibility.objects.create(role=world.role, group=group, starts_at=T0 - timedelta(days=1))
    world.role_three = RoleFactory(system=world.system, name="read-only", approvals_required=1)
    Eligibility.objects.create(role=world.role_three, group=group, starts_at=T0 - timedelta(days=1))
    from_group = ar.access_request_submit(
        world.requester, role=world.role, duration=H, justification="Fix incident INC-1"
    )
    ar.access_request_approve(world.approver, from_group.pk)
    direct = ar.access_request_submit(
        world.requester, role=world.role_two, duration=H, justification="Fix incident INC-2"
    )
    ar.access_request_approve(world.approver, direct.pk)
    ar.access_request_approve(world.approver2, direct.pk)
    pending = ar.access_request_submit(
        world.requester, role=world.role_three, duration=H, justification="Look into incident INC-3"
    )
    return {
        "group": group,
        "from_group": Grant.objects.get(access_request=from_group),
        "direct": Grant.objects.get(access_request=direct),
        "pending": pending,
    }


def test_removing_a_person_from_a_group_in_the_admin_revokes_what_depended_on_it(world, admin, mover):
    assert mover["from_group"].status == mover["direct"].status == Grant.Status.ACTIVE
    url = reverse("admin:accessgov_user_change", args=[world.requester.pk])
    response = post_admin_form(verify_session(Client(), admin), url, "user_form", groups=[])
    assert response.status_code == 302, response.content[:2000]

    assert not world.requester.groups.filter(pk=mover["group"].pk).exists()
    revoked = Grant.objects.get(pk=mover["from_group"].pk)
    assert revoked.status == Grant.Status.REVOKED and revoked.ended_by == admin
    assert OutboxItem.objects.filter(grant=revoked, action=OutboxItem.Action.REMOVE).count() == 1
    event = AccessEvent.objects.get(grant=revoked, event_type=AccessEvent.Type.GRANT_REVOKED)
    assert event.actor == admin and event.actor_label == "admin1"
    assert event.reason == "No longer eligible: removed from payments-oncall in the admin by admin1"
    assert event.data["groups_left"] == ["payments-oncall"]

    kept = Grant.objects.get(pk=mover["direct"].pk)
    assert kept.status == Grant.Status.ACTIVE  # their own eligibility still covers it
    assert not OutboxItem.objects.filter(grant=kept, action=OutboxItem.Action.REMOVE).exists()
    assert AccessRequest.objects.get(pk=mover["pending"].pk).status == AccessRequest.Status.CANCELLED


def test_a_grant_another_group_still_covers_survives_leaving_one_group(world, admin, mover):
    other = Group.objects.create(name="payments-sre")
    world.requester.groups.add(other)
    Eligibility.objects.create(role=world.role, group=other, starts_at=T0 - timedelta(days=1))
    url = reverse("admin:accessgov_user_change", args=[world.requester.pk])
    response = post_admin_form(verify_session(Client(), admin), url, "user_form", groups=[str(other.pk)])
    assert response.status_code == 302
    assert Grant.objects.get(pk=mover["from_group"].pk).status == Grant.Status.ACTIVE
    assert AccessRequest.objects.get(pk=mover["pending"].pk).status == AccessRequest.Status.CANCELLED


def test_only_admins_who_may_change_users_run_the_mover_service(world, mover):
    with pytest.raises(NotAuthorized):
        users.user_groups_leave(world.approver, [world.requester], [mover["group"]], by="by hand", job="test")
    assert world.requester.groups.filter(pk=mover["group"].pk).exists()
    assert Grant.objects.get(pk=mover["from_group"].pk).status == Grant.Status.ACTIVE
