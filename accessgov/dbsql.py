"""Database-specific statements, each next to its portable twin.

AccessGov runs on PostgreSQL in production and on SQLite for ``make run`` and the fast local suite. Raw
SQL is used only where PostgreSQL does something the ORM cannot say or measurably slower
(docs/PERFORMANCE.md): skip-locked set-based transitions, ``INSERT … SELECT`` from id arrays, ``NOTIFY``.
Each such statement lives here as ``<name>_postgresql`` beside ``<name>_portable`` — the ORM or plain
SQL the other database runs, giving the same result — and ``<name>`` picks one by the connection.
``tests/services/test_dbsql.py`` runs both twins of every pair on PostgreSQL and compares what they return and
write. Table and column names always come from the models' ``_meta``; values are always bound.

Fast paths kept beside the code they serve (each with its twin and a comparison test there): the
ledger's COPY (``ledger/record.py``), the evidence pack's ledger extract and populations
(``evidence/ledger.py``, ``evidence/populations.py``), activity ingestion and sealing
(``services/activity/``), the audit export's COPY SQL (``ledger/export.py``).
"""

import json
import operator
from datetime import UTC, datetime, timedelta
from functools import cache

from django.db import connection
from django.db.models import Count, Exists, F, ForeignKey, IntegerField, Lookup, OuterRef, Q, QuerySet

from accessgov.models import Eligibility, Grant, OutboxItem, User, WebhookDelivery


def is_postgresql() -> bool:
    return connection.vendor == "postgresql"


# --- A list of ids as one bound parameter ----------------------------------------------------------

_BIGINT = range(-(2**63), 2**63)


def int_array_param(values, wrapper=None):
    """A list of integers as ONE bound parameter: the list itself on PostgreSQL (an array), its JSON text
    on SQLite. Anything but integers within bigint (an instance, a string, a float) is refused (TypeError,
    ValueError): this is the one place such a list enters SQL."""
    ids = [operator.index(value) for value in values]
    if any(value not in _BIGINT for value in ids):
        raise ValueError("an id is out of the bigint range")
    return ids if (connection if wrapper is None else wrapper).vendor == "postgresql" else json.dumps(ids)


@IntegerField.register_lookup
@ForeignKey.register_lookup
class AnyOf(Lookup):
    """``<integer or foreign key>__anyof=[ids]``: the value is one of a list of integers bound as one
    parameter — PostgreSQL ``= ANY(%s::bigint[])``, SQLite ``IN (SELECT value FROM json_each(%s))`` — so
    the statement's text is the same whatever the list holds (``__in`` writes one placeholder per id, and
    an empty list drops the condition): what a ``precompiled`` read needs. Same rows as ``__in``."""

    lookup_name = "anyof"
    prepare_rhs = False

    def as_sql(self, compiler, connection):
        lhs, params = self.process_lhs(compiler, connection)
        return any_of_sql(lhs, connection), [*params, int_array_param(self.rhs, connection)]


def any_of_sql(column_sql: str, wrapper=None) -> str:
    """SQL: ``column_sql`` is one of the ids bound as one parameter (``int_array_param``) — the ``anyof``
    lookup's, for fixed statements."""
    if (connection if wrapper is None else wrapper).vendor == "postgresql":
        return f"{column_sql} = ANY(%s::bigint[])"
    return f"{column_sql} IN (SELECT value FROM json_each(%s))"  # noqa: S608 - a column; the ids bound


