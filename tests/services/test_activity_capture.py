"""Activity capture at a real PostgreSQL target (issue 17): a private cluster with pgaudit and
pg_stat_statements (tests/support/pg_cluster.py), real sessions opened by the grantee through psycopg, real
statements. The grant is applied and removed by the real outbox (drained in on_commit, as in
tests/services/test_provisioning.py), the sampler and the log reader are the ones beat runs, the seal is the sweep's.
The target stamps its log lines and sessions with the real clock, so these tests use the real "now"
(relative times only, never a date); the time-pinned attribution tests are in tests/api/test_activity_api.py.
"""

import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from psycopg import sql

from accessgov.activity import postgres as pg_capture
from accessgov.activity.verify import verify_activity_seals
from accessgov.exceptions import NotAuthorized
from accessgov.models import (
    AccessEvent,
    ActivityFinding,
    ActivityRecord,
    ActivitySeal,
    Grant,
    GrantActivity,
    Role,
    System,
)
from accessgov.services import access_requests as ar
from accessgov.services import activity
from accessgov.services import grants as gs
from tests.conftest import verify_session
from tests.support.pg_target import TABLE, PgTarget

H = timedelta(hours=1)
JUSTIFICATION = "Repair the refunds table after INC-77"

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def target(pg_cluster):
    """A target database on the private cluster, prepared as docs/ACTIVITY.md says: the extensions, the
    pgaudit wrapper function for the provisioner, pg_read_all_stats; the managed role may write the table
    and (a realistic mistake) create tables in public."""
    pg_target = PgTarget(host=pg_cluster.host, port=pg_cluster.port, superuser=pg_cluster.superuser)
    pg_target.create()
    ident = sql.Identifier
    try:
        with pg_target.admin() as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            conn.execute("CREATE EXTENSION IF NOT EXISTS pgaudit")
            conn.execute(pg_capture.PGAUDIT_FUNCTION_SQL)
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA accessgov_capture TO {}").format(ident(pg_target.provisioner)))
            conn.execute(
                sql.SQL("GRANT EXECUTE ON FUNCTION accessgov_capture.set_pgaudit(name, text) TO {}").format(
                    ident(pg_target.provisioner)
                )
            )
            conn.execute(sql.SQL("GRANT pg_read_all_stats TO {}").format(ident(pg_target.provisioner)))
            conn.execute(sql.SQL("GRANT UPDATE ON {} TO {}").format(ident(TABLE), ident(pg_target.managed)))
            conn.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(ident(pg_target.managed)))
        yield pg_target
    finally:
        pg_target.drop()


@pytest.fixture
def pg(world, target, pg_cluster):
    """The lifecycle world with "Payments DB" on the target with every capture level, the read-write role
    declared read-write, and login roles for the requester and an outsider."""
    config = target.connector_config(
        activity={
            "sessions": True,
            "sample_seconds": 1,
            "digest": True,
            "statement_log": True,
            "pgaudit_function": "accessgov_capture.set_pgaudit",
            "log_file": str(pg_cluster.jsonlog),
            "expected_networks": ["127.0.0.0/8"],
        }
    )
    System.objects.filter(pk=world.system.pk).update(
        connector=System.Connector.POSTGRES, connector_config=config, connector_secret=target.password
    )
    Role.objects.filter(pk=world.role.pk).update(target_name=target.managed, access_level=Role.AccessLevel.READ_WRITE)
    world.system.refresh_from_db()
    world.role.refresh_from_db()
    world.target = target
    world.cluster = pg_cluster
    world.principal = target.create_login(world.requester.username)
    world.outsider_principal = target.create_login(world.outsider.username)
    return world


def approve(w) -> Grant:
    access_request = ar.access_request_submit(w.requester, role=w.role, duration=H, justification=JUSTIFICATION)
    ar.access_request_approve(w.approver, access_request.pk, comment="ok")
    return Grant.objects.get(access_request=access_request)


def expire_now(grant: Grant) -> None:
    """Setup only: the grant's end a second ago (the shortest policy is longer than a test), then the real
    expiry (its removal drains in on_commit)."""
    now = timezone.now()
    Grant.objects.filter(pk=grant.pk).update(
        starts_at=min(grant.starts_at, now - timedelta(minutes=10)), expires_at=now - timedelta(seconds=1)
    )
    assert gs.grant_expire_due(timezone.now()) == 1


def login_config(target: PgTarget, principal: str) -> list[str]:
    with target.admin(dbname="postgres") as conn:
        row = conn.execute("SELECT rolconfig FROM pg_roles WHERE rolname = %s", (principal,)).fetchone()
    return row[0] or []


def page(client: Client, grant: Grant) -> str:
    response = client.get(reverse("grant_detail", args=[grant.pk]))
    assert response.status_code == 200
    return response.content.decode()


