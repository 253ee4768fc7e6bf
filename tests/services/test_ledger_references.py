"""The ledger's and the outbox's references, checked by PostgreSQL per statement (migration 0030) instead
of by per-row deferred foreign keys: an event or outbox row naming a missing actor, request, grant or role
is refused; a row they name cannot be deleted or get another id, also by SQL that bypasses the ORM; and
the locks (one shared advisory lock per inserting transaction at READ COMMITTED, migration 0032; row locks
otherwise) make a concurrent insert and delete decide once, in either order."""

import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from django.db import IntegrityError, connection, transaction

from accessgov.ledger.verify import verify_chain
from accessgov.models import AccessEvent, AccessRequest, Grant, OutboxItem
from accessgov.services import provisioning
from accessgov.services.events import event_record, event_record_rows

pytestmark = [pytest.mark.postgres]

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # stored only: nothing here reads the clock
H = timedelta(hours=1)
MISSING = 987_654_321


def make_grant(world, user=None) -> Grant:
    user = user or world.requester
    access_request = AccessRequest.objects.create(
        requester=user,
        role=world.role,
        status=AccessRequest.Status.APPROVED,
        requested_duration=H,
        approved_duration=H,
        justification="Fixture for the reference checks",
        created_at=NOW - H,
        lapses_at=NOW + H,
        decided_at=NOW - H,
    )
    return Grant.objects.create(
        access_request=access_request,
        user=user,
        role=world.role,
        status=Grant.Status.ACTIVE,
        starts_at=NOW - H,
        expires_at=NOW + H,
        created_at=NOW - H,
        activated_at=NOW - H,
    )


def row(grant: Grant, **refs) -> dict:
    return {
        "occurred_at": NOW,
        "event_type": AccessEvent.Type.GRANT_EXPIRED,
        "actor_label": "system:test",
        "grant_id": grant.pk,
        "access_request_id": grant.access_request_id,
        "role_id": grant.role_id,
        "data": {},
        **refs,
    }


def refused(column: str, table: str):
    return pytest.raises(IntegrityError, match=f'Key \\({column}\\)=\\({MISSING}\\) is not present in table "{table}"')


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("column", "table"),
    [
        ("grant_id", "accessgov_grant"),
        ("access_request_id", "accessgov_accessrequest"),
        ("role_id", "accessgov_role"),
        ("actor_id", "accessgov_user"),
    ],
)
def test_a_bulk_event_naming_a_missing_row_is_refused_and_nothing_of_the_batch_is_written(world, column, table):
    grants = [make_grant(world, user) for user in (world.requester, world.approver)]
    with refused(column, table), transaction.atomic():
        event_record_rows([row(grants[0]), row(grants[1], **{column: MISSING})])
    assert not AccessEvent.objects.exists()
    with transaction.atomic():
        event_record_rows([row(grant) for grant in grants])
    assert AccessEvent.objects.count() == 2
    assert verify_chain().ok


@pytest.mark.django_db
def test_a_single_event_naming_a_missing_grant_is_refused(world):
    grant = make_grant(world)
    grant.pk = MISSING
    with refused("grant_id", "accessgov_grant"), transaction.atomic():
        event_record(AccessEvent.Type.GRANT_REVOKED, job="test", grant=grant, role=world.role, reason="x")
    assert not AccessEvent.objects.exists()


@pytest.mark.django_db
def test_outbox_rows_naming_a_missing_grant_are_refused(world):
    grant = make_grant(world)
    with refused("grant_id", "accessgov_grant"), transaction.atomic():
        provisioning.provisioning_enqueue_bulk([grant.pk, MISSING], OutboxItem.Action.REMOVE, NOW, marked=True)
    assert not OutboxItem.objects.exists()
    item = OutboxItem.objects.create(grant=grant, action="remove", number=1, created_at=NOW)
    item.attempts = 2
    item.save()  # the ORM writes grant_id unchanged: allowed
    with refused("grant_id", "accessgov_grant"), transaction.atomic():
        OutboxItem.objects.filter(pk=item.pk).update(grant_id=MISSING)
    assert OutboxItem.objects.get().grant_id == grant.pk


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("table", "column"),
    [
        ("accessgov_grant", "grant_id"),
        ("accessgov_accessrequest", "access_request_id"),
        ("accessgov_role", "role_id"),
        ("accessgov_user", "user_id"),
    ],
)
def test_rows_the_ledger_names_cannot_be_deleted_or_renumbered_even_by_sql(world, table, column):
    grant = make_grant(world)
    pk = grant.pk if column == "grant_id" else getattr(grant, column)
    # An event naming only that row (the user as its actor).
    refs = {"grant_id": None, "access_request_id": None, "role_id": None}
    refs["actor_id" if column == "user_id" else column] = pk
    with transaction.atomic():
        event_record_rows([row(grant, **refs)])
    still = pytest.raises(
        IntegrityError, match=f'Key \\(id\\)=\\({pk}\\) is still referenced from table "accessgov_accessevent"'
    )
    with still, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {table} WHERE id = %s", [pk])  # noqa: S608 - fixed table names
    with still, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET id = %s WHERE id = %s", [MISSING, pk])  # noqa: S608 - fixed table names
    assert Grant.objects.filter(pk=grant.pk).exists()
    assert verify_chain().ok


