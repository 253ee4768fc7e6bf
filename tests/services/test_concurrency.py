"""Races between real transactions on PostgreSQL: each racer is a thread with its own connection.

Services lock the row they change (``select_for_update``) and sweeps skip rows another transaction
holds (``skip_locked``); these tests start the competing calls together and check that exactly one
outcome wins, with exactly the events and grants that outcome owes. SQLite cannot run them (it has
no row locks), so they are PostgreSQL-only.
"""

import threading
import time
from collections import Counter
from datetime import timedelta
from functools import partial

import pytest
from django.db import transaction
from django.db.models import Count, F
from django.utils import timezone

from accessgov import dbsql
from accessgov.exceptions import NotAuthorized, TransitionNotAllowed
from accessgov.models import AccessEvent, AccessRequest, Decision, Eligibility, Grant
from accessgov.services import access_requests as ar
from accessgov.services import grants as gs
from tests.support.concurrency import race
from tests.support.requests import submit

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]
H = timedelta(hours=1)


def event_types(**filters) -> Counter:
    return Counter(AccessEvent.objects.filter(**filters).values_list("event_type", flat=True))


def fresh_requester(world, make_user, name: str):
    """Another requester eligible for world.role (a person holds at most one current grant per role)."""
    user = make_user(name, device=False)
    Eligibility.objects.create(role=world.role, user=user)
    return user


# --- Two approvals at once ---------------------------------------------------------------------


@pytest.mark.parametrize("same_person", [False, True], ids=["two-approvers", "double-click"])
def test_two_approvals_of_a_one_approval_request_at_once_grant_exactly_once(world, same_person):
    access_request = submit(world, role=world.role)
    second = world.approver if same_person else world.approver2

    outcomes = race(
        {
            "first": lambda: ar.access_request_approve(world.approver, access_request.pk, comment="ok"),
            "second": lambda: ar.access_request_approve(second, access_request.pk, comment="ok too"),
        }
    )

    winners = [o for o in outcomes.values() if o.ok]
    losers = [o for o in outcomes.values() if not o.ok]
    assert len(winners) == 1, outcomes
    assert len(losers) == 1, outcomes
    # The loser waited for the winner's row lock, then saw the committed state.
    assert isinstance(losers[0].error, TransitionNotAllowed), outcomes
    assert "already approved" in str(losers[0].error)

    access_request.refresh_from_db()
    assert access_request.status == AccessRequest.Status.APPROVED
    assert Decision.objects.filter(access_request=access_request).count() == 1
    assert Grant.objects.filter(access_request=access_request, status=Grant.Status.ACTIVE).count() == 1
    assert Grant.objects.count() == 1
    assert event_types(access_request=access_request) == Counter(
        {"request.submitted": 1, "decision.approve": 1, "request.approved": 1, "grant.activated": 1}
    )


def test_two_approvers_of_a_two_approval_request_at_once_both_count_and_grant_once(world):
    access_request = submit(world, role=world.role_two)

    outcomes = race(
        {
            "approver": lambda: ar.access_request_approve(world.approver, access_request.pk),
            "approver2": lambda: ar.access_request_approve(world.approver2, access_request.pk),
        }
    )

    # Both approvals are legitimate: neither may be lost, and the second one in completes the request.
    assert all(o.ok for o in outcomes.values()), outcomes
    access_request.refresh_from_db()
    assert access_request.status == AccessRequest.Status.APPROVED
    assert set(Decision.objects.filter(access_request=access_request).values_list("approver__username", flat=True)) == {
        "approver",
        "approver2",
    }
    assert Grant.objects.filter(access_request=access_request).count() == 1
    assert event_types(access_request=access_request) == Counter(
        {"request.submitted": 1, "decision.approve": 2, "request.approved": 1, "grant.activated": 1}
    )
    approved = AccessEvent.objects.get(access_request=access_request, event_type="request.approved")
    assert approved.reason == "2 of 2 approvals"


def test_one_approver_double_clicking_a_two_approval_request_records_one_decision(world):
    access_request = submit(world, role=world.role_two)

    outcomes = race(
        {
            "click": lambda: ar.access_request_approve(world.approver, access_request.pk),
            "again": lambda: ar.access_request_approve(world.approver, access_request.pk),
        }
    )

    losers = [o for o in outcomes.values() if not o.ok]
    assert len(losers) == 1, outcomes
    # A clear refusal, not an IntegrityError from the (request, approver) unique constraint.
    assert isinstance(losers[0].error, NotAuthorized), outcomes
    assert "already decided" in str(losers[0].error)
    access_request.refresh_from_db()
    assert access_request.status == AccessRequest.Status.PENDING
    assert Decision.objects.filter(access_request=access_request).count() == 1
    assert not Grant.objects.exists()
    assert event_types(access_request=access_request) == Counter({"request.submitted": 1, "decision.approve": 1})


