"""Finding things (issue 18, item 5): search, validated filters, whitelisted sorts and keyset paging on the
list pages, the CSV reading the very same filterset, and bulk decisions with one step-up code."""

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from accessgov import filters
from accessgov.models import AccessEvent, AccessRequest, Decision, Eligibility
from accessgov.services import access_requests as ar
from accessgov.views import approvals as approval_views
from tests.conftest import sign_in, totp_code, verify_session
from tests.support.factories import RoleFactory, SystemFactory
from tests.support.requests import submit

pytestmark = pytest.mark.django_db
T0 = datetime(2027, 3, 1, 10, 0, 15, tzinfo=UTC)  # mid TOTP step
H = timedelta(hours=1)


def _roles(w, count: int) -> list:
    """``count`` more roles on the world's system, the requester eligible and ``approver`` approving each
    (one pending request per person and role, so several pending requests need several roles)."""
    from guardian.shortcuts import assign_perm

    roles = []
    for n in range(count):
        role = RoleFactory(system=w.system, name=f"role-{n:02d}", approvals_required=1, max_duration=4 * H)
        Eligibility.objects.create(role=role, user=w.requester, starts_at=datetime(2020, 1, 1, tzinfo=UTC))
        assign_perm("accessgov.approve_role", w.approver, role)
        roles.append(role)
    return roles


def _csv(response) -> list[list[str]]:
    body = b"".join(response.streaming_content).decode().lstrip("\ufeff")
    return list(csv.reader(io.StringIO(body, newline="")))


def _ids(response, key="access_requests") -> list[int]:
    return [row.pk for row in response.context[key]]


# --- My requests -------------------------------------------------------------------------------------


def test_my_requests_search_matches_ticket_role_and_reason_words_and_never_other_peoples_requests(world):
    w = world
    database = submit(w, justification="Fixing the nightly batch", ticket="OPS-42")
    admin = submit(w, justification="Rotating keys after INC-9", role=w.role_two)
    Eligibility.objects.create(role=w.role, user=w.outsider)
    submit(w, justification="Fixing the nightly batch too", ticket="OPS-42", user=w.outsider)
    client = verify_session(Client(), w.requester)
    url = reverse("my_requests")
    assert _ids(client.get(url, {"q": "ops-42"})) == [database.pk]
    assert _ids(client.get(url, {"q": "admin keys"})) == [admin.pk]  # every word must match somewhere
    assert _ids(client.get(url, {"q": f"#{admin.pk}"})) == [admin.pk]
    assert set(_ids(client.get(url, {"q": "nightly"}))) == {database.pk}
    assert "No requests match." in client.get(url, {"q": "nothing-like-this"}).content.decode()


def test_my_requests_sort_by_whitelisted_columns_and_a_forged_sort_key_is_a_form_error(world):
    w = world
    first = submit(w, justification="First piece of work")
    second = submit(w, justification="Second piece of work", role=w.role_two)
    client = verify_session(Client(), w.requester)
    url = reverse("my_requests")
    assert _ids(client.get(url)) == [second.pk, first.pk]  # newest first by default
    assert _ids(client.get(url, {"sort": "asked"})) == [first.pk, second.pk]
    assert _ids(client.get(url, {"sort": "role"})) == [second.pk, first.pk]  # "admin" < "read-write"
    page = client.get(url)
    assert 'aria-sort="descending"' in page.content.decode()
    # On phones the headings are hidden: the same sort as a select, the current one chosen, in the filter form.
    sorted_by_role = client.get(url, {"sort": "role"}).content.decode()
    assert '<label class="phone-sort">' in sorted_by_role and '<option value="role" selected>' in sorted_by_role
    assert sorted_by_role.count('name="sort"') == 1  # the select replaces the hidden field, no second value
    for forged in ("justification", "-requester__password", "role__name", "asked;drop", "x" * 5000):
        response = client.get(url, {"sort": forged})
        assert response.status_code == 400, forged
        assert "Sort: Select a valid choice" in response.content.decode()
        assert response.context["access_requests"] == []
    export = client.get(reverse("my_requests_export"), {"sort": "-requester__password"})
    assert export.status_code == 400 and b"not valid" in export.content


