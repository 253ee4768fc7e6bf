"""The audit trail page, its integrity check and its CSV export, as auditors and others see them."""

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, transaction
from django.test import Client, RequestFactory
from django.urls import reverse

from accessgov import exports
from accessgov.ledger.export import EXPORT_COLUMNS, events_copy_select
from accessgov.models import AccessEvent, Eligibility, Grant
from accessgov.services import access_requests as ar
from accessgov.services import grants
from tests.conftest import verify_session
from tests.support.requests import submit

pytestmark = pytest.mark.django_db
H = timedelta(hours=1)
HOSTILE = '=HYPERLINK("http://evil.example","x"), "quoted"\nnew line; Zoë ✓ +1 -2 @SUM(A1)'


def as_(user) -> Client:
    return verify_session(Client(), user)


def read_csv(response) -> list[dict]:
    body = b"".join(response.streaming_content).decode("utf-8")
    assert body.startswith("\ufeff")
    return list(csv.DictReader(io.StringIO(body.removeprefix("\ufeff"), newline="")))


def test_only_auditors_see_the_audit_trail(world):
    submit(world)
    assert as_(world.auditor).get(reverse("audit_trail")).status_code == 200
    for user in (world.requester, world.approver, world.owner, world.outsider):
        assert as_(user).get(reverse("audit_trail")).status_code == 403
        assert as_(user).get(reverse("audit_export")).status_code == 403
        assert as_(user).post(reverse("audit_verify")).status_code == 403


def test_trail_lists_filters_and_pages_by_sequence(world):
    for _ in range(3):
        ar.access_request_cancel(world.requester, submit(world).pk)
    client = as_(world.auditor)
    page = client.get(reverse("audit_trail")).content.decode()
    assert page.count("Request submitted</td>") == 3 and page.count("Request cancelled</td>") == 3
    page = client.get(reverse("audit_trail") + "?event_type=request.cancelled").content.decode()
    assert "Request submitted</td>" not in page and page.count("Request cancelled</td>") == 3
    from accessgov.views import audit

    original = audit.PAGE_SIZE
    audit.PAGE_SIZE = 4
    try:
        first = client.get(reverse("audit_trail"))
        assert first.context["next_before"] == 3
        second = client.get(reverse("audit_trail") + "?before=3")
        assert [e.sequence for e in second.context["events"]] == [2, 1]
        assert second.context["next_before"] is None
    finally:
        audit.PAGE_SIZE = original


def test_export_has_exactly_the_filtered_rows_and_is_itself_audited(world):
    for _ in range(2):
        ar.access_request_cancel(world.requester, submit(world).pk)
    response = as_(world.auditor).get(reverse("audit_export") + "?event_type=request.submitted")
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    rows = read_csv(response)
    expected = list(AccessEvent.objects.filter(event_type="request.submitted").order_by("sequence"))
    assert [int(r["sequence"]) for r in rows] == [e.sequence for e in expected]
    assert rows[0]["occurred_at"].endswith("Z")
    assert rows[0]["hash"] == expected[0].hash
    export_event = AccessEvent.objects.get(event_type="export.created")
    assert export_event.actor == world.auditor
    assert export_event.data == {"report": "audit trail", "filters": {"event_type": "request.submitted"}, "rows": 2}


def test_hostile_cell_contents_round_trip_safely(world):
    submit(world, justification=HOSTILE)
    rows = read_csv(as_(world.auditor).get(reverse("audit_export") + "?event_type=request.submitted"))
    assert rows[0]["reason"] == "'" + HOSTILE  # the leading = is neutralised, everything else intact
    assert rows[0]["actor"] == "requester"


def test_integrity_check_from_the_page_is_recorded_and_reports_tampering(world):
    submit(world)
    client = as_(world.auditor)
    response = client.post(reverse("audit_verify"), follow=True)
    assert "Chain intact: 1 events" in response.content.decode()
    assert AccessEvent.objects.filter(event_type="audit.verified").count() == 1
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute("UPDATE accessgov_accessevent SET reason = 'x' WHERE sequence = 1")
    response = client.post(reverse("audit_verify"), follow=True)
    assert "Chain BROKEN: event #1" in response.content.decode()


def test_model_changes_page_lists_field_changes(world):
    world.role.max_duration = timedelta(hours=3)
    world.role.save()
    page = as_(world.auditor).get(reverse("model_changes") + "?model=role").content.decode()
    assert "<dt>Max duration</dt><dd>4 h → 3 h</dd>" in page
    # Times in the viewer's zone, as everywhere on the page (a probe found them as bare UTC).
    world.auditor.time_zone = "Australia/Sydney"
    world.auditor.save()
    eligibility = Eligibility.objects.get(role=world.role, user=world.requester)
    eligibility.ends_at = datetime(2027, 1, 1, 0, 0, tzinfo=UTC)
    eligibility.save()
    page = as_(world.auditor).get(reverse("model_changes") + "?model=eligibility").content.decode()
    assert "→ 2027-01-01 11:00:00 AEDT</dd>" in page
    assert as_(world.requester).get(reverse("model_changes")).status_code == 403