# --- Approve against cancel and against lapse --------------------------------------------------


def test_approve_and_cancel_at_once_end_in_exactly_one_outcome(world, make_user):
    seen = Counter()
    for attempt in range(4):
        requester = fresh_requester(world, make_user, f"canceller{attempt}")
        access_request = submit(world, user=requester, role=world.role)

        outcomes = race(
            {
                "approve": partial(ar.access_request_approve, world.approver, access_request.pk),
                "cancel": partial(ar.access_request_cancel, requester, access_request.pk),
            },
            jitter=0.01,
        )

        approve, cancel = outcomes["approve"], outcomes["cancel"]
        assert approve.ok != cancel.ok, outcomes
        loser = cancel if approve.ok else approve
        assert isinstance(loser.error, TransitionNotAllowed), outcomes
        access_request.refresh_from_db()
        types = event_types(access_request=access_request)
        grants = Grant.objects.filter(access_request=access_request)
        if approve.ok:
            assert "already approved" in str(cancel.error)
            assert access_request.status == AccessRequest.Status.APPROVED
            assert grants.filter(status=Grant.Status.ACTIVE).count() == 1
            assert types == Counter(
                {"request.submitted": 1, "decision.approve": 1, "request.approved": 1, "grant.activated": 1}
            )
        else:
            assert "already cancelled" in str(approve.error)
            assert access_request.status == AccessRequest.Status.CANCELLED
            assert not grants.exists()
            assert types == Counter({"request.submitted": 1, "request.cancelled": 1})
        seen[access_request.status] += 1
    print(f"approve vs cancel outcomes: {dict(seen)}")


def test_approve_and_lapse_at_once_end_in_exactly_one_outcome(world, make_user):
    seen = Counter()
    for attempt in range(6):
        requester = fresh_requester(world, make_user, f"laggard{attempt}")
        access_request = submit(world, user=requester, role=world.role)
        # Setup only: the deadline is 2 s ahead, so an approval now is still in time, while the sweep
        # is told it runs 1 s after the deadline.
        lapses_at = timezone.now() + timedelta(seconds=2)
        AccessRequest.objects.filter(pk=access_request.pk).update(lapses_at=lapses_at)
        sweep_now = lapses_at + timedelta(seconds=1)

        outcomes = race(
            {
                "approve": partial(ar.access_request_approve, world.approver, access_request.pk),
                "lapse": partial(ar.access_request_lapse_due, sweep_now),
            },
            jitter=0.01,
        )

        approve, lapse = outcomes["approve"], outcomes["lapse"]
        assert lapse.ok, outcomes  # the sweep never fails: it skips what it cannot lock
        assert timezone.now() < lapses_at, "the race took too long to be meaningful"
        access_request.refresh_from_db()
        types = event_types(access_request=access_request)
        grants = Grant.objects.filter(access_request=access_request)
        if approve.ok:
            assert lapse.value == 0, outcomes
            assert access_request.status == AccessRequest.Status.APPROVED
            assert grants.filter(status=Grant.Status.ACTIVE).count() == 1
            assert types == Counter(
                {"request.submitted": 1, "decision.approve": 1, "request.approved": 1, "grant.activated": 1}
            )
        else:
            assert isinstance(approve.error, TransitionNotAllowed), outcomes
            assert "already lapsed" in str(approve.error)
            assert lapse.value == 1, outcomes
            assert access_request.status == AccessRequest.Status.LAPSED
            assert access_request.decided_at == lapses_at  # its deadline, not when the sweep came by
            assert not grants.exists()
            assert not Decision.objects.filter(access_request=access_request).exists()
            assert types == Counter({"request.submitted": 1, "request.lapsed": 1})
        seen[access_request.status] += 1
    # A later sweep finds nothing left to lapse: every request ended exactly once.
    assert ar.access_request_lapse_due(timezone.now() + timedelta(days=2)) == 0
    assert AccessRequest.objects.filter(status=AccessRequest.Status.PENDING).count() == 0
    print(f"approve vs lapse outcomes: {dict(seen)}")


