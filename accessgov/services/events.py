"""Recording access events: one row per state change, written in the caller's transaction. The chain
itself (the ledger lock, hashes, COPY) is ``accessgov/ledger/record.py``; this service adds what every
event gets: the API token it came through (``acting_via``), a JSON log line after commit, and the
matching webhook deliveries in the same transaction.

The ledger lock is held until the caller commits; callers take their row locks before writing their
first event.
"""

import json
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar, copy_context
from typing import Any

from django.db import connection, transaction

from accessgov.ledger import hashing, record
from accessgov.models import AccessEvent, AccessRequest, Grant, Role, User
from accessgov.services import webhook_outbox

Type = AccessEvent.Type
event_logger = logging.getLogger("accessgov.events")
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
    if role is None:  # a grant's role is its request's (the grant's is usually loaded with it)
        role = (grant.role if grant else None) or (access_request.role if access_request else None)
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
    record.chain([event])
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


def event_rows_prepare(rows: list[dict[str, Any]]) -> record.PreparedRows:
    """Everything about bulk rows that does not depend on their place in the chain: the defaults, the API
    token they came through (``acting_via``), their canonical text and data JSON. Pure Python, no
    database (``event_rows_prepare_meanwhile`` runs it in a worker thread)."""
    via = _via.get()
    for row in rows:
        for name, default in record.ROW_DEFAULTS.items():
            row.setdefault(name, default)
        if row.get("data") is None:
            row["data"] = {}
        if via is not None:
            row["data"] = _with_via(row["data"])
    return record.prepare_rows(rows)


def event_rows_prepare_meanwhile(build: Callable[[], list[dict[str, Any]]]) -> "Future[record.PreparedRows]":
    """Build and prepare bulk rows in a worker thread, for a caller that meanwhile waits on the database
    (a sweep's ``UPDATE`` and outbox ``INSERT``): that wait releases the interpreter, so the per-event
    Python runs on the other core instead of after the wait, before the ledger lock is taken. ``build``
    must not touch the database (the connection belongs to the caller's thread and transaction); it runs
    in a copy of the caller's context (``acting_via``). The result is for ``event_record_rows``."""
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="accessgov-events")
    try:
        return worker.submit(copy_context().run, lambda: event_rows_prepare(build()))
    finally:
        worker.shutdown(wait=False)  # the thread ends when the one task is done


def event_record_rows(rows: list[dict[str, Any]] | record.PreparedRows) -> list[int]:
    """The bulk fast path: append many events given as plain dicts keyed by field name
    (``occurred_at``, ``event_type``, ``actor_label``, ``data`` and any of ROW_DEFAULTS), chained in
    order under the ledger lock, without a model instance per event (``ledger.record.append_rows``: the
    ledger's one hashing function; one COPY on PostgreSQL, bulk_create on SQLite), or the same rows
    already prepared (``event_rows_prepare``).
    Each dict gets ``id``, ``sequence``, ``prev_hash`` and ``hash`` (nothing is read back). Then the same
    side effects as every event: the JSON log after commit and webhook deliveries in this transaction.
    Callers take their row locks before (the ledger lock is taken here and held until commit)."""
    _ensure_in_transaction()
    prepared = rows if isinstance(rows, record.PreparedRows) else event_rows_prepare(rows)
    if not prepared.rows:
        return []
    ids = record.append_rows(prepared)
    for row, pk in zip(prepared.rows, ids, strict=True):
        row["id"] = pk
    _log_rows_after_commit(prepared.rows)
    _webhooks_enqueue_refs([(row["id"], row["event_type"], row["role_id"]) for row in prepared.rows])
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
        _log_lines_after_commit([(hashing.canonical_content(row), row["hash"]) for row in rows])


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