def test_my_requests_page_by_keyset_and_a_malformed_cursor_starts_over(world, monkeypatch):
    monkeypatch.setattr(filters, "PAGE_SIZE", 2)
    w = world
    made = [submit(w, justification=f"Piece of work number {n}", role=role) for n, role in enumerate(_roles(w, 5))]
    client = verify_session(Client(), w.requester)
    url = reverse("my_requests")
    seen, after = [], ""
    for _ in range(3):
        response = client.get(url, {"after": after} if after else {})
        seen += _ids(response)
        after = response.context["page"].next_cursor
        if not after:
            break
    assert seen == [r.pk for r in reversed(made)] and after is None
    for cursor in ("%%%", "bm90IGpzb24", "W251bGwsICJ4Il0", "W1sxLDJdLDFd", "A" * 3000, "WzEsMV0"):
        response = client.get(url, {"after": cursor})
        assert response.status_code == 200, cursor
    # A cursor built for a date column, fed a nonsense date, starts over too.
    assert _ids(client.get(url, {"after": "WyJub3QtYS1kYXRlIiwgMV0"})) == [made[4].pk, made[3].pk]


def test_a_huge_search_is_a_form_error_and_a_nul_is_refused_before_any_query(world):
    client = verify_session(Client(), world.requester)
    for name in ("my_requests", "grants_list", "approvals", "my_requests_export", "grants_export"):
        response = client.get(reverse(name), {"q": "a" * (filters.SEARCH_MAX_LENGTH + 1)})
        assert response.status_code == 400, name
        assert b"at most 200 characters" in response.content, name
        assert client.get(reverse(name), {"q": "payments\x00"}).status_code == 400, name
    auditor = verify_session(Client(), world.auditor)
    assert auditor.get(reverse("audit_trail"), {"q": "x" * 10_000}).status_code == 400
    assert auditor.get(reverse("audit_export"), {"q": "x" * 10_000}).status_code == 400


def test_the_my_requests_csv_holds_exactly_the_rows_the_page_shows_in_its_order(world):
    w = world
    wanted = [
        submit(w, justification=f"Batch job {n}", ticket="OPS-7", role=role) for n, role in enumerate(_roles(w, 3))
    ]
    submit(w, justification="Something else entirely")
    client = verify_session(Client(), w.requester)
    query = {"q": "ops-7", "sort": "asked", "status": "pending"}
    page = client.get(reverse("my_requests"), query)
    export = client.get(reverse("my_requests_export"), query)
    rows = _csv(export)
    assert rows[0][0] == "request_id"
    assert [int(r[0]) for r in rows[1:]] == _ids(page) == [r.pk for r in wanted]
    assert export["Content-Disposition"].startswith('attachment; filename="accessgov-my-requests-')
    event = AccessEvent.objects.filter(event_type=AccessEvent.Type.EXPORT_CREATED).latest("sequence")
    assert event.data["filters"] == query and event.data["rows"] == 3


# --- Grants ------------------------------------------------------------------------------------------


def _granted(w, justification: str, *, user=None):
    access_request = submit(w, justification=justification, user=user)
    ar.access_request_approve(w.approver, access_request.pk)
    access_request.refresh_from_db()
    return access_request.grant


def test_grants_search_sort_and_export_share_one_filterset(world, make_user):
    w = world
    engineers = [make_user(f"engineer{n}") for n in range(3)]
    for user in engineers:
        Eligibility.objects.create(role=w.role, user=user)
    grants = [_granted(w, "Deploy the fix", user=user) for user in engineers]
    client = verify_session(Client(), w.auditor)
    query = {"q": "engineer", "sort": "holder"}
    page = client.get(reverse("grants_list"), query)
    assert _ids(page, "grants") == [g.pk for g in grants]
    assert _ids(client.get(reverse("grants_list"), {**query, "sort": "-holder"}), "grants") == [
        g.pk for g in reversed(grants)
    ]
    rows = _csv(client.get(reverse("grants_export"), query))
    assert [int(r[0]) for r in rows[1:]] == [g.pk for g in grants]
    assert [r[2] for r in rows[1:]] == ["engineer0", "engineer1", "engineer2"]
    assert client.get(reverse("grants_list"), {"sort": "user__password"}).status_code == 400


