"""Compliance reports as each persona sees them: every filter, keyset pages in every sort order,
CSV exports that are exactly the page's rows (hostile cells included), visibility, the export's
access event, query budgets that do not grow with the rows, and the charts."""

import csv
import io
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from guardian.shortcuts import assign_perm

from accessgov import charts, reports
from accessgov.models import AccessEvent, Eligibility, Grant
from accessgov.reports import base
from accessgov.services import access_requests as ar
from accessgov.services import grants as gs
from accessgov.views import reports as report_views
from tests.conftest import verify_session
from tests.support.factories import RoleFactory, SystemFactory
from tests.support.requests import submit
from tests.support.timeline import JUSTIFICATION, MIN, H, acknowledged, at, expired, granted, removal_confirmed

pytestmark = pytest.mark.django_db
T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)  # a Monday, long enough ago that every grant has ended
DAY = timedelta(days=1)
WEEK = 7 * DAY
REPORTS = {
    "access": ("report_access", "report_access_export", "access_history"),
    "approvals": ("report_approvals", "report_approvals_export", "approval_metrics"),
    "break_glass": ("report_break_glass", "report_break_glass_export", "break_glass"),
    "denied": ("report_denied", "report_denied_export", "denied_requests"),
}
ID_COLUMN = {"access": "grant_id", "approvals": "request_id", "break_glass": "grant_id", "denied": "request_id"}


# --- Helpers: state through the services, at chosen times ---------------------------------------


def as_(user) -> Client:
    return verify_session(Client(), user)


def released(grant: Grant, when: datetime) -> Grant:
    with at(when):
        gs.grant_release(grant.user, grant.pk)
    grant.refresh_from_db()
    return grant


def revoked(grant: Grant, by, when: datetime, reason="Incident closed") -> Grant:
    with at(when):
        gs.grant_revoke(by, grant.pk, reason=reason)
    grant.refresh_from_db()
    return grant


def denied(w, when, *, approver=None, comment="Use the read-only role instead", after=10 * MIN, **kwargs):
    with at(when):
        access_request = submit(w, **kwargs)
    with at(when + after):
        ar.access_request_deny(approver or w.approver, access_request.pk, comment=comment)
    access_request.refresh_from_db()
    return access_request


def break_glass(w, when, *, justification="Prod is down, INC-9 paging") -> Grant:
    with at(when):
        grant = gs.break_glass_activate(
            w.requester, role=w.role_two, justification=justification, duration=H, step_up_at=timezone.now()
        )
    return released(grant, when + 10 * MIN)


def page(viewer, report: str, /, **params):
    response = as_(viewer).get(reverse(REPORTS[report][0]), params)
    assert response.status_code == 200, response.content.decode()[:2000]
    return response


def ids(response) -> list[int]:
    return [row.pk for row in response.context["rows"]]


def export(viewer, report: str, /, **params) -> tuple[list[dict], object]:
    response = as_(viewer).get(reverse(REPORTS[report][1]), params)
    assert response.status_code == 200
    return parse_csv(response), response


def parse_csv(response) -> list[dict]:
    assert response["Content-Type"].startswith("text/csv")
    body = b"".join(response.streaming_content).decode("utf-8")
    assert body.startswith("\ufeff")
    header, *rows = list(csv.reader(io.StringIO(body[1:], newline="")))
    return [dict(zip(header, row, strict=True)) for row in rows]


def csv_ids(rows: list[dict], report: str) -> list[int]:
    return [int(row[ID_COLUMN[report]]) for row in rows]


def eligible(user, role) -> Eligibility:
    return Eligibility.objects.create(role=role, user=user, starts_at=T0 - 30 * DAY)


@pytest.fixture
def world(world):
    """The shared world, with its eligibilities starting before this module's history (2025)."""
    Eligibility.objects.update(starts_at=T0 - 30 * DAY)
    return world


@pytest.fixture
def billing(world, make_user):
    """A second system with its own approver, on which the requester is also eligible."""
    system = SystemFactory(name="Billing API", slug="billing-api")
    role = RoleFactory(system=system, name="read-only", approvals_required=1)
    eligible(world.requester, role)
    approver = make_user("billing-approver")
    assign_perm("accessgov.approve_role", approver, role)
    world.billing_role = role
    world.billing_approver = approver
    return world


@pytest.fixture
def glass(world):
    world.role_two.break_glass_allowed = True
    world.role_two.save()
    return world


# --- 1. Access history ---------------------------------------------------------------------------


