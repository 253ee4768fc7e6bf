"""The period's extract of the hash-chained ledger (``ledger/events.jsonl``), checked as it is written.

The extract is a contiguous stretch of the chain: from the first event that occurred at or after the
period's start up to (not including) the first event at or after its end, never past the head read at
the start of the build. Packs of consecutive periods therefore meet exactly: each event is in exactly one
of them, and a pack's anchor (the hash its first event follows) is the previous pack's period-end hash.
Events written within milliseconds of a boundary by concurrent transactions can sit in the neighbouring
pack (the chain's order is the ledger lock's order, not the clock's).

Each line is one event as JSON: the eleven fields its hash covers (``AccessEvent.HASHED_FIELDS``, in
their canonical form) plus ``prev_hash`` and ``hash``. The verifier recomputes every hash from the line.
"""

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO

from django.db import connection
from django.db.models import Max, Min

from accessgov.ledger import hashing
from accessgov.ledger.hashing import GENESIS
from accessgov.models import AccessEvent, LedgerCheckpoint

FILE = "ledger/events.jsonl"
CHUNK = 5000
_encode = hashing.canonical_json  # the ledger's canonical JSON (comparisons)


@dataclass
class LedgerRange:
    first_sequence: int
    last_sequence: int  # first - 1 when the period has no events
    head_sequence: int
    head_hash: str
    anchor: str  # "genesis", "event" or "checkpoint"
    anchor_hash: str
    checkpoint: dict | None
    problem: str = ""

    @property
    def events(self) -> int:
        return max(0, self.last_sequence - self.first_sequence + 1)


def head() -> tuple[int, str]:
    last = AccessEvent.objects.filter(sequence__isnull=False).aggregate(Max("sequence"))["sequence__max"]
    if last is None:
        return 0, GENESIS
    return last, AccessEvent.objects.values_list("hash", flat=True).get(sequence=last)


def _boundary(moment: datetime, head_sequence: int) -> int:
    """The sequence of the first event at or after ``moment`` (head + 1 when there is none)."""
    found = AccessEvent.objects.filter(occurred_at__gte=moment, sequence__lte=head_sequence).aggregate(Min("sequence"))[
        "sequence__min"
    ]
    return head_sequence + 1 if found is None else found


def period_range(start: datetime, end: datetime) -> LedgerRange:
    head_sequence, head_hash = head()
    first = _boundary(start, head_sequence)
    last = _boundary(end, head_sequence) - 1
    if last < first - 1:
        last = first - 1
    checkpoint = LedgerCheckpoint.objects.filter(sequence__lt=max(first, 1)).order_by("-sequence").first()
    checkpoint_info = None
    if checkpoint is not None:
        checkpoint_info = {
            "sequence": checkpoint.sequence,
            "hash": checkpoint.hash,
            "purged_before": checkpoint.purged_before.isoformat(),
            "purged_count": checkpoint.purged_count,
        }
    problem = ""
    if first <= 1:
        first, anchor, anchor_hash = 1, "genesis", GENESIS
    else:
        previous = AccessEvent.objects.filter(sequence=first - 1).values_list("hash", flat=True).first()
        if previous is not None:
            anchor, anchor_hash = "event", previous
        elif checkpoint is not None and checkpoint.sequence == first - 1:
            anchor, anchor_hash = "checkpoint", checkpoint.hash
        else:
            # The events just before the period were purged and no checkpoint names the last of them.
            anchor, anchor_hash = "missing", GENESIS
            problem = (
                f"event #{first - 1}, which the period's first event follows, is missing and no checkpoint covers it"
            )
    # Events at the start of the period purged under retention: the chain resumes at the checkpoint.
    latest = LedgerCheckpoint.objects.order_by("-sequence").first()
    if latest is not None and latest.sequence >= first:
        first, anchor, anchor_hash = latest.sequence + 1, "checkpoint", latest.hash
        checkpoint_info = {
            "sequence": latest.sequence,
            "hash": latest.hash,
            "purged_before": latest.purged_before.isoformat(),
            "purged_count": latest.purged_count,
        }
        last = max(last, first - 1)
    return LedgerRange(first, last, head_sequence, head_hash, anchor, anchor_hash, checkpoint_info, problem)