def prepared_cursor(wrapper=None):
    """A cursor for a fixed statement run on every page (the viewer's scope, ``precompiled`` reads): on
    PostgreSQL it binds parameters server-side, so psycopg prepares the statement after its fifth run on
    a connection and PostgreSQL stops planning it each time (planning was 0.7-1.2 ms of each, executing
    0.1 ms). The inbox badge uses it too. Everything else keeps Django's client-side binding, whose custom
    plans suit the list queries better (docs/PERFORMANCE.md). Wrapped like any Django cursor: counted, logged,
    execute wrappers run.
    Elsewhere, Django's ordinary cursor. ``wrapper``: another connection than the default one."""
    wrapper = connection if wrapper is None else wrapper
    if wrapper.vendor != "postgresql":
        return wrapper.cursor()
    from django.db.backends.postgresql.base import ServerBindingCursor

    wrapper.ensure_connection()
    return wrapper._prepare_cursor(ServerBindingCursor(wrapper.connection))


def use_compiled_timestamp_loader(sender, connection, **kwargs) -> None:
    """``connection_created`` receiver: read ``timestamptz`` columns with psycopg's compiled loader.

    Django registers its own loader (a subclass of psycopg's pure-Python one, which re-stamps each value
    with the connection's zone); every list page reads a few hundred timestamps, and that parsing was ≈ 1/5 of
    a report page's row loading (docs/PERFORMANCE.md). When the database session's zone is UTC and Django's
    is ``datetime.UTC`` — this project's settings — psycopg's compiled loader returns the very same values
    (aware, ``tzinfo=datetime.UTC``). Any other zone, or psycopg without its compiled part: Django's loader
    stays. ``tests/services/test_dbsql.py`` compares both loaders."""
    loader = compiled_timestamp_loader()
    if (
        loader is None
        or connection.vendor != "postgresql"
        or connection.timezone is not UTC
        or connection.connection.info.parameter_status("TimeZone") != "UTC"
    ):
        return
    connection.connection.adapters.register_loader("timestamptz", loader)


@cache
def compiled_timestamp_loader():
    """psycopg's compiled text ``timestamptz`` loader, marked with the zone Django checks loaders for
    (``DatabaseWrapper.create_cursor`` compares ``loader.timezone``); None without the compiled part."""
    try:
        import psycopg
        from psycopg_binary import _psycopg
    except ImportError:
        return None
    if psycopg.pq.__impl__ not in ("binary", "c"):
        return None

    class UtcTimestamptzLoader(psycopg.adapt.Loader):
        timezone = UTC  # what Django's create_cursor compares; the compiled class takes no attributes

        def __init__(self, oid: int, context=None) -> None:
            super().__init__(oid, context)
            # The compiled loader's bound method itself, not a Python method calling it: one call per value.
            self.load = _psycopg.TimestamptzLoader(oid, context).load  # type: ignore[method-assign,attr-defined]

        def load(self, data):  # replaced per instance in __init__; psycopg's Loader declares it abstract
            raise NotImplementedError

    return UtcTimestamptzLoader


def db_datetime(value: datetime):
    """A datetime as a raw statement binds it on this database."""
    return connection.ops.adapt_datetimefield_value(value)


# --- Outbox items -------------------------------------------------------------------------------
# An outbox item is its grant's n-th of one action; its idempotency key (``OutboxItem.idempotency_key``) spells
# that out and connectors pass it on as the operation id, so a retried item is recognised at the target.


def outbox_next_number(grant_id: int, action: str) -> int:
    """The number of the next item of ``action`` for one grant."""
    return OutboxItem.objects.filter(grant_id=grant_id, action=action).count() + 1


def outbox_insert(grant_ids: list[int], action: str, now: datetime) -> None:
    """One outbox item of ``action`` per grant, due ``now``, numbered after the grant's items of the action."""
    (outbox_insert_postgresql if is_postgresql() else outbox_insert_portable)(grant_ids, action, now)


