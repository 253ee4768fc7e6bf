"""Access reviews: campaign creation (by hand and by beat), reviewer assignment that never lets anyone
review themselves, decisions, closing that applies revocations, no-response policies, immutability."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.contrib.auth.models import Group
from django.utils import timezone
from guardian.shortcuts import assign_perm

from accessgov.exceptions import NotAuthorized, PolicyViolation, TransitionNotAllowed
from accessgov.models import AccessEvent, Eligibility, Grant, ReviewCampaign, ReviewItem
from accessgov.services import access_requests as ar
from accessgov.services import reviews
from accessgov.services.sweep import sweep_run

pytestmark = pytest.mark.django_db
H = timedelta(hours=1)


def open_campaign(w, **kw):
    return reviews.review_campaign_create(
        w.auditor, name="Q4 review", systems=[w.system], due_at=timezone.now() + timedelta(days=14), **kw
    )


def item_for(campaign, user, role):
    return ReviewItem.objects.get(campaign=campaign, subject_user=user, role=role, eligibility__isnull=False)


def test_campaign_has_one_item_per_eligibility_and_each_long_running_grant(world):
    team = Group.objects.create(name="sre")
    Eligibility.objects.create(role=world.role, group=team)
    access_request = ar.access_request_submit(
        world.requester, role=world.role, duration=H, justification="Investigating incident INC-42"
    )
    ar.access_request_approve(world.approver, access_request.pk)
    Grant.objects.update(starts_at=timezone.now() - timedelta(days=8))
    campaign = open_campaign(world)
    items = campaign.items.all()
    assert items.filter(eligibility__isnull=False).count() == 3  # requester x2 roles + the group
    assert items.filter(grant__isnull=False).count() == 1
    assert all(i.reviewer == world.owner for i in items)
    event = AccessEvent.objects.get(event_type="review.opened")
    assert event.data["items"] == 4 and event.actor == world.auditor


def test_nobody_is_assigned_their_own_access(world, make_user):
    second_owner = make_user("owner2")
    assign_perm("accessgov.own_system", second_owner, world.system)
    Eligibility.objects.create(role=world.role, user=world.owner)
    campaign = open_campaign(world)
    own = item_for(campaign, world.owner, world.role)
    assert own.reviewer == second_owner
    others = campaign.items.exclude(pk=own.pk)
    assert {i.reviewer for i in others} <= {world.owner, second_owner}


def test_a_lone_owner_reviewing_themselves_falls_back_to_an_auditor(world):
    Eligibility.objects.create(role=world.role, user=world.owner)
    campaign = open_campaign(world)
    assert item_for(campaign, world.owner, world.role).reviewer == world.auditor


def test_group_members_do_not_review_their_group(world):
    team = Group.objects.create(name="payments-oncall")
    world.owner.groups.add(team)
    Eligibility.objects.create(role=world.role, group=team)
    campaign = open_campaign(world)
    assert campaign.items.get(subject_group=team).reviewer == world.auditor


def test_an_account_the_subject_made_is_not_their_independent_reviewer(world, make_user):
    """As for approvals (promise 3: no self-review through a second account): an owner account the subject
    created recently may be assigned the item, but may not decide it."""
    Eligibility.objects.create(role=world.role, user=world.owner)
    sidekick = make_user("owner-sidekick")
    sidekick.created_by = world.owner
    sidekick.save()
    assign_perm("accessgov.own_system", sidekick, world.system)
    campaign = open_campaign(world)
    own = item_for(campaign, world.owner, world.role)
    assert own.reviewer == sidekick
    with pytest.raises(NotAuthorized, match=r"owner created your account .* An auditor will reassign this item\."):
        reviews.review_item_decide(sidekick, own.pk, decision="keep")
    own.refresh_from_db()
    assert own.decision == ""


def test_only_auditors_open_and_close_campaigns(world):
    with pytest.raises(NotAuthorized):
        reviews.review_campaign_create(world.owner, name="x", systems=[world.system], due_at=timezone.now() + H)
    campaign = open_campaign(world)
    with pytest.raises(NotAuthorized):
        reviews.review_campaign_close(world.owner, campaign.pk)


def test_reviewer_decides_revoke_needs_a_reason_and_others_cannot_decide(world):
    campaign = open_campaign(world)
    item = item_for(campaign, world.requester, world.role)
    with pytest.raises(PolicyViolation, match="Say why"):
        reviews.review_item_decide(world.owner, item.pk, decision="revoke", comment=" ")
    with pytest.raises(NotAuthorized, match="another reviewer"):
        reviews.review_item_decide(world.approver, item.pk, decision="keep")
    with pytest.raises(NotAuthorized, match="own access"):
        reviews.review_item_decide(world.requester, item.pk, decision="keep")
    reviews.review_item_decide(world.owner, item.pk, decision="revoke", comment="Left the payments team")
    item.refresh_from_db()
    assert (item.decision, item.decided_by) == ("revoke", world.owner)
    assert AccessEvent.objects.filter(event_type="review.decided").count() == 1


def test_auditor_reassigns_but_never_to_the_subject(world):
    campaign = open_campaign(world)
    item = item_for(campaign, world.requester, world.role)
    with pytest.raises(PolicyViolation, match="subject"):
        reviews.review_item_reassign(world.auditor, item.pk, reviewer=world.requester)
    with pytest.raises(NotAuthorized):
        reviews.review_item_reassign(world.owner, item.pk, reviewer=world.approver)
    reviews.review_item_reassign(world.auditor, item.pk, reviewer=world.approver)
    reviews.review_item_decide(world.approver, item.pk, decision="keep")


def test_closing_applies_revocations_to_eligibility_and_active_grants(world):
    access_request = ar.access_request_submit(
        world.requester, role=world.role, duration=H, justification="Investigating incident INC-42"
    )
    ar.access_request_approve(world.approver, access_request.pk)
    campaign = open_campaign(world)
    revoke = item_for(campaign, world.requester, world.role)
    keep = item_for(campaign, world.requester, world.role_two)
    reviews.review_item_decide(world.owner, revoke.pk, decision="revoke", comment="No longer on call")
    reviews.review_item_decide(world.owner, keep.pk, decision="keep")
    reviews.review_campaign_close(world.auditor, campaign.pk)
    now = timezone.now()
    assert not Eligibility.objects.active(now).filter(pk=revoke.eligibility_id).exists()
    kept = Eligibility.objects.get(pk=keep.eligibility_id)
    assert kept.ends_at > now + timedelta(days=99)
    grant = Grant.objects.get(access_request=access_request)
    assert grant.status == "revoked" and grant.end_reason == "revoked"
    revoked_event = AccessEvent.objects.get(event_type="grant.revoked")
    # Ended by the reviewer who decided (the auditor probe: the grant's ended_by was empty, the actor a job).
    assert revoked_event.actor == world.owner and revoked_event.actor_label == "owner" and grant.ended_by == world.owner
    assert "No longer on call" in revoked_event.reason and revoked_event.data["review_item"] == revoke.pk
    assert not Grant.objects.active(now).exists()
    applied = AccessEvent.objects.filter(event_type="review.applied").count()
    assert applied == campaign.items.count()
    closed = AccessEvent.objects.get(event_type="review.closed")
    assert closed.data["revoked"] == 1 and closed.data["kept"] == 1


def test_revoking_a_group_eligibility_revokes_its_members_grants_of_that_role_only(world, make_user):
    team = Group.objects.create(name="payments-oncall")
    member, other = make_user("member"), make_user("other")
    team.user_set.add(member)
    Eligibility.objects.create(role=world.role, group=team)
    Eligibility.objects.create(role=world.role, user=other)
    granted = {}
    for user in (member, other):
        access_request = ar.access_request_submit(user, role=world.role, duration=H, justification="On call this week")
        ar.access_request_approve(world.approver, access_request.pk)
        granted[user.username] = Grant.objects.get(access_request=access_request)
    campaign = open_campaign(world, no_response=ReviewCampaign.NoResponse.KEEP_AND_FLAG)
    item = campaign.items.get(subject_group=team)
    reviews.review_item_decide(item.reviewer, item.pk, decision="revoke", comment="Rotation disbanded")
    reviews.review_campaign_close(world.auditor, campaign.pk)
    statuses = {name: Grant.objects.get(pk=g.pk).status for name, g in granted.items()}
    assert statuses == {"member": "revoked", "other": "active"}
    assert "Rotation disbanded" in AccessEvent.objects.get(event_type="grant.revoked").reason


@pytest.mark.parametrize(
    "other_way",
    ["own eligibility kept in the review", "own eligibility outside it", "none", "own kept, but ended meanwhile"],
)
def test_a_revoked_group_eligibility_ends_no_grant_its_holder_may_still_ask_for(world, make_user, other_way):
    """The probe's case: alice keeps access through her own eligibility (kept in the same review, or not
    reviewed at all) while her group's is revoked — her grant stays, and the confirmation page counts it
    neither as a grant that ends nor as a person who loses eligibility."""
    team = Group.objects.create(name="requesters")
    alice = make_user("alice")
    team.user_set.add(alice)
    Eligibility.objects.create(role=world.role, group=team)
    if other_way != "none":
        Eligibility.objects.create(role=world.role, user=alice, starts_at=timezone.now() - H)
    access_request = ar.access_request_submit(alice, role=world.role, duration=H, justification="On call this week")
    ar.access_request_approve(world.approver, access_request.pk)
    grant = Grant.objects.get(access_request=access_request)
    campaign = open_campaign(world, no_response=ReviewCampaign.NoResponse.KEEP_AND_FLAG)
    if other_way == "own eligibility outside it":
        # Her own eligibility was added after the campaign opened: no item of this campaign covers it.
        ReviewItem.objects.filter(campaign=campaign, subject_user=alice).delete()
    elif other_way in ("own eligibility kept in the review", "own kept, but ended meanwhile"):
        own = item_for(campaign, alice, world.role)
        reviews.review_item_decide(own.reviewer, own.pk, decision="keep")
        if other_way == "own kept, but ended meanwhile":  # an owner ended it during the campaign
            Eligibility.objects.filter(pk=own.eligibility_id).update(ends_at=timezone.now())
    group_item = campaign.items.get(subject_group=team)
    reviews.review_item_decide(group_item.reviewer, group_item.pk, decision="revoke", comment="Group too broad")
    preview = reviews.review_campaign_close_preview(campaign.pk)
    reviews.review_campaign_close(world.auditor, campaign.pk)
    grant.refresh_from_db()
    if other_way in ("none", "own kept, but ended meanwhile"):
        assert grant.status == "revoked" and (preview["grants_end"], preview["people_lose_eligibility"]) == (1, 1)
        # A "keep" does not bring back an eligibility that ended during the campaign.
        assert not Eligibility.objects.active(timezone.now()).filter(user=alice).exists()
    else:
        assert grant.status == "active" and (preview["grants_end"], preview["people_lose_eligibility"]) == (0, 0)
        assert not AccessEvent.objects.filter(event_type="grant.revoked").exists()


@pytest.mark.parametrize(
    ("policy", "outcome", "still_eligible"), [("revoke", "revoked", False), ("keep_and_flag", "kept_flagged", True)]
)
def test_unanswered_items_follow_the_no_response_policy(world, policy, outcome, still_eligible):
    campaign = open_campaign(world, no_response=policy)
    reviews.review_campaign_close(world.auditor, campaign.pk)
    item = item_for(campaign, world.requester, world.role)
    item.refresh_from_db()
    assert item.outcome == outcome
    assert Eligibility.objects.active(timezone.now()).filter(pk=item.eligibility_id).exists() is still_eligible


def test_a_closed_campaign_is_immutable(world):
    campaign = open_campaign(world)
    item = item_for(campaign, world.requester, world.role)
    reviews.review_campaign_close(world.auditor, campaign.pk)
    with pytest.raises(TransitionNotAllowed, match="closed"):
        reviews.review_item_decide(world.owner, item.pk, decision="keep")
    with pytest.raises(TransitionNotAllowed, match="closed"):
        reviews.review_item_reassign(world.auditor, item.pk, reviewer=world.approver)
    with pytest.raises(TransitionNotAllowed, match="already closed"):
        reviews.review_campaign_close(world.auditor, campaign.pk)


def test_the_sweep_closes_campaigns_after_the_due_date_and_grace_period(world):
    campaign = open_campaign(world, grace=timedelta(days=2))
    assert sweep_run(timezone.now())["reviews_closed"] == 0
    with time_machine.travel(campaign.due_at + timedelta(seconds=1)):
        assert sweep_run(timezone.now())["reviews_closed"] == 0
        assert ReviewCampaign.objects.get(pk=campaign.pk).is_overdue_at(timezone.now())
    with time_machine.travel(campaign.due_at + timedelta(days=2, seconds=1)):
        assert sweep_run(timezone.now())["reviews_closed"] == 1
    campaign.refresh_from_db()
    assert campaign.status == ReviewCampaign.Status.CLOSED and campaign.closed_by is None
    assert AccessEvent.objects.get(event_type="review.closed").actor_label == "system:review-close"


def test_beat_opens_one_campaign_per_quarter(world):
    from accessgov.tasks import quarterly_review

    with time_machine.travel(datetime(2027, 1, 1, 6, 0, tzinfo=UTC)):
        Eligibility.objects.update(starts_at=datetime(2026, 1, 1, tzinfo=UTC))
        first = quarterly_review()
        assert quarterly_review() is None  # once per quarter
    campaign = ReviewCampaign.objects.get(pk=first)
    assert campaign.name == "Quarterly access review 2027 Q1"
    assert campaign.items.count() == 2
    assert AccessEvent.objects.get(event_type="review.opened").actor_label == "system:quarterly-review"


def _emails_to(mailoutbox, subject_part):
    return sorted(addr for m in mailoutbox if subject_part in m.subject for addr in m.to)


def test_reviewers_are_reminded_at_start_half_time_and_when_overdue(
    world, mailoutbox, settings, django_capture_on_commit_callbacks
):
    commits = django_capture_on_commit_callbacks
    Eligibility.objects.create(role=world.role, user=world.owner)  # reviewed by an auditor
    with time_machine.travel(datetime(2027, 1, 1, 9, tzinfo=UTC), tick=False), commits(execute=True):
        campaign = open_campaign(world)  # due in 14 days
    assert campaign.start_reminded_at is not None
    started = _emails_to(mailoutbox, "review started")
    assert started == sorted([world.owner.email, world.auditor.email])

    # A reviewer who has answered everything is not reminded again.
    for item in campaign.items.filter(reviewer=world.auditor):
        reviews.review_item_decide(world.auditor, item.pk, decision="keep")
    mailoutbox.clear()
    with time_machine.travel(datetime(2027, 1, 7, 9, tzinfo=UTC), tick=False):
        assert reviews.review_reminders_due(timezone.now()) == 0  # before half time
    with time_machine.travel(datetime(2027, 1, 8, 9, 0, 1, tzinfo=UTC), tick=False), commits(execute=True):
        assert reviews.review_reminders_due(timezone.now()) == 1
        assert reviews.review_reminders_due(timezone.now()) == 0  # once
    assert _emails_to(mailoutbox, "half time") == [world.owner.email]

    mailoutbox.clear()
    with time_machine.travel(datetime(2027, 1, 15, 9, 0, 1, tzinfo=UTC), tick=False), commits(execute=True):
        assert sweep_run(timezone.now())["review_reminders"] == 1
        assert sweep_run(timezone.now())["review_reminders"] == 0
    overdue = [m for m in mailoutbox if "OVERDUE" in m.subject]
    assert len(overdue) == 2  # the reviewer with open items, and the auditor
    assert sorted(m.to[0] for m in overdue) == sorted([world.owner.email, world.auditor.email])
    body = overdue[0].body
    assert "Q4 review" in body and "closes itself" in body


def test_kept_eligibility_gets_a_new_end_date_and_owners_are_reminded_before_it_ends(
    world, mailoutbox, settings, django_capture_on_commit_callbacks
):
    commits = django_capture_on_commit_callbacks
    settings.ELIGIBILITY_REMINDER_DAYS = 7
    campaign = open_campaign(world, keep_for=timedelta(days=30))
    item = item_for(campaign, world.requester, world.role)
    reviews.review_item_decide(world.owner, item.pk, decision="keep")
    reviews.review_campaign_close(world.auditor, campaign.pk)
    eligibility = Eligibility.objects.get(pk=item.eligibility_id)
    assert abs(eligibility.ends_at - (timezone.now() + timedelta(days=30))) < timedelta(minutes=1)

    mailoutbox.clear()
    with time_machine.travel(eligibility.ends_at - timedelta(days=8)):
        assert sweep_run(timezone.now())["eligibility_reminders"] == 0
    with time_machine.travel(eligibility.ends_at - timedelta(days=6)), commits(execute=True):
        assert sweep_run(timezone.now())["eligibility_reminders"] >= 1
        assert sweep_run(timezone.now())["eligibility_reminders"] == 0
    ending = [m for m in mailoutbox if "ends" in m.subject and world.requester.username in m.subject]
    assert [m.to for m in ending] == [[world.owner.email]]

    # Past its end date the eligibility no longer allows a new request.
    with (
        time_machine.travel(eligibility.ends_at + timedelta(seconds=1)),
        pytest.raises(PolicyViolation, match="not eligible"),
    ):
        ar.access_request_submit(
            world.requester, role=world.role, duration=H, justification="Investigating incident INC-42"
        )


def test_closing_is_set_based_the_same_queries_for_2_or_28_items(world):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tests.support.factories import RoleFactory

    def close_cost(campaign):
        with CaptureQueriesContext(connection) as queries:
            reviews.review_campaign_close(world.auditor, campaign.pk)
        return len(queries.captured_queries)

    small = open_campaign(world)
    small_cost = close_cost(small)
    for _ in range(28):
        Eligibility.objects.create(role=RoleFactory(system=world.system), user=world.approver2)
    big = open_campaign(world)
    assert small.items.count() == 2 and big.items.count() == 28  # closing the small one revoked its two
    assert close_cost(big) == small_cost
    assert (
        AccessEvent.objects.filter(event_type="review.applied", data__campaign_id=big.pk).count() == big.items.count()
    )