def test_access_history_shows_who_what_why_approver_ending_and_revocation_lag(world):
    grant = granted(world, T0, ticket="OPS-7")
    grant = revoked(grant, world.owner, T0 + 20 * MIN)
    grant = removal_confirmed(grant, world.owner, timedelta(seconds=1, milliseconds=500))

    response = page(world.auditor, "access")
    assert ids(response) == [grant.pk]
    html = response.content.decode()
    assert JUSTIFICATION in html and "OPS-7" in html and "1.5 s" in html and "by owner" in html
    [row], _ = export(world.auditor, "access")
    assert row == {
        "grant_id": str(grant.pk),
        "request_id": str(grant.access_request_id),
        "user": "requester",
        "system": "Payments DB",
        "role": "read-write",
        "break_glass": "false",
        "starts_at": "2025-03-03T09:01:00Z",
        "expires_at": "2025-03-03T10:01:00Z",
        "extensions": "0",
        "outcome": "revoked",
        "ended_at": "2025-03-03T09:20:00Z",
        "ended_by": "owner",
        "justification": JUSTIFICATION,
        "ticket": "OPS-7",
        "approved_by": "approver",
        "auto_approved_by_rule": "",
        "removal_confirmed_at": "2025-03-03T09:20:01Z",
        "revocation_lag_seconds": "1.5",
        "approvals": f"approver approved request #{grant.access_request_id} (the grant, 1 h) at 2025-03-03T09:01:00Z",
    }


def test_access_history_lists_every_approver_of_a_two_approval_role_and_the_clock_decides_expiry(world):
    with at(T0):
        access_request = submit(world, role=world.role_two)
        ar.access_request_approve(world.approver2, access_request.pk)
        ar.access_request_approve(world.approver, access_request.pk)
    grant = Grant.objects.get()
    # No sweep ran: stored state says active, yet the report says expired at expires_at.
    [row], _ = export(world.auditor, "access")
    assert row["approved_by"] == "approver,approver2"
    assert (row["outcome"], row["ended_at"]) == ("expired", "2025-03-03T10:00:00Z")
    assert grant.status == Grant.Status.ACTIVE
    assert ids(page(world.auditor, "access", outcome="expired")) == [grant.pk]
    assert ids(page(world.auditor, "access", outcome="current")) == []


def test_access_history_filters_by_period_system_role_user_outcome_and_break_glass(glass, billing, make_user):
    w = glass
    first = released(granted(w, T0), T0 + 30 * MIN)  # week 1, Payments read-write, released
    second = expired(granted(w, T0 + WEEK, role=w.billing_role, approver=w.billing_approver))  # week 2, Billing
    third = revoked(granted(w, T0 + 2 * WEEK, role=w.role_two), w.owner, T0 + 2 * WEEK + H)
    emergency = break_glass(w, T0 + 3 * WEEK)
    other = make_user("second-requester")
    eligible(other, w.role)
    theirs = released(granted(w, T0 + 3 * WEEK, user=other), T0 + 3 * WEEK + H)
    current = granted(w, timezone.now() - 10 * MIN)  # still active now

    def shown(**params):
        return set(ids(page(w.auditor, "access", **params)))

    everything = {first.pk, second.pk, third.pk, emergency.pk, theirs.pk, current.pk}
    assert shown() == everything
    week2 = (T0 + WEEK).date()
    assert shown(since=week2, until=week2) == {second.pk}
    assert shown(since=(T0 + 2 * WEEK).date(), until=(T0 + 3 * WEEK).date()) == {third.pk, emergency.pk, theirs.pk}
    assert shown(until=T0.date()) == {first.pk}
    assert shown(system=w.billing_role.system.pk) == {second.pk}
    assert shown(role=w.role_two.pk) == {third.pk, emergency.pk}
    assert shown(user="SECOND-requester") == {theirs.pk}
    assert shown(outcome="released") == {first.pk, emergency.pk, theirs.pk}
    assert shown(outcome="expired") == {second.pk}
    assert shown(outcome="revoked") == {third.pk}
    assert shown(outcome="current") == {current.pk}
    assert shown(break_glass="true") == {emergency.pk}
    assert shown(break_glass="false") == everything - {emergency.pk}


