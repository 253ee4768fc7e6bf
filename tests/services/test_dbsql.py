"""Issue 16: every database-specific statement in ``accessgov/dbsql.py`` has a portable twin, and both
give the same result. Each pair runs here on PostgreSQL twice over the same data (each run rolled back
to a savepoint), and what they return and write is compared. (The portable twins alone run on SQLite in
the rest of the suite.)"""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.contrib.auth.models import Group
from django.db import transaction
from django.db.models import F

from accessgov import dbsql
from accessgov.models import AccessEvent, Eligibility, EventWebhookSubscription, Grant, OutboxItem, WebhookDelivery
from accessgov.services import access_requests as ar

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]
H = timedelta(hours=1)
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def both(run, capture):
    """Run each twin of a pair from the same state (rolled back after each) and return what each gave."""
    results = {}
    for name in ("postgresql", "portable"):
        with transaction.atomic():
            returned = run(name)
            results[name] = (returned, capture())
            transaction.set_rollback(True)
    return results["postgresql"], results["portable"]


@pytest.fixture
def grantees(world, make_user):
    """Five active grants of world.role from T0 (one of the requester, four of new eligible users)."""
    users = [world.requester]
    with time_machine.travel(T0, tick=False):
        for n in range(4):
            user = make_user(f"twin{n}", device=False)
            Eligibility.objects.create(role=world.role, user=user)
            users.append(user)
        grants = []
        for user in users:
            access_request = ar.access_request_submit(
                user, role=world.role, duration=H, justification="Investigating incident INC-42"
            )
            ar.access_request_approve(world.approver, access_request.pk)
            grants.append(Grant.objects.get(access_request=access_request))
    return grants


def test_outbox_insert_twins_write_the_same_items_and_keys(grantees):
    ids = [g.pk for g in grantees]
    # One grant already has a removal item: its next key is numbered 2 by both.
    with transaction.atomic():
        dbsql.outbox_insert_portable([ids[1]], OutboxItem.Action.REMOVE, T0)
    now = T0 + timedelta(minutes=30)

    def capture():
        return sorted(
            OutboxItem.objects.filter(action=OutboxItem.Action.REMOVE).values_list(
                "grant_id",
                "action",
                "number",
                "created_at",
                "next_attempt_at",
                "attempts",
                "last_error",
                "outcome",
            )
        )

    postgresql, portable = both(
        lambda name: getattr(dbsql, f"outbox_insert_{name}")(ids, OutboxItem.Action.REMOVE, now), capture
    )
    assert postgresql == portable
    numbers = {row[0]: row[2] for row in postgresql[1] if row[3] == now}
    assert numbers == {pk: 2 if pk == ids[1] else 1 for pk in ids}
    assert dbsql.outbox_next_number(ids[1], "remove") == 2  # both twins ran in rolled-back transactions


def test_webhook_delivery_insert_twins_write_the_same_deliveries(grantees):
    hooks = [
        EventWebhookSubscription.objects.create(
            name=f"hook {n}", url="https://hooks.example.com/a", event_types=["*"], secret="s" * 32
        )
        for n in range(2)
    ]
    events = list(AccessEvent.objects.order_by("sequence").values_list("pk", flat=True)[:4])
    pairs = [(hook.pk, event) for hook in hooks for event in events]

    def capture():
        return list(
            WebhookDelivery.objects.filter(subscription__in=hooks)
            .order_by("pk")
            .values_list("pk", "subscription_id", "event_id", "status", "created_at", "next_attempt_at", "attempts")
        )

    postgresql, portable = both(lambda name: getattr(dbsql, f"webhook_deliveries_insert_{name}")(pairs, T0), capture)
    for returned, rows in (postgresql, portable):
        assert returned == [row[0] for row in rows]  # the ids, in order
    assert [row[1:] for row in postgresql[1]] == [row[1:] for row in portable[1]]
    assert [row[1:3] for row in portable[1]] == pairs


@pytest.mark.parametrize(
    ("grant_ids", "batch_size", "after"), [(None, 50, 0), (None, 2, 0), ("some", 50, 0), (None, 50, "second")]
)
def test_update_due_twins_change_and_return_the_same_rows(grantees, grant_ids, batch_size, after):
    ids = sorted(g.pk for g in grantees)
    Grant.objects.filter(pk__in=ids[:4]).update(expires_at=F("starts_at") + timedelta(minutes=10))  # setup: due
    now = T0 + timedelta(minutes=30)
    selected = ids[1:5] if grant_ids == "some" else None
    after_id = ids[1] if after == "second" else 0
    assignments = {"status": Grant.Status.EXPIRED, "ended_at": F("expires_at"), "end_reason": "expired"}

    def run(name):
        statement = getattr(dbsql, f"grants_update_due_{name}")
        return statement(
            "status = %s AND expires_at <= %s",
            [Grant.Status.ACTIVE, dbsql.db_datetime(now)],
            assignments,
            grant_ids=selected,
            batch_size=batch_size,
            after_id=after_id,
        )

    def capture():
        return list(Grant.objects.order_by("pk").values_list("pk", "status", "ended_at", "end_reason"))

    postgresql, portable = both(run, capture)
    assert postgresql == portable
    returned = postgresql[0]
    assert returned and len(returned) <= batch_size
    assert all(expires_at == T0 + timedelta(minutes=10) for _, _, _, expires_at in returned)


