"""The inbox (issue 18, item 7): "needs me" per persona, derived live; "what happened to my access, and
why" from the ledger with read marks; the badge's query budget; notification preferences and links."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core import mail
from django.test import Client
from django.urls import reverse

from accessgov import context_processors, inbox, notifications, selectors
from accessgov.models import AccessEvent, ActivityFinding, ChangeRequest, Grant, InboxReadMark, ReviewItem, Role
from accessgov.services import access_requests as ar
from accessgov.services import changes, reviews
from accessgov.services import grants as gs
from accessgov.services.grants import EXPIRY_REMINDER_BEFORE
from tests.conftest import verify_session
from tests.support.requests import submit

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
H = timedelta(hours=1)


@pytest.fixture(autouse=True)
def _at_t0():
    with time_machine.travel(T0, tick=False):
        yield


def _granted(world):
    access_request = submit(world)
    ar.access_request_approve(world.approver, access_request.pk)
    return Grant.objects.get(access_request=access_request)


def _finding(world, **fields):
    """An open DDL finding on world.system, raised the way activity capture raises it
    (tests/views/test_activity_pages.py drives capture itself)."""
    return ActivityFinding.objects.create(
        system=world.system, kind=ActivityFinding.Kind.DDL, first_seen_at=T0, last_seen_at=T0, **fields
    )


def _page(user):
    return verify_session(Client(), user).get(reverse("inbox"))


def _home(user) -> str:
    return verify_session(Client(), user).get(reverse("home")).content.decode()


# --- Needs me, per persona ---------------------------------------------------------------------


def test_an_approver_sees_the_request_waiting_for_them_and_the_requester_does_not(world):
    pending = submit(world)
    assert [r.pk for r in inbox.needs_me(world.approver, T0).approvals] == [pending.pk]
    assert inbox.needs_me(world.requester, T0).approvals == []
    page = _page(world.approver)
    assert f'id="request-{pending.pk}"' in page.content.decode()
    assert page.context["nav"]["inbox"]["needs_me"] == 1


def test_approvers_owners_and_auditors_see_a_break_glass_use_to_acknowledge_but_not_its_user(world):
    Role.objects.filter(pk=world.role.pk).update(break_glass_allowed=True)
    role = Role.objects.get(pk=world.role.pk)
    grant = gs.break_glass_activate(world.requester, role=role, justification="Outage INC-9", duration=H, step_up_at=T0)
    # A use is acknowledged once it has ended: while in use it is nobody's to do yet (tests/test_inbox_in_use.py).
    assert inbox.needs_me(world.approver, T0).follow_ups == []
    gs.grant_release(world.requester, grant.pk)
    for persona in (world.approver, world.owner, world.auditor):
        assert [f.grant_id for f in inbox.needs_me(persona, T0).follow_ups] == [grant.pk], persona
        counts = _page(persona).context["nav"]["inbox"]
        assert counts["follow_ups"] == 1
    assert inbox.needs_me(world.requester, T0).follow_ups == []
    assert inbox.needs_me(world.outsider, T0).follow_ups == []
    gs.break_glass_acknowledge(world.auditor, grant.follow_up.pk, comment="Checked the incident")
    assert inbox.needs_me(world.approver, T0).follow_ups == []


def test_a_reviewer_sees_the_items_they_must_answer_and_the_owner_home_shows_the_review_work(world):
    campaign = reviews.review_campaign_create(
        world.auditor, name="Q4 review", systems=[world.system], due_at=T0 + timedelta(days=14)
    )
    reviewer_ids = set(campaign.items.values_list("reviewer_id", flat=True))
    assert world.owner.pk in reviewer_ids
    mine = campaign.items.filter(reviewer=world.owner).count()
    needs = inbox.needs_me(world.owner, T0)
    assert [(c.pk, c.open_items) for c in needs.reviews] == [(campaign.pk, mine)]
    home = verify_session(Client(), world.owner).get(reverse("home"))
    assert "Q4 review" in home.content.decode() and home.context["nav"]["inbox"]["reviews"] == mine
    for item in campaign.items.filter(reviewer=world.owner):
        reviews.review_item_decide(world.owner, item.pk, decision=ReviewItem.Decision.KEEP)
    assert inbox.needs_me(world.owner, T0).reviews == []


def test_an_activity_finding_waits_for_the_approver_but_not_for_the_grantee(world):
    grant = _granted(world)
    finding = _finding(world, grant=grant, role=world.role, user=world.requester, principal="requester")
    assert [f.pk for f in inbox.needs_me(world.approver, T0).findings] == [finding.pk]
    assert inbox.needs_me(world.requester, T0).findings == []
    assert inbox.needs_me(world.outsider, T0).findings == []
    counts = _page(world.approver).context["nav"]["inbox"]
    assert counts["findings"] == 1 and f'id="finding-{finding.pk}"' in _page(world.approver).content.decode()
    assert "1 activity finding</a> to sign off" in _home(world.approver)
    assert "activity finding" not in _home(world.requester)


def test_an_owner_sees_eligibility_ending_on_their_system_and_the_reminder_links_there(world, settings):
    from accessgov.models import Eligibility

    settings.PORTAL_URL = "https://accessgov.example"
    ending = Eligibility.objects.create(
        role=world.role, user=world.outsider, starts_at=T0 - H, ends_at=T0 + timedelta(days=3), reason="Contract"
    )
    Eligibility.objects.create(
        role=world.role, user=world.approver, starts_at=T0 - H, ends_at=T0 + timedelta(days=60), reason="Later"
    )
    assert [e.pk for e in inbox.needs_me(world.owner, T0).eligibility_ending] == [ending.pk]
    assert inbox.needs_me(world.approver, T0).eligibility_ending == []
    assert _page(world.owner).context["nav"]["inbox"]["eligibility_ending"] == 1
    assert "1 eligibility</a> on your systems ending soon" in _home(world.owner)
    assert "ending soon" not in _home(world.approver)
    message = notifications.build("eligibility_ending", ending.pk)
    assert message.action_url == f"https://accessgov.example/inbox/#eligibility-{ending.pk}"


def test_overseers_see_ended_access_not_yet_removed_at_the_target(world, settings):
    grant = _granted(world)
    gs.grant_revoke(world.approver, grant.pk, reason="Done")
    later = T0 + timedelta(minutes=settings.PROVISIONING_REMOVAL_ALERT_MINUTES + 5)
    with time_machine.travel(later, tick=False):
        assert inbox.needs_me(world.owner, later).removals == 1
        assert inbox.needs_me(world.requester, later).removals == 0  # their own access: not theirs to chase
        assert 'id="removals"' in _page(world.auditor).content.decode()


def test_an_admin_sees_a_four_eyed_change_another_admin_proposed_but_not_their_own(world, make_user):
    first = make_user("admin1", is_staff=True, is_superuser=True)
    second = make_user("admin2", is_staff=True, is_superuser=True)
    role = Role.objects.get(pk=world.role.pk)
    role.approvals_required = 2
    change = changes.change_propose(first, kind=ChangeRequest.Kind.ROLE, instance=role, fields=["approvals_required"])
    assert [c.pk for c in inbox.needs_me(second, T0).changes] == [change.pk]
    assert inbox.needs_me(first, T0).changes == []
    assert inbox.needs_me(world.approver, T0).changes == []


def test_a_grant_ending_soon_asks_its_holder_to_extend_or_release(world):
    assert inbox.ENDING_SOON == EXPIRY_REMINDER_BEFORE
    grant = _granted(world)
    assert inbox.needs_me(world.requester, T0).ending == []
    later = T0 + timedelta(minutes=50)
    with time_machine.travel(later, tick=False):
        assert [g.pk for g in inbox.needs_me(world.requester, later).ending] == [grant.pk]
        assert f'id="grant-{grant.pk}"' in _page(world.requester).content.decode()
        # The home page hands its active grants in (one query fewer): the same list, also when none ends.
        for when in (T0, later):
            active = list(selectors.my_active_grants(world.requester, when))
            handed = inbox.needs_me(world.requester, when, active_grants=active).ending
            assert handed == inbox.needs_me(world.requester, when).ending
        home = verify_session(Client(), world.requester).get(reverse("home"))
        assert [g.pk for g in home.context["needs_me"].ending] == [grant.pk]


# --- What happened, and why ---------------------------------------------------------------------


def test_a_grant_revoked_by_a_review_tells_its_holder_the_campaign_and_the_reviewers_reason(world):
    grant = _granted(world)
    campaign = reviews.review_campaign_create(
        world.auditor, name="Q4 review", systems=[world.system], due_at=T0 + timedelta(days=14)
    )
    item = campaign.items.get(subject_user=world.requester, role=world.role, eligibility__isnull=False)
    reviews.review_item_decide(item.reviewer, item.pk, decision="revoke", comment="Left the payments team")
    reviews.review_campaign_close(world.auditor, campaign.pk)
    items = inbox.happened(world.requester)
    revoked = next(e for e in items if e.event_type == AccessEvent.Type.GRANT_REVOKED)
    assert "Q4 review" in revoked.reason and "Left the payments team" in revoked.reason
    assert item.reviewer.get_username() in revoked.reason
    assert not revoked.is_read and revoked.summary == f"Your access to {world.role} was revoked"
    client = verify_session(Client(), world.requester)
    detail = client.get(reverse("grant_detail", args=[grant.pk])).content.decode()
    assert "Left the payments team" in detail and "Q4 review" in detail
    # Opening the item marks it read; the badge counts one fewer.
    before = client.get(reverse("inbox")).context["nav"]["inbox"]["unread"]
    page = client.get(reverse("inbox_item", args=[revoked.pk]))
    assert page.status_code == 200 and "Left the payments team" in page.content.decode()
    assert client.get(reverse("inbox")).context["nav"]["inbox"]["unread"] == before - 1


def test_approved_denied_and_released_show_but_what_i_did_myself_is_not_news(world):
    denied = submit(world)
    ar.access_request_deny(world.approver, denied.pk, comment="Use the read-only role")
    grant = _granted(world)
    gs.grant_release(world.requester, grant.pk)
    items = {e.event_type: e for e in inbox.happened(world.requester)}
    assert not items[AccessEvent.Type.REQUEST_DENIED].is_read
    assert "Use the read-only role" in items[AccessEvent.Type.REQUEST_DENIED].reason
    assert not items[AccessEvent.Type.REQUEST_APPROVED].is_read
    # Each decision once: the deny and the one approval that decided are the request's own events, not twice.
    assert AccessEvent.Type.DECISION_DENY not in items and AccessEvent.Type.DECISION_APPROVE not in items
    # Released by the requester themselves: listed, never unread.
    assert items[AccessEvent.Type.GRANT_RELEASED].is_read
    assert AccessEvent.Type.REQUEST_SUBMITTED not in items
    everything = inbox.happened(world.requester)
    unread = inbox.badge_counts(world.requester, T0, queue_size=0, pending_changes=0)["unread"]
    assert unread == sum(1 for e in everything if not e.is_read)
    assert inbox.happened(world.approver) == []


def test_one_approval_of_two_is_news_and_the_deciding_one_shows_once(world):
    access_request = submit(world, role=world.role_two)  # two approvals needed
    ar.access_request_approve(world.approver, access_request.pk)
    assert [e.event_type for e in inbox.happened(world.requester)] == [AccessEvent.Type.DECISION_APPROVE]
    ar.access_request_approve(world.approver2, access_request.pk)
    kinds = [e.event_type for e in inbox.happened(world.requester)]
    assert kinds.count(AccessEvent.Type.REQUEST_APPROVED) == 1 and kinds.count(AccessEvent.Type.DECISION_APPROVE) == 2
    unread = inbox.badge_counts(world.requester, T0, queue_size=0, pending_changes=0)["unread"]
    assert unread == sum(1 for e in inbox.happened(world.requester) if not e.is_read)


def test_expiry_extension_and_deactivation_reach_the_holders_inbox_with_why(world, make_user):
    from accessgov.services import users

    grant = _granted(world)
    extension = ar.access_request_submit_extension(
        world.requester, grant_id=grant.pk, duration=timedelta(minutes=30), justification="Still migrating"
    )
    ar.access_request_approve(world.approver, extension.pk)
    later = T0 + timedelta(hours=2)
    with time_machine.travel(later, tick=False):
        gs.grant_expire_due(later)
    second = _granted(world)
    admin = make_user("admin1", is_staff=True, is_superuser=True)
    users.user_deactivate(admin, world.requester.pk, reason="Left the company")
    items = inbox.happened(world.requester)
    by_type = {}
    for event in items:
        by_type.setdefault(event.event_type, []).append(event)
    assert by_type[AccessEvent.Type.GRANT_EXTENDED][0].grant_id == grant.pk
    assert by_type[AccessEvent.Type.GRANT_EXPIRED][0].grant_id == grant.pk
    revoked = by_type[AccessEvent.Type.GRANT_REVOKED][0]
    assert revoked.grant_id == second.pk and "Left the company" in revoked.reason


def test_what_happened_is_searchable_by_words_and_request_number_and_narrows_to_unread(world):
    denied = submit(world)
    ar.access_request_deny(world.approver, denied.pk, comment="Use the read-only role")
    grant = _granted(world)
    gs.grant_release(world.requester, grant.pk)  # done by the requester: listed as read
    client = verify_session(Client(), world.requester)

    def shown(**query):
        response = client.get(reverse("inbox"), query)
        assert response.status_code == 200, response.content.decode()[:500]
        return [e.event_type for e in response.context["happened"]]

    assert shown(q="read-only") == [AccessEvent.Type.REQUEST_DENIED]
    assert shown(q=f"#{denied.pk}") == [AccessEvent.Type.REQUEST_DENIED]
    assert shown(q="READ-ONLY role") == [AccessEvent.Type.REQUEST_DENIED]  # every word, any case
    assert set(shown(q=world.role.name)) >= {AccessEvent.Type.REQUEST_DENIED, AccessEvent.Type.GRANT_RELEASED}
    assert AccessEvent.Type.GRANT_RELEASED not in shown(unread="on")
    assert AccessEvent.Type.REQUEST_DENIED in shown(unread="on")
    assert shown(q="zz-nothing-like-it") == []
    assert "Nothing matches" in client.get(reverse("inbox"), {"q": "zz-nothing-like-it"}).content.decode()
    # Bad input: a clear 400 on the page, nothing searched; another person's words find nothing of theirs.
    too_long = client.get(reverse("inbox"), {"q": "x" * 201})
    assert too_long.status_code == 400 and too_long.context["happened"] == []
    assert client.get(reverse("inbox"), {"unread": "maybe", "before": "junk"}).status_code in (200, 400)
    outsider = verify_session(Client(), world.outsider)
    assert outsider.get(reverse("inbox"), {"q": "read-only"}).context["happened"] == []
    # Everything read: "unread only" is empty.
    client.post(reverse("inbox_read_all"))
    assert shown(unread="on") == []


def test_mark_all_read_moves_the_read_mark_and_clears_the_badge(world):
    _granted(world)
    client = verify_session(Client(), world.requester)
    assert client.get(reverse("inbox")).context["nav"]["inbox"]["unread"] >= 1
    assert client.post(reverse("inbox_read_all")).status_code == 302
    world.requester.refresh_from_db()
    assert world.requester.inbox_read_through > 0
    assert client.get(reverse("inbox")).context["nav"]["inbox"]["unread"] == 0


def test_another_persons_inbox_item_is_a_404_and_cannot_be_marked_read(world):
    _granted(world)
    theirs = inbox.happened(world.requester)[0]
    snoop = verify_session(Client(), world.outsider)
    assert snoop.get(reverse("inbox_item", args=[theirs.pk])).status_code == 404
    assert snoop.post(reverse("inbox_item_read", args=[theirs.pk])).status_code == 404
    # Even the approver who caused it (it is about the requester's access, not theirs).
    assert (
        verify_session(Client(), world.approver).post(reverse("inbox_item_read", args=[theirs.pk])).status_code == 404
    )
    assert not InboxReadMark.objects.exists()
    # A GET cannot mark anything read through the POST endpoint.
    assert (
        verify_session(Client(), world.requester).get(reverse("inbox_item_read", args=[theirs.pk])).status_code == 405
    )
    own = verify_session(Client(), world.requester).post(reverse("inbox_item_read", args=[theirs.pk]))
    assert own.status_code == 302 and InboxReadMark.objects.get().user_id == world.requester.pk


def test_the_badge_costs_one_query_whatever_the_inbox_holds(world, django_assert_num_queries, rf):
    for _ in range(3):
        grant = _granted(world)
        gs.grant_revoke(world.approver, grant.pk, reason="Done with it")
    world.auditor._permission_memo = {}
    world.requester._permission_memo = {}
    for user in (world.requester, world.auditor):
        from accessgov import permissions

        permissions.scope(user)  # the navigation's scope query is there already, memoized per request
        with django_assert_num_queries(1):
            counts = inbox.badge_counts(user, T0, queue_size=0, pending_changes=0)
        assert counts["total"] == counts["needs_me"] + counts["unread"]
    assert inbox.badge_counts(world.requester, T0, queue_size=0, pending_changes=0)["unread"] >= 6
    assert context_processors  # the badge is computed in the navigation context processor


def test_the_badge_counts_unread_items_up_to_a_hundred_and_shows_99_plus(world):
    """Counting stops at UNREAD_COUNTED_UP_TO: the badge's statement runs on every page, and a person who
    never opens the inbox must not pay for their whole history on each. The inbox itself lists everything."""
    from django.db import connection
    from django.db import transaction as db_transaction

    from accessgov import permissions
    from accessgov.services.events import event_record

    access_request = submit(world)

    def unread_events(n: int) -> None:
        with db_transaction.atomic():
            for _ in range(n):
                event_record(AccessEvent.Type.REQUEST_LAPSED, job="test", access_request=access_request)

    def counted() -> dict:
        world.requester._permission_memo = {}
        permissions.scope(world.requester)
        counts = inbox.badge_counts(world.requester, T0, queue_size=0, pending_changes=0)
        if connection.vendor == "postgresql":  # the ORM twin counts the same
            assert inbox.badge_counts_portable(world.requester, T0)["unread"] == counts["unread"]
        return counts

    unread_events(99)
    counts = counted()
    assert (counts["unread"], counts["unread_label"], counts["total_label"]) == (99, "99", "99")
    unread_events(31)
    counts = counted()
    assert (counts["unread"], counts["unread_label"], counts["total_label"]) == (100, "100+", "99+")
    assert counts["total"] == counts["needs_me"] + 100
    html = _page(world.requester).content.decode()
    assert '<span aria-hidden="true">99+</span><span class="visually-hidden">0 need you, 100+ unread</span>' in html
    assert html.count('class="unread"') == inbox.HAPPENED_PAGE_SIZE  # the inbox lists them, a page at a time


@pytest.mark.postgres
def test_the_badge_statement_counts_what_its_orm_twin_counts_for_every_persona(world, settings, make_user):
    """``badge_counts_postgresql`` (one fixed statement) against ``badge_counts_portable`` (the ORM), with
    something in every part of the badge: an open review item, a grant ending soon, unread and read
    events, an open break-glass follow-up, an open finding, an overdue removal, eligibility ending."""
    from accessgov import permissions
    from accessgov.models import Eligibility

    revoked = _granted(world)
    gs.grant_revoke(world.approver, revoked.pk, reason="Done")
    kept = _granted(world)
    InboxReadMark.objects.create(user=world.requester, event_id=AccessEvent.objects.order_by("-pk").first().pk)
    first_event = inbox.happened_events(world.requester).exclude(actor=world.requester).order_by("sequence").first()
    world.requester.inbox_read_through = first_event.sequence  # read through the first, the rest unread
    world.requester.save(update_fields=["inbox_read_through"])
    Role.objects.filter(pk=world.role.pk).update(break_glass_allowed=True)
    responder = world.approver2  # an overseer with a follow-up of their own: not theirs to acknowledge
    Eligibility.objects.create(role=world.role, user=responder, starts_at=T0 - H, reason="On call")
    gs.break_glass_activate(  # ended by ``later`` below: an open follow-up to count (not while in use)
        responder, role=Role.objects.get(pk=world.role.pk), justification="Outage INC-77", duration=H / 2, step_up_at=T0
    )
    _finding(world, grant=kept, role=world.role, user=world.requester, principal="requester")
    _finding(world, principal="nobody")
    _finding(
        world, role=world.role, user=world.approver2, principal="approver2"
    )  # an overseer's: not theirs to sign off
    Eligibility.objects.create(
        role=world.role, user=world.outsider, starts_at=T0 - H, ends_at=T0 + timedelta(days=3), reason="Contract"
    )
    reviews.review_campaign_create(world.auditor, name="Q4", systems=[world.system], due_at=T0 + timedelta(days=9))
    admin = make_user("badge-admin", is_staff=True, is_superuser=True)
    personas = [world.requester, world.approver, world.approver2, world.owner, world.auditor, world.outsider, admin]
    later = T0 + timedelta(minutes=settings.PROVISIONING_REMOVAL_ALERT_MINUTES + 50)  # removal overdue, kept ends soon
    with time_machine.travel(later, tick=False):
        seen = {}
        for user in personas:
            user._permission_memo = {}
            permissions.scope(user)
            portable = inbox.badge_counts_portable(user, later)
            assert inbox.badge_counts_postgresql(user, later) == portable, user.username
            seen[user.username] = portable
    for part in inbox.BADGE_PARTS:  # every part was counted for somebody: the comparison covered it
        assert any(counts[part] for counts in seen.values()), part
    assert seen[world.outsider.username] == dict.fromkeys(inbox.BADGE_PARTS, 0)


# --- Preferences and links ----------------------------------------------------------------------


def test_email_preferences_are_respected_per_category_and_every_email_links_to_the_inbox(world, settings):
    settings.PORTAL_URL = "https://accessgov.example"
    client = verify_session(Client(), world.approver)
    page = client.get(reverse("notification_preferences"))
    assert page.status_code == 200 and page.context["form"]["approvals__email"].value() is True
    data = {f"{name}__{channel}": "on" for name in notifications.CATEGORIES for channel in notifications.CHANNELS}
    del data["approvals__email"]
    assert client.post(reverse("notification_preferences"), data).status_code == 302
    world.approver.refresh_from_db()
    assert notifications.wants(world.approver, "request_submitted", "email") is False
    assert notifications.wants(world.approver, "request_submitted", "slack") is True
    pending = submit(world)
    mail.outbox.clear()
    notifications.dispatch("request_submitted", pending.pk, notification_id="n1")
    recipients = {m.to[0] for m in mail.outbox}
    assert world.approver.email not in recipients and world.approver2.email in recipients
    assert f"https://accessgov.example/inbox/#request-{pending.pk}" in mail.outbox[0].body
    ar.access_request_approve(world.approver2, pending.pk)
    mail.outbox.clear()
    notifications.dispatch("request_decided", pending.pk, notification_id="n2")
    item = inbox.latest_happened_id(world.requester, access_request_id=pending.pk)
    assert f"https://accessgov.example/inbox/items/{item}/" in mail.outbox[0].body


def test_the_inbox_page_lists_both_sections_for_a_requester(world):
    _granted(world)
    html = _page(world.requester).content.decode()
    assert "Needs me" in html and "What happened to my access, and why" in html
    assert f"Your access request to {world.role}" not in html
    assert f"Your request for {world.role} was approved" in html


def test_an_extension_reads_as_english_in_the_inbox(world):
    """It read "Your extension of access to … was extended" and "Your extension of request to … approved
    automatically"."""
    from accessgov import inbox
    from accessgov.services import access_requests as ar

    world.role.approvals_required = 0
    world.role.save()
    grant = ar.access_request_submit(
        world.requester, role=world.role, duration=timedelta(hours=1), justification="Fix the stuck payout batch"
    ).grant
    ar.access_request_submit_extension(
        world.requester, grant_id=grant.pk, duration=timedelta(minutes=30), justification="Still fixing the batch"
    )
    summaries = {item.summary for item in inbox.happened(world.requester)}
    assert f"Your request for more time on {world.role} was approved automatically" in summaries
    assert f"Your access to {world.role} was extended" in summaries
    assert f"Your request for {world.role} was approved automatically" in summaries
    assert not any("extension of" in s for s in summaries)