def test_access_period_means_overlap_a_grant_running_over_midnight_counts_on_both_days(world):
    grant = granted(world, datetime(2025, 3, 3, 23, 30, tzinfo=UTC), decide_after=timedelta(0))
    assert ids(page(world.auditor, "access", since="2025-03-03", until="2025-03-03")) == [grant.pk]
    assert ids(page(world.auditor, "access", since="2025-03-04", until="2025-03-04")) == [grant.pk]
    assert ids(page(world.auditor, "access", since="2025-03-05")) == []
    assert ids(page(world.auditor, "access", until="2025-03-02")) == []


# --- 2. Approval metrics -------------------------------------------------------------------------


def _approval_history(w):
    """approver: 10 min and 30 min approvals; approver2: a 60 min denial; one auto-approval on a
    no-approval role; one lapsed request."""
    fast = granted(w, T0, decide_after=10 * MIN)
    released(fast, T0 + H)
    slow = granted(w, T0 + WEEK, decide_after=30 * MIN)
    released(slow, T0 + WEEK + H)
    refused = denied(w, T0 + WEEK + 2 * H, approver=w.approver2, after=60 * MIN)
    auto_role = RoleFactory(system=SystemFactory(name="Status page"), name="editor", approvals_required=0)
    eligible(w.requester, auto_role)
    auto = granted(w, T0 + WEEK, role=auto_role)
    with at(T0 + 2 * WEEK):
        waiting = submit(w, role=w.role_two)
    with at(T0 + 2 * WEEK + timedelta(hours=25)):
        ar.access_request_lapse_due(timezone.now())
    return fast.access_request, slow.access_request, refused, auto.access_request, waiting


def test_approval_metrics_give_time_to_decision_by_system_and_by_approver(world):
    fast, slow, refused, auto, waiting = _approval_history(world)
    response = page(world.auditor, "approvals")
    metrics = response.context["metrics"]
    assert (metrics.decided, metrics.manual_approvals, metrics.auto_approvals, metrics.denied, metrics.lapsed) == (
        5,
        2,
        1,
        1,
        1,
    )
    payments = next(row for row in metrics.by_system if row.name == "Payments DB")
    assert (payments.count, payments.median, payments.p90) == (3, 1800.0, 3600.0)
    assert (payments.approvals, payments.denials, payments.lapsed, payments.auto) == (2, 1, 1, 0)
    status_page = next(row for row in metrics.by_system if row.name == "Status page")
    assert (status_page.count, status_page.auto, status_page.median) == (0, 1, None)
    by_approver = {row.name: row for row in metrics.by_approver}
    assert (by_approver["approver"].count, by_approver["approver"].median) == (2, 1200.0)
    assert (by_approver["approver2"].denials, by_approver["approver2"].median) == (1, 3600.0)
    assert metrics.weekly_median == {T0.date(): 600.0, (T0 + WEEK).date(): 1800.0}
    assert set(ids(response)) == {fast.pk, slow.pk, refused.pk, auto.pk, waiting.pk}
    html = response.content.decode()
    assert "30 min" in html and "1 h" in html


def test_approval_metrics_filter_by_period_system_role_requester_approver_and_outcome(world):
    fast, slow, refused, auto, waiting = _approval_history(world)

    def shown(**params):
        return set(ids(page(world.auditor, "approvals", **params)))

    assert shown(outcome="approved") == {fast.pk, slow.pk}
    assert shown(outcome="auto_approved") == {auto.pk}
    assert shown(outcome="denied") == {refused.pk}
    assert shown(outcome="lapsed") == {waiting.pk}
    assert shown(approver="approver2") == {refused.pk}
    assert shown(approver="APPROVER") == {fast.pk, slow.pk}
    assert shown(system=auto.role.system_id) == {auto.pk}
    assert shown(role=world.role_two.pk) == {waiting.pk}
    assert shown(user="requester") == {fast.pk, slow.pk, refused.pk, auto.pk, waiting.pk}
    assert shown(user="nobody") == set()
    assert shown(since=T0.date(), until=T0.date()) == {fast.pk}
    assert shown(since=(T0 + 2 * WEEK).date()) == {waiting.pk}
    metrics = page(world.auditor, "approvals", since=(T0 + WEEK).date(), until=(T0 + WEEK).date()).context["metrics"]
    assert (metrics.manual_approvals, metrics.auto_approvals, metrics.denied, metrics.lapsed) == (1, 1, 1, 0)


def test_break_glass_activations_are_not_counted_as_approvals(glass):
    break_glass(glass, T0)
    assert ids(page(glass.auditor, "approvals")) == []


# --- 3. Break-glass ------------------------------------------------------------------------------


