"""Removing a prefix of the chain older than the retention period (``services/audit.audit_purge``).

A checkpoint (the last purged event's sequence and hash) keeps the rest of the chain verifiable. On
PostgreSQL the append-only trigger (migration 0004) is lifted only inside the caller's transaction, which
needs the table owner's rights (run it as the role that runs migrations, not as the application's user).
"""

from dataclasses import dataclass
from datetime import datetime
from typing import cast

from django.db import connection

from accessgov.models import AccessEvent, LedgerCheckpoint, WebhookDelivery

# The PostgreSQL trigger that refuses UPDATE and DELETE on the ledger's table (migration 0004).
APPEND_ONLY_TRIGGER = "accessgov_ledger_no_update_delete"


@dataclass(frozen=True)
class PurgePlan:
    """A prefix of the chain: every event up to ``up_to_sequence`` (the last one before ``before``)."""

    before: datetime
    up_to_sequence: int
    up_to_hash: str
    count: int


def purge_plan(before: datetime) -> PurgePlan | None:
    """What purging the events before ``before`` would remove (a prefix of the chain only: everything up
    to the last event before the date); None when there is nothing to purge."""
    last = (
        AccessEvent.objects.filter(occurred_at__lt=before, sequence__isnull=False)
        .order_by("-sequence")
        .values("sequence", "hash")
        .first()
    )
    if last is None:
        return None
    count = AccessEvent.objects.filter(sequence__lte=last["sequence"]).count()
    return PurgePlan(before, cast(int, last["sequence"]), last["hash"], count)


def purge_prefix(plan: PurgePlan) -> LedgerCheckpoint:
    """Delete the plan's events (and the webhook delivery log that references them) and record the
    checkpoint the chain continues from. Runs inside the caller's transaction."""
    prefix = AccessEvent.objects.filter(sequence__lte=plan.up_to_sequence)
    WebhookDelivery.objects.filter(event__sequence__lte=plan.up_to_sequence)._raw_delete(connection.alias)
    if connection.vendor == "postgresql":
        table = connection.ops.quote_name(AccessEvent._meta.db_table)
        trigger = connection.ops.quote_name(APPEND_ONLY_TRIGGER)
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER {trigger}")
            prefix._raw_delete(prefix.db)
            cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER {trigger}")
    else:
        prefix._raw_delete(prefix.db)
    return LedgerCheckpoint.objects.create(
        sequence=plan.up_to_sequence, hash=plan.up_to_hash, purged_count=plan.count, purged_before=plan.before
    )