def test_the_grants_search_matches_each_named_column_and_nothing_else(world):
    """The search reads names by id subqueries (issue 22's probe); what it matches is what it matched through
    joins: the holder, the role and system names, the request's ticket, the end reason, the grant's number."""
    from accessgov.models import AccessRequest, Grant
    from accessgov.services import grants as grant_services

    w = world
    grant = _granted(w, "Deploy the fix")
    AccessRequest.objects.filter(pk=grant.access_request_id).update(ticket="OPS-4242")
    grant_services.grant_release(w.requester, grant.pk)
    other = _granted(w, "Another fix")
    client = verify_session(Client(), w.auditor)
    everyone = {grant.pk, other.pk}
    for word, expected in (
        ("REQUESTER", everyone),
        (w.role.name.upper(), everyone),
        (w.system.name.split()[0].lower(), everyone),
        ("ops-4242", {grant.pk}),
        ("released", {grant.pk}),
        (f"#{other.pk}", {other.pk}),
        ("approver", set()),  # the approver is no column of the grants list
    ):
        assert set(_ids(client.get(reverse("grants_list"), {"q": word}), "grants")) == expected, word
    assert Grant.objects.count() == 2


# --- The approver queue and bulk decisions --------------------------------------------------------------


def test_the_approver_queue_searches_requester_and_ticket_and_pages_past_the_old_cap(world, monkeypatch):
    monkeypatch.setattr(approval_views, "QUEUE_PAGE_SIZE", 2)
    w = world
    made = [
        submit(w, justification=f"Incident work {n}", ticket=f"INC-{n}", role=role)
        for n, role in enumerate(_roles(w, 3))
    ]
    client = verify_session(Client(), w.approver)

    def queued(response):
        return [entry["item"].pk for entry in response.context["items"]]

    first = client.get(reverse("approvals"))
    assert queued(first) == [made[0].pk, made[1].pk]  # oldest first
    second = client.get(reverse("approvals"), {"after": first.context["page"].next_cursor})
    assert queued(second) == [made[2].pk]
    assert queued(client.get(reverse("approvals"), {"q": "INC-1"})) == [made[1].pk]
    assert queued(client.get(reverse("approvals"), {"q": "requester INC-2"})) == [made[2].pk]
    assert queued(client.get(reverse("approvals"), {"sort": "-asked"}))[0] == made[2].pk
    assert client.get(reverse("approvals"), {"sort": "lapses_at;--"}).status_code == 400
    assert client.get(reverse("approvals"), {"risk": "extreme"}).status_code == 400


def test_bulk_approve_uses_one_code_for_the_batch_and_each_decision_is_its_own_event(world):
    w = world
    for role in (w.role, w.role_two):
        role.step_up_required = True
        role.save(update_fields=["step_up_required"])
    with time_machine.travel(T0 - timedelta(minutes=1), tick=False):
        first, second = (
            submit(w, justification="Batch work one"),
            submit(w, justification="Batch work two", role=w.role_two),
        )
    with time_machine.travel(T0, tick=False):
        client = sign_in(Client(), w.approver)
    device = TOTPDevice.objects.get(user=w.approver)
    with time_machine.travel(T0 + timedelta(minutes=20), tick=False):
        page = client.get(reverse("approvals")).content.decode()
        assert 'form="bulk-decide"' in page and "One code for the whole batch" in page
        # Without a code (the sign-in one is stale), nothing is decided and the comment stays typed.
        refused = client.post(
            reverse("approvals_bulk_decide"), {"ids": [first.pk, second.pk], "outcome": "approve", "comment": "ok both"}
        )
        assert refused.status_code == 302
        assert AccessRequest.objects.get(pk=first.pk).status == AccessRequest.Status.PENDING
        code = totp_code(device)
        response = client.post(
            reverse("approvals_bulk_decide"),
            {"ids": [first.pk, second.pk], "outcome": "approve", "comment": "ok both", "otp_token": code},
            follow=True,
        )
    assert response.status_code == 200
    assert "Approved 2 requests." in response.content.decode()
    first.refresh_from_db(), second.refresh_from_db()
    assert first.status == AccessRequest.Status.APPROVED
    assert second.status == AccessRequest.Status.PENDING  # needs a second approver: one approval recorded
    decisions = Decision.objects.filter(approver=w.approver).order_by("access_request_id")
    assert [(d.access_request_id, d.step_up_at) for d in decisions] == [
        (first.pk, T0 + timedelta(minutes=20)),
        (second.pk, T0 + timedelta(minutes=20)),
    ]
    approved_events = AccessEvent.objects.filter(event_type=AccessEvent.Type.REQUEST_APPROVED, actor=w.approver)
    assert {e.access_request_id for e in approved_events} >= {first.pk}
    assert AccessEvent.objects.filter(actor=w.approver, access_request=second).exists()