def test_break_glass_report_shows_each_follow_up_open_overdue_or_acknowledged_by_whom(glass):
    w = glass
    reviewed = acknowledged(break_glass(w, T0), w.auditor, T0 + 2 * H, comment="Checked the session log")
    overdue = break_glass(w, T0 + WEEK)
    fresh = break_glass(w, timezone.now() - 2 * H)

    response = page(w.auditor, "break_glass")
    assert set(ids(response)) == {reviewed.pk, overdue.pk, fresh.pk}
    assert response.context["counts"] == {"total": 3, "open": 1, "overdue": 1, "acknowledged": 1}
    html = response.content.decode()
    assert "Checked the session log" in html and "by auditor" in html and "Overdue" in html
    rows = {int(r["grant_id"]): r for r in export(w.auditor, "break_glass")[0]}
    assert rows[reviewed.pk]["follow_up_status"] == "acknowledged"
    assert rows[reviewed.pk]["acknowledged_by"] == "auditor"
    assert rows[reviewed.pk]["acknowledged_at"] == "2025-03-03T11:00:00Z"
    assert rows[reviewed.pk]["acknowledgement_comment"] == "Checked the session log"
    assert rows[reviewed.pk]["justification"] == "Prod is down, INC-9 paging"
    assert rows[reviewed.pk]["outcome"] == "released"
    assert rows[overdue.pk]["follow_up_status"] == "overdue"
    assert rows[overdue.pk]["follow_up_due_at"] == "2025-03-11T09:00:00Z"
    assert rows[fresh.pk]["follow_up_status"] == "open"

    def shown(**params):
        return set(ids(page(w.auditor, "break_glass", **params)))

    assert shown(follow_up="open") == {fresh.pk}
    assert shown(follow_up="overdue") == {overdue.pk}
    assert shown(follow_up="acknowledged") == {reviewed.pk}
    assert shown(since=(T0 + WEEK).date(), until=(T0 + WEEK).date()) == {overdue.pk}
    assert shown(system=w.system.pk, role=w.role_two.pk, user="requester") == {reviewed.pk, overdue.pk, fresh.pk}
    assert shown(role=w.role.pk) == set()
    assert shown(user="approver") == set()


# --- 4. Denied requests --------------------------------------------------------------------------


def test_denied_report_shows_requester_role_when_approver_and_reason(billing):
    w = billing
    one = denied(w, T0, comment="Use the read-only role instead")
    two = denied(w, T0 + WEEK, approver=w.approver2, comment="No ticket, no access")
    three = denied(w, T0 + 2 * WEEK, role=w.billing_role, approver=w.billing_approver, comment="Not on call")
    with at(T0 + 3 * WEEK):  # approved by one, then denied by the second approver
        access_request = submit(w, role=w.role_two)
        ar.access_request_approve(w.approver, access_request.pk)
        ar.access_request_deny(w.approver2, access_request.pk, comment="Too broad for this task")
    granted(w, T0 + 4 * WEEK)  # approved: not in this report

    response = page(w.auditor, "denied")
    assert ids(response) == [access_request.pk, three.pk, two.pk, one.pk]
    rows = {int(r["request_id"]): r for r in export(w.auditor, "denied")[0]}
    assert (rows[one.pk]["requester"], rows[one.pk]["role"], rows[one.pk]["decided_at"]) == (
        "requester",
        "read-write",
        "2025-03-03T09:10:00Z",
    )
    assert (rows[two.pk]["denied_by"], rows[two.pk]["denial_comment"]) == ("approver2", "No ticket, no access")
    assert rows[two.pk]["requested_duration_seconds"].isdigit()  # whole seconds ("3600", not "3600.0")
    assert (rows[access_request.pk]["denied_by"], rows[access_request.pk]["approved_by"]) == ("approver2", "approver")

    def shown(**params):
        return set(ids(page(w.auditor, "denied", **params)))

    assert shown(approver="approver2") == {two.pk, access_request.pk}
    assert shown(system=w.billing_role.system.pk) == {three.pk}
    assert shown(role=w.role_two.pk) == {access_request.pk}
    assert shown(user="requester") == {one.pk, two.pk, three.pk, access_request.pk}
    assert shown(since=(T0 + WEEK).date(), until=(T0 + 2 * WEEK).date()) == {two.pk, three.pk}


# --- The CSV is the page: same rows, same order, every sort, across keyset pages ---------------