@pytest.mark.django_db
def test_a_grant_named_only_by_an_outbox_row_cannot_be_deleted_and_an_unnamed_one_can(world):
    named, unnamed = make_grant(world), make_grant(world, world.approver)
    provisioning.provisioning_enqueue_bulk([named.pk], OutboxItem.Action.REMOVE, NOW, marked=True)
    refused = pytest.raises(IntegrityError, match='referenced from table "accessgov_outboxitem"')
    with refused, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM accessgov_grant WHERE id = %s", [named.pk])
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM accessgov_grant WHERE id = %s", [unnamed.pk])
    assert list(Grant.objects.values_list("pk", flat=True)) == [named.pk]


def _other_connection() -> psycopg.Connection:
    settings = connection.settings_dict
    return psycopg.connect(
        dbname=settings["NAME"], user=settings["USER"], host=settings["HOST"], port=settings["PORT"] or 5432
    )


def _waiting_on_a_lock(pid: int) -> str | None:
    """The kind of lock backend ``pid`` waits for (``advisory``, ``transactionid``, ``tuple`` …), within 10 s."""
    deadline = time.monotonic() + 10
    with _other_connection() as watcher:
        while time.monotonic() < deadline:
            state = watcher.execute(
                "SELECT wait_event_type, wait_event FROM pg_stat_activity WHERE pid = %s", [pid]
            ).fetchone()
            if state and state[0] == "Lock":
                return state[1]
            time.sleep(0.02)
    return None


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("written_here", [False, True], ids=["locked", "written-by-the-inserter"])
@pytest.mark.parametrize("isolation", ["READ COMMITTED", "REPEATABLE READ"])
def test_a_delete_racing_an_insert_that_names_the_row_waits_for_it_and_then_fails(world, written_here, isolation):
    """Also when the inserting transaction updated the grant itself first, as the sweep does. At READ
    COMMITTED the insert's check takes a shared advisory lock (migration 0032), at REPEATABLE READ a KEY
    SHARE lock on the grant; the delete waits for whichever it meets first."""
    grant = make_grant(world)
    outcome = {}
    with _other_connection() as other:
        pid = other.info.backend_pid

        def delete() -> None:
            try:
                with other.transaction():
                    other.execute("DELETE FROM accessgov_grant WHERE id = %s", [grant.pk])
                outcome["deleted"] = True
            except psycopg.errors.ForeignKeyViolation as exc:
                outcome["refused"] = str(exc)

        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(f"SET TRANSACTION ISOLATION LEVEL {isolation}")
            if written_here:
                Grant.objects.filter(pk=grant.pk).update(removal_requested_at=NOW)
            event_record_rows([row(grant)])  # the grant stays until this commits
            deleter = threading.Thread(target=delete)
            deleter.start()
            # On the inserter's advisory lock, or on its row lock when it holds one (its own update of
            # the grant, or KEY SHARE at REPEATABLE READ).
            waits_for = _waiting_on_a_lock(pid)
            row_locked = written_here or isolation != "READ COMMITTED"
            assert waits_for == ("transactionid" if row_locked else "advisory"), waits_for
        deleter.join(10)
    assert "refused" in outcome, outcome
    assert Grant.objects.filter(pk=grant.pk).exists()
    assert AccessEvent.objects.filter(grant=grant).count() == 1


@pytest.mark.django_db(transaction=True)
def test_an_insert_racing_a_delete_of_the_row_it_names_waits_for_it_and_then_fails(world):
    grant = make_grant(world)
    outcome = {}
    with _other_connection() as other:
        other.execute("DELETE FROM accessgov_grant WHERE id = %s", [grant.pk])  # not committed yet

        def insert() -> None:
            try:
                with transaction.atomic():
                    event_record_rows([row(grant)])
                outcome["inserted"] = True
            except IntegrityError as exc:
                outcome["refused"] = str(exc)
            finally:
                connection.close()

        inserter = threading.Thread(target=insert)
        inserter.start()
        time.sleep(0.5)
        assert inserter.is_alive()  # waiting for the delete's lock on the grant
        other.commit()
        inserter.join(10)
    assert "refused" in outcome, outcome
    assert not Grant.objects.filter(pk=grant.pk).exists()
    assert not AccessEvent.objects.exists()
