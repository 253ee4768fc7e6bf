"""Activity pushed to ``POST /api/v1/activity/`` by a log shipper or a target's own tooling: parse every
record (all or nothing: one bad record refuses the batch, saying which), then store them like any capture
(``activity_store``). A batch with an id (the Standard Webhooks ``webhook-id``, or ``batch_id``) is stored
once: its id is written in the same transaction, and a replay or retry of it stores nothing."""

from datetime import datetime

from django.db import IntegrityError, transaction

from accessgov.activity.logs import parse_record
from accessgov.exceptions import PolicyViolation
from accessgov.models import ActivityIngestBatch, System
from accessgov.services.activity.store import StoreResult, activity_store

MAX_PROBLEMS_SHOWN = 5


def activity_ingest_push(
    system: System, records: list, *, message_id: str | None, via: str, now: datetime
) -> tuple[StoreResult, bool]:
    """Store a pushed batch for ``system`` (the caller authenticated the sender and checked it may report for
    this system). Returns the result and whether the batch had been received before (then nothing is
    stored). Raises PolicyViolation naming the first bad records, or a grant of another system."""
    observed, problems = [], []
    for index, entry in enumerate(records):
        try:
            row = parse_record(entry)
        except ValueError as exc:
            problems.append(f"record {index}: {exc}")
            if len(problems) >= MAX_PROBLEMS_SHOWN:
                break
            continue
        if row is not None:
            observed.append(row)
    if problems:
        raise PolicyViolation("Nothing was stored. " + "; ".join(problems) + ".")
    try:
        with transaction.atomic():
            if message_id:
                batch = ActivityIngestBatch.objects.create(
                    system=system, message_id=message_id, received_at=now, records=len(records), via=via[:100]
                )
            result = activity_store(system, observed, now=now)
            result.received = len(records)
            result.ignored += len(records) - len(observed)
            if message_id:
                ActivityIngestBatch.objects.filter(pk=batch.pk).update(stored=result.stored)
    except IntegrityError:
        if message_id and ActivityIngestBatch.objects.filter(system=system, message_id=message_id).exists():
            return StoreResult(received=len(records), duplicates=len(records)), True
        raise
    return result, False
