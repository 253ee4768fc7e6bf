"""Recording access events: one row per state change, written in the caller's transaction, and
chained: each event stores the previous event's hash and its own hash over content + prev_hash.

Inserts are serialized by the ledger lock (PostgreSQL: a transaction-level advisory lock; SQLite
serializes writers already), so the chain stays linear under concurrency and in bulk paths. The lock is
held until the caller commits; callers take their row locks before writing their first event.
"""

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.db import connection, transaction

from accessgov.models import AccessEvent, AccessRequest, Grant, Role, User, compact_json_encoder
from accessgov.services import webhook_outbox

Type = AccessEvent.Type
event_logger = logging.getLogger("accessgov.events")
LEDGER_LOCK_KEY = 0x4143434553534556  # "ACCESSEV"
GENESIS = "0" * 64
# What the actor acted through, when not the portal (an API token): recorded as data["via"].
_via: ContextVar[dict[str, Any] | None] = ContextVar("accessgov_event_via", default=None)


@contextmanager
def acting_via(via: dict[str, Any]) -> Iterator[None]:
    """Within this block every event recorded gets ``data["via"] = via`` (the API wraps each request
    made with a token in it, so every token use is attributable in the ledger)."""
    reset = _via.set(via)
    try:
        yield
    finally:
        _via.reset(reset)


def _with_via(data: dict[str, Any] | None) -> dict[str, Any]:
    data = dict(data or {})
    via = _via.get()
    if via is not None:
        data["via"] = via
    return data


def actor_label(actor: User | None, job: str | None = None) -> str:
    if actor is not None:
        return actor.get_username()
    return f"system:{job or 'unknown'}"


def _ensure_in_transaction() -> None:
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("Access events are written inside the transaction of the change they record.")