def outbox_insert_postgresql(grant_ids: list[int], action: str, now: datetime) -> None:
    """``INSERT … SELECT`` from the id array. Almost every grant has no item of the action yet, so its item
    is number 1; the unique key's index (checked anyway) finds the few that do, and those are numbered by
    counting (a count per row costs as much as the insert, and its estimate switches on JIT compilation)."""
    table = connection.ops.quote_name(OutboxItem._meta.db_table)
    insert = f"""INSERT INTO {table} (grant_id, action, number, created_at, next_attempt_at, attempts,
            last_error, outcome)
        SELECT g, %(action)s, {{number}}, %(now)s, %(now)s, 0, '', ''
        FROM unnest(%(ids)s::bigint[]) AS t(g)"""  # noqa: S608 - fixed SQL; values are bound params
    with connection.cursor() as cursor:
        cursor.execute(
            insert.format(number="1") + " ON CONFLICT (grant_id, action, number) DO NOTHING RETURNING grant_id",
            {"action": action, "now": now, "ids": list(grant_ids)},
        )
        if cursor.rowcount < len(grant_ids):
            first = {gid for (gid,) in cursor.fetchall()}
            cursor.execute(
                insert.format(
                    number=f"1 + (SELECT count(*) FROM {table} o WHERE o.grant_id = g AND o.action = %(action)s)"  # noqa: S608 - fixed SQL
                ),
                {"action": action, "now": now, "ids": [gid for gid in grant_ids if gid not in first]},
            )


def outbox_insert_portable(grant_ids: list[int], action: str, now: datetime) -> None:
    """Twin of ``outbox_insert_postgresql``: one count query, one ``bulk_create``."""
    existing = dict(
        OutboxItem.objects.filter(grant_id__in=grant_ids, action=action).values_list("grant_id").annotate(n=Count("pk"))
    )
    OutboxItem.objects.bulk_create(
        [
            OutboxItem(
                grant_id=gid,
                action=action,
                number=existing.get(gid, 0) + 1,
                created_at=now,
                next_attempt_at=now,
            )
            for gid in grant_ids
        ],
        batch_size=1000,
    )


# --- Webhook deliveries -------------------------------------------------------------------------


def webhook_deliveries_insert(pairs: list[tuple[int, int]], now: datetime) -> list[int]:
    """One pending delivery per (subscription id, event id), due ``now``; returns their ids in order."""
    return (webhook_deliveries_insert_postgresql if is_postgresql() else webhook_deliveries_insert_portable)(pairs, now)


def webhook_deliveries_insert_postgresql(pairs: list[tuple[int, int]], now: datetime) -> list[int]:
    """One INSERT from two id arrays (no model instance per delivery)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""INSERT INTO {connection.ops.quote_name(WebhookDelivery._meta.db_table)} (subscription_id, event_id,
                    status, created_at, next_attempt_at, attempts, last_error, redelivery_count)
                SELECT s, e, %s, %s, %s, 0, '', 0 FROM unnest(%s::bigint[], %s::bigint[]) AS t(s, e)
                RETURNING id""",  # noqa: S608 - fixed SQL; values are bound params
            [WebhookDelivery.Status.PENDING, now, now, [s for s, _ in pairs], [e for _, e in pairs]],
        )
        return sorted(pk for (pk,) in cursor.fetchall())


def webhook_deliveries_insert_portable(pairs: list[tuple[int, int]], now: datetime) -> list[int]:
    """Twin of ``webhook_deliveries_insert_postgresql``: ``bulk_create``."""
    deliveries = WebhookDelivery.objects.bulk_create(
        [
            WebhookDelivery(subscription_id=subscription_id, event_id=event_id, created_at=now, next_attempt_at=now)
            for subscription_id, event_id in pairs
        ],
        batch_size=1000,
    )
    return [delivery.pk for delivery in deliveries]


# --- Waking the scheduler -----------------------------------------------------------------------


def notify(channel: str) -> None:
    """PostgreSQL: ``NOTIFY`` in the caller's transaction (delivered when it commits, never for a
    rollback). Its twin is nothing: on SQLite the scheduler polls."""
    if is_postgresql():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [channel])


# --- Who may hold a grant -----------------------------------------------------------------------


