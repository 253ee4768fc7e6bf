"""Checking activity seals (``manage.py verify_audit`` and the audit page's integrity check): every seal the
ledger records is recomputed from the activity rows that carry it. Read-only."""

import hashlib
from collections import Counter
from dataclasses import dataclass

from accessgov.models import AccessEvent, ActivityRecord

_FIELDS = ActivityRecord.HASHED_FIELDS


def seal_digest(rows) -> tuple[str, int, dict]:
    """SHA-256 over the canonical text of ``rows`` (value tuples in HASHED_FIELDS order, in id order), their
    number, and counts by kind and statement class. The one function sealing and verification share."""
    digest = hashlib.sha256()
    count = 0
    kinds: Counter = Counter()
    classes: Counter = Counter()
    kind_at, class_at = _FIELDS.index("kind"), _FIELDS.index("statement_class")
    canonical = ActivityRecord.canonical
    for values in rows:
        digest.update(canonical(values).encode())
        digest.update(b"\n")
        count += 1
        kinds[values[kind_at]] += 1
        if values[class_at]:
            classes[values[class_at]] += 1
    return (
        digest.hexdigest(),
        count,
        {"by_kind": dict(sorted(kinds.items())), "by_class": dict(sorted(classes.items()))},
    )


@dataclass(frozen=True)
class SealReport:
    ok: bool
    seals: int
    rows: int
    problem: str = ""
    seal_id: int | None = None
    grant_id: int | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def purged_through() -> int:
    """Seal ids up to this one had their rows purged (from the ledger's ``activity.purged`` events)."""
    through = 0
    for data in AccessEvent.objects.filter(event_type=AccessEvent.Type.ACTIVITY_PURGED).values_list("data", flat=True):
        through = max(through, int((data or {}).get("through_seal_id") or 0))
    return through


def verify_activity_seals(chunk_size: int = 5000) -> SealReport:
    """Recompute every seal in the ledger from its rows: a row edited, deleted, or added to a sealed set
    changes the hash or the count. Rows claiming a seal the ledger does not know are reported too. Seals
    whose rows the retention purge deleted (recorded in the ledger) are skipped."""
    through = purged_through()
    expected: dict[int, tuple[int, str, int | None]] = {}
    for grant_id, data in AccessEvent.objects.filter(event_type=AccessEvent.Type.ACTIVITY_SEALED).values_list(
        "grant_id", "data"
    ):
        seal_id = int(data["seal_id"])
        if seal_id > through:
            expected[seal_id] = (int(data["rows"]), data["hash"], grant_id)
    rows = (
        ActivityRecord.objects.filter(seal__isnull=False, seal_id__gt=through)
        .order_by("seal_id", "pk")
        .values_list("seal_id", *_FIELDS)
    )
    checked_rows = 0
    current: int | None = None
    batch: list[tuple] = []
    seen: set[int] = set()

    def check(seal_id: int, values: list[tuple]) -> SealReport | None:
        if seal_id not in expected:
            return SealReport(
                False,
                len(seen),
                checked_rows,
                f"activity rows claim seal #{seal_id}, which no ledger event records",
                seal_id,
            )
        count, content_hash, grant_id = expected[seal_id]
        digest, n, _ = seal_digest(values)
        if n != count:
            return SealReport(
                False,
                len(seen),
                checked_rows,
                f"seal #{seal_id} (grant #{grant_id}) covered {count} activity rows; {n} are there now (deleted or added)",
                seal_id,
                grant_id,
            )
        if digest != content_hash:
            return SealReport(
                False,
                len(seen),
                checked_rows,
                f"seal #{seal_id} (grant #{grant_id}): an activity row was edited (its content no longer matches the seal)",
                seal_id,
                grant_id,
            )
        return None

    for row in rows.iterator(chunk_size=chunk_size):
        seal_id, values = row[0], row[1:]
        if seal_id != current:
            if current is not None:
                problem = check(current, batch)
                if problem:
                    return problem
                seen.add(current)
            current, batch = seal_id, []
        batch.append(values)
        checked_rows += 1
    if current is not None:
        problem = check(current, batch)
        if problem:
            return problem
        seen.add(current)
    for seal_id, (count, _, grant_id) in sorted(expected.items()):
        if seal_id not in seen and count:
            return SealReport(
                False,
                len(seen),
                checked_rows,
                f"seal #{seal_id} (grant #{grant_id}) covered {count} activity rows; none are there now (deleted)",
                seal_id,
                grant_id,
            )
    return SealReport(True, len(expected), checked_rows)
