"""Checking the ledger's hash chain (``services/audit.py``: ``manage.py verify_audit`` and the audit page)."""

from dataclasses import dataclass
from datetime import timedelta
from typing import cast

from accessgov import clock
from accessgov.ledger.hashing import GENESIS
from accessgov.models import AccessEvent, LedgerCheckpoint


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    checked: int
    head_sequence: int
    head_hash: str
    problem: str = ""
    broken_sequence: int | None = None
    broken_event_id: int | None = None

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "head_sequence": self.head_sequence,
            "head_hash": self.head_hash,
            "problem": self.problem,
            "broken_sequence": self.broken_sequence,
            "broken_event_id": self.broken_event_id,
        }


def verify_chain(chunk_size: int = 5000) -> ChainReport:
    """Walk the ledger in sequence order and name the first broken link:
    an edited row (its hash no longer matches its content), a deleted row (a gap in the sequence, or a
    prev_hash that does not match the row before), an inserted row (no sequence, or a duplicate link)."""
    unsealed = AccessEvent.objects.filter(sequence__isnull=True).order_by("pk").values_list("pk", flat=True).first()
    expected_sequence, prev_hash, checked = 1, GENESIS, 0
    checkpoint = LedgerCheckpoint.objects.order_by("-sequence").first()
    if checkpoint is not None:  # older events were purged under the retention policy
        problem = checkpoint_problem(checkpoint)
        if problem:
            return ChainReport(False, 0, checkpoint.sequence, checkpoint.hash, problem, checkpoint.sequence + 1, None)
        expected_sequence, prev_hash = checkpoint.sequence + 1, checkpoint.hash
    events = AccessEvent.objects.filter(sequence__isnull=False).order_by("sequence")
    for event in events.iterator(chunk_size=chunk_size):
        problem = ""
        sequence = cast(int, event.sequence)  # never NULL here (filtered above)
        if sequence > expected_sequence:
            problem = (
                f"event #{expected_sequence} is missing (deleted), or #{sequence} was inserted: the chain jumps from "
                f"#{expected_sequence - 1} to #{sequence}"
            )
        elif sequence < expected_sequence:
            problem = f"event #{sequence} appears twice or out of order (inserted): the chain was already at #{expected_sequence - 1}"
        elif event.prev_hash != prev_hash:
            problem = f"event #{sequence} does not follow event #{sequence - 1} (inserted or reordered)"
        elif event.compute_hash(prev_hash) != event.hash:
            problem = f"event #{sequence} (id {event.pk}) was edited: its content no longer matches its hash"
        if problem:
            return ChainReport(False, checked, expected_sequence - 1, prev_hash, problem, event.sequence, event.pk)
        prev_hash = event.hash
        expected_sequence += 1
        checked += 1
    if unsealed is not None:
        return ChainReport(
            False,
            checked,
            expected_sequence - 1,
            prev_hash,
            f"event id {unsealed} is outside the chain (inserted without a link)",
            None,
            unsealed,
        )
    return ChainReport(True, checked, expected_sequence - 1, prev_hash)


# A purge records the retention it ran under (AUDIT_RETENTION_DAYS then); none runs under a year (audit evidence
# is kept at least that long: services.audit.audit_purge refuses a shorter retention), so a record claiming less
# is not one a purge wrote. Lengthening the retention after a purge is allowed, so the value configured now is
# not the test. The purge decides by the database's clock and its event is stamped by the host's: an hour's slack.
RETENTION_FLOOR_DAYS = 365
CLOCK_SLACK = timedelta(hours=1)


def checkpoint_problem(checkpoint: LedgerCheckpoint) -> str:
    """What is wrong with the checkpoint the chain starts from; "" when a retention purge made it. A
    checkpoint row is not itself chained, so one written by hand (and the events before it deleted) would
    otherwise pass as a purge: the purge that made it records an ``audit.purged`` event in the chain after it,
    naming its sequence and hash, and purges only events older than the retention period it records (at least
    RETENTION_FLOOR_DAYS)."""
    purge = (
        AccessEvent.objects.filter(
            event_type=AccessEvent.Type.AUDIT_PURGED,
            sequence__gt=checkpoint.sequence,
            data__up_to_sequence=checkpoint.sequence,
        )
        .order_by("sequence")
        .first()
    )
    where = f"the retention checkpoint at #{checkpoint.sequence}"
    if purge is None:
        return (
            f"{where} has no audit.purged event recording it: events up to #{checkpoint.sequence} were deleted "
            "outside a retention purge"
        )
    recorded = purge.data.get("retention_days")
    if (
        purge.data.get("up_to_hash") != checkpoint.hash
        or purge.data.get("purged") != checkpoint.purged_count
        or not isinstance(recorded, int)
    ):
        return f"{where} does not match the audit.purged event #{purge.sequence} that should record it"
    if recorded < RETENTION_FLOOR_DAYS:
        return (
            f"event #{purge.sequence} purged events under a retention of {recorded} days: no purge runs under "
            f"{RETENTION_FLOOR_DAYS} days"
        )
    limit = purge.occurred_at - timedelta(days=recorded) + CLOCK_SLACK
    if checkpoint.purged_before > limit or purge.occurred_at > clock.now() + CLOCK_SLACK:
        return (
            f"{where} purged events from before {checkpoint.purged_before:%Y-%m-%d %H:%M}, inside the retention "
            f"period of event #{purge.sequence} ({purge.occurred_at:%Y-%m-%d %H:%M})"
        )
    return ""


def kept_head_problem(sequence: int, head_hash: str) -> str:
    """What is wrong with the ledger against a head kept outside the database (``verify_audit --head``);
    "" when the chain still holds that event with that hash. Run after ``verify_chain``: a chain that
    verifies and still holds the kept event unchanged extends the kept head. A chain rewritten from an
    earlier event on, or cut back past the kept head, verifies on its own, so this is the check that finds it."""
    if sequence == 0:  # kept before the first event
        return "" if head_hash == GENESIS else "head #0 is the empty chain's, whose hash is the genesis hash"
    checkpoint = LedgerCheckpoint.objects.order_by("-sequence").first()
    if checkpoint is not None and sequence <= checkpoint.sequence:
        if sequence == checkpoint.sequence:
            return "" if checkpoint.hash == head_hash else f"the retention checkpoint at #{sequence} has another hash"
        return (
            f"event #{sequence} was purged under the retention policy (the chain now starts after #{checkpoint.sequence}):"
            " compare a head kept after the purge"
        )
    stored = AccessEvent.objects.filter(sequence=sequence).values_list("hash", flat=True).first()
    if stored is None:
        last = (
            AccessEvent.objects.filter(sequence__isnull=False).order_by("-sequence").values_list("sequence", flat=True)
        )
        return f"event #{sequence} of the kept head is gone: the chain ends at #{last.first() or 0} (events deleted)"
    if stored != head_hash:
        return f"event #{sequence} no longer has the kept head's hash: the chain was rewritten at or before it"
    return ""