def _mixed_history(w, make_user):
    """A dozen rows per report with ties and NULLs in the sortable columns."""
    extra = make_user("another-requester")
    for role in (w.role, w.role_two):
        eligible(extra, role)
    for i in range(6):
        start = T0 + i * timedelta(days=2)
        grant = granted(w, start, decide_after=(i + 1) * MIN, user=extra if i % 2 else None)
        grant = expired(grant) if i % 3 == 0 else revoked(grant, w.owner, start + 30 * MIN)
        if i % 2 == 0:
            removal_confirmed(grant, w.owner, timedelta(seconds=i))
        denied(w, start + 2 * H, approver=w.approver if i % 2 else w.approver2, after=(6 - i) * MIN)
        fu = break_glass(w, start + 3 * H)
        if i % 3 == 1:
            acknowledged(fu, w.auditor, start + 4 * H)


SORTS = {
    "access": ["-id", "id", "user", "-user", "system", "starts_at", "-expires_at", "ended_at", "lag", "-lag"],
    "approvals": ["-id", "requester", "-system", "created_at", "-decided_at", "decision_time", "-decision_time"],
    "break_glass": ["-id", "user", "-system", "starts_at", "due_at", "acknowledged_at", "-acknowledged_at"],
    "denied": ["-id", "id", "requester", "-system", "decided_at", "denied_by", "-denied_by"],
}


@pytest.mark.parametrize("report", list(REPORTS))
def test_csv_rows_are_the_pages_rows_in_the_same_order_for_every_sort(glass, make_user, monkeypatch, report):
    _mixed_history(glass, make_user)
    monkeypatch.setattr(report_views, "PAGE_SIZE", 4)
    client = as_(glass.auditor)
    for sort in SORTS[report]:
        walked, after, pages = [], "", 0
        while True:
            response = client.get(reverse(REPORTS[report][0]), {"sort": sort, "after": after})
            assert response.status_code == 200
            walked += ids(response)
            pages += 1
            after = response.context["page"].next_cursor
            if not after:
                break
        exported = csv_ids(parse_csv(client.get(reverse(REPORTS[report][1]), {"sort": sort})), report)
        assert walked == exported, sort
        assert len(set(walked)) == len(walked) > 4 and pages > 1, sort


@pytest.mark.parametrize("report", list(REPORTS))
def test_filtered_csv_is_exactly_the_filtered_page(glass, make_user, report):
    _mixed_history(glass, make_user)
    params = {"since": (T0 + timedelta(days=2)).date(), "until": (T0 + timedelta(days=8)).date(), "sort": "-id"}
    shown = ids(page(glass.auditor, report, **params))
    rows, _ = export(glass.auditor, report, **params)
    assert shown == csv_ids(rows, report)
    assert 0 < len(shown) < len(ids(page(glass.auditor, report)))


def test_a_tampered_cursor_starts_from_the_first_page(world):
    grant = granted(world, T0)
    for after in ("garbage", "W251bGwsICJ4Il0", "WyJub3QgYSBkYXRlIiwgMV0", "W251bGwsIDFd"):
        assert ids(page(world.auditor, "access", after=after, sort="starts_at")) == [grant.pk]
    # On a text key: a NUL (PostgreSQL refuses it) or a lone surrogate (no UTF-8) in the cursor's value.
    for after in ("WyJcdTAwMDAiLCAxXQ", "WyJcdWQ4MDAiLCAxXQ"):
        assert ids(page(world.auditor, "access", after=after, sort="user")) == [grant.pk]


# --- Hostile cells -------------------------------------------------------------------------------

HOSTILE = 'He said "stop", then, after a pause,\nleft — Zoë ✓'


def test_hostile_cells_round_trip_with_formulas_neutralised_and_everything_else_intact(world):
    formula = denied(world, T0, justification='=HYPERLINK("x")')
    plus = denied(world, T0 + H, ticket="+1", comment="-2")
    at_sign = granted(world, T0 + 2 * H, ticket="@SUM(A1)", justification=HOSTILE)
    released(at_sign, T0 + 3 * H)
    rows = {int(r["request_id"]): r for r in export(world.auditor, "denied")[0]}
    assert rows[formula.pk]["justification"] == '\'=HYPERLINK("x")'
    assert rows[plus.pk]["ticket"] == "'+1"
    assert rows[plus.pk]["denial_comment"] == "'-2"
    assert rows[formula.pk]["denial_comment"] == "Use the read-only role instead"
    [row], _ = export(world.auditor, "access")
    assert row["ticket"] == "'@SUM(A1)"
    assert row["justification"] == HOSTILE