def test_the_holder_may_hold_sql_and_its_orm_twin_select_the_same_grants(world, grantees):
    group = Group.objects.create(name="on-call")
    by_group, ended, inactive = grantees[1].user, grantees[2].user, grantees[3].user
    # Setup: one holder eligible through a group only, one whose eligibility ended, one deactivated.
    Eligibility.objects.filter(user=by_group).delete()
    by_group.groups.add(group)
    Eligibility.objects.create(role=world.role, group=group, starts_at=T0 - H)
    Eligibility.objects.filter(user=ended).update(ends_at=T0 + timedelta(minutes=20))
    type(inactive).objects.filter(pk=inactive.pk).update(is_active=False)
    table = Grant._meta.db_table

    for now in (T0 + timedelta(minutes=10), T0 + timedelta(minutes=30)):
        raw = {
            g.pk
            for g in Grant.objects.raw(
                f"SELECT id FROM {table} WHERE {dbsql.holder_may_hold_sql()}",  # noqa: S608 - fixed SQL
                [dbsql.db_datetime(now), dbsql.db_datetime(now)],
            )
        }
        orm = set(Grant.objects.filter(dbsql.holder_may_hold_q(now)).values_list("pk", flat=True))
        assert raw == orm
        assert grantees[1].pk in orm and grantees[3].pk not in orm
        assert (grantees[2].pk in orm) is (now < T0 + timedelta(minutes=20))


# --- Reading timestamps: psycopg's compiled loader instead of Django's Python one -------------

TIMESTAMP_LITERALS = [
    "2026-12-06 00:00:00+00",
    "2026-01-01 12:00:00.123456+05",
    "2026-03-29 01:59:59.999999-09:30",
    "1970-01-01 00:00:00+00",
    "0001-01-01 00:00:00+00",
    "9999-12-31 23:59:59.999999+00",
    "2024-02-29 23:59:60+14",
]


def test_timestamps_read_by_the_compiled_loader_equal_djangos():
    from django.db import connection
    from django.db.backends.postgresql.psycopg_any import register_tzloader

    connection.ensure_connection()
    loader = dbsql.compiled_timestamp_loader()
    assert loader is not None, "psycopg's compiled part is a pinned dependency (psycopg[binary])"
    assert connection.connection.adapters.get_loader(1184, 0) is loader
    select = "SELECT " + ", ".join(f"'{literal}'::timestamptz" for literal in TIMESTAMP_LITERALS)
    with connection.cursor() as cursor:
        cursor.execute(select)
        ours = cursor.fetchone()
    raw = connection.connection.cursor()
    register_tzloader(connection.timezone, raw)  # Django's own loader, on this cursor only
    assert raw.adapters.get_loader(1184, 0) is not loader
    raw.execute(select)
    djangos = raw.fetchone()
    assert ours == djangos
    assert all(value.tzinfo is UTC for value in ours + djangos)


def test_a_models_timestamps_are_read_back_aware_in_utc(make_user):
    from accessgov.models import User

    joined = datetime(2026, 7, 1, 9, 30, 15, 123456, tzinfo=UTC)
    user = make_user("timestamps")
    User.objects.filter(pk=user.pk).update(date_joined=joined)
    read = User.objects.get(pk=user.pk).date_joined
    assert read == joined and read.tzinfo is UTC


def test_the_compiled_loader_stays_off_where_it_would_change_values():
    """Another zone for Django's connection: Django's loader, which stamps that zone, stays."""
    from zoneinfo import ZoneInfo

    from django.db import connection

    connection.ensure_connection()

    class Elsewhere:
        vendor = "postgresql"
        timezone = ZoneInfo("Europe/Berlin")

    from django.db.backends.postgresql.psycopg_any import register_tzloader

    Elsewhere.connection = connection.connection
    register_tzloader(Elsewhere.timezone, connection.connection)
    djangos = connection.connection.adapters.get_loader(1184, 0)
    try:
        dbsql.use_compiled_timestamp_loader(sender=None, connection=Elsewhere)
        assert connection.connection.adapters.get_loader(1184, 0) is djangos
    finally:
        dbsql.use_compiled_timestamp_loader(sender=None, connection=connection)
    assert connection.connection.adapters.get_loader(1184, 0) is dbsql.compiled_timestamp_loader()
