"""Sealing activity into the ledger, checking it, and retention (issue 17): when a grant is sealed, late
activity, edited, deleted and added rows, the database refusing changes to sealed rows, and the purge.
Runs on SQLite and PostgreSQL (the trigger tests on PostgreSQL only); time is pinned."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction

from accessgov.activity.logs import Observed
from accessgov.activity.verify import verify_activity_seals
from accessgov.ledger.verify import verify_chain
from accessgov.models import AccessEvent, ActivityRecord, ActivitySeal, Grant, GrantActivity, OutboxItem
from accessgov.services import access_requests as ar
from accessgov.services import activity
from accessgov.services import grants as gs
from accessgov.services.provisioning import manual_task_complete

pytestmark = pytest.mark.django_db
T0 = datetime(2030, 1, 7, 8, 0, tzinfo=UTC)


@pytest.fixture
def clock():
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


def store(w, *texts: str, minutes: float = 1, principal: str = "requester") -> None:
    from accessgov.activity.classify import classify, command_of

    activity.activity_store(
        w.system,
        [
            Observed(
                kind="statement",
                source="ingest",
                principal=principal,
                occurred_at=T0 + timedelta(minutes=minutes + i / 100),
                statement=text,
                command=command_of(text),
                statement_class=classify(command_of(text), text),
            )
            for i, text in enumerate(texts)
        ],
        now=T0 + timedelta(minutes=minutes),
    )


@pytest.fixture
def ended(world, clock):
    """A grant of the manual system with three statements, revoked and its removal confirmed by an owner."""
    access_request = ar.access_request_submit(
        world.requester, role=world.role, duration=timedelta(hours=1), justification="Fix the payout batch"
    )
    ar.access_request_approve(world.approver, access_request.pk)
    world.grant = Grant.objects.get(access_request=access_request)
    store(world, "SELECT 1", "UPDATE payouts SET x = 1", "SELECT 2")
    clock.move_to(T0 + timedelta(minutes=10))
    gs.grant_revoke(world.approver, world.grant.pk, reason="Done early")
    world.removed_at = T0 + timedelta(minutes=12)
    clock.move_to(world.removed_at)
    for item in OutboxItem.objects.filter(grant=world.grant, done_at__isnull=True):
        manual_task_complete(world.owner, item.pk)
    return world


def test_a_grant_is_sealed_once_its_removal_is_done_and_the_delay_has_passed(world, clock, settings):
    settings.ACTIVITY_SEAL_DELAY_SECONDS = 60
    access_request = ar.access_request_submit(
        world.requester, role=world.role, duration=timedelta(hours=1), justification="Fix the payout batch"
    )
    ar.access_request_approve(world.approver, access_request.pk)
    grant = Grant.objects.get(access_request=access_request)
    store(world, "SELECT 1")
    assert activity.activity_seal_due(T0 + timedelta(hours=5)) == 0  # active: nothing to seal
    clock.move_to(T0 + timedelta(minutes=10))
    gs.grant_revoke(world.approver, grant.pk, reason="Done early")
    assert activity.activity_seal_due(T0 + timedelta(hours=5)) == 0  # removal not done at the target yet
    for item in OutboxItem.objects.filter(grant=grant, done_at__isnull=True):
        manual_task_complete(world.owner, item.pk)
    assert activity.activity_seal_due(T0 + timedelta(minutes=10, seconds=59)) == 0  # within the delay
    assert activity.activity_seal_due(T0 + timedelta(minutes=11)) == 1
    assert activity.activity_seal_due(T0 + timedelta(minutes=12)) == 0  # once
    seal = ActivitySeal.objects.get(grant=grant)
    event = AccessEvent.objects.get(event_type="activity.sealed")
    assert (event.grant, event.role, event.access_request) == (grant, grant.role, access_request)
    assert event.data["rows"] == seal.row_count == 1 and event.data["hash"] == seal.content_hash
    assert GrantActivity.objects.get(pk=grant.pk).sealed_at == T0 + timedelta(minutes=11)
    assert verify_chain().ok and verify_activity_seals().ok


def test_late_activity_of_a_sealed_grant_gets_a_seal_of_its_own(ended):
    assert activity.activity_seal_due(T0 + timedelta(minutes=20)) == 1
    store(ended, "SELECT 3", minutes=11)  # a log line that arrived after the seal (ended at minute 10)
    assert activity.activity_seal_due(T0 + timedelta(minutes=30)) == 1
    seals = ActivitySeal.objects.filter(grant=ended.grant).order_by("pk")
    assert [s.row_count for s in seals] == [3, 1]
    late = AccessEvent.objects.filter(event_type="activity.sealed").order_by("sequence").last()
    assert late.data["supplement"] is True and "late activity" in late.reason
    report = verify_activity_seals()
    assert report.ok and report.seals == 2 and report.rows == 4


def _around_the_trigger(sql: str, params: list) -> None:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET session_replication_role = replica")
        cursor.execute(sql, params)
        if connection.vendor == "postgresql":
            cursor.execute("SET session_replication_role = DEFAULT")


def test_a_deleted_row_and_an_added_row_break_their_seal(ended):
    activity.activity_seal_due(T0 + timedelta(minutes=20))
    seal = ActivitySeal.objects.get()
    victim = ActivityRecord.objects.filter(command="UPDATE").get()
    _around_the_trigger("DELETE FROM accessgov_activityrecord WHERE id = %s", [victim.pk])
    report = verify_activity_seals()
    assert not report.ok and report.seal_id == seal.pk and "3 activity rows; 2 are there now" in report.problem
    with pytest.raises(CommandError, match="Activity seals BROKEN"):
        call_command("verify_audit")


def test_a_row_slipped_into_a_sealed_set_or_under_an_unknown_seal_is_named(ended):
    activity.activity_seal_due(T0 + timedelta(minutes=20))
    seal = ActivitySeal.objects.get()
    store(ended, "SELECT 'forged'", minutes=5)
    forged = ActivityRecord.objects.get(statement="SELECT 'forged'")
    _around_the_trigger("UPDATE accessgov_activityrecord SET seal_id = %s WHERE id = %s", [seal.pk, forged.pk])
    assert "4 are there now" in verify_activity_seals().problem
    fake = ActivitySeal.objects.create(system=ended.system, row_count=1, content_hash="0" * 64)
    _around_the_trigger("UPDATE accessgov_activityrecord SET seal_id = %s WHERE id = %s", [fake.pk, forged.pk])
    report = verify_activity_seals()
    assert not report.ok and f"seal #{fake.pk}, which no ledger event records" in report.problem


@pytest.mark.postgres
def test_the_database_refuses_to_change_or_delete_activity(ended):
    session = ActivityRecord.objects.first()
    ActivityRecord.objects.filter(pk=session.pk).update(state="idle")  # unsealed rows may still move
    with pytest.raises(DatabaseError, match="cannot be deleted"), transaction.atomic():
        ActivityRecord.objects.filter(pk=session.pk)._raw_delete(connection.alias)
    activity.activity_seal_due(T0 + timedelta(minutes=20))
    with pytest.raises(DatabaseError, match="is sealed"), transaction.atomic():
        ActivityRecord.objects.filter(pk=session.pk).update(statement="SELECT 'rewritten'")
    with pytest.raises(DatabaseError, match="cannot be deleted"), transaction.atomic():
        ActivityRecord.objects.filter(pk=session.pk)._raw_delete(connection.alias)
    assert verify_activity_seals().ok


def test_purge_activity_refuses_the_retention_period_and_purges_a_prefix_the_checks_then_skip(ended, clock, settings):
    settings.ACTIVITY_RETENTION_DAYS = 30
    activity.activity_seal_due(T0 + timedelta(minutes=20))
    first = ActivitySeal.objects.get()
    # A second grant, sealed 40 days later.
    clock.move_to(T0 + timedelta(days=40))
    later = T0 + timedelta(days=40)
    access_request = ar.access_request_submit(
        ended.requester, role=ended.role, duration=timedelta(hours=1), justification="Fix it again please"
    )
    ar.access_request_approve(ended.approver, access_request.pk)
    grant = Grant.objects.get(access_request=access_request)
    store(ended, "SELECT 42", minutes=40 * 24 * 60 + 1)
    gs.grant_release(ended.requester, grant.pk)
    for item in OutboxItem.objects.filter(grant=grant, done_at__isnull=True):
        manual_task_complete(ended.owner, item.pk)
    activity.activity_seal_due(later + timedelta(hours=1))
    clock.move_to(T0 + timedelta(days=80))
    with pytest.raises(CommandError, match="inside the activity retention period"):
        call_command("purge_activity", "--before", (T0 + timedelta(days=60)).strftime("%Y-%m-%d"))
    call_command("purge_activity", "--before", (T0 + timedelta(days=20)).strftime("%Y-%m-%d"), "--dry-run")
    assert ActivityRecord.objects.count() == 4
    call_command("purge_activity", "--before", (T0 + timedelta(days=20)).strftime("%Y-%m-%d"))
    assert ActivityRecord.objects.filter(seal=first).count() == 0 and ActivityRecord.objects.count() == 1
    first.refresh_from_db()
    assert first.purged_at is not None
    purged = AccessEvent.objects.get(event_type="activity.purged")
    assert purged.data["through_seal_id"] == first.pk and purged.data["rows"] == 3
    report = verify_activity_seals()
    assert report.ok and report.seals == 1
    call_command("verify_audit")
