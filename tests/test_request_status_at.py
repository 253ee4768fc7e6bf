"""One ``AccessRequest.status_at(now)``: a pending request is lapsed from its ``lapses_at`` on, swept or not, to
every reader — its page, my requests (badge, status filter, status sort, CSV), the home and my-access lists, the
approver's card and the API (status filter included) — decided at that deadline; asking again goes ahead.
Reading changes nothing: the sweep writes it down. Also: a withdrawn extension's event names its grant."""

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accessgov.models import AccessEvent, AccessRequest, Eligibility, Grant, Role
from accessgov.services import access_requests as ar
from accessgov.services import grants as gs
from tests.conftest import verify_session
from tests.support.api_helpers import api_client, make_token
from tests.support.factories import RoleFactory
from tests.support.requests import submit

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
H = timedelta(hours=1)
DAY = timedelta(hours=24)  # the roles' pending timeout
US = timedelta(microseconds=1)


def asked(world, at: datetime = T0, **kwargs) -> AccessRequest:
    with time_machine.travel(at, tick=False):
        return submit(world, **kwargs)


def as_(user) -> Client:
    return verify_session(Client(), user)


def lapsed_and_swept(world) -> tuple[AccessRequest, AccessRequest]:
    """``unswept``: pending, its deadline T0 + 24 h (not swept at the instants the tests read at); ``swept``: asked
    after it (a higher id) on role_two, whose timeout is 1 h, and lapsed by the sweep at T0 + 2 h."""
    unswept = asked(world)
    Role.objects.filter(pk=world.role_two.pk).update(pending_timeout=H)
    swept = asked(world, role=Role.objects.get(pk=world.role_two.pk))
    with time_machine.travel(T0 + 2 * H, tick=False):
        assert ar.access_request_lapse_due(T0 + 2 * H) == 1
    swept.refresh_from_db()
    assert swept.status == "lapsed" and swept.pk > unswept.pk
    assert unswept.lapses_at == T0 + DAY
    return unswept, swept


def csv_rows(response) -> list[dict]:
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode("utf-8-sig"))))