def test_select_update_and_ddl_are_captured_at_every_level_the_ddl_is_a_finding_and_the_seal_detects_an_edit(pg):
    target, principal, cluster = pg.target, pg.principal, pg.cluster
    grant = approve(pg)  # apply drains in on_commit: pgaudit on the login role, digest snapshot, GRANT
    grant.refresh_from_db()
    assert grant.provisioning_state == Grant.Provisioning.APPLIED
    record = GrantActivity.objects.get(pk=grant.pk)
    assert record.levels == ["sessions", "digest", "statement_log"]
    assert record.pgaudit_set_at is not None and record.digest_start is not None and record.capture_error == ""
    assert login_config(target, principal) == ["pgaudit.log=all"]

    session = target.connect_as(principal)
    try:
        session.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(target.managed)))
        assert session.execute("SELECT count(*) FROM payments").fetchone()[0] == 2
        session.execute("UPDATE payments SET amount = amount + 1 WHERE id = 1")
        session.execute("CREATE TABLE scratch_copy (id int)")
        # Level 1: the sampler sees the open session (and the last statement it ran).
        sampled = activity.activity_sample(pg.system, timezone.now())
        assert sampled["sessions"] == 1
    finally:
        session.close()
    # Level 3: the server wrote pgaudit lines; the capture run reads them from the log file.
    assert cluster.wait_for_log("scratch_copy")
    run = activity.activity_capture_run(timezone.now() + timedelta(seconds=2))
    assert run.errors == 0, run

    statements = ActivityRecord.objects.filter(grant=grant, kind="statement", source="pgaudit")
    commands = list(statements.order_by("occurred_at", "pk").values_list("command", "statement_class"))
    assert ("SELECT", "read") in commands and ("UPDATE", "write") in commands
    assert ("CREATE TABLE", "ddl") in commands
    assert ActivityRecord.objects.filter(grant=grant, kind="session", source="sampler").count() == 1

    # The DDL under a read-write role is a finding, raised once in the ledger.
    finding = ActivityFinding.objects.get(grant=grant, kind=ActivityFinding.Kind.DDL)
    assert finding.is_open and finding.user == pg.requester and finding.example_command == "CREATE TABLE"
    raised = AccessEvent.objects.get(event_type="activity.finding", grant=grant, data__kind="ddl")
    assert "statement" not in json.dumps(raised.data)  # no statement text leaves through events/webhooks
    assert not ActivityFinding.objects.filter(grant=grant, kind=ActivityFinding.Kind.UNEXPECTED_ADDRESS).exists()

    # Expiry removes the access; capture resets pgaudit and stores the digest.
    expire_now(grant)
    grant.refresh_from_db()
    assert grant.provisioning_state == Grant.Provisioning.CONFIRMED
    assert login_config(target, principal) == []
    digest = ActivityRecord.objects.filter(grant=grant, kind="digest")
    assert digest.filter(command="UPDATE", calls=1).exists()
    assert digest.filter(command="CREATE TABLE").exists()

    # The grant page: sessions, digest, statements and the finding; the auditor reads statement text.
    auditor = verify_session(Client(), pg.auditor)
    html = page(auditor, grant)
    for expected in ("Sessions", "Statement digest", "Statement log", "CREATE TABLE scratch_copy", "Schema change"):
        assert expected in html, expected
    # The approver sees the statements' commands, not their text.
    approver_html = page(verify_session(Client(), pg.approver), grant)
    assert "CREATE TABLE" in approver_html and "CREATE TABLE scratch_copy" not in approver_html
    assert "UPDATE payments SET" in html and "UPDATE payments SET" not in approver_html

    # Another person signs the finding off; the grantee cannot.
    with pytest.raises(NotAuthorized):
        activity.activity_finding_sign_off(pg.requester, finding.pk, comment="It was me, fine")
    response = verify_session(Client(), pg.approver).post(
        reverse("finding_sign_off", args=[finding.pk]), {"comment": "Scratch table agreed in INC-77"}
    )
    assert response.status_code == 302
    finding.refresh_from_db()
    assert finding.status == "signed_off" and finding.signed_off_by == pg.approver

    # After the delay, the sweep seals the grant's activity into the ledger.
    later = timezone.now() + timedelta(minutes=5)
    assert activity.activity_seal_due(later) >= 1
    seal = ActivitySeal.objects.get(grant=grant)
    rows = ActivityRecord.objects.filter(grant=grant)
    assert seal.row_count == rows.count() > 5 and not rows.filter(seal__isnull=True).exists()
    event = AccessEvent.objects.get(event_type="activity.sealed", grant=grant)
    assert event.data["rows"] == seal.row_count and event.data["hash"] == seal.content_hash
    assert event.data["by_class"]["ddl"] >= 1
    call_command("verify_audit")  # chain and seals intact

    # The database refuses to edit a sealed row…
    edited = statements.get(command="UPDATE")
    with pytest.raises(Exception, match="sealed"), connection.cursor() as cursor:
        cursor.execute("UPDATE accessgov_activityrecord SET statement = 'SELECT 1' WHERE id = %s", [edited.pk])
    # …and when a superuser goes around the trigger, verify_audit names the seal.
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
        cursor.execute("UPDATE accessgov_activityrecord SET statement = 'SELECT 1' WHERE id = %s", [edited.pk])
        cursor.execute("SET session_replication_role = DEFAULT")
    report = verify_activity_seals()
    assert not report.ok and report.seal_id == seal.pk and "edited" in report.problem
    with pytest.raises(CommandError, match=f"seal #{seal.pk}"):
        call_command("verify_audit")