def test_model_changes_page_older_and_back_to_newer(world, monkeypatch):
    from accessgov.views import audit

    monkeypatch.setattr(audit, "PAGE_SIZE", 2)
    for hours in (5, 6, 7, 8):
        world.role.max_duration = timedelta(hours=hours)
        world.role.save()
    client = as_(world.auditor)
    newest = client.get(reverse("model_changes"), {"model": "role"})
    older = client.get(reverse("model_changes"), {"model": "role", "before": newest.context["next_before"]})
    assert "← Newer changes" in older.content.decode()
    back = older.context["prev_query"]
    assert "model=role" in back
    again = client.get(reverse("model_changes") + "?" + back)
    assert [row["entry"].pk for row in again.context["rows"]] == [row["entry"].pk for row in newest.context["rows"]]
    assert client.get(reverse("model_changes"), {"back": "junk"}).status_code == 200


def test_model_changes_read_for_people_constant_queries_and_bookkeeping_on_request(
    world, django_assert_max_num_queries
):
    from accessgov.models import OutboxItem

    grant_request = submit(world)
    ar.access_request_approve(world.approver, grant_request.pk)
    assert OutboxItem.objects.exists()
    client = as_(world.auditor)
    client.get(reverse("model_changes"))
    with django_assert_max_num_queries(12):
        page = client.get(reverse("model_changes")).content.decode()
    # Choices as labels, related records as ids, no reverse relations, no id line, no bookkeeping rows.
    assert "<dt>Status</dt><dd>Pending → Approved</dd>" in page
    assert "<dt>Requester</dt><dd>#" in page
    assert ".None" not in page and "<dt>Id</dt>" not in page
    assert "Provisioning outbox item #" not in page and 'value="outboxitem"' in page
    with_queue = client.get(reverse("model_changes") + "?bookkeeping=1").content.decode()
    assert "Provisioning outbox item #" in with_queue
    unknown = client.get(reverse("model_changes") + "?model=nosuchmodel")
    assert unknown.status_code == 400 and "No record of that kind has changes" in unknown.content.decode()


def test_trail_query_count_is_constant_in_rows(world, django_assert_max_num_queries):
    client = as_(world.auditor)
    for _ in range(3):
        submit(world)
        ar.access_request_cancel(world.requester, world.requester.access_requests.latest("pk").pk)
    with django_assert_max_num_queries(20):
        client.get(reverse("audit_trail"))
    for _ in range(15):
        ar.access_request_cancel(world.requester, submit(world).pk)
    with django_assert_max_num_queries(20):
        client.get(reverse("audit_trail"))


@pytest.mark.postgres
def test_postgres_copy_export_has_the_same_cells_as_the_orm_export(world):
    """The COPY fast path formats and neutralises in SQL exactly like the Python path."""
    import json as jsonlib

    from accessgov.views import audit

    submit(world, justification=HOSTILE)
    ar.access_request_approve(
        world.approver,
        AccessEvent.objects.get(event_type="request.submitted").access_request_id,
        comment="-rm -rf /; +ok",
    )
    events = audit.trail_events().order_by("sequence")
    select_sql, params = events_copy_select(events)
    copied = b"".join(exports.copy_rows(select_sql, params)).decode()
    from_sql = list(csv.reader(io.StringIO(copied, newline="")))
    python = [[exports.safe_cell(v) for v in audit.export_row(e)] for e in events]
    assert len(from_sql) == len(python) >= 4
    for sql_row, py_row in zip(from_sql, python, strict=True):
        data_index = EXPORT_COLUMNS.index("data")
        assert jsonlib.loads(sql_row[data_index]) == jsonlib.loads(py_row[data_index])
        assert sql_row[:data_index] + sql_row[data_index + 1 :] == py_row[:data_index] + py_row[data_index + 1 :]
    reasons = [row[EXPORT_COLUMNS.index("reason")] for row in from_sql]
    assert "'" + HOSTILE in reasons and "'-rm -rf /; +ok" in reasons


