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

from accessgov.models import AccessEvent, AccessRequest, Grant, Role, User

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
    """Append many events at once (set-based sweeps), chained in order."""
    _ensure_in_transaction()
    _chain(rows)
    if _via.get() is not None:
        for row in rows:
            row.data = _with_via(row.data)
    AccessEvent.objects.bulk_create(rows, batch_size=1000)
    _log_after_commit(rows)
    _webhooks_enqueue(rows)


def _webhooks_enqueue(events: list[AccessEvent]) -> None:
    """Outbound event webhooks: deliveries for matching subscriptions, in this same transaction."""
    from accessgov.services.webhooks import webhook_deliveries_enqueue

    webhook_deliveries_enqueue(events)


def _log_after_commit(events: list[AccessEvent]) -> None:
    """With ACCESS_EVENT_JSON_LOG, each committed event becomes one JSON log line (for a SIEM)."""
    from django.conf import settings

    if not settings.ACCESS_EVENT_JSON_LOG:
        return
    lines = [
        json.dumps(
            {"ledger": "accessgov", **event.content(), "hash": event.hash},
            default=str,
            ensure_ascii=False,
            separators=(",", ":"),
        )
        for event in events
    ]
    transaction.on_commit(lambda: [event_logger.info(line) for line in lines], robust=True)