def test_statements_after_removal_and_by_a_login_without_a_grant_are_findings(pg):
    target, principal = pg.target, pg.principal
    grant = approve(pg)
    expire_now(grant)  # REVOKE, sessions ended, pgaudit off
    grant.refresh_from_db()
    assert grant.provisioning_state == Grant.Provisioning.CONFIRMED and login_config(target, principal) == []

    # The grantee's login still exists (only the membership went): they connect again and look around;
    # so does a person who never had a grant.
    again, stranger = target.connect_as(principal), target.connect_as(pg.outsider_principal)
    try:
        again.execute("SELECT current_user")
        stranger.execute("SELECT now()")
        sampled = activity.activity_sample(pg.system, timezone.now())
        assert sampled["sessions"] == 2 and sampled["findings"] == 2
    finally:
        again.close()
        stranger.close()
    after = ActivityFinding.objects.get(kind=ActivityFinding.Kind.AFTER_END)
    assert after.grant == grant and after.user == pg.requester and after.principal == principal
    no_grant = ActivityFinding.objects.get(kind=ActivityFinding.Kind.NO_GRANT)
    assert no_grant.grant is None and no_grant.user == pg.outsider and no_grant.principal == pg.outsider_principal
    seen = ActivityRecord.objects.filter(source="sampler", kind="statement").values_list("principal", "statement")
    assert set(seen) == {(principal, "SELECT current_user"), (pg.outsider_principal, "SELECT now()")}
    # Gone sessions are marked ended at the next sample; then activity without a grant is sealed too.
    activity.activity_sample(pg.system, timezone.now())
    assert not ActivityRecord.objects.filter(kind="session").exclude(state="ended").exists()
    assert activity.activity_seal_due(timezone.now() + timedelta(minutes=5)) == 2  # the grant's, and no-grant's
    assert ActivitySeal.objects.filter(grant__isnull=True, row_count=2).exists()
    assert verify_activity_seals().ok


def test_a_capture_problem_never_holds_up_access_and_is_shown_on_the_grant(pg):
    target = pg.target
    with target.admin() as conn:
        conn.execute(
            sql.SQL("REVOKE EXECUTE ON FUNCTION accessgov_capture.set_pgaudit(name, text) FROM {}").format(
                sql.Identifier(target.provisioner)
            )
        )
    grant = approve(pg)
    grant.refresh_from_db()
    assert grant.provisioning_state == Grant.Provisioning.APPLIED and pg.principal in target.members()
    record = GrantActivity.objects.get(pk=grant.pk)
    assert "pgaudit could not be turned on" in record.capture_error and record.pgaudit_set_at is None
    assert record.digest_start is not None  # the other levels still work
    html = page(verify_session(Client(), pg.owner), grant)
    assert "Capture problem: pgaudit could not be turned on" in html


def test_the_csvlog_the_server_writes_is_read_like_its_jsonlog(pg):
    config = dict(pg.system.connector_config)
    config["activity"] = {**config["activity"], "log_file": str(pg.cluster.csvlog), "log_format": "csvlog"}
    System.objects.filter(pk=pg.system.pk).update(connector_config=config)
    pg.system.refresh_from_db()
    grant = approve(pg)
    with pg.target.connect_as(pg.principal) as session:
        session.execute("SELECT 'line one,\n line two' AS \"quoted, multi-line\"")
    assert pg.cluster.wait_for_log("line two", path=pg.cluster.csvlog)
    run = activity.activity_capture_run(timezone.now() + timedelta(seconds=2))
    assert run.errors == 0, run
    row = ActivityRecord.objects.get(grant=grant, source="pgaudit", command="SELECT")
    assert row.statement == "SELECT 'line one,\n line two' AS \"quoted, multi-line\""
    assert row.client_address == "127.0.0.1" and row.session_key
    # A second run reads nothing twice.
    assert activity.activity_capture_run(timezone.now() + timedelta(seconds=4)).stored == 0