# --- Two sweeps at once ------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [25, 5000], ids=["small-batches", "one-batch"])
def test_two_sweeps_at_once_expire_every_due_grant_exactly_once(world, make_user, batch_size):
    n = 300
    started = time.monotonic()
    for i in range(n):
        user = fresh_requester(world, make_user, f"bulk{i:03d}")
        ar.access_request_approve(world.approver, submit(world, user=user, role=world.role).pk)
    ids = list(Grant.objects.values_list("pk", flat=True))
    assert len(ids) == n
    now = timezone.now()
    # Setup only: every grant ran from 2 h ago until 1 s ago (expires_at > starts_at still holds).
    Grant.objects.update(starts_at=now - 2 * H, expires_at=now - timedelta(seconds=1))
    assert not Grant.objects.active(now).exists()
    setup_seconds = time.monotonic() - started

    outcomes = race(
        {
            "sweep-a": lambda: gs.grant_expire_due(now, batch_size=batch_size),
            "sweep-b": lambda: gs.grant_expire_due(now, batch_size=batch_size),
        }
    )

    assert all(o.ok for o in outcomes.values()), outcomes
    counts = {name: o.value for name, o in outcomes.items()}
    print(f"setup {setup_seconds:.1f} s; batch_size={batch_size}; expired per sweep: {counts}")
    assert sum(counts.values()) == n
    assert Grant.objects.filter(status=Grant.Status.EXPIRED, end_reason=Grant.EndReason.EXPIRED).count() == n
    assert not Grant.objects.exclude(ended_at=F("expires_at")).exists()
    expired_events = AccessEvent.objects.filter(event_type="grant.expired")
    assert expired_events.count() == n
    assert set(expired_events.values_list("grant_id", flat=True)) == set(ids)
    assert not expired_events.values("grant_id").annotate(c=Count("pk")).filter(c__gt=1).exists()
    assert set(expired_events.values_list("actor_label", flat=True)) == {"system:sweep"}
    # Nothing is left for a third sweep.
    assert gs.grant_expire_due(now) == 0


def test_a_grant_changed_by_another_transaction_just_before_the_sweep_locks_it_still_expires(
    world, make_user, monkeypatch
):
    """The sweep updates the rows it locked where the lock found them. A row another transaction changed
    and committed after the sweep's statement began (but before the lock reached it) is locked in its new
    version, which that statement cannot see: it is updated by id instead, in the same batch."""
    users = [fresh_requester(world, make_user, f"late{i}") for i in range(3)]
    for user in users:
        ar.access_request_approve(world.approver, submit(world, user=user, role=world.role).pk)
    now = timezone.now()
    Grant.objects.update(starts_at=now - 2 * H, expires_at=now - timedelta(seconds=1))
    target = Grant.objects.order_by("pk").last()
    # The sweep's scan pauses on the target row before locking it, long enough for the other writer.
    real_update_due = dbsql.grants_update_due

    def pausing(where, where_params, *args, **kwargs):
        where += " AND (id <> %s OR pg_sleep(0.6) IS NOT NULL)"
        return real_update_due(where, [*where_params, target.pk], *args, **kwargs)

    monkeypatch.setattr(dbsql, "grants_update_due", pausing)

    def touch_while_the_sweep_scans():
        time.sleep(0.3)
        return Grant.objects.filter(pk=target.pk).update(expiry_reminder_sent_at=now)

    outcomes = race({"sweep": lambda: gs.grant_expire_due(now), "writer": touch_while_the_sweep_scans})

    assert all(o.ok for o in outcomes.values()), outcomes
    assert outcomes["writer"].value == 1
    assert outcomes["sweep"].value == 3
    target.refresh_from_db()
    assert target.status == Grant.Status.EXPIRED
    assert target.expiry_reminder_sent_at == now  # the other writer's change is kept
    assert AccessEvent.objects.filter(event_type="grant.expired", grant=target).count() == 1


# --- Two beats opening the quarter's review at once ------------------------------------------------


def test_two_beats_opening_the_quarterly_review_at_once_open_one_campaign_with_each_item_once(world):
    # Issue 15: check-then-create, no constraint: two beats gave every reviewer every item twice. Forced
    # here: the second beat checks while the first one's campaign is written but not committed, so the
    # check cannot see it; the database (campaign_one_per_period) has to refuse the second campaign.
    from accessgov.models import ReviewCampaign
    from accessgov.services.reviews import review_campaign_quarterly

    now = timezone.now()
    first_written, results = threading.Event(), {}

    def first():
        with transaction.atomic():
            results["first"] = review_campaign_quarterly(now)
            first_written.set()
            time.sleep(1.0)  # the second beat runs now, before this commit

    def second():
        assert first_written.wait(timeout=20)
        started = time.monotonic()
        results["second"] = review_campaign_quarterly(now)
        results["second_waited"] = time.monotonic() - started

    outcomes = race({"first": first, "second": second})
    assert all(outcome.ok for outcome in outcomes.values()), outcomes
    assert isinstance(results["first"], ReviewCampaign) and results["second"] is None
    assert results["second_waited"] > 0.5  # it got past the check and waited on the unique index
    [campaign] = ReviewCampaign.objects.all()
    assert campaign.period == f"{now.year}-Q{(now.month - 1) // 3 + 1}"
    items = list(campaign.items.values_list("eligibility_id", "grant_id"))
    assert len(items) == len(set(items)) == 2  # the requester's two eligibilities, once each
    assert event_types(event_type__startswith="review.") == {"review.opened": 1}
    assert review_campaign_quarterly(now) is None  # and later deliveries find it
