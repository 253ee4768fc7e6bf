"""The readers ``AccessRequest.status_at`` had left out (DECISIONS, "What was left, closed"): the approval metrics
report (counts, outcome, period, sort, rows and CSV) and the admin's request list, filter, sort and detail read a
pending request past its deadline as lapsed, decided at that deadline, before the sweep records it — and read the
same after it. Also: the access history lists everyone who approved a part of a grant's access (the grant and each
approved extension), with when and what. Slack's readers: tests/views/test_integrations_slack_status_at.py."""

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accessgov.models import AccessRequest, AutoApprovalRule, Grant, Role
from accessgov.reports import access_history
from accessgov.services import access_requests as ar
from tests.conftest import verify_session
from tests.support.requests import submit

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
H = timedelta(hours=1)
DAY = timedelta(hours=24)  # the roles' pending timeout
US = timedelta(microseconds=1)
Status = AccessRequest.Status


def at(moment: datetime):
    return time_machine.travel(moment, tick=False)


def as_(user) -> Client:
    return verify_session(Client(), user)


def asked(world, when: datetime = T0, **kwargs) -> AccessRequest:
    with at(when):
        return submit(world, **kwargs)


def csv_rows(response) -> list[dict]:
    assert response.status_code == 200, response.content
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode("utf-8-sig"))))


