"""A request at its edges: cancelled or denied at or after its deadline (it lapses, it is never recorded as
cancelled or denied), read through the API before the sweep has come by (lapsed, so the CLI's ``--wait`` exits
4), and an extension's events, which name the grant they would extend so the grant's own timeline shows them."""

import time
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.utils import timezone

from accessgov import selectors
from accessgov.exceptions import TransitionNotAllowed
from accessgov.models import AccessEvent, AccessRequest, Grant
from accessgov.services import access_requests as ar
from accessgov.services.sweep import sweep_run
from accessgov_cli import main as cli
from tests.ops import test_cli as cli_tests
from tests.support.api_helpers import api_client, make_token
from tests.support.requests import submit

H = timedelta(hours=1)
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def at(moment: datetime):
    return time_machine.travel(moment, tick=False)


def events(**about) -> list[str]:
    return list(AccessEvent.objects.filter(**about).order_by("pk").values_list("event_type", flat=True))


@pytest.mark.django_db
def test_a_cancel_at_the_deadline_lapses_the_request_and_says_so(world, mailoutbox, django_capture_on_commit_callbacks):
    """The probe's finding: an approval at the deadline was refused as lapsed, the requester's cancel 200 ms
    later was accepted, and the request was recorded cancelled (approval metrics: Lapsed 0)."""
    # A second before its deadline a request is still the requester's to cancel.
    with at(T0):
        in_time = submit(world)
    with at(in_time.lapses_at - timedelta(seconds=1)):
        ar.access_request_cancel(world.requester, in_time.pk)
    in_time.refresh_from_db()
    assert in_time.status == AccessRequest.Status.CANCELLED
    assert events(access_request=in_time) == ["request.submitted", "request.cancelled"]
    # At its deadline it is too late: it lapses.
    with at(T0 + H):
        access_request = submit(world)
    deadline = access_request.lapses_at
    with (
        at(deadline),
        django_capture_on_commit_callbacks(execute=True),
        pytest.raises(TransitionNotAllowed, match="This request has lapsed"),
    ):
        ar.access_request_cancel(world.requester, access_request.pk)
    access_request.refresh_from_db()
    # The same outcome and event as the sweep's lapse, committed although the cancel was refused.
    assert access_request.status == AccessRequest.Status.LAPSED
    assert access_request.decided_at == deadline
    assert events(access_request=access_request) == ["request.submitted", "request.lapsed"]
    lapsed = AccessEvent.objects.get(event_type="request.lapsed")
    assert lapsed.reason == "No decision before the deadline."
    assert lapsed.actor_label == "system:deadline" and lapsed.data["found_by"] == "cancel"
    assert lapsed.occurred_at == deadline
    assert [(m.to, m.subject) for m in mailoutbox] == [([world.requester.email], f"[AccessGov] Lapsed: {world.role}")]
    # Decided once: the sweep finds nothing left, and a second cancel is told it is already lapsed.
    with at(deadline + H):
        assert sweep_run(timezone.now())["lapsed"] == 0
        with pytest.raises(TransitionNotAllowed, match="already lapsed"):
            ar.access_request_cancel(world.requester, access_request.pk)


@pytest.mark.django_db
def test_a_denial_after_the_deadline_is_refused_like_an_approval_and_the_request_lapses(world):
    with at(T0):
        access_request = submit(world)
    with at(access_request.lapses_at + timedelta(seconds=1)):
        with pytest.raises(TransitionNotAllowed, match="has lapsed"):
            ar.access_request_deny(world.approver, access_request.pk, comment="Too late to say no")
        access_request.refresh_from_db()
        assert access_request.status == AccessRequest.Status.PENDING
        assert not access_request.decisions.exists()
        assert sweep_run(timezone.now())["lapsed"] == 1
    access_request.refresh_from_db()
    assert access_request.status == AccessRequest.Status.LAPSED