def test_a_comment_that_is_a_formula_is_neutralised_in_the_break_glass_export(glass):
    grant = acknowledged(break_glass(glass, T0), glass.auditor, T0 + H, comment='=HYPERLINK("x"), "quoted", Zoë ✓')
    [row], _ = export(glass.auditor, "break_glass")
    assert row["grant_id"] == str(grant.pk)
    assert row["acknowledgement_comment"] == '\'=HYPERLINK("x"), "quoted", Zoë ✓'


# --- Visibility ----------------------------------------------------------------------------------


@pytest.mark.parametrize("report", list(REPORTS))
def test_an_outsider_gets_an_empty_report_and_exports_nothing_of_others(glass, make_user, report):
    _mixed_history(glass, make_user)
    response = page(glass.outsider, report)
    assert ids(response) == []
    rows, csv_response = export(glass.outsider, report)
    assert rows == []
    assert csv_response["X-Row-Count"] == "0"
    assert AccessEvent.objects.get(event_type=AccessEvent.Type.EXPORT_CREATED).data["rows"] == 0


def test_an_approver_of_one_system_sees_and_exports_only_that_systems_rows(billing):
    w = billing
    payments = released(granted(w, T0), T0 + H)
    billing_grant = released(granted(w, T0 + H, role=w.billing_role, approver=w.billing_approver), T0 + 2 * H)
    billing_denial = denied(w, T0 + 3 * H, role=w.billing_role, approver=w.billing_approver)
    denied(w, T0 + 4 * H)
    assert ids(page(w.billing_approver, "access")) == [billing_grant.pk]
    assert csv_ids(export(w.billing_approver, "access")[0], "access") == [billing_grant.pk]
    assert csv_ids(export(w.billing_approver, "denied")[0], "denied") == [billing_denial.pk]
    metrics = page(w.billing_approver, "approvals").context["metrics"]
    assert [row.name for row in metrics.by_system] == ["Billing API"]
    assert [row.name for row in metrics.by_approver] == ["billing-approver"]
    # The requester sees their own history on both systems; the auditor sees everything.
    assert set(ids(page(w.requester, "access"))) == {payments.pk, billing_grant.pk}
    assert set(ids(page(w.auditor, "access"))) == {payments.pk, billing_grant.pk}


def test_reports_link_is_in_the_nav_for_approvers_owners_and_auditors(world):
    link = f'href="{reverse("reports")}"'
    for user in (world.approver, world.owner, world.auditor):
        assert link in as_(user).get(reverse("home")).content.decode(), user
    assert link not in as_(world.outsider).get(reverse("home")).content.decode()
    index = as_(world.auditor).get(reverse("reports"))
    assert index.status_code == 200
    for name in ("report_access", "report_approvals", "report_break_glass", "report_denied"):
        assert reverse(name) in index.content.decode()


# --- Export events -------------------------------------------------------------------------------


@pytest.mark.parametrize("report", list(REPORTS))
def test_each_export_records_one_export_event_with_report_filters_and_row_count(glass, make_user, report):
    _mixed_history(glass, make_user)
    params = {"since": "2025-03-05", "system": str(glass.system.pk), "sort": "-id"}
    rows, response = export(glass.auditor, report, **params)
    [event] = AccessEvent.objects.filter(event_type=AccessEvent.Type.EXPORT_CREATED)
    assert event.actor == glass.auditor
    assert event.data == {"report": REPORTS[report][2], "filters": params, "rows": len(rows)}
    assert len(rows) > 0
    assert response["X-Row-Count"] == str(len(rows))
    assert f"accessgov-{REPORTS[report][2].replace('_', '-')}-" in response["Content-Disposition"]
    assert response["Cache-Control"] == "private, no-store"


@pytest.mark.parametrize("report", list(REPORTS))
def test_invalid_filters_are_a_400_with_a_message_and_export_nothing(world, report):
    client = as_(world.auditor)
    response = client.get(reverse(REPORTS[report][0]), {"since": "2025-03-10", "until": "2025-03-01"})
    assert response.status_code == 400
    assert "The period starts after it ends" in response.content.decode()
    exported = client.get(reverse(REPORTS[report][1]), {"sort": "password"})
    assert exported.status_code == 400 and "Sort by column: Select a valid choice" in exported.content.decode()
    assert not AccessEvent.objects.filter(event_type=AccessEvent.Type.EXPORT_CREATED).exists()
    # A bad sort key on the page says so (a probe read "No grants match." as "there is no data").
    page = client.get(reverse(REPORTS[report][0]), {"sort": "bogus"})
    assert page.status_code == 400
    assert "nothing was searched" in page.content.decode() and "Sort by column: Select a valid choice" in (
        page.content.decode()
    )