def utc_text(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# --- The queryset's twins of decided_at_as_of -------------------------------------------------------------------


def test_decided_within_and_the_decision_time_annotation_say_what_the_model_says_at_every_instant(world):
    approved = asked(world)
    with at(T0 + 10 * MIN):
        ar.access_request_approve(world.approver, approved.pk)
    denied = asked(world, T0 + 20 * MIN, role=world.role_two)
    with at(T0 + 30 * MIN):
        ar.access_request_deny(world.approver, denied.pk, comment="Use the read-only role")
    with at(T0 + 40 * MIN):
        cancelled = ar.access_request_cancel(world.requester, submit(world, role=world.role_two).pk)
    unswept = asked(world, T0 + 2 * H)  # the grant has ended; deadline T0 + 26 h, never swept here
    Role.objects.filter(pk=world.role_two.pk).update(pending_timeout=H)
    swept = asked(world, T0 + 2 * H, role=Role.objects.get(pk=world.role_two.pk))  # lapses at T0 + 3 h
    with at(T0 + 4 * H):
        assert ar.access_request_lapse_due(T0 + 4 * H) == 1
    requests = [AccessRequest.objects.get(pk=r.pk) for r in (approved, denied, cancelled, unswept, swept)]
    deadline = unswept.lapses_at
    instants = [T0 + 5 * H, deadline - US, deadline, deadline + DAY]
    bounds = [None, T0, T0 + 30 * MIN, T0 + 3 * H, deadline, deadline + US]
    for now in instants:
        annotated = dict(AccessRequest.objects.annotate_decided_at_as_of(now).values_list("pk", "decided_now"))
        assert annotated == {r.pk: r.decided_at_as_of(now) for r in requests}, now
        for statuses in ([Status.APPROVED, Status.DENIED, Status.LAPSED], [Status.LAPSED], [Status.CANCELLED]):
            for since in bounds:
                for until in bounds:
                    found = set(
                        AccessRequest.objects.decided_within(now, statuses, since, until).values_list("pk", flat=True)
                    )
                    expected = {
                        r.pk
                        for r in requests
                        if r.status_at(now) in statuses
                        and (since is None or r.decided_at_as_of(now) >= since)
                        and (until is None or r.decided_at_as_of(now) < until)
                    }
                    assert found == expected, (now, statuses, since, until)


# --- 1. The approval metrics report -----------------------------------------------------------------------------


def test_the_approval_report_counts_and_lists_a_lapse_at_its_deadline_before_the_sweep_and_the_same_after(world):
    waiting = asked(world)  # lapses at T0 + 24 h
    approved = asked(world, T0 + H, role=world.role_two)
    with at(T0 + H + 10 * MIN):
        ar.access_request_approve(world.approver, approved.pk)
        ar.access_request_approve(world.approver2, approved.pk)
    deadline = waiting.lapses_at
    url, export = reverse("report_approvals"), reverse("report_approvals_export")

    def page(client, **params):
        response = client.get(url, params)
        assert response.status_code == 200, response.content.decode()[:1000]
        return response

    def ids(response) -> list[int]:
        return [r.pk for r in response.context["rows"]]

    with at(deadline - MIN):  # still pending: not decided
        client = as_(world.auditor)
        assert ids(page(client)) == [approved.pk]
        assert page(client).context["metrics"].lapsed == 0
    with at(deadline + MIN):  # lapsed, not swept
        client = as_(world.auditor)
        response = page(client)
        metrics = response.context["metrics"]
        assert (metrics.decided, metrics.manual_approvals, metrics.lapsed) == (2, 1, 1)
        [payments] = metrics.by_system
        assert (payments.lapsed, payments.approvals, payments.count) == (1, 1, 1)  # a lapse has no decision time
        assert ids(response) == [approved.pk, waiting.pk]
        html = response.content.decode()
        assert html.count('<span class="status status-lapsed">Lapsed</span>') == 1
        assert f'<td data-label="Decided"><time datetime="{utc_text(deadline)}"' in html
        assert ids(page(client, outcome="lapsed")) == [waiting.pk]
        assert ids(page(client, outcome="approved")) == [approved.pk]
        # The period is when it was decided: its deadline's day (it was asked the day before).
        assert ids(page(client, since=deadline.date(), until=deadline.date())) == [waiting.pk]
        assert ids(page(client, until=T0.date())) == [approved.pk]
        assert ids(page(client, sort="-decided_at")) == [waiting.pk, approved.pk]
        assert ids(page(client, sort="-decision_time")) == [waiting.pk, approved.pk]
        before = {int(r["request_id"]): r for r in csv_rows(client.get(export))}
        assert (before[waiting.pk]["outcome"], before[waiting.pk]["decided_at"]) == ("lapsed", utc_text(deadline))
        assert before[waiting.pk]["decision_seconds"] == "86400.0"
        assert [int(r["request_id"]) for r in csv_rows(client.get(export, {"outcome": "lapsed"}))] == [waiting.pk]
    waiting.refresh_from_db()
    assert waiting.status == Status.PENDING  # reading changed nothing
    with at(deadline + 2 * MIN):
        assert ar.access_request_lapse_due(deadline + 2 * MIN) == 1
        after = {int(r["request_id"]): r for r in csv_rows(as_(world.auditor).get(export))}
    assert after == before  # the sweep only wrote down what every reader already said


def test_a_pending_request_before_its_deadline_is_in_no_outcome_and_no_period(world):
    waiting = asked(world)
    with at(waiting.lapses_at - US):
        client = as_(world.auditor)
        for params in ({}, {"outcome": "lapsed"}, {"since": T0.date()}, {"sort": "-decided_at"}):
            response = client.get(reverse("report_approvals"), params)
            assert response.status_code == 200 and list(response.context["rows"]) == [], params
        assert csv_rows(client.get(reverse("report_approvals_export"))) == []


# --- 2. The admin's request list and detail ---------------------------------------------------------------------


def decided_at_shown(page: str) -> str:
    return page.split("<label>Decided at:</label>", 1)[1].split('<div class="readonly">', 1)[1].split("</div>", 1)[0]


@pytest.fixture
def admin_user(make_user):
    return make_user("admin1", is_staff=True, is_superuser=True)


def test_the_admin_request_list_filter_sort_and_detail_read_the_status_at_now(world, admin_user):
    waiting = asked(world)
    later = asked(world, T0 + H, role=world.role_two)  # lapses an hour after the first
    changelist = reverse("admin:accessgov_accessrequest_changelist")
    detail = reverse("admin:accessgov_accessrequest_change", args=[waiting.pk])

    def listed(client, **params) -> list[int]:
        response = client.get(changelist, params)
        assert response.status_code == 200
        return [r.pk for r in response.context["cl"].result_list]

    with at(waiting.lapses_at + MIN):
        client = as_(admin_user)
        html = client.get(changelist).content.decode()
        assert "Lapsed (not yet recorded by the sweep)" in html and ">Pending<" in html
        assert listed(client, status__exact="lapsed") == [waiting.pk]
        assert listed(client, status__exact="pending") == [later.pk]
        assert listed(client, o="5") == [waiting.pk, later.pk]  # by status now: lapsed after pending
        assert listed(client, o="-5") == [later.pk, waiting.pk]
        page = client.get(detail).content.decode()
        assert "Lapsed (not yet recorded by the sweep)" in page
        assert f"<title>#{waiting.pk} requester → Payments DB · read-write (Lapsed) |" in page  # its name too
        assert decided_at_shown(page) == "2026-05-05 09:00 UTC"  # its deadline, as the admin shows instants
        # A value that is no status is Django's "incorrect lookup" answer, not a 500 or everything.
        wrong = client.get(changelist, {"status__exact": "bogus"})
        assert wrong.status_code == 302 and "e=1" in wrong.url
    with at(waiting.lapses_at + 2 * MIN):
        assert ar.access_request_lapse_due(waiting.lapses_at + 2 * MIN) == 1
        client = as_(admin_user)
        assert listed(client, status__exact="lapsed") == [waiting.pk]
        page = client.get(detail).content.decode()
        assert "not yet recorded" not in page and '<div class="readonly">Lapsed</div>' in page
        assert decided_at_shown(page) == "2026-05-05 09:00 UTC"


# --- 3. The access history: every approver of every part ------------------------------------------------------


def extended(world, grant: Grant, asked_at: datetime, duration: timedelta) -> AccessRequest:
    with at(asked_at):
        return ar.access_request_submit_extension(
            world.requester, grant_id=grant.pk, duration=duration, justification="The migration runs longer"
        )


def test_the_access_history_lists_the_approvers_of_the_grant_and_of_each_approved_extension(world):
    first = asked(world)
    with at(T0 + MIN):
        ar.access_request_approve(world.approver, first.pk)
    grant = Grant.objects.get(access_request=first)
    by_person = extended(world, grant, T0 + 10 * MIN, H)
    with at(T0 + 20 * MIN):
        ar.access_request_approve(world.approver2, by_person.pk)
    refused = extended(world, grant, T0 + 30 * MIN, 30 * MIN)
    with at(T0 + 35 * MIN):
        ar.access_request_deny(world.approver, refused.pk, comment="Not this time")
    AutoApprovalRule.objects.create(role=world.role, name="Any time")
    automatic = extended(world, grant, T0 + 40 * MIN, 30 * MIN)
    automatic.refresh_from_db()
    assert automatic.status == Status.APPROVED and automatic.auto_approved_by_rule
    grant.refresh_from_db()
    assert grant.extension_count == 2
    # On the two-approval role: an extension one approver approved and the other denied is no part of the access.
    two = asked(world, T0, role=world.role_two)
    with at(T0 + MIN):
        ar.access_request_approve(world.approver, two.pk)
        ar.access_request_approve(world.approver2, two.pk)
    other = Grant.objects.get(access_request=two)
    half = extended(world, other, T0 + 5 * MIN, 30 * MIN)
    with at(T0 + 6 * MIN):
        ar.access_request_approve(world.approver, half.pk)
        ar.access_request_deny(world.approver2, half.pk, comment="Ask for less")

    with at(T0 + 50 * MIN):
        client = as_(world.auditor)
        rows = {int(r["grant_id"]): r for r in csv_rows(client.get(reverse("report_access_export")))}
        response = client.get(reverse("report_access"))
    row = rows[grant.pk]
    assert row["approved_by"] == "approver,approver2"
    assert row["auto_approved_by_rule"] == ""  # the grant's own request went to a person
    assert row["approvals"] == "; ".join(
        [
            f"approver approved request #{first.pk} (the grant, 1 h) at 2026-05-04T09:01:00Z",
            f"approver2 approved request #{by_person.pk} (an extension, +1 h) at 2026-05-04T09:20:00Z",
            f'rule "{automatic.auto_approved_by_rule}" approved request #{automatic.pk} (an extension, +30 min) '
            "at 2026-05-04T09:40:00Z",
        ]
    )
    assert rows[other.pk]["approved_by"] == "approver,approver2"
    assert "extension" not in rows[other.pk]["approvals"]
    html = response.content.decode()
    cell = html.split(f'href="/grants/{grant.pk}/"', 1)[1].split('<td data-label="Approved by">', 1)[1]
    cell = cell.split("</td>", 1)[0]
    assert "approver <span" in cell and "approver2 <span" in cell and "an extension, +1 h" in cell
    assert f"auto: {automatic.auto_approved_by_rule}" in cell and "the grant, 1 h" in cell
    assert '<time datetime="2026-05-04T09:20:00Z"' in cell


def test_the_access_history_reads_extension_approvers_in_queries_that_do_not_grow_with_the_rows(world):
    def grant_with_extension(start: datetime) -> None:
        access_request = asked(world, start)
        with at(start + MIN):
            ar.access_request_approve(world.approver, access_request.pk)
        extension = extended(world, Grant.objects.get(access_request=access_request), start + 2 * MIN, H)
        with at(start + 3 * MIN):
            ar.access_request_approve(world.approver2, extension.pk)

    counts = []
    for total in (1, 4):
        while Grant.objects.count() < total:
            grant_with_extension(T0 + Grant.objects.count() * 3 * H)
        with at(T0 + 20 * H):
            client = as_(world.auditor)
            # Once first: the filter form's choices and the export event's webhook subscriptions are cached after.
            client.get(reverse("report_access"))
            csv_rows(client.get(reverse("report_access_export")))
            with CaptureQueriesContext(connection) as page_queries:
                page = client.get(reverse("report_access"))
            with CaptureQueriesContext(connection) as export_queries:
                rows = csv_rows(client.get(reverse("report_access_export")))
        assert len(page.context["rows"]) == len(rows) == total
        assert all(r["approved_by"] == "approver,approver2" for r in rows)
        counts.append((len(page_queries), len(export_queries)))
    assert counts[0] == counts[1]


def test_a_break_glass_grant_has_no_approvals_and_says_so(world):
    from accessgov.services import grants as gs

    world.role_two.break_glass_allowed = True
    world.role_two.save()
    with at(T0):
        grant = gs.break_glass_activate(
            world.requester, role=world.role_two, justification="Prod is down, INC-9 paging", duration=H, step_up_at=T0
        )
    [row_grant] = access_history.access_history_rows(Grant.objects.filter(pk=grant.pk))
    assert access_history.grant_approvals(row_grant) == []
    with at(T0 + MIN):
        client = as_(world.auditor)
        [row] = csv_rows(client.get(reverse("report_access_export")))
        html = client.get(reverse("report_access")).content.decode()
    assert (row["approved_by"], row["approvals"]) == ("", "")
    assert "none (break-glass)" in html
