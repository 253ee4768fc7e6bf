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


def test_a_code_sent_by_six_requests_at_once_is_accepted_once(make_user):
    """Promise 1: a TOTP code works once, also when the same code arrives in several requests at the same
    moment (the HTTP probe had two sessions signed in with one code in 2 runs of 4). So does a backup code."""
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from accessgov import otp
    from tests.conftest import totp_code

    user = make_user("twice", backup_codes=True)
    device = TOTPDevice.objects.get(user=user)
    for attempt in range(3):
        TOTPDevice.objects.filter(pk=device.pk).update(last_t=-1, throttling_failure_count=0)
        code = totp_code(device)
        outcomes = race({f"r{n}": partial(otp.verify_code, user, code, allow_backup=False) for n in range(6)})
        accepted = [name for name, outcome in outcomes.items() if outcome.value is not None and outcome.value.ok]
        assert len(accepted) == 1, (attempt, outcomes)
    backup = user.backup_codes[0]
    outcomes = race({f"r{n}": partial(otp.verify_code, user, backup, allow_backup=True) for n in range(6)})
    assert sum(1 for o in outcomes.values() if o.value is not None and o.value.ok) == 1, outcomes


def test_wrong_codes_sent_at_once_are_checked_one_at_a_time(make_user):
    """Parallel guesses each count against the throttle: one is checked, the others are told to wait (the HTTP
    probe got five guesses checked per burst, and the failure count rose by one)."""
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from accessgov import otp

    user = make_user("guesser")
    outcomes = race({f"r{n}": partial(otp.verify_code, user, f"{n:06d}", allow_backup=False) for n in range(6)})
    messages = sorted(outcome.value.message for outcome in outcomes.values())
    assert all(not outcome.value.ok for outcome in outcomes.values()), outcomes
    assert sum(m.startswith("That code is not valid") for m in messages) == 1, messages
    assert sum(m.startswith("Too many wrong codes") for m in messages) == 5, messages
    assert TOTPDevice.objects.get(user=user).throttling_failure_count == 1
