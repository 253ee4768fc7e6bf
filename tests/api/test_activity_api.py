"""The activity ingest API (``POST /api/v1/activity/``) and attribution, driven over HTTP with real service
tokens and real Standard Webhooks signatures — and abused: personal and scope-less tokens, another system's
grant, forged, stale and replayed signatures, expired tokens, huge, malformed and NUL-carrying bodies.
Runs on SQLite and PostgreSQL; time is pinned with time-machine."""

import base64
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.test import Client
from django.urls import reverse
from guardian.shortcuts import assign_perm

from accessgov.connectors.webhook import sign
from accessgov.exceptions import PolicyViolation
from accessgov.models import (
    AccessEvent,
    ActivityFinding,
    ActivityRecord,
    ApiToken,
    Eligibility,
    Grant,
    GrantActivity,
    Role,
    System,
)
from accessgov.services import access_requests as ar
from accessgov.services import tokens as token_services
from tests.conftest import verify_session
from tests.support.api_helpers import api_client, make_service_account, make_token
from tests.support.factories import RoleFactory, SystemFactory

pytestmark = pytest.mark.django_db
URL = "/api/v1/activity/"
T0 = datetime(2031, 3, 4, 10, 0, tzinfo=UTC)
SECRET = "whsec_" + base64.b64encode(b"accessgov-activity-test-key-01234567").decode()


@pytest.fixture
def clock():
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


@pytest.fixture
def scene(world, clock):
    """The requester holds the read-write role (declared read-write) from T0 for an hour; the requester's
    reason speaks only of reading; a service account has a token with activity:write."""
    Role.objects.filter(pk=world.role.pk).update(access_level=Role.AccessLevel.READ_WRITE)
    world.role.refresh_from_db()
    access_request = ar.access_request_submit(
        world.requester, role=world.role, duration=timedelta(hours=1), justification="Investigate slow queries"
    )
    ar.access_request_approve(world.approver, access_request.pk)
    world.grant = Grant.objects.get(access_request=access_request)
    world.bot = make_service_account("log-shipper")
    world.token, secret = make_token(
        world.bot, kind=ApiToken.Kind.SERVICE, scopes=[ApiToken.Scope.ACTIVITY_WRITE], name="shipper"
    )
    world.client = api_client(secret)
    return world


def push(client: Client, records: list, *, system: str = "payments-db", batch_id: str | None = None):
    body = {"system": system, "records": records}
    if batch_id is not None:
        body["batch_id"] = batch_id
    return client.post(URL, json.dumps(body), content_type="application/json")


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


def statement(text: str, minutes: float, **extra) -> dict:
    return {"type": "statement", "at": at(minutes), "principal": "requester", "statement": text, **extra}


