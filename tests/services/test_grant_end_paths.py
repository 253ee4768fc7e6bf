"""Issue 16: one end-of-grant transition. Every path that ends a grant (a person revoking, the grantee
releasing, an account deactivated, an access review's outcome, a ticket closing, an incident resolving,
the expiry timer, the sweep) queues the removal at the target exactly once and records one event, the
same way — also when the grant is already past its end and the sweeper is late."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.utils import timezone

from accessgov import tasks
from accessgov.models import AccessEvent, ApiToken, Grant, OutboxItem
from accessgov.services import access_requests as ar
from accessgov.services import grants as gs
from accessgov.services import reviews, tokens, users

pytestmark = pytest.mark.django_db
H = timedelta(hours=1)
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DURING = START + timedelta(minutes=20)
LATE = START + H + timedelta(minutes=7)  # past expires_at, the sweeper not yet run


def _revoke(world):
    return lambda grant: gs.grant_revoke(world.owner, grant.pk, reason="Incident closed")


def _release(world):
    return lambda grant: gs.grant_release(world.requester, grant.pk)


def _deactivate(world):
    admin = world.make_user("admin1", is_staff=True, is_superuser=True)
    return lambda grant: users.user_deactivate(admin, world.requester.pk, reason="Left the company")


def _review(world):
    def end(grant):
        campaign = reviews.review_campaign_create(
            world.auditor, name="Q1 review", systems=[world.system], due_at=timezone.now() + timedelta(days=14)
        )
        item = campaign.items.get(subject_user=world.requester, role=world.role, eligibility__isnull=False)
        reviews.review_item_decide(world.owner, item.pk, decision="revoke", comment="No longer on call")
        reviews.review_campaign_close(world.auditor, campaign.pk)

    return end


def _system(end_reason, event_type, job):
    def make(world):
        return lambda grant: gs.grant_revoke_by_system(
            grant.pk, reason="Closed upstream.", job=job, end_reason=end_reason, event_type=event_type
        )

    return make


# path name -> (how it ends a grant, the end reason and event it records while the grant is in force)
PATHS = {
    "revoke": (_revoke, Grant.EndReason.REVOKED, AccessEvent.Type.GRANT_REVOKED),
    "release": (_release, Grant.EndReason.RELEASED, AccessEvent.Type.GRANT_RELEASED),
    "deactivation": (_deactivate, Grant.EndReason.REVOKED, AccessEvent.Type.GRANT_REVOKED),
    "review": (_review, Grant.EndReason.REVOKED, AccessEvent.Type.GRANT_REVOKED),
    "ticket": (
        _system(Grant.EndReason.TICKET_CLOSED, AccessEvent.Type.GRANT_TICKET_CLOSED, "tickets"),
        Grant.EndReason.TICKET_CLOSED,
        AccessEvent.Type.GRANT_TICKET_CLOSED,
    ),
    "incident": (
        _system(Grant.EndReason.INCIDENT_RESOLVED, AccessEvent.Type.GRANT_INCIDENT_RESOLVED, "integrations-sweep"),
        Grant.EndReason.INCIDENT_RESOLVED,
        AccessEvent.Type.GRANT_INCIDENT_RESOLVED,
    ),
}


@pytest.fixture
def active_grant(world, make_user):
    world.make_user = make_user
    with time_machine.travel(START, tick=False):
        access_request = ar.access_request_submit(
            world.requester, role=world.role, duration=H, justification="Investigating incident INC-42"
        )
        ar.access_request_approve(world.approver, access_request.pk)
    return Grant.objects.get(access_request=access_request)


def assert_removal_queued_once(grant: Grant, now: datetime) -> None:
    assert OutboxItem.objects.filter(grant=grant, action=OutboxItem.Action.REMOVE).count() == 1
    assert grant.provisioning_state == Grant.Provisioning.REMOVAL_PENDING
    assert grant.removal_requested_at == now
    assert not Grant.objects.active(now).filter(pk=grant.pk).exists()


@pytest.mark.parametrize("path", sorted(PATHS))
def test_every_end_path_queues_removal_once_and_records_its_own_event(world, active_grant, path):
    make, end_reason, event_type = PATHS[path]
    end = make(world)
    with time_machine.travel(DURING, tick=False):
        end(active_grant)
    grant = Grant.objects.get(pk=active_grant.pk)

    assert grant.status == Grant.Status.REVOKED and grant.end_reason == end_reason
    assert grant.ended_at == DURING
    assert_removal_queued_once(grant, DURING)
    ended = AccessEvent.objects.filter(grant=grant).exclude(
        event_type__in=[AccessEvent.Type.GRANT_ACTIVATED, AccessEvent.Type.REQUEST_APPROVED]
    )
    assert [e.event_type for e in ended.filter(event_type__startswith="grant.")] == [event_type]
    assert ended.get(event_type=event_type).occurred_at == DURING


@pytest.mark.parametrize("path", sorted(PATHS))
def test_every_end_path_records_a_late_grant_as_the_expiry_it_is_and_queues_removal_once(world, active_grant, path):
    make, _end_reason, event_type = PATHS[path]
    end = make(world)
    with time_machine.travel(LATE, tick=False):
        end(active_grant)
    grant = Grant.objects.get(pk=active_grant.pk)

    assert grant.status == Grant.Status.EXPIRED and grant.end_reason == Grant.EndReason.EXPIRED
    assert grant.ended_at == grant.expires_at == START + H
    assert_removal_queued_once(grant, LATE)
    expired = AccessEvent.objects.get(grant=grant, event_type=AccessEvent.Type.GRANT_EXPIRED)
    assert expired.data["found_by"] == event_type
    assert expired.data["expires_at"] == (START + H).isoformat() and expired.data["observed_lag_seconds"] == 420.0
    assert not AccessEvent.objects.filter(grant=grant, event_type=event_type).exclude(event_type="grant.expired")


@pytest.mark.parametrize("expire", ["timer", "sweep"])
def test_the_timer_and_the_sweep_expire_the_same_way_as_a_late_end(world, active_grant, expire):
    with time_machine.travel(LATE, tick=False):
        if expire == "timer":
            assert tasks.expire_grant(active_grant.pk) == 1
        else:
            assert gs.grant_expire_due(timezone.now()) == 1
    grant = Grant.objects.get(pk=active_grant.pk)

    assert grant.status == Grant.Status.EXPIRED and grant.end_reason == Grant.EndReason.EXPIRED
    assert grant.ended_at == START + H
    assert_removal_queued_once(grant, LATE)
    expired = AccessEvent.objects.get(grant=grant, event_type=AccessEvent.Type.GRANT_EXPIRED)
    assert expired.data == {"expires_at": (START + H).isoformat(), "observed_lag_seconds": 420.0}


def test_the_expiry_timer_expires_only_the_grant_it_names(world, active_grant, make_user):
    from accessgov.models import Eligibility

    other_user = make_user("second")
    with time_machine.travel(START, tick=False):
        Eligibility.objects.create(role=world.role, user=other_user)
        other_request = ar.access_request_submit(
            other_user, role=world.role, duration=H, justification="Investigating incident INC-43"
        )
        ar.access_request_approve(world.approver, other_request.pk)
    with time_machine.travel(LATE, tick=False):
        assert tasks.expire_grant(active_grant.pk) == 1
        assert tasks.expire_grant(active_grant.pk) == 0  # already expired: a no-op
    assert Grant.objects.get(pk=active_grant.pk).status == Grant.Status.EXPIRED
    assert Grant.objects.get(access_request=other_request).status == Grant.Status.ACTIVE


def test_a_scheduled_grant_ends_revoked_with_nothing_to_remove(world, make_user):
    with time_machine.travel(START, tick=False):
        access_request = ar.access_request_submit(
            world.requester,
            role=world.role,
            duration=H,
            justification="Maintenance window tonight",
            starts_at=START + timedelta(hours=3),
        )
        ar.access_request_approve(world.approver, access_request.pk)
    grant = Grant.objects.get(access_request=access_request)
    assert grant.status == Grant.Status.SCHEDULED
    with time_machine.travel(DURING, tick=False):
        gs.grant_revoke(world.owner, grant.pk, reason="Window cancelled")
    grant.refresh_from_db()
    assert grant.status == Grant.Status.REVOKED and grant.provisioning_state == Grant.Provisioning.NOT_APPLIED
    assert not OutboxItem.objects.filter(grant=grant, action=OutboxItem.Action.REMOVE).exists()
    assert AccessEvent.objects.filter(grant=grant, event_type=AccessEvent.Type.GRANT_REVOKED).count() == 1


def test_deactivation_revokes_each_token_through_the_token_service_and_names_them(world, make_user):
    admin = make_user("admin1", is_staff=True, is_superuser=True)
    with time_machine.travel(START, tick=False):
        made = [
            tokens.api_token_create(
                world.requester,
                user=world.requester,
                name=name,
                kind=ApiToken.Kind.PERSONAL,
                expires_at=START + timedelta(days=7),
                scopes=["requests:read"],
            )[0]
            for name in ("laptop", "ci")
        ]
        tokens.api_token_revoke(world.requester, made[1].pk)
    with time_machine.travel(DURING, tick=False):
        result = users.user_deactivate(admin, world.requester.pk, reason="Left the company")

    assert result["tokens_revoked"] == 1
    laptop = ApiToken.objects.get(pk=made[0].pk)
    assert laptop.revoked_at == DURING and laptop.revoked_by == admin
    assert ApiToken.objects.get(pk=made[1].pk).revoked_by == world.requester  # not revoked twice
    deactivated = AccessEvent.objects.get(event_type=AccessEvent.Type.USER_DEACTIVATED)
    assert deactivated.data["api_tokens_revoked"] == [made[0].pk]