# --- Query budgets -------------------------------------------------------------------------------


def _rows_for(report: str, w, count: int, start: datetime) -> None:
    for i in range(count):
        when = start + i * 3 * H
        if report == "access":
            grant = revoked(granted(w, when, approver=w.approver if i % 2 else w.approver2), w.owner, when + H)
            removal_confirmed(grant, w.owner, timedelta(seconds=i % 7))
        elif report == "approvals":
            released(granted(w, when, approver=w.approver if i % 2 else w.approver2), when + H)
        elif report == "break_glass":
            grant = break_glass(w, when)
            if i % 2:
                acknowledged(grant, w.auditor, when + H)
        else:
            denied(w, when, approver=w.approver if i % 2 else w.approver2)


PAGE_BUDGET = 22
EXPORT_BUDGET = 15


@pytest.mark.parametrize("report", list(REPORTS))
def test_report_page_and_export_query_counts_do_not_grow_with_the_rows(glass, report, django_assert_max_num_queries):
    client = as_(glass.auditor)
    for total, start in ((3, T0), (30, T0 + 2 * WEEK)):
        _rows_for(report, glass, total - (3 if total == 30 else 0), start)
        with django_assert_max_num_queries(PAGE_BUDGET):
            response = client.get(reverse(REPORTS[report][0]))
        assert len(ids(response)) == total
        with django_assert_max_num_queries(EXPORT_BUDGET):
            rows = parse_csv(client.get(reverse(REPORTS[report][1])))
        assert len(rows) == total


# --- Charts --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("report", "titles"),
    [
        ("access", ["Grants per week, by system", "Revocation lag: from end of access to confirmed removal"]),
        ("approvals", ["Median time to approve, per week"]),
        ("break_glass", ["Break-glass activations per week"]),
    ],
)
def test_charts_render_as_inline_svg_with_a_title_a_summary_and_a_data_table(glass, make_user, report, titles):
    _mixed_history(glass, make_user)
    html = page(glass.auditor, report).content.decode()
    for title in titles:
        assert "<title id=" in html and f">{title}</title>" in html, title
    assert html.count('<svg class="chart-svg"') == len(titles)  # one image each (it holds two drawings)
    assert 'role="img"' in html and "<desc id=" in html
    assert "The numbers behind this chart" in html
    assert "style=" not in html.split("<svg", 1)[1]  # the CSP allows no inline styles


def test_charts_escape_names_and_say_so_when_there_is_nothing_to_draw(world):
    world.system.name = "<script>alert(1)</script> DB"
    world.system.save()
    granted(world, T0)
    html = page(world.auditor, "access").content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; DB" in html
    empty = page(world.auditor, "access", since="2030-01-01").content.decode()
    assert "<svg" not in empty and "Nothing to chart for these filters." in empty


def test_revocation_lag_buckets_count_each_confirmed_removal_once(world):
    lags = [timedelta(milliseconds=300), timedelta(seconds=1.5), timedelta(seconds=3), timedelta(seconds=12)]
    lags += [timedelta(minutes=2), timedelta(minutes=9)]
    for i, lag in enumerate(lags):
        grant = revoked(granted(world, T0 + i * 2 * H), world.owner, T0 + i * 2 * H + 30 * MIN)
        removal_confirmed(grant, world.owner, lag)
    revoked(granted(world, T0 + 20 * H), world.owner, T0 + 21 * H)  # removal never confirmed
    html = page(world.auditor, "access").content.decode()
    assert "6 ended grants with a confirmed removal: 1 within a second, 2 after 30 s or more" in html
    assert "1 ended without a confirmed removal yet" in html
    response = page(world.auditor, "access", sort="-lag")
    lagged = [g.revocation_lag for g in response.context["rows"]]
    assert lagged == [*sorted(lags, reverse=True), None]


@pytest.mark.parametrize(
    "report", [reports.ACCESS_HISTORY, reports.APPROVALS, reports.BREAK_GLASS, reports.DENIED], ids=lambda r: r.name
)
def test_every_csv_column_is_documented_in_its_row_docstring(report):
    documented = report.csv_row.__doc__ or ""
    missing = [column for column in report.columns if not re.search(rf"\b{column}\b", documented)]
    assert missing == []