def test_a_service_token_reports_statements_that_are_attributed_classified_and_shown(scene):
    response = push(
        scene.client,
        [
            statement("SELECT * FROM refunds WHERE id = 7", 1, id="s1", session_id="abc"),
            {"type": "statement", "at": at(2), "grant_id": scene.grant.pk, "statement": "UPDATE refunds SET x = 1"},
            statement("ALTER TABLE refunds ADD COLUMN note text", 3, client_address="10.1.2.3"),
            {"type": "session", "at": at(0.5), "principal": "requester", "ended_at": at(4), "session_id": "abc"},
        ],
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body == {
        "received": 4,
        "stored": 4,
        "duplicates": 0,
        "ignored": 0,
        "attributed": 4,
        "without_grant": 0,
        "findings_raised": 2,
        "duplicate": False,
    }
    rows = ActivityRecord.objects.filter(grant=scene.grant, kind="statement").order_by("occurred_at")
    assert [(r.command, r.statement_class, r.source) for r in rows] == [
        ("SELECT", "read", "ingest"),
        ("UPDATE", "write", "ingest"),
        ("ALTER TABLE", "ddl", "ingest"),
    ]
    totals = GrantActivity.objects.get(pk=scene.grant.pk)
    assert (totals.statement_count, totals.session_count, totals.read_count, totals.write_count, totals.ddl_count) == (
        3,
        1,
        1,
        1,
        1,
    )
    assert totals.last_activity_at == T0 + timedelta(minutes=4)
    kinds = set(ActivityFinding.objects.filter(grant=scene.grant).values_list("kind", flat=True))
    # DDL under read-write, and a write although the reason ("Investigate slow queries") speaks of reading.
    assert kinds == {ActivityFinding.Kind.DDL, ActivityFinding.Kind.BEYOND_REASON}
    # Every finding is in the ledger, and the event says which token reported it.
    events = AccessEvent.objects.filter(event_type="activity.finding", grant=scene.grant)
    assert events.count() == 2 and all(e.data["via"]["api_token_id"] == scene.token.pk for e in events)
    owner_page = verify_session(Client(), scene.owner).get(reverse("grant_detail", args=[scene.grant.pk]))
    assert b"ALTER TABLE refunds ADD COLUMN note text" in owner_page.content  # owners read statement text


def test_jsonlog_lines_from_a_log_shipper_are_stored_once_however_often_they_are_sent(scene):
    lines = [
        {
            "timestamp": (T0 + timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC",
            "user": "requester",
            "dbname": "app",
            "remote_host": "10.0.0.8",
            "session_id": "65f0.1",
            "line_num": n,
            "application_name": "psql",
            "message": f"AUDIT: SESSION,{n},1,READ,SELECT,,,\"SELECT {n}, 'a,b'\",<not logged>",
        }
        for n in range(1, 4)
    ]
    lines.append({"timestamp": "2031-03-04 10:05:00.000 UTC", "user": "app", "message": "connection received"})
    body = "\n".join(json.dumps(line) for line in lines)
    send = lambda: scene.client.post(  # noqa: E731
        f"{URL}?system=payments-db", body, content_type="application/x-ndjson"
    )
    first = send()
    assert first.status_code == 200, first.content
    assert first.json()["stored"] == 3 and first.json()["ignored"] == 1
    again = send()  # a shipper retrying the same lines: the server's (session, line) keys de-duplicate
    assert again.json()["stored"] == 0 and again.json()["duplicates"] == 3
    texts = sorted(ActivityRecord.objects.filter(source="pgaudit").values_list("statement", flat=True))
    assert texts == ["SELECT 1, 'a,b'", "SELECT 2, 'a,b'", "SELECT 3, 'a,b'"]


def test_a_replayed_batch_is_answered_as_a_duplicate_and_stores_nothing(scene):
    records = [statement("SELECT 1", 1)]  # no per-record id: only the batch id protects it
    assert push(scene.client, records, batch_id="b-1").json()["stored"] == 1
    replay = push(scene.client, records, batch_id="b-1")
    assert replay.status_code == 200 and replay.json()["duplicate"] is True and replay.json()["stored"] == 0
    assert ActivityRecord.objects.count() == 1


def test_activity_after_the_end_and_without_a_grant_are_findings_and_other_logins_are_ignored(scene, make_user):
    Grant.objects.filter(pk=scene.grant.pk).update(
        status=Grant.Status.EXPIRED, ended_at=T0 + timedelta(hours=1), end_reason="expired"
    )
    make_user("nogrant")
    response = push(
        scene.client,
        [
            statement("SELECT 1", 70),  # ten minutes after the end: still the grant's, as a finding
            statement("SELECT 2", 200),  # hours later: no grant any more
            {"type": "statement", "at": at(1), "principal": "nogrant", "statement": "SELECT 3"},
            {"type": "statement", "at": at(1), "principal": "payments_app", "statement": "SELECT 4"},
        ],
    )
    assert response.json()["ignored"] == 1  # an application's login is not a person's activity
    after = ActivityFinding.objects.get(kind=ActivityFinding.Kind.AFTER_END)
    assert after.grant == scene.grant and after.user == scene.requester
    no_grant = ActivityFinding.objects.filter(kind=ActivityFinding.Kind.NO_GRANT).order_by("principal")
    assert [(f.principal, f.grant_id) for f in no_grant] == [("nogrant", None), ("requester", None)]
    assert ActivityRecord.objects.filter(grant__isnull=True).count() == 2


def test_more_of_the_same_counts_into_the_open_finding_and_a_signed_off_one_is_not_reopened(scene):
    push(scene.client, [statement("DROP TABLE a", 1), statement("DROP TABLE b", 2)])
    finding = ActivityFinding.objects.get(kind="ddl")
    assert finding.count == 2
    push(scene.client, [statement("DROP TABLE c", 3)])
    finding.refresh_from_db()
    assert (
        finding.count == 3 and AccessEvent.objects.filter(event_type="activity.finding", data__kind="ddl").count() == 1
    )
    response = verify_session(Client(), scene.auditor).post(
        reverse("finding_sign_off", args=[finding.pk]), {"comment": "Agreed cleanup, CHG-9"}
    )
    assert response.status_code == 302
    push(scene.client, [statement("DROP TABLE d", 4)])
    assert ActivityFinding.objects.filter(kind="ddl", status="open").count() == 1  # a new one, not the old
    assert AccessEvent.objects.filter(event_type="activity.signed_off").count() == 1


def test_a_webhook_system_signs_its_reports_and_forged_stale_or_replayed_signatures_store_nothing(world, clock):
    system = SystemFactory(
        name="Support tool", slug="support-tool", connector=System.Connector.WEBHOOK, connector_secret=SECRET
    )
    role = RoleFactory(system=system, name="agent")
    body = json.dumps(
        {"system": "support-tool", "records": [{"type": "session", "at": at(1), "principal": "requester"}]}
    )
    now = int(time.time())

    def send(message_id: str, timestamp: int, signature: str | None = None):
        signature = signature or sign(SECRET, message_id, timestamp, body.encode())
        headers = {"webhook-id": message_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}
        return Client(headers=headers).post(URL, body, content_type="application/json")

    assert send("msg-1", now).status_code == 200
    assert ActivityRecord.objects.filter(system=system).count() == 1
    replay = send("msg-1", now)
    assert replay.status_code == 200 and replay.json()["duplicate"] is True
    forged = send("msg-2", now, signature="v1," + "A" * 44)
    assert forged.status_code == 401 and forged.json()["error"]["code"] == "signature_invalid"
    stale = send("msg-3", now - 3600)
    assert stale.status_code == 401
    wrong_key = send(
        "msg-4",
        now,
        signature=sign("whsec_" + base64.b64encode(b"someone else's key").decode(), "msg-4", now, body.encode()),
    )
    assert wrong_key.status_code == 401
    assert ActivityRecord.objects.filter(system=system).count() == 1
    # A PostgreSQL system's secret is a password, never a signing key: signatures are refused there.
    pg_body = body.replace("support-tool", "payments-db")
    headers = {
        "webhook-id": "m",
        "webhook-timestamp": str(now),
        "webhook-signature": sign("", "m", now, pg_body.encode()),
    }
    assert Client(headers=headers).post(URL, pg_body, content_type="application/json").status_code == 401
    assert role.pk  # the system has a role (signatures are per system, not per role)


def test_a_signed_batch_sent_again_under_a_new_webhook_id_is_a_duplicate_by_its_batch_id(world, clock):
    """A probe's finding: the signed path de-duplicated only by webhook-id and ignored the body's batch_id, so a
    sender that re-signed a batch (a new webhook-id) stored its records twice. The docs promise once."""
    system = SystemFactory(
        name="Support tool", slug="support-tool", connector=System.Connector.WEBHOOK, connector_secret=SECRET
    )
    now = int(time.time())

    def send(message_id: str, batch_id: str | None):
        document = {"system": "support-tool", "records": [{"type": "session", "at": at(1), "principal": "requester"}]}
        body = json.dumps({**document, **({"batch_id": batch_id} if batch_id else {})}).encode()
        headers = {
            "webhook-id": message_id,
            "webhook-timestamp": str(now),
            "webhook-signature": sign(SECRET, message_id, now, body),
        }
        return Client(headers=headers).post(URL, body, content_type="application/json").json()

    assert send("msg-1", "batch-7")["stored"] == 1
    again = send("msg-2", "batch-7")
    assert again["duplicate"] is True and again["stored"] == 0
    assert send("msg-3", None)["stored"] == 1  # no batch id: the webhook-id is the batch's
    assert send("msg-3", None)["duplicate"] is True
    assert ActivityRecord.objects.filter(system=system).count() == 2
    # The envelope read two ways (the review's finding): a key twice is refused, as on the rest of the API.
    twice = b'{"system": "support-tool", "records": [], "system": "payments-db"}'
    headers = {
        "webhook-id": "msg-4",
        "webhook-timestamp": str(now),
        "webhook-signature": sign(SECRET, "msg-4", now, twice),
    }
    refused = Client(headers=headers).post(URL, twice, content_type="application/json")
    assert refused.status_code == 400 and "appears twice" in refused.content.decode()


def test_people_and_tokens_without_the_scope_cannot_report_activity(scene):
    personal_token, personal = make_token(scene.requester, scopes=["requests:read"])
    assert push(api_client(personal), [statement("SELECT 1", 1)]).status_code == 403
    with pytest.raises(PolicyViolation, match="service accounts"):
        token_services.api_token_create(
            scene.requester,
            user=scene.requester,
            name="sneaky",
            kind=ApiToken.Kind.PERSONAL,
            expires_at=T0 + timedelta(days=1),
            scopes=[ApiToken.Scope.ACTIVITY_WRITE],
        )
    _, reader = make_token(make_service_account("reader-bot"), kind=ApiToken.Kind.SERVICE, scopes=["grants:read"])
    assert push(api_client(reader), [statement("SELECT 1", 1)]).status_code == 403
    assert Client().post(URL, "{}", content_type="application/json").status_code == 401
    assert ActivityRecord.objects.count() == 0 and personal_token.pk


def test_a_token_limited_to_another_systems_roles_and_another_systems_grant_are_refused(scene):
    other = SystemFactory(name="Billing", slug="billing")
    other_role = RoleFactory(system=other, name="ro")
    _, limited = make_token(
        make_service_account("billing-bot"),
        kind=ApiToken.Kind.SERVICE,
        scopes=[ApiToken.Scope.ACTIVITY_WRITE],
        roles=[other_role],
    )
    refused = push(api_client(limited), [statement("SELECT 1", 1)])
    assert refused.status_code == 403 and "other systems" in refused.json()["error"]["message"]
    # The shipper of payments-db naming a grant of billing (someone else's grant id): refused, nothing stored.
    Eligibility.objects.create(role=other_role, user=scene.outsider, starts_at=T0 - timedelta(days=1))
    assign_perm("accessgov.approve_role", scene.approver, other_role)
    billing_request = ar.access_request_submit(
        scene.outsider, role=other_role, duration=timedelta(hours=1), justification="Look at invoices"
    )
    ar.access_request_approve(scene.approver, billing_request.pk)
    foreign = Grant.objects.get(access_request=billing_request)
    response = push(
        scene.client,
        [statement("SELECT 1", 1), {"type": "statement", "at": at(1), "grant_id": foreign.pk, "statement": "SELECT 2"}],
    )
    assert response.status_code == 400 and f"grant_id {foreign.pk}" in response.json()["error"]["message"]
    assert ActivityRecord.objects.count() == 0
    assert push(scene.client, [statement("SELECT 1", 1)], system="no-such-system").status_code == 404


def test_an_expired_or_revoked_token_is_refused(scene, clock):
    clock.shift(timedelta(days=400))
    assert push(scene.client, [statement("SELECT 1", 1)]).status_code == 401
    assert ActivityRecord.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "content_type", "status", "needle"),
    [
        ("not json", "application/json", 400, "not JSON"),
        ('{"system": "payments-db", "records": {}}', "application/json", 400, "list"),
        ('{"system": "payments-db", "records": [], "status": "x"}', "application/json", 400, "Send"),
        ('{"system": "payments-db", "records": [{"type": "statement"}]}', "application/json", 400, "record 0"),
        (
            '{"system": "payments-db", "records": [{"type": "statement", "at": "2031-03-04T10:00:00", "principal": "requester"}]}',
            "application/json",
            400,
            "offset",
        ),
        (
            '{"system": "payments-db", "records": [{"type": "statement", "at": "2031-03-04T10:00:00Z", "principal": "requester", "class": "read"}]}',
            "application/json",
            400,
            "unknown field",
        ),
        (
            '{"system": "payments-db", "records": [{"type": "statement", "at": "2031-03-04T10:00:00Z", "grant_id": true}]}',
            "application/json",
            400,
            "grant_id",
        ),
        (
            '{"system": "payments-db", "records": [{"type": "statement", "at": "2031-03-04T10:00:00Z", "principal": "requester", "client_address": "not-an-ip"}]}',
            "application/json",
            400,
            "client_address",
        ),
        ('{"system": "pay\\u0000ments", "records": []}', "application/json", 400, "slug"),
        ("{\n", "application/x-ndjson", 400, "Line 1"),
        # Nested past Python's limit (RecursionError), past the documented 32 levels, or text with an unpaired
        # surrogate (no UTF-8: PostgreSQL refused it): each was a 500.
        (
            '{"system": "payments-db", "records": [' + "[" * 50_000 + "]" * 50_000 + "]}",
            "application/json",
            400,
            "not JSON",
        ),
        ("[" * 50_000 + "]" * 50_000, "application/x-ndjson", 400, "Line 1"),
        ('{"system": "payments-db", "records": [' + "[" * 40 + "]" * 40 + "]}", "application/json", 400, "nested"),
        ('{"system": "payments-db", "records": [], "batch_id": "\\ud800"}', "application/json", 400, "surrogate"),
        ("a=b", "application/x-www-form-urlencoded", 415, ""),
        # Times far out of range overflowed computing the grant windows around them (a probe's 500s).
        (
            '{"system": "payments-db", "records": [{"type": "statement", "at": "0001-01-01T00:00:00Z", "principal": "requester", "statement": "SELECT 1"}]}',
            "application/json",
            400,
            "out of range",
        ),
        (
            '{"system": "payments-db", "records": [{"type": "session", "at": "9999-12-31T23:00:00Z", "principal": "requester"}]}',
            "application/json",
            400,
            "out of range",
        ),
    ],
)
def test_malformed_bodies_are_clear_4xx_and_store_nothing(scene, body, content_type, status, needle):
    response = scene.client.post(URL, body, content_type=content_type)
    assert response.status_code == status, response.content
    assert needle in response.json()["error"]["message"]
    assert ActivityRecord.objects.count() == 0