def test_bulk_decide_reports_other_peoples_and_foreign_ids_per_item_without_deciding_them(world, make_user):
    w = world
    mine = submit(w, justification="Mine to decide")
    elsewhere = SystemFactory(name="HR", slug="hr")
    hr_role = RoleFactory(system=elsewhere, name="viewer", approvals_required=1)
    Eligibility.objects.create(role=hr_role, user=w.requester)
    foreign = submit(w, justification="Not the approver's role", role=hr_role)
    Eligibility.objects.create(role=w.role, user=w.approver)
    own = submit(w, justification="The approver's own request", user=w.approver)
    client = verify_session(Client(), w.approver)
    missing = 987_654_321
    response = client.post(
        reverse("approvals_bulk_decide"),
        {"ids": [mine.pk, foreign.pk, own.pk, missing], "outcome": "approve", "comment": "fine"},
        follow=True,
    )
    page = response.content.decode()
    assert f"#{foreign.pk}: not in your queue; nothing was done." in page
    assert f"#{own.pk}: not in your queue; nothing was done." in page
    assert f"#{missing}: not in your queue; nothing was done." in page  # the same words: no existence oracle
    assert "Approved 1 request." in page and "3 of 4 not decided" in page
    statuses = dict(AccessRequest.objects.filter(pk__in=[mine.pk, foreign.pk, own.pk]).values_list("pk", "status"))
    assert statuses == {mine.pk: "approved", foreign.pk: "pending", own.pk: "pending"}


def test_bulk_decide_validates_everything_before_spending_the_code(world):
    w = world
    w.role.step_up_required = True
    w.role.save(update_fields=["step_up_required"])
    with time_machine.travel(T0 - timedelta(minutes=1), tick=False):
        first = submit(w, justification="Please deny me")
    with time_machine.travel(T0, tick=False):
        client = sign_in(Client(), w.approver)
    device = TOTPDevice.objects.get(user=w.approver)
    with time_machine.travel(T0 + timedelta(minutes=20), tick=False):
        code = totp_code(device)
        bad = client.post(reverse("approvals_bulk_decide"), {"ids": [first.pk], "outcome": "deny", "otp_token": code})
        assert bad.status_code == 400
        assert "Say why you deny these requests" in bad.content.decode()
        assert f'value="{first.pk}" form="bulk-decide" checked' in bad.content.decode()  # the ticks are kept
        for ids, outcome in (
            (["abc"], "approve"),
            (["١٢"], "approve"),
            ([str(2**63)], "approve"),
            ([str(n) for n in range(1, 60)], "approve"),
            ([first.pk], "delete"),
            ([], "approve"),
        ):
            response = client.post(reverse("approvals_bulk_decide"), {"ids": ids, "outcome": outcome, "comment": "x"})
            assert response.status_code == 400, (ids, outcome)
        ok = client.post(
            reverse("approvals_bulk_decide"),
            {"ids": [first.pk], "outcome": "deny", "comment": "Not needed", "otp_token": code},
        )
    assert ok.status_code == 302  # the same code still works: the refused attempts did not spend it
    first.refresh_from_db()
    assert first.status == AccessRequest.Status.DENIED


# --- Query counts --------------------------------------------------------------------------------------


def test_list_pages_with_search_and_paging_keep_a_constant_number_of_queries(
    world, make_user, django_assert_max_num_queries
):
    w = world
    client_requests = verify_session(Client(), w.requester)
    client_queue = verify_session(Client(), w.approver)
    client_grants = verify_session(Client(), w.auditor)

    def count(client, name, query):
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as captured:
            assert client.get(reverse(name), query).status_code == 200
        return len(captured)

    cases = [
        (client_requests, "my_requests", {"q": "work", "sort": "role"}),
        (client_queue, "approvals", {"q": "work", "sort": "-asked"}),
        (client_grants, "grants_list", {"q": "engineer", "sort": "holder"}),
    ]
    roles = _roles(w, 8)
    for n in range(2):
        user = make_user(f"engineer{n}")
        Eligibility.objects.create(role=w.role, user=user)
        _granted(w, "Some work done", user=user)
        submit(w, justification=f"Pending work {n}", role=roles[n])
    [count(*case) for case in cases]  # warm the caches (catalogue choices, sessions) first
    small = [count(*case) for case in cases]
    for n in range(2, 8):
        user = make_user(f"engineer{n}")
        Eligibility.objects.create(role=w.role, user=user)
        _granted(w, "Some work done", user=user)
        submit(w, justification=f"Pending work {n}", role=roles[n])
    large = [count(*case) for case in cases]
    assert large == small
    with django_assert_max_num_queries(25):
        client_queue.get(reverse("approvals"), {"q": "work"})