@pytest.mark.postgres
def test_postgres_copy_export_of_a_filtered_trail_matches_the_orm_export(world, settings):
    """Each filter of the trail (joins to grants, requests, roles and systems among them) gives the same file
    through COPY as through the ORM path, row for row; a filter across a to-many relation repeats no event."""
    from accessgov.views import audit

    first = submit(world, justification=HOSTILE)
    ar.access_request_approve(world.approver, first.pk, comment="ok")
    grant = Grant.objects.get(access_request=first)
    grants.grant_release(world.requester, grant.pk)  # an apply and a remove item in its outbox
    ar.access_request_cancel(world.requester, submit(world, role=world.role_two).pk)
    audit_url = reverse("audit_export")
    queries = [
        "",
        f"?grantee={world.requester.username}",
        f"?system={world.role.system_id}",
        "?q=evil",
        "?event_type=request.approved",
        f"?access_request={first.pk}&sort=sequence",
        "?actor=nobody",
    ]
    for query in queries:
        _, events = audit._filtered(RequestFactory().get(audit_url + query))
        python = [[exports.safe_cell(v) for v in audit.export_row(e)] for e in events.order_by("sequence")]
        copied = read_csv(as_(world.auditor).get(audit_url + query))  # records its export after the rows above
        assert [list(row.values()) for row in copied] == _same_data(python, copied), query
        assert copied or query == "?actor=nobody"
    # An outbox item per apply and remove: a join through them would give the grant's events twice.
    repeated = AccessEvent.objects.filter(grant__outbox_items__isnull=False)
    assert repeated.count() > repeated.distinct().count()
    sql, params = events_copy_select(repeated)
    rows = list(csv.reader(io.StringIO(b"".join(exports.copy_rows(sql, params)).decode(), newline="")))
    assert [int(row[0]) for row in rows] == sorted(
        AccessEvent.objects.filter(grant=grant).values_list("sequence", flat=True)
    )


def _same_data(python: list[list[str]], copied: list[dict]) -> list[list[str]]:
    """The ORM rows with each data cell replaced by the copied one when both hold the same JSON (key order and
    spacing differ between the two paths)."""
    import json as jsonlib

    index = EXPORT_COLUMNS.index("data")
    rows = []
    for py_row, copied_row in zip(python, copied, strict=False):
        copied_data = list(copied_row.values())[index]
        if jsonlib.loads(py_row[index]) == jsonlib.loads(copied_data):
            py_row = [*py_row[:index], copied_data, *py_row[index + 1 :]]
        rows.append(py_row)
    return rows + python[len(copied) :]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_export_abandoned_midway_leaves_the_connection_clean(world, monkeypatch):
    """A download the client drops after its first blocks: the COPY's read-only transaction is rolled back
    when the response is closed, and the connection serves the next request (no open transaction, no
    COPY in progress, the planner setting gone)."""
    monkeypatch.setattr(exports, "BLOCK_BYTES", 64)  # a few events are then many blocks
    for _ in range(4):
        ar.access_request_cancel(world.requester, submit(world, justification=HOSTILE).pk)
    response = as_(world.auditor).get(reverse("audit_export"))
    stream = iter(response.streaming_content)
    header, first_rows = next(stream), next(stream)
    assert header.startswith("\ufeffsequence".encode()) and first_rows
    assert connection.in_atomic_block  # mid-COPY: its transaction is open
    response.close()
    assert not connection.in_atomic_block
    with connection.cursor() as cursor:
        cursor.execute("SHOW enable_memoize")
        assert cursor.fetchone()[0] == "on"
        cursor.execute("SHOW transaction_read_only")
        assert cursor.fetchone()[0] == "off"
    assert as_(world.auditor).get(reverse("audit_trail")).status_code == 200
    assert len(read_csv(as_(world.auditor).get(reverse("audit_export")))) >= 8


def test_export_holds_exactly_the_rows_counted_not_its_own_event(world):
    submit(world)
    response = as_(world.auditor).get(reverse("audit_export"))
    rows = read_csv(response)
    assert int(response["X-Row-Count"]) == len(rows) == 1
    assert AccessEvent.objects.count() == 2  # the export.created event exists, but is not in this file


@pytest.mark.django_db
def test_the_trails_person_system_and_search_filters_match_by_ids(world):
    """The filters read ids first (or in subqueries) and match the event's own columns — joins made PostgreSQL
    walk the whole ledger for a rare value (1.2-3.5 s over 1M events, issue 22's probe). What they match is
    unchanged: any case for a person, their requests before a grant, the system's roles, names in a search."""
    from accessgov.views import audit

    first = submit(world)
    ar.access_request_approve(world.approver, first.pk, comment="ok")
    pending = submit(world, role=world.role_two)
    about_requester = set(
        AccessEvent.objects.filter(access_request__requester=world.requester).values_list("sequence", flat=True)
    )
    for query, expected in (
        (f"?grantee={world.requester.username.upper()}", about_requester),
        ("?grantee=nobody", set()),
        (
            f"?system={world.role.system_id}",
            set(AccessEvent.objects.filter(role__system=world.role.system).values_list("sequence", flat=True)),
        ),
        ("?system=999999", set()),
        (f"?q={world.requester.username}", about_requester),
        (f"?q=%23{pending.pk}", set()),  # the trail's search has no id field: a request number is the Request # filter
    ):
        event_filter, events = audit._filtered(RequestFactory().get("/audit/" + query))
        assert event_filter.is_valid(), query
        assert set(events.values_list("sequence", flat=True)) == expected, query