def _ledger_head() -> tuple[int, str]:
    """Take the ledger lock (until commit) and return the last sequence and hash."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [LEDGER_LOCK_KEY])
    last = (
        AccessEvent.objects.filter(sequence__isnull=False).order_by("-sequence").values_list("sequence", "hash").first()
    )
    return last if last else (0, GENESIS)


def _chain(events: list[AccessEvent]) -> None:
    sequence, prev_hash = _ledger_head()
    for event in events:
        sequence += 1
        event.sequence = sequence
        event.prev_hash = prev_hash
        event.hash = event.compute_hash(prev_hash)
        prev_hash = event.hash


def event_record(
    event_type: str,
    *,
    actor: User | None = None,
    job: str | None = None,
    client_address: str | None = None,
    access_request: AccessRequest | None = None,
    grant: Grant | None = None,
    role: Role | None = None,
    reason: str = "",
    data: dict[str, Any] | None = None,
) -> AccessEvent:
    """Append one event. Must run inside the transaction of the change it records."""
    _ensure_in_transaction()
    if role is None:
        role = (access_request.role if access_request else None) or (grant.role if grant else None)
    event = AccessEvent(
        event_type=event_type,
        actor=actor,
        actor_label=actor_label(actor, job),
        client_address=client_address,
        access_request=access_request,
        grant=grant,
        role=role,
        reason=reason,
        data=_with_via(data),
    )
    _chain([event])
    event.save(force_insert=True)
    _log_after_commit([event])
    _webhooks_enqueue([event])
    return event


def event_record_bulk(rows: list[AccessEvent]) -> None:
    """Append many events at once (set-based sweeps), chained in order. The instances get their pk,
    sequence and hashes; the writing is ``event_record_rows``."""
    values = [
        {
            "occurred_at": row.occurred_at,
            "event_type": row.event_type,
            "actor_id": row.actor_id,
            "actor_label": row.actor_label,
            "client_address": row.client_address,
            "reason": row.reason,
            "access_request_id": row.access_request_id,
            "grant_id": row.grant_id,
            "role_id": row.role_id,
            "data": row.data,
        }
        for row in rows
    ]
    event_record_rows(values)
    for row, written in zip(rows, values, strict=True):
        row.pk, row.sequence, row.prev_hash, row.hash, row.data = (
            written["id"],
            written["sequence"],
            written["prev_hash"],
            written["hash"],
            written["data"],
        )
        row._state.adding, row._state.db = False, connection.alias


# Columns a bulk row may leave out, with the value the table stores for them.
ROW_DEFAULTS: dict[str, Any] = {
    "actor_id": None,
    "client_address": None,
    "reason": "",
    "access_request_id": None,
    "grant_id": None,
    "role_id": None,
}
_COPY_COLUMNS = ("id", *AccessEvent.HASHED_FIELDS, "prev_hash", "hash")
# The data column's JSON for COPY (raises TypeError on a value JSON cannot hold, as json.dumps does).
_data_json = compact_json_encoder()


def event_record_rows(rows: list[dict[str, Any]]) -> list[int]:
    """The bulk fast path: append many events given as plain dicts keyed by field name
    (``occurred_at``, ``event_type``, ``actor_label``, ``data`` and any of ROW_DEFAULTS), chained in
    order under the ledger lock, without a model instance per event. Hashes with the ledger's one hashing
    function (AccessEvent.hash_content); PostgreSQL writes the rows with one COPY, SQLite with bulk_create.
    Each dict gets ``id``, ``sequence``, ``prev_hash`` and ``hash`` (nothing is read back). Then the same
    side effects as every event: the JSON log after commit and webhook deliveries in this transaction.
    Callers take their row locks before (the ledger lock is taken here and held until commit)."""
    _ensure_in_transaction()
    if not rows:
        return []
    via = _via.get()
    for row in rows:
        for name, default in ROW_DEFAULTS.items():
            row.setdefault(name, default)
        if row.get("data") is None:
            row["data"] = {}
        if via is not None:
            row["data"] = _with_via(row["data"])
    chained = _chained(rows, *_ledger_head())
    if connection.vendor == "postgresql":
        ids = _copy_rows(chained, len(rows))
    else:
        events = AccessEvent.objects.bulk_create(
            [AccessEvent(**{name: row[name] for name in _COPY_COLUMNS[1:]}) for row in chained], batch_size=1000
        )
        ids = [event.pk for event in events]
    for row, pk in zip(rows, ids, strict=True):
        row["id"] = pk
    _log_rows_after_commit(rows)
    _webhooks_enqueue_refs([(row["id"], row["event_type"], row["role_id"]) for row in rows])
    return ids


def _chained(rows: list[dict[str, Any]], sequence: int, prev_hash: str) -> Iterator[dict[str, Any]]:
    """Give each row its place in the chain as it is written (lazily, so PostgreSQL ingests the COPY
    while the next hashes are computed)."""
    canonical, hash_content = AccessEvent.canonical_content, AccessEvent.hash_content
    for row in rows:
        sequence += 1
        row["sequence"] = sequence
        row["prev_hash"] = prev_hash
        prev_hash = row["hash"] = hash_content(canonical(row), prev_hash)
        yield row


def _copy_rows(rows: Iterator[dict[str, Any]], count: int) -> list[int]:
    """PostgreSQL: take ids from the table's sequence in one query (ascending, so id order is chain
    order), then write every row with one COPY (no per-value preparation by Django)."""
    table = AccessEvent._meta.db_table
    with connection.cursor() as cursor:
        # The sequence is looked up once (a scalar subquery), not once per id: 70 → 8 ms for 25,000 ids.
        cursor.execute(
            "SELECT nextval((SELECT pg_get_serial_sequence(%s, 'id')::regclass)) FROM generate_series(1, %s)",
            [table, count],
        )
        ids = sorted(pk for (pk,) in cursor.fetchall())
        columns = ", ".join(connection.ops.quote_name(name) for name in _COPY_COLUMNS)
        dumps = _data_json
        # Django's error classes, as for any statement (the references are checked at the end of the COPY).
        copy_sql = f"COPY {connection.ops.quote_name(table)} ({columns}) FROM STDIN"
        with connection.wrap_database_errors, cursor.cursor.copy(copy_sql) as copy:
            write_row = copy.write_row
            for pk, row in zip(ids, rows, strict=True):
                write_row(
                    (
                        pk,
                        row["sequence"],
                        row["occurred_at"],
                        row["event_type"],
                        row["actor_id"],
                        row["actor_label"],
                        row["client_address"],
                        row["reason"],
                        row["access_request_id"],
                        row["grant_id"],
                        row["role_id"],
                        dumps(row["data"]),
                        row["prev_hash"],
                        row["hash"],
                    )
                )
    return ids


def _webhooks_enqueue(events: list[AccessEvent]) -> None:
    _webhooks_enqueue_refs([(event.pk, event.event_type, event.role_id) for event in events])


def _webhooks_enqueue_refs(refs: list[tuple[int, str, int | None]]) -> None:
    """Outbound event webhooks: deliveries for matching subscriptions, in this same transaction."""
    webhook_outbox.webhook_deliveries_enqueue_refs(refs)


def _log_after_commit(events: list[AccessEvent]) -> None:
    """With ACCESS_EVENT_JSON_LOG, each committed event becomes one JSON log line (for a SIEM)."""
    from django.conf import settings

    if settings.ACCESS_EVENT_JSON_LOG:
        _log_lines_after_commit([(event.content(), event.hash) for event in events])


def _log_rows_after_commit(rows: list[dict[str, Any]]) -> None:
    from django.conf import settings

    if settings.ACCESS_EVENT_JSON_LOG:
        _log_lines_after_commit([(AccessEvent.canonical_content(row), row["hash"]) for row in rows])


def _log_lines_after_commit(events: list[tuple[dict[str, Any], str]]) -> None:
    lines = [
        json.dumps(
            {"ledger": "accessgov", **content, "hash": event_hash},
            default=str,
            ensure_ascii=False,
            separators=(",", ":"),
        )
        for content, event_hash in events
    ]
    transaction.on_commit(lambda: [event_logger.info(line) for line in lines], robust=True)