# --- The other lists: changes, provisioning tasks, reviews, systems, eligibility --------------------------


def test_every_other_list_searches_sorts_only_by_its_keys_pages_and_refuses_bad_input(world, make_user):
    from accessgov.services import reviews

    w = world
    admin = make_user("admin", is_staff=True)
    _granted(w, "Provision this grant")  # an apply task waits at the (manual) target
    reviews.review_campaign_create(
        w.auditor, name="Q1 payments review", systems=[w.system], due_at=timezone.now() + timedelta(days=14)
    )
    pages = [
        (w.approver, reverse("approvals"), "requester", None),
        (admin, reverse("changes"), "nothing-decided", None),
        (w.owner, reverse("provisioning"), "requester", "requester"),
        (w.auditor, reverse("reviews"), "payments", "Q1 payments review"),
        (w.auditor, reverse("reviews"), "Payments DB", "Q1 payments review"),  # a system of the campaign
        (w.requester, reverse("system_list"), "payments", "Payments DB"),
        (w.owner, reverse("system_detail", args=[w.system.slug]), "requester", "requester"),
    ]
    for user, url, search, shown in pages:
        client = verify_session(Client(), user)
        found = client.get(url, {"q": search})
        assert found.status_code == 200, url
        if shown:
            assert shown in found.content.decode(), url
        # One sort control: a phone's "Sort by" beside a visible Sort sent a second value that won (a probe's finding).
        assert found.content.decode().count('name="sort"') <= 1, url
        assert "No" in client.get(url, {"q": "zz-no-such-thing"}).content.decode(), url
        assert client.get(url, {"q": "x" * 201}).status_code == 400, url
        assert client.get(url, {"sort": "password"}).status_code == 400, url
        assert client.get(url, {"after": "not-a-cursor"}).status_code == 200, url
        assert client.get(url, {"back": "not-a-cursor"}).status_code == 200, url
    # A reviewer's list is limited to their campaigns whatever they search for.
    assert (
        "Q1 payments review"
        not in verify_session(Client(), w.outsider).get(reverse("reviews"), {"q": "payments"}).content.decode()
    )


def test_the_audit_trail_pages_newest_or_oldest_first_and_refuses_another_order(world, monkeypatch):
    from accessgov.views import audit as audit_views

    monkeypatch.setattr(audit_views, "PAGE_SIZE", 2)
    w = world
    for role in _roles(w, 3):
        submit(w, justification="Some audited work", role=role)
    sequences = sorted(AccessEvent.objects.values_list("sequence", flat=True))
    assert len(sequences) >= 3
    client = verify_session(Client(), w.auditor)
    url = reverse("audit_trail")

    def walk(query, cursor_param):
        seen, cursor = [], None
        while True:
            response = client.get(url, {**query, **({cursor_param: cursor} if cursor else {})})
            assert response.status_code == 200
            seen += [e.sequence for e in response.context["events"]]
            cursor = response.context["next_before"]
            if cursor is None:
                return seen

    assert walk({}, "before") == list(reversed(sequences))
    assert walk({"sort": "sequence"}, "after") == sequences
    # Back from the last page, oldest first: the page before it, and a link to the start.
    last, cursor = None, None
    while True:
        last = client.get(url, {"sort": "sequence", **({"after": cursor} if cursor else {})})
        cursor = last.context["next_before"]
        if cursor is None:
            break
    back = last.context["prev_back"]
    assert "← Older events" in last.content.decode() and f"back={back}" in last.content.decode()
    shown = [e.sequence for e in last.context["events"]]
    before = client.get(url, {"sort": "sequence", "back": back})
    assert [e.sequence for e in before.context["events"]] == [s for s in sequences if s < shown[0]][-2:]
    assert "Newer events" in client.get(url, {"sort": "sequence"}).content.decode()
    assert client.get(url, {"sort": "hash"}).status_code == 400
    assert client.get(url, {"sort": "sequence", "after": "x\u00b2"}).status_code == 200