def test_a_chart_with_many_systems_folds_the_smallest_into_other_and_keeps_every_number_in_its_table():
    series = [charts.Series(f"System {i}", [i, 1]) for i in range(1, 9)]
    html = charts.column_chart(
        chart_id="c", title="Many", summary="s", category_label="Week of", categories=["a", "b"], series=series
    )
    assert html.count('class="swatch') == charts.MAX_SERIES
    assert "Other (3 more)" in html and "System 8" in html and "System 1<" not in html
    # The five largest stay; Other = 3 + 2 + 1 in column "a"; the total is every series' sum.
    assert '<th scope="row">a</th><td>8</td><td>7</td><td>6</td><td>5</td><td>4</td><td>6</td><td>36</td>' in html


def test_duration_formatting_and_percentiles():
    assert [charts.format_seconds(s) for s in (0.4, 12, 185, 900, 7800, 97200)] == [
        "0.4 s",
        "12 s",
        "3 min 5 s",
        "15 min",
        "2 h 10 min",
        "1 d 3 h",
    ]
    assert base.p90([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]) == 9
    assert base.p90([5]) == 5
    assert base.median([1, 2, 3, 10]) == 2.5
    assert base.p90([]) is None


def test_a_group_approver_sees_the_reports_of_their_system(world, make_user):
    member = make_user("group-member")
    member.groups.add(Group.objects.get(name="payments approvers"))
    grant = granted(world, T0)
    assert ids(page(member, "access")) == [grant.pk]


def test_report_summaries_are_reused_per_viewer_scope_and_say_when_they_were_computed(world, settings):
    from django.core.cache import cache

    settings.REPORT_SUMMARY_CACHE_SECONDS = 60
    cache.clear()
    auditor, approver = verify_session(Client(), world.auditor), verify_session(Client(), world.approver)
    url = reverse("report_access")
    first = auditor.get(url).content.decode()
    assert "Charts and totals as of" in first and "Nothing to chart" in first
    access_request = ar.access_request_submit(
        world.requester, role=world.role, duration=timedelta(hours=1), justification="Investigating INC-9000"
    )
    ar.access_request_approve(world.approver, access_request.pk)
    # The auditor's cached summary is reused (until it expires); the table itself is live.
    again = auditor.get(url).content.decode()
    assert "Nothing to chart" in again and "1 grant started" not in again and "Investigating INC-9000" in again
    # Another viewer never gets the auditor's summary: their own is computed for their scope.
    assert "1 grant started" in approver.get(url).content.decode()
    # Different filters, different summary.
    assert "1 grant started" in auditor.get(url + "?user=requester").content.decode()
    cache.clear()
    assert "1 grant started" in auditor.get(url).content.decode()


def test_approval_metrics_tables_are_rendered_once_per_summary_and_never_shared_across_scopes(world, settings):
    from django.core.cache import cache

    settings.REPORT_SUMMARY_CACHE_SECONDS = 60
    cache.clear()
    auditor, approver = verify_session(Client(), world.auditor), verify_session(Client(), world.approver)
    url = reverse("report_approvals")
    assert "No decided requests." in auditor.get(url).content.decode()
    access_request = ar.access_request_submit(
        world.requester, role=world.role, duration=timedelta(hours=1), justification="Investigating INC-9001"
    )
    ar.access_request_approve(world.approver, access_request.pk)
    again = auditor.get(url).content.decode()
    # The kept summary (tables included) until it expires; the rows below it are live.
    assert "No decided requests." in again and f'href="/requests/{access_request.pk}/"' in again
    assert "No decided requests." not in approver.get(url).content.decode()
    # With caching on, invalid filters are still a 400 with the message (no summary to render).
    response = auditor.get(url, {"since": "2025-03-10", "until": "2025-03-01"})
    assert response.status_code == 400 and "The period starts after it ends" in response.content.decode()
    cache.clear()
    assert "No decided requests." not in auditor.get(url).content.decode()


@pytest.mark.parametrize("url", ["/audit/", "/grants/", "/requests/"])
def test_a_period_that_starts_after_it_ends_is_a_clear_400_on_lists_and_the_audit_trail(world, url):
    """The reports said so already; the audit trail and the lists showed "No events match"."""
    from django.test import Client

    from tests.conftest import verify_session

    user = world.auditor if url != "/requests/" else world.requester
    response = verify_session(Client(), user).get(url, {"since": "2026-12-31", "until": "2026-01-01"})
    assert response.status_code == 400
    assert "The period starts after it ends: swap From and Until." in response.content.decode()