def eligibility_in_force(now: datetime) -> QuerySet[Eligibility]:
    """Eligibility of a grant's holder for its role at ``now`` (for ``Exists`` over grants)."""
    return (
        Eligibility.objects.active(now)
        .filter(role_id=OuterRef("role_id"))
        .filter(Q(user_id=OuterRef("user_id")) | Q(group__user=OuterRef("user_id")))
    )


def holder_may_hold_q(now: datetime) -> Q:
    """ORM twin of ``holder_may_hold_sql``: the holder's account is active and eligible for the role."""
    return Q(Exists(eligibility_in_force(now)), user__is_active=True)


def holder_may_hold_sql() -> str:
    """SQL twin of ``holder_may_hold_q`` over the grant table unaliased (two parameters: now, now), for the
    set-based activation's ``UPDATE``."""
    qn = connection.ops.quote_name
    grant, user, elig = qn(Grant._meta.db_table), qn(User._meta.db_table), qn(Eligibility._meta.db_table)
    members = qn(User.groups.through._meta.db_table)
    return (
        f"EXISTS (SELECT 1 FROM {user} u WHERE u.id = {grant}.user_id AND u.is_active) AND EXISTS (SELECT 1 FROM "  # noqa: S608 - fixed SQL
        f"{elig} e WHERE e.role_id = {grant}.role_id AND e.starts_at <= %s AND (e.ends_at IS NULL OR e.ends_at > %s) "
        f"AND (e.user_id = {grant}.user_id OR e.group_id IN (SELECT m.group_id FROM {members} m "
        f"WHERE m.user_id = {grant}.user_id)))"
    )


# --- Set-based grant transitions ----------------------------------------------------------------

DueRow = tuple[int, int, int, datetime]  # id, access_request_id, role_id, expires_at


def grants_due_boundary(
    where: str, where_params: list, *, grant_ids: list[int] | None, batch_size: int, after_id: int
) -> int | None:
    """The id that closes the next batch of due grants after ``after_id`` (its ``batch_size``-th, by id), or
    None when fewer are left: a batch bounded so lets the next one be taken before it is written, and two
    writers' ``UPDATE``s run at once on disjoint ranges. Reads only; no locks."""
    table, where, params, _, _ = _due_parts(where, where_params, {}, grant_ids, after_id, array=is_postgresql())
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id FROM {table} WHERE {where} ORDER BY id LIMIT 1 OFFSET %s",  # noqa: S608 - fixed SQL; values are bound params
            [*params, batch_size - 1],
        )
        row = cursor.fetchone()
    return None if row is None else row[0]


def grants_update_due(
    where: str,
    where_params: list,
    assignments: dict[str, object],
    *,
    grant_ids: list[int] | None,
    batch_size: int,
    after_id: int,
    up_to_id: int | None = None,
) -> list[DueRow]:
    """One statement per batch: lock up to ``batch_size`` due grants, apply ``assignments`` (column →
    value, or a ``F`` of another column) and return (id, access_request_id, role_id, expires_at) of the
    rows changed, by id. Nothing is read back afterwards. ``where``: SQL over the grant table, unaliased.
    ``after_id``: the last id of the caller's previous batch (the pkey scan starts there instead of passing
    over the rows it just changed; a row skipped because another sweep held it is that sweep's, or the
    next sweep's). ``up_to_id``: the last id of this batch (``grants_due_boundary``), when known."""
    if up_to_id is not None:
        where, where_params = f"{where} AND id <= %s", [*where_params, up_to_id]
    statement = grants_update_due_postgresql if is_postgresql() else grants_update_due_portable
    return statement(where, where_params, assignments, grant_ids=grant_ids, batch_size=batch_size, after_id=after_id)


