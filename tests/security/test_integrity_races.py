"""Eligibility and accounts are standing conditions, also under races (issue 14, hole 4): an approval
racing the end of the requester's eligibility, or the requester's deactivation, ends in a state where
nobody holds access they may no longer have. Real transactions on PostgreSQL, one thread each."""

from collections import Counter
from datetime import timedelta
from functools import partial

import pytest

from accessgov.exceptions import TransitionNotAllowed
from accessgov.models import AccessEvent, AccessRequest, Eligibility, Grant
from accessgov.services import access_requests as ar
from accessgov.services import eligibility as eligibility_services
from accessgov.services import users as user_services
from tests.support.concurrency import JUSTIFICATION, race

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]
H = timedelta(hours=1)


def test_an_approval_racing_the_end_of_eligibility_never_grants_after_the_end(world, make_user):
    seen = Counter()
    for attempt in range(6):
        requester = make_user(f"mover{attempt}", device=False)
        eligibility = Eligibility.objects.create(role=world.role, user=requester)
        access_request = ar.access_request_submit(requester, role=world.role, duration=H, justification=JUSTIFICATION)

        outcomes = race(
            {
                "approve": partial(ar.access_request_approve, world.approver, access_request.pk),
                "end": partial(eligibility_services.eligibility_end, world.owner, eligibility.pk, reason="moved"),
            },
            jitter=0.01,
        )

        assert outcomes["end"].ok, outcomes
        access_request.refresh_from_db()
        ended = AccessEvent.objects.get(event_type="eligibility.ended", data__eligibility_id=eligibility.pk)
        if outcomes["approve"].ok:
            # The approval committed first: the end waited for its lock and came after it.
            seen["approved first"] += 1
            approved = AccessEvent.objects.get(access_request=access_request, event_type="request.approved")
            assert approved.sequence < ended.sequence
            assert access_request.status == AccessRequest.Status.APPROVED
        else:
            seen["withdrawn"] += 1
            assert isinstance(outcomes["approve"].error, TransitionNotAllowed), outcomes
            assert access_request.status == AccessRequest.Status.CANCELLED
            assert (
                AccessEvent.objects.filter(access_request=access_request, event_type="request.withdrawn").count() == 1
            )
            assert not Grant.objects.filter(access_request=access_request).exists()
    assert sum(seen.values()) == 6


def test_an_approval_racing_the_requesters_deactivation_leaves_no_current_grant(world, make_user):
    admin = make_user("admin", is_staff=True, is_superuser=True)
    for attempt in range(6):
        requester = make_user(f"leaver{attempt}", device=False)
        Eligibility.objects.create(role=world.role, user=requester)
        access_request = ar.access_request_submit(requester, role=world.role, duration=H, justification=JUSTIFICATION)

        outcomes = race(
            {
                "approve": partial(ar.access_request_approve, world.approver, access_request.pk),
                "deactivate": partial(user_services.user_deactivate, admin, requester.pk, reason="left"),
            },
            jitter=0.01,
        )

        assert outcomes["deactivate"].ok, outcomes
        assert not Grant.objects.current().filter(user=requester).exists(), outcomes
        if not outcomes["approve"].ok:
            assert isinstance(outcomes["approve"].error, TransitionNotAllowed), outcomes
