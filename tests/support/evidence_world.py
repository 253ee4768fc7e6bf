"""A month of history for evidence-pack tests, made through the services at fixed instants (March 2025):
grants approved, expired and removed (one removal never confirmed), a two-approval step-up grant, a
denial, break-glass (one signed off in time, one never), an access review with an unanswered item, a
four-eyed policy change and one applied without a second admin, a deactivation that ends a grant, and
drift at a target."""

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import time_machine
from django.utils import timezone

from accessgov.models import ChangeRequest, DriftFinding, Eligibility, Grant, ReviewCampaign, Role
from accessgov.services import access_requests as ar
from accessgov.services import changes, reviews, users
from accessgov.services import grants as gs
from tests.support.timeline import acknowledged, at, expired, granted, removal_confirmed

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)  # a Monday
BUILT_AT = datetime(2025, 4, 2, 8, 0, tzinfo=UTC)
SINCE, UNTIL = date(2025, 3, 1), date(2025, 3, 31)
H, MIN, DAY = timedelta(hours=1), timedelta(minutes=1), timedelta(days=1)


@dataclass
class Month:
    world: object
    admins: tuple
    grants: dict = field(default_factory=dict)
    requests: dict = field(default_factory=dict)


def make_month(world, make_user) -> Month:
    """The history (see the module docstring); returns handles on what the tests look at."""
    Eligibility.objects.update(starts_at=T0 - 30 * DAY)
    Role.objects.filter(pk=world.role_two.pk).update(step_up_required=True, break_glass_allowed=True)
    world.role_two.refresh_from_db()
    month = Month(world=world, admins=(make_user("admin1", is_staff=True, is_superuser=True),
                                       make_user("admin2", is_staff=True, is_superuser=True)))  # fmt: skip
    # 1. Approved, expired, removal confirmed 30 s after the end.
    g1 = granted(world, T0)
    expired(g1)
    month.grants["removed"] = removal_confirmed(g1, world.approver, 30 * timedelta(seconds=1))
    # 2. Approved, expired, removal never confirmed (an overdue removal).
    g2 = granted(world, T0 + DAY)
    month.grants["unconfirmed"] = expired(g2)
    # 3. Two approvers with fresh step-up codes on the high-risk role.
    with at(T0 + 2 * DAY):
        access_request = ar.access_request_submit(
            world.requester, role=world.role_two, duration=H, justification="Rotate the admin keys INC-7"
        )
    with at(T0 + 2 * DAY + 5 * MIN):
        ar.access_request_approve(world.approver, access_request.pk, step_up_at=timezone.now() - MIN)
        ar.access_request_approve(world.approver2, access_request.pk, step_up_at=timezone.now() - 2 * MIN)
    g3 = expired(Grant.objects.get(access_request=access_request))
    month.grants["two_approvals"] = removal_confirmed(g3, world.approver, 2 * timedelta(seconds=1))
    # 4. A denial.
    with at(T0 + 3 * DAY):
        denied = ar.access_request_submit(
            world.requester, role=world.role, duration=H, justification="=cmd|' /C calc'!A0"
        )
    with at(T0 + 3 * DAY + 10 * MIN):
        ar.access_request_deny(world.approver, denied.pk, comment="Use the read replica")
    month.requests["denied"] = denied
    # 5. Break-glass: one signed off within the day, one never signed off.
    for name, when in (("glass_ok", T0 + 4 * DAY), ("glass_open", T0 + 5 * DAY)):
        with at(when):
            grant = gs.break_glass_activate(
                world.requester, role=world.role_two, justification="Prod is down, INC-9 paging", duration=H,
                step_up_at=timezone.now(),
            )  # fmt: skip
        with at(when + 10 * MIN):
            gs.grant_release(world.requester, grant.pk)
        month.grants[name] = Grant.objects.get(pk=grant.pk)
    month.grants["glass_ok"] = acknowledged(month.grants["glass_ok"], world.approver, T0 + 4 * DAY + 3 * H)
    # 6. An access review: the owner keeps one item, leaves one unanswered; closed after its due date.
    with at(T0 + 6 * DAY):
        campaign = reviews.review_campaign_create(
            world.auditor, name="March certification", systems=[world.system], due_at=T0 + 13 * DAY
        )
    items = list(campaign.items.order_by("pk"))
    with at(T0 + 7 * DAY):
        reviews.review_item_decide(world.owner, items[0].pk, decision="keep", comment="Still on the payments team")
    with at(T0 + 16 * DAY):
        reviews.review_campaign_close(world.auditor, campaign.pk)
    month.campaign = ReviewCampaign.objects.get(pk=campaign.pk)
    # 7. Policy: one change four-eyed, one applied at once (four-eyes switched off at that moment).
    first, second = month.admins
    with at(T0 + 8 * DAY):
        role = Role.objects.get(pk=world.role.pk)
        role.max_duration = timedelta(hours=6)
        change = changes.change_propose(first, kind=ChangeRequest.Kind.ROLE, instance=role, fields=["max_duration"])
        changes.change_approve(second, change.pk)
    month.four_eyed = change
    # 8. A leaver: deactivated while holding a grant.
    with at(T0 + 10 * DAY):
        leaver_request = ar.access_request_submit(
            world.requester, role=world.role, duration=H, justification="On call for the payments outage"
        )
        ar.access_request_approve(world.approver, leaver_request.pk)
        users.user_deactivate(first, world.requester.pk, reason="Left the company")
    month.grants["leaver"] = Grant.objects.get(access_request=leaver_request)
    # 9. Drift: access found at the target without a grant, still open.
    DriftFinding.objects.create(
        system=world.system, role=world.role, principal="mallory", detected_at=T0 + 12 * DAY, last_seen_at=T0 + 12 * DAY
    )
    return month


def build_at(pack_id: int, moment: datetime = BUILT_AT, seed: str = "5eed5eed5eed5eed"):
    from accessgov.services.evidence import evidence_pack_build

    with time_machine.travel(moment, tick=False):
        return evidence_pack_build(pack_id, seed=seed)