def _rows_orm(span: LedgerRange) -> Iterator[tuple[int, str, str, str]]:
    """(sequence, canonical JSON text, prev_hash, hash) of each event in the range, in order, through the ORM."""
    fields = (*AccessEvent.HASHED_FIELDS, "prev_hash", "hash")
    rows = (
        AccessEvent.objects.filter(sequence__gte=span.first_sequence, sequence__lte=span.last_sequence)
        .order_by("sequence")
        .values(*fields)
        .iterator(chunk_size=CHUNK)
    )
    canonical, text_of = hashing.canonical_content, hashing.canonical_json
    for row in rows:
        yield row["sequence"], text_of(canonical(row)), row["prev_hash"], row["hash"]


# PostgreSQL twin of _rows_orm (tests/services/test_evidence_pack.py proves both give the same lines): the rows come
# from one COPY in text format and each line is taken apart here, with only the JSON data parsed; no
# per-value driver or Django conversion. 950k events: 35 s through the ORM -> 19 s at load average 9. (Windows of
# 5,000 events as one JSON array each, decoded by Python's C decoder, measured slower: 15-18 s against 10-13 s.)
_PG_COPY = (
    "COPY (SELECT sequence, occurred_at, event_type, actor_id, actor_label, client_address, reason, "
    "access_request_id, grant_id, role_id, data, prev_hash, hash FROM {table} "
    "WHERE sequence BETWEEN {first:d} AND {last:d} ORDER BY sequence) TO STDOUT"
)
_COPY_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}
_COPY_ESCAPE = re.compile(r"\\(.)")


def _copy_text(field: str) -> str | None:
    """A COPY text-format field as its value: \\N is NULL, backslash escapes undone."""
    if field == "\\N":
        return None
    if "\\" in field:
        return _COPY_ESCAPE.sub(lambda m: _COPY_ESCAPES.get(m.group(1), m.group(1)), field)
    return field


def _utc_text(value: str) -> str:
    """PostgreSQL's timestamptz text in UTC ("2025-10-30 21:12:59.5+00") in the ledger's canonical form
    ("2025-10-30T21:12:59.500000+00:00", as hashing.utc_isoformat writes it)."""
    if value.endswith("+00"):
        day, _, clock = value[:-3].partition(" ")
        whole, _, fraction = clock.partition(".")
        return f"{day}T{whole}.{fraction.ljust(6, '0')}+00:00"
    return datetime.fromisoformat(value).astimezone(UTC).isoformat(timespec="microseconds")


def _null_or_text(value: str) -> str:
    return "null" if value == "\\N" else hashing.json_string(_copy_text(value))


def _rows_postgresql(span: LedgerRange) -> Iterator[tuple[int, str, str, str]]:
    """The canonical text is assembled field by field in the canonical key order (the keys sorted, strings
    by the same C escaper json uses, numbers as PostgreSQL wrote them, the data re-encoded with sorted keys)."""
    loads, text, utc, data_json, quote = json.loads, _copy_text, _utc_text, _encode, hashing.json_string
    table = connection.ops.quote_name(AccessEvent._meta.db_table)
    sql = _PG_COPY.format(table=table, first=span.first_sequence, last=span.last_sequence)
    null = "\\N"
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL TimeZone TO 'UTC'")
        with cursor.cursor.copy(sql) as copy:
            rest = b""
            for chunk in copy:
                lines = (rest + bytes(chunk)).split(b"\n")
                rest = lines.pop()
                for line in lines:
                    seq, at, kind, actor, label, address, reason, request, grant, role, data, prev, stored = (
                        line.decode().split("\t")
                    )
                    canonical = (
                        f'{{"access_request_id":{"null" if request == null else request},'
                        f'"actor_id":{"null" if actor == null else actor},'
                        f'"actor_label":{quote(text(label))},'
                        f'"client_address":{_null_or_text(address)},'
                        f'"data":{data_json(loads(text(data)))},'
                        f'"event_type":{quote(text(kind))},'
                        f'"grant_id":{"null" if grant == null else grant},'
                        f'"occurred_at":{quote(utc(at))},'
                        f'"reason":{quote(text(reason))},'
                        f'"role_id":{"null" if role == null else role},'
                        f'"sequence":{seq}}}'
                    )
                    yield int(seq), canonical, prev, stored


