"""Issue 16: one ``Grant.state_at(now)``. The clock decides: a grant is expired from its ``expires_at`` on,
whether or not the sweeper has run; the model method, the template tag, the reports' CSV and
``Grant.objects.active(now)`` all say the same."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.template import Context, Template

from accessgov.models import Grant
from accessgov.reports import access_history
from accessgov.services import access_requests as ar
from accessgov.services import grants as gs

pytestmark = pytest.mark.django_db
H = timedelta(hours=1)
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
US = timedelta(microseconds=1)


def grant_from(world, *, starts_at=None) -> Grant:
    with time_machine.travel(START, tick=False):
        access_request = ar.access_request_submit(
            world.requester,
            role=world.role,
            duration=H,
            justification="Investigating incident INC-42",
            starts_at=starts_at,
        )
        ar.access_request_approve(world.approver, access_request.pk)
    return Grant.objects.get(access_request=access_request)


def render_badge(grant: Grant, now: datetime) -> str:
    return Template(
        "{% grant_state_badge grant now %}|{{ grant|grant_state:now }}|{{ grant|grant_ended_at:now|utc_seconds }}"
    ).render(Context({"grant": grant, "now": now}))


def test_an_active_grant_is_active_until_its_end_and_expired_from_it_though_not_swept(world):
    grant = grant_from(world)
    end = grant.expires_at
    assert end == START + H

    for now, state, active in [(START, "active", True), (end - US, "active", True), (end, "expired", False)]:
        with time_machine.travel(now, tick=False):
            grant.refresh_from_db()
            assert grant.status == Grant.Status.ACTIVE  # stored state: the sweeper has not run
            assert grant.state_at(now) == state
            assert grant.is_active_at(now) is active
            assert Grant.objects.active(now).filter(pk=grant.pk).exists() is active
    assert grant.ended_at_as_of(end - US) is None and grant.ended_at_as_of(end) == end
    assert render_badge(grant, end) == '<span class="status status-expired">Expired</span>|expired|2026-03-02 10:00:00'
    assert render_badge(grant, end - US) == '<span class="status status-active">Active</span>|active|'

    with time_machine.travel(end + timedelta(minutes=3), tick=False):
        assert gs.grant_expire_due(end + timedelta(minutes=3)) == 1
    grant.refresh_from_db()
    assert grant.state_at(end + timedelta(minutes=3)) == "expired" and grant.ended_at_as_of(end + H) == end


def test_a_scheduled_grant_is_scheduled_until_activated_then_expired_after_its_end(world):
    grant = grant_from(world, starts_at=START + 2 * H)
    assert grant.status == Grant.Status.SCHEDULED
    assert grant.state_at(START) == "scheduled" and not grant.is_active_at(START)
    # Its start has come but the sweep has not activated it: still scheduled (activation checks eligibility).
    assert grant.state_at(START + 2 * H) == "scheduled" and not grant.is_active_at(START + 2 * H)
    assert grant.state_at(grant.expires_at) == "expired"


@pytest.mark.parametrize(
    ("end", "state", "label"),
    [("revoke", "revoked", "Revoked"), ("release", "released", "Released")],
)
def test_an_ended_grant_says_how_it_ended_whatever_the_clock(world, end, state, label):
    grant = grant_from(world)
    ended_at = START + timedelta(minutes=10)
    with time_machine.travel(ended_at, tick=False):
        if end == "revoke":
            gs.grant_revoke(world.owner, grant.pk, reason="Incident closed")
        else:
            gs.grant_release(world.requester, grant.pk)
    grant.refresh_from_db()
    for now in (ended_at, grant.expires_at - US, grant.expires_at + H):
        assert grant.state_at(now) == state and grant.ended_at_as_of(now) == ended_at
        assert not grant.is_active_at(now)
    assert render_badge(grant, grant.expires_at + H).startswith(f'<span class="status status-{state}">{label}</span>')


def test_the_access_history_csv_row_uses_the_same_state(world):
    grant = access_history.access_history_rows(Grant.objects.filter(pk=grant_from(world).pk)).get()
    row = dict(
        zip(
            access_history.ACCESS_HISTORY_COLUMNS,
            access_history.access_history_csv_row(grant, grant.expires_at),
            strict=True,
        )
    )
    assert row["outcome"] == "expired" and row["ended_at"] == grant.expires_at
    row = dict(
        zip(access_history.ACCESS_HISTORY_COLUMNS, access_history.access_history_csv_row(grant, START), strict=True)
    )
    assert row["outcome"] == "active" and row["ended_at"] is None


def test_state_of_reads_value_rows_the_same_way_as_the_instance(world):
    grant = grant_from(world)
    values = {f: getattr(grant, f) for f in ("status", "end_reason", "ended_at", "starts_at", "expires_at")}
    for now in (START, grant.expires_at - US, grant.expires_at):
        assert Grant.state_of(**values, now=now) == (grant.state_at(now), grant.ended_at_as_of(now))


# --- Every reader, and asking again, once the end has passed but the sweeper has not run (a probe's finding:
# the API, the grants CSV and the status filter read the stored status; asking again was refused).


def test_the_api_the_grants_csv_and_the_status_filter_see_an_unswept_expiry_as_expired(world):
    import csv
    import io

    from django.test import Client
    from django.urls import reverse

    from tests.conftest import verify_session
    from tests.support.api_helpers import api_client, make_token

    grant = grant_from(world)
    after = grant.expires_at + timedelta(seconds=5)
    with time_machine.travel(after, tick=False):
        _, secret = make_token(world.requester, days=1)
        api = api_client(secret)
        shown = api.get(f"/api/v1/grants/{grant.pk}/").json()
        assert shown["status"] == "expired" and shown["active"] is False
        assert shown["end_reason"] == "expired" and shown["ended_at"] == grant.expires_at.isoformat().replace(
            "+00:00", "Z"
        )

        def ids(query):
            answer = api.get("/api/v1/grants/", query)
            assert answer.status_code == 200, answer.content
            return [g["id"] for g in answer.json()["results"]]

        assert ids({"status": "active"}) == [] and ids({"status": "expired"}) == [grant.pk]
        assert ids({"active": "true"}) == [] and ids({"active": "false", "status": "expired"}) == [grant.pk]
        assert ids({"active": "false", "status": "active"}) == []  # both filters hold together
        auditor = verify_session(Client(), world.auditor)
        listed = auditor.get(reverse("grants_list"), {"status": "active"})
        assert grant.pk not in [g.pk for g in listed.context["grants"]]
        assert grant.pk in [g.pk for g in auditor.get(reverse("grants_list"), {"status": "expired"}).context["grants"]]
        exported = auditor.get(reverse("grants_export"))
        rows = list(csv.DictReader(io.StringIO(b"".join(exported.streaming_content).decode("utf-8-sig"))))
        row = next(r for r in rows if r["grant_id"] == str(grant.pk))
        assert row["status"] == "expired" and row["end_reason"] == "expired" and row["ended_at"]
    grant.refresh_from_db()
    assert grant.status == Grant.Status.ACTIVE  # reading changed nothing: the sweeper writes it


def test_asking_again_after_an_unswept_expiry_expires_the_old_grant_and_goes_ahead(world):
    from accessgov.models import AccessEvent

    grant = grant_from(world)
    after = grant.expires_at + timedelta(seconds=5)
    with time_machine.travel(after, tick=False):
        again = ar.access_request_submit(
            world.requester, role=world.role, duration=H, justification="Investigating incident INC-43"
        )
        ar.access_request_approve(world.approver, again.pk)
    grant.refresh_from_db()
    assert grant.status == Grant.Status.EXPIRED and grant.ended_at == grant.expires_at
    expired = AccessEvent.objects.filter(grant=grant, event_type=AccessEvent.Type.GRANT_EXPIRED)
    assert expired.count() == 1 and expired.get().actor_label == "system:expiry-found-on-request"
    assert Grant.objects.get(access_request=again).is_active_at(after)


def test_approving_after_an_earlier_grant_ended_unswept_grants_the_new_one(world):
    """The request was asked while the earlier grant was still in force (a later start); by the approval,
    the earlier one has ended but is not swept."""
    grant = grant_from(world)
    with time_machine.travel(START + timedelta(minutes=10), tick=False):
        later = ar.access_request_submit(
            world.requester,
            role=world.role_two,
            duration=H,
            justification="Investigating incident INC-44",
        )
    # Same role: made as the sweeper would find it, the earlier grant's end passed and the request pending.
    from accessgov.models import AccessRequest

    AccessRequest.objects.filter(pk=later.pk).update(role=world.role)
    after = grant.expires_at + timedelta(seconds=5)
    with time_machine.travel(after, tick=False):
        ar.access_request_approve(world.approver, later.pk)
    grant.refresh_from_db()
    assert grant.status == Grant.Status.EXPIRED
    assert Grant.objects.get(access_request=later).is_active_at(after)
