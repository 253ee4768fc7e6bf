"""Checking the ledger's hash chain (``services/audit.py``: ``manage.py verify_audit`` and the audit page)."""

from dataclasses import dataclass
from typing import cast

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
        expected_sequence, prev_hash = checkpoint.sequence + 1, checkpoint.hash
    events = AccessEvent.objects.filter(sequence__isnull=False).order_by("sequence")
    for event in events.iterator(chunk_size=chunk_size):
        problem = ""
        sequence = cast(int, event.sequence)  # never NULL here (filtered above)
        if sequence > expected_sequence:
            problem = f"event #{expected_sequence} is missing (deleted): the chain jumps to #{sequence}"
        elif sequence < expected_sequence:
            problem = f"event #{sequence} appears twice (inserted)"
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