def utc_text(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# --- The one rule: the model and the queryset -----------------------------------------------------------------


def test_a_pending_request_is_lapsed_from_its_deadline_by_the_model_the_filter_and_the_sort_expression(world):
    pending = asked(world)
    with time_machine.travel(T0, tick=False):
        cancelled = ar.access_request_cancel(world.requester, submit(world, role=world.role_two).pk)
    deadline = pending.lapses_at
    requests = [pending, cancelled]
    for now, status in [(T0, "pending"), (deadline - US, "pending"), (deadline, "lapsed"), (deadline + DAY, "lapsed")]:
        pending.refresh_from_db()
        assert pending.status == "pending"  # stored: the sweep has not run
        assert pending.status_at(now) == status
        assert pending.is_pending_at(now) is (status == "pending")
        assert pending.decided_at_as_of(now) == (deadline if status == "lapsed" else None)
        assert pending.status_label_at(now) == status.capitalize()
        assert cancelled.status_at(now) == "cancelled" and cancelled.decided_at_as_of(now) == T0
        for value in AccessRequest.Status.values:
            found = set(AccessRequest.objects.with_status_at(value, now).values_list("pk", flat=True))
            assert found == {r.pk for r in requests if r.status_at(now) == value}, (now, value)
        annotated = dict(AccessRequest.objects.annotate_status_at(now).values_list("pk", "status_now"))
        assert annotated == {r.pk: r.status_at(now) for r in requests}
        assert set(AccessRequest.objects.pending_at(now).values_list("pk", flat=True)) == (
            {pending.pk} if status == "pending" else set()
        )
    # Swept, it reads the same, decided at its deadline.
    with time_machine.travel(deadline + H, tick=False):
        assert ar.access_request_lapse_due(deadline + H) == 1
    pending.refresh_from_db()
    assert pending.status == "lapsed" and pending.decided_at == deadline
    assert pending.status_at(deadline + DAY) == "lapsed" and pending.decided_at_as_of(deadline + DAY) == deadline


# --- Every reader ------------------------------------------------------------------------------------------------


def test_the_request_page_reads_lapsed_at_its_deadline_without_the_cancel_button_or_a_countdown(world):
    access_request = asked(world)
    url = reverse("request_detail", args=[access_request.pk])
    with time_machine.travel(access_request.lapses_at - timedelta(minutes=1), tick=False):
        before = as_(world.requester).get(url).content.decode()
    assert '<span class="status status-pending">Pending</span>' in before
    assert "<dt>Lapses</dt>" in before and "Cancel this request" in before
    with time_machine.travel(access_request.lapses_at + timedelta(minutes=1), tick=False):
        for user in (world.requester, world.approver):
            response = as_(user).get(url)
            html = response.content.decode()
            assert response.status_code == 200
            assert '<span class="status status-lapsed">Lapsed</span>' in html, user
            assert "status-pending" not in html and "<dt>Lapses</dt>" not in html
            assert "<dt>Who can decide</dt>" not in html and "Cancel this request" not in html
            assert f'<dt>Lapsed</dt><dd><time datetime="{utc_text(access_request.lapses_at)}"' in html
    access_request.refresh_from_db()
    assert access_request.status == "pending"  # reading changed nothing


def test_my_requests_badge_status_filter_status_sort_and_csv_read_the_status_at_now(world):
    unswept, swept = lapsed_and_swept(world)
    url, export = reverse("my_requests"), reverse("my_requests_export")

    def ids(query: dict) -> list[int]:
        response = client.get(url, query)
        assert response.status_code == 200, response.content
        return [r.pk for r in response.context["access_requests"]]

    with time_machine.travel(T0 + 3 * H, tick=False):  # the unswept one is still pending
        client = as_(world.requester)
        assert ids({"status": "pending"}) == [unswept.pk] and ids({"status": "lapsed"}) == [swept.pk]
    with time_machine.travel(unswept.lapses_at + timedelta(minutes=1), tick=False):
        client = as_(world.requester)
        html = client.get(url).content.decode()
        assert html.count('<span class="status status-lapsed">Lapsed</span>') == 2 and "status-pending" not in html
        assert ids({"status": "pending"}) == []
        assert ids({"status": "lapsed"}) == [swept.pk, unswept.pk]  # newest first
        # Sorted by the status now (both lapsed), then by id: the stored status put the swept one first.
        assert ids({"sort": "status"}) == [unswept.pk, swept.pk]
        assert ids({"sort": "-status"}) == [swept.pk, unswept.pk]
        rows = {int(r["request_id"]): r for r in csv_rows(client.get(export, {"status": "lapsed"}))}
        assert set(rows) == {unswept.pk, swept.pk}
        assert rows[unswept.pk]["status"] == "lapsed" and rows[unswept.pk]["decided_at"] == utc_text(unswept.lapses_at)
        assert [int(r["request_id"]) for r in csv_rows(client.get(export, {"sort": "status"}))] == [
            unswept.pk,
            swept.pk,
        ]
        assert csv_rows(client.get(export, {"status": "pending"})) == []
    unswept.refresh_from_db()
    assert unswept.status == "pending"


def test_my_requests_sorted_by_status_costs_the_same_queries_for_more_rows(world):
    unswept, _ = lapsed_and_swept(world)
    url = reverse("my_requests")
    later = unswept.lapses_at + timedelta(minutes=1)

    def queries() -> tuple[int, int]:
        with time_machine.travel(later, tick=False):
            client = as_(world.requester)
            client.get(url, {"sort": "status"})  # warm the per-process caches (the catalogue, the clock)
            with CaptureQueriesContext(connection) as captured:
                response = client.get(url, {"sort": "status"})
        assert response.status_code == 200
        return len(response.context["access_requests"]), len(captured)

    rows, two = queries()
    assert rows == 2
    for n in range(4):
        role = RoleFactory(system=world.system, name=f"extra-{n}", max_duration=4 * H)
        Eligibility.objects.create(role=role, user=world.requester, starts_at=datetime(2020, 1, 1, tzinfo=UTC))
        asked(world, role=role)
    assert queries() == (6, two)


def test_the_home_and_my_access_pages_no_longer_list_a_request_past_its_deadline_as_waiting(world):
    access_request = asked(world)
    for now, listed in [(access_request.lapses_at - US, True), (access_request.lapses_at, False)]:
        with time_machine.travel(now, tick=False):
            for name in ("home", "my_access"):
                waiting = as_(world.requester).get(reverse(name)).context["pending_requests"]
                assert [r.pk for r in waiting] == ([access_request.pk] if listed else []), (name, now)


def test_an_approvers_card_refused_after_the_deadline_reads_lapsed_without_a_decision_form(world):
    access_request = asked(world)
    with time_machine.travel(access_request.lapses_at + timedelta(seconds=5), tick=False):
        response = as_(world.approver).post(
            reverse("request_approve", args=[access_request.pk]),
            {"comment": "ok", "back": "/approvals/"},
            HTTP_HX_REQUEST="true",
        )
    html = response.content.decode()
    assert response.status_code == 409 and "has lapsed" in html
    assert '<span class="status status-lapsed">Lapsed</span>' in html and "status-pending" not in html
    assert reverse("request_approve", args=[access_request.pk]) not in html  # no decision form
    assert f'name="ids" value="{access_request.pk}"' not in html


def test_the_api_and_its_status_filter_read_a_request_past_its_deadline_as_lapsed(world):
    unswept, swept = lapsed_and_swept(world)
    with time_machine.travel(unswept.lapses_at + timedelta(seconds=5), tick=False):
        _, secret = make_token(world.requester, days=1)
        api = api_client(secret)

        def ids(query: dict) -> list[int]:
            answer = api.get("/api/v1/requests/", query)
            assert answer.status_code == 200, answer.content
            return [r["id"] for r in answer.json()["results"]]

        shown = api.get(f"/api/v1/requests/{unswept.pk}/").json()
        assert shown["status"] == "lapsed" and shown["decided_at"] == utc_text(unswept.lapses_at)
        assert ids({"status": "pending"}) == []
        assert sorted(ids({"status": "lapsed"})) == [unswept.pk, swept.pk]
        assert api.get("/api/v1/requests/", {"status": "later"}).status_code == 400
    with time_machine.travel(unswept.lapses_at - timedelta(seconds=5), tick=False):
        assert ids({"status": "pending"}) == [unswept.pk] and ids({"status": "lapsed"}) == [swept.pk]
        assert api.get(f"/api/v1/requests/{unswept.pk}/").json()["decided_at"] is None


# --- Asking again ----------------------------------------------------------------------------------------------


def test_asking_again_after_an_unswept_lapse_records_the_lapse_and_goes_ahead(world):
    first = asked(world)
    later = first.lapses_at + timedelta(minutes=3)
    with time_machine.travel(later, tick=False):
        again = submit(world, justification="Still investigating INC-42")
    first.refresh_from_db()
    assert first.status == "lapsed" and first.decided_at == first.lapses_at
    lapsed = AccessEvent.objects.filter(access_request=first, event_type=AccessEvent.Type.REQUEST_LAPSED)
    assert lapsed.count() == 1
    assert lapsed.get().actor_label == "system:deadline" and lapsed.get().data == {"found_by": "submit"}
    assert again.status == "pending" and again.pk != first.pk
    # Before its deadline it is still a duplicate.
    with time_machine.travel(later + H, tick=False), pytest.raises(ar.TransitionNotAllowed, match="already have"):
        submit(world, justification="A third time, same role")


# --- A withdrawn extension names its grant --------------------------------------------------------------------


def _extension(world) -> tuple[Grant, AccessRequest]:
    with time_machine.travel(T0, tick=False):
        access_request = submit(world)
        ar.access_request_approve(world.approver, access_request.pk)
        grant = Grant.objects.get(access_request=access_request)
        extension = ar.access_request_submit_extension(
            world.requester, grant_id=grant.pk, duration=H, justification="The migration runs longer"
        )
    return grant, extension


def _withdrawn_is_on_the_grant_page(world, grant: Grant, extension: AccessRequest) -> None:
    event = AccessEvent.objects.get(access_request=extension, event_type=AccessEvent.Type.REQUEST_WITHDRAWN)
    assert event.grant_id == grant.pk
    with time_machine.travel(T0 + timedelta(minutes=20), tick=False):
        page = as_(world.requester).get(reverse("grant_detail", args=[grant.pk]))
    assert event.pk in [e.pk for e in page.context["timeline"]]
    assert "Request withdrawn" in page.content.decode()


def test_an_extension_withdrawn_because_its_grant_ended_names_the_grant(world):
    grant, extension = _extension(world)
    with time_machine.travel(T0 + timedelta(minutes=10), tick=False):
        gs.grant_release(world.requester, grant.pk)
    extension.refresh_from_db()
    assert extension.status == "cancelled"
    _withdrawn_is_on_the_grant_page(world, grant, extension)


def test_an_extension_withdrawn_because_the_requester_is_no_longer_eligible_names_the_grant(world):
    grant, extension = _extension(world)
    moment = T0 + timedelta(minutes=10)
    Eligibility.objects.filter(user=world.requester, role=world.role).update(ends_at=moment - US)
    with time_machine.travel(moment, tick=False):
        assert ar.access_request_withdraw_ineligible(moment) == 1
    extension.refresh_from_db()
    assert extension.status == "cancelled"
    _withdrawn_is_on_the_grant_page(world, grant, extension)