def extract_rows(span: LedgerRange) -> Iterator[tuple[int, str, str, str]]:
    """(sequence, canonical JSON text, prev_hash, hash) of each event of the range in order: through COPY on
    PostgreSQL inside the build's snapshot transaction, through the ORM otherwise."""
    if connection.vendor == "postgresql" and connection.in_atomic_block:
        return _rows_postgresql(span)
    return _rows_orm(span)


def write_extract(out: BinaryIO, span: LedgerRange, progress: Callable[[int], None]) -> tuple[str, str]:
    """Write the extract's lines to ``out`` and check the chain as it goes. Returns (the hash of the last
    event, the first problem found or ""). A broken chain is written as stored and named: the pack then
    shows what the database held, and its verification fails at that line."""
    hash_of = hashing.hash_canonical
    prev_hash, expected, problem = span.anchor_hash, span.first_sequence, span.problem
    buffer: list[str] = []
    for sequence, text, stored_prev, stored in extract_rows(span):
        if not problem:
            if sequence != expected:
                problem = (
                    f"event #{expected} is missing (deleted), or #{sequence} was inserted: the chain jumps from "
                    f"#{expected - 1} to #{sequence}"
                )
            elif stored_prev != prev_hash:
                problem = f"event #{sequence} does not follow event #{sequence - 1}"
            elif hash_of(text, prev_hash) != stored:
                problem = f"event #{sequence} was edited: its content no longer matches its hash"
        buffer.append(f'{text[:-1]},"prev_hash":"{stored_prev}","hash":"{stored}"}}\n')
        prev_hash, expected = stored, sequence + 1
        if len(buffer) == CHUNK:
            out.write("".join(buffer).encode())
            buffer.clear()
            progress(expected - span.first_sequence)
    if buffer:
        out.write("".join(buffer).encode())
    if not problem and expected != span.last_sequence + 1:
        problem = f"event #{expected} is missing (deleted): the extract ends before #{span.last_sequence}"
    progress(span.events)
    return prev_hash, problem


def compare_with_database(pack_path: str, manifest_ledger: dict) -> list[str]:
    """The pack's ledger extract against this database's ledger, event by event: every event of the pack
    must still be stored with the same content and hash, and the event the pack names as the head must
    still carry that hash. Returns the problems, naming each event (at most 20)."""
    import json
    import zipfile

    problems: list[str] = []
    first, last = manifest_ledger.get("first_sequence"), manifest_ledger.get("last_sequence")
    if first is None or last is None:
        return ["the manifest names no ledger range"]
    fields = (*AccessEvent.HASHED_FIELDS, "prev_hash", "hash")
    stored = (
        AccessEvent.objects.filter(sequence__gte=first, sequence__lte=last)
        .order_by("sequence")
        .values(*fields)
        .iterator(chunk_size=CHUNK)
    )
    canonical = hashing.canonical_content
    current = next(stored, None)
    with zipfile.ZipFile(pack_path) as archive, archive.open(manifest_ledger.get("file", FILE)) as lines:
        for raw in lines:
            row = json.loads(raw)
            sequence = row["sequence"]
            while current is not None and current["sequence"] < sequence:
                problems.append(f"event #{current['sequence']} is in the database but not in the pack (inserted)")
                current = next(stored, None)
            if current is None or current["sequence"] != sequence:
                problems.append(f"event #{sequence} is in the pack but missing from the database (deleted)")
            else:
                content = canonical(current)
                pack_content = {key: row[key] for key in AccessEvent.HASHED_FIELDS}
                if _encode(content) != _encode(pack_content) or current["hash"] != row["hash"]:
                    changed = sorted(
                        k for k in AccessEvent.HASHED_FIELDS if _encode(content[k]) != _encode(pack_content[k])
                    )
                    what = ", ".join(changed) if changed else "hash"
                    problems.append(f"event #{sequence} differs from the pack: {what} edited in the database")
                current = next(stored, None)
            if len(problems) >= 20:
                return problems
    while current is not None and len(problems) < 20:
        problems.append(f"event #{current['sequence']} is in the database but not in the pack (inserted)")
        current = next(stored, None)
    head_sequence, head_hash = manifest_ledger.get("head_sequence"), manifest_ledger.get("head_hash")
    if head_sequence:
        now_hash = AccessEvent.objects.filter(sequence=head_sequence).values_list("hash", flat=True).first()
        if now_hash is not None and now_hash != head_hash:
            problems.append(f"event #{head_sequence}, the head when the pack was built, no longer has the head's hash")
    return problems