@pytest.mark.django_db
def test_the_api_reads_a_pending_request_past_its_deadline_as_lapsed_before_the_sweep(world):
    with at(T0):
        access_request = submit(world)
        _, secret = make_token(world.requester)
    client = api_client(secret)
    url = f"/api/v1/requests/{access_request.pk}/"
    with at(access_request.lapses_at - timedelta(seconds=1)):
        body = client.get(url).json()
    assert (body["status"], body["decided_at"]) == ("pending", None)
    with at(access_request.lapses_at):
        body = client.get(url).json()
        listed = client.get("/api/v1/requests/").json()["results"]
    assert body["status"] == "lapsed"
    assert body["decided_at"] == "2026-11-03T09:00:00Z"  # its deadline, as the sweep records it
    assert [r["status"] for r in listed] == ["lapsed"]
    # The stored row is untouched until the sweep (a read writes nothing).
    access_request.refresh_from_db()
    assert access_request.status == AccessRequest.Status.PENDING


run = cli_tests.run  # the console-script fixture (a live server and a personal token)


def test_the_cli_wait_exits_lapsed_when_the_deadline_passes_before_the_sweep(run, world):
    process = cli_tests._request_and_wait(run, "--timeout", "20s")
    request_id = cli_tests._requested_id(process)
    time.sleep(0.3)  # the client is polling a pending request now
    # Setup only: its deadline has just passed and no sweep runs.
    cli_tests._as_another_user(
        lambda: AccessRequest.objects.filter(pk=request_id).update(lapses_at=timezone.now() - timedelta(seconds=1))
    )
    _, stderr = cli_tests._finish(process)
    assert process.returncode == cli.EXIT_LAPSED, stderr
    assert f"Request {request_id} lapsed: nobody decided in time." in stderr
    assert AccessRequest.objects.get(pk=request_id).status == AccessRequest.Status.PENDING  # the sweep's to record


@pytest.mark.django_db
def test_every_event_of_an_extension_names_the_grant_and_the_grant_timeline_shows_them(world):
    world.role.pending_timeout = timedelta(minutes=5)
    world.role.save(update_fields=["pending_timeout"])
    with at(T0):
        ar.access_request_approve(world.approver, submit(world).pk)
    grant = Grant.objects.get()

    def extend(minute: int) -> AccessRequest:
        with at(T0 + timedelta(minutes=minute)):
            return ar.access_request_submit_extension(
                world.requester, grant_id=grant.pk, duration=H / 2, justification="Migration is taking longer"
            )

    denied = extend(5)
    with at(T0 + timedelta(minutes=6)):
        ar.access_request_deny(world.approver, denied.pk, comment="Finish it tomorrow")
    swept = extend(10)
    with at(T0 + timedelta(minutes=16)):
        assert sweep_run(timezone.now())["lapsed"] == 1
    cancelled = extend(20)
    with at(T0 + timedelta(minutes=21)):
        ar.access_request_cancel(world.requester, cancelled.pk)
    too_late = extend(25)
    with at(T0 + timedelta(minutes=30)), pytest.raises(TransitionNotAllowed, match="has lapsed"):
        ar.access_request_cancel(world.requester, too_late.pk)
    approved = extend(35)
    with at(T0 + timedelta(minutes=36)):
        ar.access_request_approve(world.approver, approved.pk)

    extensions = [denied, swept, cancelled, too_late, approved]
    assert not AccessEvent.objects.filter(access_request__in=extensions).exclude(grant=grant).exists()
    timeline = [(e.access_request_id, e.event_type) for e in selectors.grant_timeline(grant)]
    assert timeline == [
        (grant.access_request_id, "grant.activated"),
        (denied.pk, "request.submitted"),
        (denied.pk, "decision.deny"),
        (denied.pk, "request.denied"),
        (swept.pk, "request.submitted"),
        (swept.pk, "request.lapsed"),
        (cancelled.pk, "request.submitted"),
        (cancelled.pk, "request.cancelled"),
        (too_late.pk, "request.submitted"),
        (too_late.pk, "request.lapsed"),
        (approved.pk, "request.submitted"),
        (approved.pk, "decision.approve"),
        (approved.pk, "request.approved"),
        (approved.pk, "grant.extended"),
    ]
    # A request's own timeline is unchanged: its events, and the grant's events that belong to no request.
    assert [e.event_type for e in selectors.request_timeline(denied)] == [
        "request.submitted",
        "decision.deny",
        "request.denied",
    ]
