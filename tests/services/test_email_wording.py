"""What e-mails and messages say: a grant's end worded by who or what ended it (never "an approver" for a job),
an extension's e-mails that say they are about an extension (which grant, its end now and if approved, in the
recipient's zone), and typed or confirmed times in the person's own zone."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accessgov import notifications
from accessgov.forms import EligibilityForm
from accessgov.models import AccessEvent, AccessRequest, Eligibility, Grant, ReviewItem
from accessgov.services import access_requests as ar
from accessgov.services import eligibility as eligibility_services
from accessgov.services import grants as gs
from accessgov.services import reviews
from accessgov.services import users as user_services
from accessgov.services.sweep import sweep_run
from tests.conftest import verify_session
from tests.support.requests import submit

pytestmark = pytest.mark.django_db
H = timedelta(hours=1)
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)  # 04:00 in New York (EST, UTC-5)


def at(moment: datetime):
    return time_machine.travel(moment, tick=False)


def _granted(world, **kwargs) -> Grant:
    access_request = submit(world, **kwargs)
    ar.access_request_approve(world.approver, access_request.pk)
    return Grant.objects.get(access_request=access_request)


def _in_new_york(*users) -> None:
    for user in users:
        user.time_zone = "America/New_York"
        user.save(update_fields=["time_zone"])


def _mail_to(mailoutbox, user, about: str = ""):
    """The one e-mail to ``user`` (whose subject has ``about`` in it)."""
    mails = [m for m in mailoutbox if m.to == [user.email] and about in m.subject]
    assert len(mails) == 1, [(m.to, m.subject) for m in mailoutbox]
    return mails[0]


# --- How a grant ended ----------------------------------------------------------------------------


def test_a_scheduled_grant_revoked_by_the_scheduler_is_worded_as_automatic_with_its_reason(
    world, mailoutbox, django_capture_on_commit_callbacks
):
    """The probe's finding: "Your access to … was revoked by an approver" for a revocation by system:scheduler.
    A person who revokes is named."""
    with at(T0):
        by_hand = _granted(world)
    with at(T0 + H / 4), django_capture_on_commit_callbacks(execute=True):
        gs.grant_revoke(world.owner, by_hand.pk, reason="Incident closed")
    mail = _mail_to(mailoutbox, world.requester)
    assert mail.subject == f"[AccessGov] Your access to {world.role} was revoked by {world.owner.get_full_name()}"
    assert "Why: Incident closed" in mail.body
    with at(T0 + H / 2):
        grant = _granted(world, starts_at=T0 + 2 * H)
    eligibility = Eligibility.objects.get(role=world.role, user=world.requester)
    with at(T0 + H):
        eligibility_services.eligibility_end(world.owner, eligibility.pk, reason="Moved to the data team")
    mailoutbox.clear()
    with at(T0 + 2 * H), django_capture_on_commit_callbacks(execute=True):
        gs.grant_activate_due(timezone.now(), job="scheduler")
    grant.refresh_from_db()
    assert grant.status == Grant.Status.REVOKED and grant.ended_by is None
    mail = _mail_to(mailoutbox, world.requester)
    expected = (
        f"[AccessGov] Your access to {world.role} was revoked automatically: "
        "Not eligible for the role at the scheduled start."
    )
    assert mail.subject == expected
    assert "approver" not in mail.subject + mail.body


def test_a_grant_revoked_by_an_access_review_names_the_review_and_the_reviewer(
    world, mailoutbox, django_capture_on_commit_callbacks
):
    with at(T0):
        grant = _granted(world)
        campaign = reviews.review_campaign_create(
            world.auditor, name="Q4 review", systems=[world.system], due_at=T0 + timedelta(days=14)
        )
        item = ReviewItem.objects.get(
            campaign=campaign, subject_user=world.requester, role=world.role, eligibility__isnull=False
        )
        reviews.review_item_decide(world.owner, item.pk, decision="revoke", comment="Left the payments team")
        mailoutbox.clear()
        with django_capture_on_commit_callbacks(execute=True):
            reviews.review_campaign_close(world.auditor, campaign.pk)
    grant.refresh_from_db()
    assert grant.status == Grant.Status.REVOKED
    mail = _mail_to(mailoutbox, world.requester)
    assert mail.subject == (
        f"[AccessGov] Your access to {world.role} was revoked in the access review “Q4 review” "
        f"by {world.owner.get_full_name()}"
    )


def test_each_other_end_of_a_grant_is_worded_by_what_ended_it(world, admins):
    with at(T0 + 2 * H):
        ticket = _granted(world)
        gs.grant_revoke_by_system(
            ticket.pk,
            reason="Ticket OPS-1 closed (Done).",
            job="jira-webhook",
            end_reason=Grant.EndReason.TICKET_CLOSED,
            event_type=AccessEvent.Type.GRANT_TICKET_CLOSED,
        )
        released = _granted(world)
        gs.grant_release(world.requester, released.pk)
        scheduled = _granted(world, starts_at=T0 + 5 * H)
        gs.grant_release(world.requester, scheduled.pk)
    headings = {
        grant.pk: notifications.grant_ended(Grant.objects.get(pk=grant.pk)).heading
        for grant in (ticket, released, scheduled)
    }
    assert headings == {
        ticket.pk: f"Your access to {world.role} ended: its ticket closed",
        released.pk: f"Your access to {world.role} was released",
        scheduled.pk: f"Your access to {world.role} was cancelled before it started",
    }
    # (a deactivated person is e-mailed nothing; the words are still theirs, not an approver's)
    with at(T0 + 3 * H):
        deactivated = _granted(world)
        user_services.user_deactivate(admins[0], world.requester.pk, reason="Left the company")
    deactivated.refresh_from_db()
    assert notifications.grant_ended(deactivated).heading == (
        f"Your access to {world.role} was revoked: your account was deactivated"
    )


# --- Extensions -----------------------------------------------------------------------------------


def _extension(world) -> tuple[Grant, AccessRequest]:
    """requester's 1 h grant from T0 (ends 05:00 in New York) and their pending request, at T0 + 50 min, to
    extend it by 30 min (to 05:30)."""
    with at(T0):
        grant = _granted(world)
    with at(T0 + timedelta(minutes=50)):
        extension = ar.access_request_submit_extension(
            world.requester, grant_id=grant.pk, duration=H / 2, justification="Migration is taking longer"
        )
    return grant, extension


def test_approvers_read_an_extension_as_one_with_the_current_and_the_new_end_in_their_zone(
    world, mailoutbox, django_capture_on_commit_callbacks
):
    _in_new_york(world.approver)
    with at(T0):
        grant = _granted(world)
    mailoutbox.clear()
    with at(T0 + timedelta(minutes=50)), django_capture_on_commit_callbacks(execute=True):
        ar.access_request_submit_extension(
            world.requester, grant_id=grant.pk, duration=H / 2, justification="Migration is taking longer"
        )
    mail = _mail_to(mailoutbox, world.approver)
    who = world.requester.get_full_name()
    assert mail.subject == f"[AccessGov] {who} asks to extend {world.role} (grant #{grant.pk}) by 30 min"
    assert f"Extension of grant #{grant.pk}, which now ends at 2026-11-02 05:00 EST." in mail.body
    assert "If approved, it ends at 2026-11-02 05:30 EST (30 min more" in mail.body
    assert "Starts: when approved" not in mail.body
    # Another approver without a zone reads the same instants in UTC.
    other = _mail_to(mailoutbox, world.approver2)
    assert "which now ends at 2026-11-02 10:00 UTC." in other.body


def test_a_denied_extension_says_the_access_stands_until_its_current_end(
    world, mailoutbox, django_capture_on_commit_callbacks
):
    _in_new_york(world.requester)
    grant, extension = _extension(world)
    mailoutbox.clear()
    with at(T0 + timedelta(minutes=55)), django_capture_on_commit_callbacks(execute=True):
        ar.access_request_deny(world.approver, extension.pk, comment="Finish it tomorrow")
    mail = _mail_to(mailoutbox, world.requester)
    assert mail.subject == f"[AccessGov] Extension denied: {world.role} (grant #{grant.pk})"
    assert f"Grant #{grant.pk} was not extended: it still ends at 2026-11-02 05:00 EST." in mail.body
    assert "Asked for: 30 min more." in mail.body and "Finish it tomorrow" in mail.body


def test_a_lapsed_extension_says_the_access_stands_until_its_current_end(
    world, mailoutbox, django_capture_on_commit_callbacks
):
    world.role.pending_timeout = timedelta(minutes=5)
    world.role.save(update_fields=["pending_timeout"])
    _in_new_york(world.requester)
    grant, _ = _extension(world)
    mailoutbox.clear()
    with at(T0 + timedelta(minutes=56)), django_capture_on_commit_callbacks(execute=True):
        assert sweep_run(timezone.now())["lapsed"] == 1
    # (the sweep also drains the outbox of notifications the test did not send on commit)
    mail = _mail_to(mailoutbox, world.requester, "lapsed")
    assert mail.subject == f"[AccessGov] Extension lapsed: {world.role} (grant #{grant.pk})"
    assert f"Grant #{grant.pk} was not extended: it still ends at 2026-11-02 05:00 EST." in mail.body


def test_an_approved_extension_says_the_new_end_and_the_old_one(world, mailoutbox, django_capture_on_commit_callbacks):
    _in_new_york(world.requester)
    grant, extension = _extension(world)
    mailoutbox.clear()
    with at(T0 + timedelta(minutes=55)), django_capture_on_commit_callbacks(execute=True):
        ar.access_request_approve(world.approver, extension.pk)
    mail = _mail_to(mailoutbox, world.requester)
    assert mail.subject == f"[AccessGov] Extension approved: {world.role} (grant #{grant.pk})"
    assert f"Grant #{grant.pk} now ends at 2026-11-02 05:30 EST instead of 2026-11-02 05:00 EST." in mail.body


# --- Times people type and read -------------------------------------------------------------------


def test_the_eligibility_confirmation_names_the_owners_zone(world):
    _in_new_york(world.owner)
    with at(T0):
        data = {"role": world.role.pk, "user": world.outsider.pk, "ends_at": "2026-12-07T23:30", "reason": "On call"}
        page = (
            verify_session(Client(), world.owner)
            .post(reverse("eligibility_add", args=[world.system.slug]), data, follow=True)
            .content.decode()
        )
    assert "may now request" in page and "until 2026-12-07 23:30 EST." in page
    eligibility = Eligibility.objects.get(user=world.outsider)
    assert eligibility.ends_at == datetime(2026, 12, 8, 4, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("typed", "said"),
    [
        # Happens twice (1 November 2026): each of the two, with New York's own offsets.
        (
            "2026-11-01T01:30",
            "2026-11-01T01:30-04:00 for the first (EDT), 2026-11-01T01:30-05:00 for the second (EST)",
        ),
        # Does not exist (8 March 2026): the minute after the jump, in New York.
        ("2026-03-08T02:30", "does not exist in America/New_York: a daylight-saving switch skips it"),
    ],
)
def test_a_time_a_daylight_saving_switch_skips_or_repeats_is_explained_in_the_persons_own_zone(world, typed, said):
    with timezone.override("America/New_York"):
        form = EligibilityForm(
            {"role": world.role.pk, "user": world.outsider.pk, "ends_at": typed, "reason": "x"}, system=world.system
        )
        assert not form.is_valid()
    error = form.errors["ends_at"][0]
    assert said in error and "daylight-saving" in error
    assert "+01:00" not in error and "+02:00" not in error  # never Berlin's offsets to a New York user
    if typed == "2026-03-08T02:30":
        assert "e.g. 2026-03-08T03:30 (EDT)" in error