def _due_parts(
    where: str, where_params: list, assignments: dict[str, object], grant_ids, after_id: int, *, array: bool
):
    ops = connection.ops
    where += " AND id > %s"
    params = [*where_params, after_id]
    if grant_ids is not None:
        if array:
            where += " AND id = ANY(%s)"
            params.append(list(grant_ids))
        else:
            where += f" AND id IN ({', '.join(['%s'] * len(grant_ids))})"
            params.extend(grant_ids)
    set_sql, set_params = [], []
    for column, value in assignments.items():
        if isinstance(value, F):
            set_sql.append(f"{ops.quote_name(column)} = {ops.quote_name(value.name)}")
        else:
            set_sql.append(f"{ops.quote_name(column)} = %s")
            set_params.append(ops.adapt_datetimefield_value(value) if isinstance(value, datetime) else value)
    table = ops.quote_name(Grant._meta.db_table)
    update = f"UPDATE {table} SET {', '.join(set_sql)} WHERE {{rows}} AND {where}"  # noqa: S608 - fixed SQL; values are bound params
    return table, where, params, update, set_params


def grants_update_due_postgresql(
    where: str, where_params: list, assignments: dict[str, object], *, grant_ids, batch_size: int, after_id: int
) -> list[DueRow]:
    """``FOR NO KEY UPDATE SKIP LOCKED`` (parallel sweeps take disjoint batches); the locked rows are
    updated where the lock found them (a TID scan: a third faster than looking each id up again), and
    ``expires_at`` comes back as integer microseconds since the epoch (exact, and read in C; a timestamptz
    goes through Django's Python loader, 5 µs a row)."""
    table, where, params, update, set_params = _due_parts(
        where, where_params, assignments, grant_ids, after_id, array=True
    )
    returning = " RETURNING id, access_request_id, role_id, (extract(epoch FROM expires_at) * 1000000)::bigint AS us"
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH due AS MATERIALIZED (SELECT id, ctid FROM {table} WHERE {where} ORDER BY id LIMIT %s "  # noqa: S608 - fixed SQL; values are bound params
            f"FOR NO KEY UPDATE SKIP LOCKED), changed AS ({update.format(rows='ctid = ANY(ARRAY(SELECT ctid FROM due))')}"
            f"{returning}) SELECT id, changed.access_request_id, changed.role_id, changed.us FROM due LEFT JOIN changed USING (id)",
            [*params, batch_size, *set_params, *params],
        )
        rows = cursor.fetchall()
        missed = [row[0] for row in rows if row[3] is None]
        if missed:
            # Updated and committed by another transaction after this statement's snapshot was taken, just
            # before the lock: the version the lock holds is not the one the snapshot sees. By id, now.
            cursor.execute(update.format(rows="id = ANY(%s)") + returning, [*set_params, missed, *params])
            rows = [row for row in rows if row[3] is not None] + cursor.fetchall()
    return sorted((pk, ar_id, role_id, _EPOCH + timedelta(microseconds=us)) for pk, ar_id, role_id, us in rows)


def grants_update_due_portable(
    where: str, where_params: list, assignments: dict[str, object], *, grant_ids, batch_size: int, after_id: int
) -> list[DueRow]:
    """Twin of ``grants_update_due_postgresql`` in SQL both databases run (SQLite serializes writers, so
    it needs no row locks): ``WITH due AS (…) UPDATE … RETURNING``."""
    table, where, params, update, set_params = _due_parts(
        where, where_params, assignments, grant_ids, after_id, array=False
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH due AS (SELECT id FROM {table} WHERE {where} ORDER BY id LIMIT %s) "  # noqa: S608 - fixed SQL; values are bound params
            + update.format(rows="id IN (SELECT id FROM due)")
            + " RETURNING id, access_request_id, role_id, expires_at",
            [*params, batch_size, *set_params, *params],
        )
        return sorted((pk, ar_id, role_id, _aware(expires_at)) for pk, ar_id, role_id, expires_at in cursor.fetchall())


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _aware(value) -> datetime:
    """A datetime from a raw cursor (SQLite returns text for RETURNING columns) as an aware UTC datetime."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