def test_a_log_line_from_year_one_is_a_clear_400(scene):
    line = {
        "timestamp": "0001-01-01 00:00:00.000 UTC",
        "user": "requester",
        "session_id": "65f0.1",
        "line_num": 1,
        "message": "AUDIT: SESSION,1,1,READ,SELECT,,,SELECT 1,<not logged>",
    }
    response = scene.client.post(f"{URL}?system=payments-db", json.dumps(line), content_type="application/x-ndjson")
    assert response.status_code == 400 and "out of range" in response.json()["error"]["message"]
    assert ActivityRecord.objects.count() == 0


def test_a_statement_whose_first_word_is_longer_than_a_command_is_stored_not_a_500(scene):
    """A probe's 500: a 61-character first word did not fit the command column."""
    response = push(scene.client, [statement("WITH" + "x" * 70 + " AS (SELECT 1) SELECT 1", 1)])
    assert response.status_code == 200, response.content
    assert len(ActivityRecord.objects.get().command) == 60


def test_huge_bodies_and_too_many_records_are_413(scene, settings):
    settings.ACTIVITY_INGEST_MAX_BYTES = 2000
    big = push(scene.client, [statement("SELECT 1 -- " + "x" * 3000, 1)])
    assert big.status_code == 413 and big.json()["error"]["code"] == "too_large"
    settings.ACTIVITY_INGEST_MAX_BYTES = 10_000_000
    many = push(scene.client, [statement("SELECT 1", 1)] * 50_001)
    assert many.status_code == 413
    assert ActivityRecord.objects.count() == 0


def test_nul_bytes_and_very_long_statements_are_stored_safely_and_shown_as_text(scene):
    hostile = "SELECT '\x00<script>alert(1)</script>' \ud800-- " + "y" * 150_000  # a NUL, an unpaired surrogate
    response = push(scene.client, [statement(hostile, 1, application="evil\x00app", id="n1")])
    assert response.status_code == 200, response.content
    row = ActivityRecord.objects.get()
    assert "\x00" not in row.statement and "\ud800" not in row.statement and row.statement.count("\ufffd") == 2
    assert row.application == "evil\ufffdapp"
    assert len(row.statement) < 101_000 and row.statement.endswith("characters not stored]")
    page = verify_session(Client(), scene.auditor).get(reverse("grant_detail", args=[scene.grant.pk]))
    assert b"<script>alert(1)" not in page.content and b"&lt;script&gt;alert(1)" in page.content
