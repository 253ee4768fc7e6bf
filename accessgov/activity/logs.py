"""Parsing what targets report into ``Observed`` rows: PostgreSQL server log lines (jsonlog or csvlog)
carrying pgaudit's ``AUDIT:`` messages, and the ingest API's own records (sessions and statements a
target's tooling reports). Pure functions, no database: the ingest service attributes and stores.

Every text is made storable: NUL characters (which PostgreSQL text cannot hold) become U+FFFD, and each
field is cut to its column's length (statements to STATEMENT_MAX_CHARS, with a marker saying so).
"""

import csv
import ipaddress
import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache

from accessgov import inputs
from accessgov.activity.classify import classify, command_of

STATEMENT_MAX_CHARS = 100_000
LIMITS = {
    "principal": 200,
    "session_key": 100,
    "application": 200,
    "database": 200,
    "command": 60,
    "object_name": 300,
    "source_key": 200,
    "state": 20,
}
AUDIT_PREFIX = "AUDIT: "
PREVIOUSLY_LOGGED = "<previously logged>"


@dataclass(slots=True)
class Observed:
    """One session, statement or digest line before attribution (fields as in ActivityRecord)."""

    kind: str
    source: str
    principal: str
    occurred_at: datetime
    statement: str = ""
    command: str = ""
    statement_class: str = ""
    session_key: str = ""
    client_address: str | None = None
    application: str = ""
    database: str = ""
    object_name: str = ""
    ended_at: datetime | None = None
    state: str = ""
    calls: int = 1
    rows: int | None = None
    source_key: str | None = None
    grant_hint: int | None = None  # the ingest API's grant_id: whose login it was (still attributed by time)
    grant_id: int | None = None  # attributed to this grant outright (a digest taken at its removal)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _storable(value: str) -> str:
    """What was observed, kept as evidence: a NUL (PostgreSQL refuses it) or an unpaired surrogate (no UTF-8)
    becomes U+FFFD instead of costing the whole batch."""
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    if not value.isascii():
        value = _SURROGATE.sub("\ufffd", value)
    return value


def clean(value: str, limit: int) -> str:
    """Storable text (``_storable``), at most ``limit`` characters."""
    return _storable(value)[:limit]


def clean_statement(value: str) -> str:
    value = _storable(value)
    if len(value) > STATEMENT_MAX_CHARS:
        cut = len(value) - STATEMENT_MAX_CHARS
        value = value[:STATEMENT_MAX_CHARS] + f" …[{cut} more characters not stored]"
    return value


@lru_cache(maxsize=4096)
def address(value: str | None) -> str | None:
    """An IP address, or None (a Unix socket shows as "[local]", a host name is not an address). Cached: a
    log holds few distinct addresses, and parsing one costs more than the rest of its line."""
    if not value or not isinstance(value, str) or value[0] == "[":
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


# What a record's time may be: the windows around it are computed in dates, and nothing this portal governs
# happened before 2000 or will after 2999 (a year-1 time overflowed computing its window: a 500).
EARLIEST = datetime.combine(inputs.MIN_DATE, datetime.min.time(), tzinfo=UTC)
LATEST = datetime.combine(inputs.MAX_DATE, datetime.max.time(), tzinfo=UTC)


def _within_range(at: datetime) -> datetime:
    if not EARLIEST <= at <= LATEST:
        raise ValueError(f"time {at.isoformat()} is out of range ({inputs.MIN_DATE} to {inputs.MAX_DATE})")
    return at


def log_time(value: str) -> datetime:
    """A server log time: "2026-12-04 20:55:10.890 UTC" (or a numeric offset such as "+02"). Zone
    abbreviations other than UTC/GMT are ambiguous: the server should log in UTC (docs/ACTIVITY.md)."""
    stamp, _, zone = value.rpartition(" ")
    if zone in ("UTC", "GMT", "Z"):
        return _within_range(datetime.fromisoformat(stamp).replace(tzinfo=UTC))
    if zone[:1] in "+-" and inputs.ascii_digits(zone[1:3]):
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
        return _within_range(datetime.fromisoformat(stamp).replace(tzinfo=timezone(sign * offset)))
    raise ValueError(f"log time zone {zone!r} is ambiguous: set log_timezone = 'UTC' on the server")


def _audit_fields(message: str) -> list[str]:
    """pgaudit's message after "AUDIT: ": AUDIT_TYPE, STATEMENT_ID, SUBSTATEMENT_ID, CLASS, COMMAND,
    OBJECT_TYPE, OBJECT_NAME, STATEMENT, PARAMETER (CSV, the statement quoted when it needs to be)."""
    text = message[len(AUDIT_PREFIX) :]
    # Nothing quoted (pgaudit quotes a statement holding a comma, a quote or a line break): a plain split.
    fields = next(csv.reader([text]), []) if '"' in text else text.split(",")
    if len(fields) < 8:
        raise ValueError("not a pgaudit message")
    return fields


def _from_audit(
    message: str,
    *,
    principal: str,
    at: datetime,
    session_key: str,
    line_key: str,
    client: str | None,
    application: str,
    database: str,
) -> Observed:
    fields = _audit_fields(message)
    audit_class, command, object_name, statement = fields[3], fields[4], fields[6], fields[7]
    if statement == PREVIOUSLY_LOGGED:
        statement = ""
    command = command or command_of(statement)
    return Observed(
        kind="statement",
        source="pgaudit",
        principal=clean(principal, LIMITS["principal"]),
        occurred_at=at,
        statement=clean_statement(statement),
        command=clean(command.upper(), LIMITS["command"]),
        statement_class=classify(command.upper(), statement, audit_class),
        session_key=clean(session_key, LIMITS["session_key"]),
        client_address=address(client),
        application=clean(application, LIMITS["application"]),
        database=clean(database, LIMITS["database"]),
        object_name=clean(object_name, LIMITS["object_name"]),
        source_key=clean(line_key, LIMITS["source_key"]),
    )


def parse_jsonlog(entry: dict) -> Observed | None:
    """One jsonlog entry (a dict): an Observed statement for a pgaudit line, None for any other line.
    Raises ValueError for a line that is not a server log entry."""
    message = entry.get("message")
    if not isinstance(message, str) or "timestamp" not in entry:
        raise ValueError("not a PostgreSQL jsonlog entry (no timestamp or message)")
    if not message.startswith(AUDIT_PREFIX):
        return None
    user = entry.get("user")
    if not isinstance(user, str) or not user:
        return None  # background workers have no user
    session_id = str(entry.get("session_id", ""))
    return _from_audit(
        message,
        principal=user,
        at=log_time(str(entry["timestamp"])),
        session_key=session_id,
        line_key=f"{session_id}:{entry.get('line_num', '')}",
        client=entry.get("remote_host"),
        application=str(entry.get("application_name") or ""),
        database=str(entry.get("dbname") or ""),
    )


def parse_jsonlog_line(line: str | bytes) -> Observed | None:
    try:
        entry = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("not JSON") from exc
    if not isinstance(entry, dict):
        raise ValueError("not a JSON object")
    return parse_jsonlog(entry)


# csvlog columns (PostgreSQL 14+): the ones read here, by position.
CSV_TIME, CSV_USER, CSV_DB, CSV_FROM, CSV_SESSION, CSV_LINE, CSV_MESSAGE, CSV_APP = 0, 1, 2, 4, 5, 6, 13, 22


def parse_csvlog(row: list[str]) -> Observed | None:
    """One csvlog record (already split by the csv module); None when it is not a pgaudit line."""
    if len(row) < 23:
        raise ValueError("not a PostgreSQL csvlog record")
    message = row[CSV_MESSAGE]
    if not message.startswith(AUDIT_PREFIX) or not row[CSV_USER]:
        return None
    client = row[CSV_FROM].rsplit(":", 1)[0] if row[CSV_FROM] else None
    return _from_audit(
        message,
        principal=row[CSV_USER],
        at=log_time(row[CSV_TIME]),
        session_key=row[CSV_SESSION],
        line_key=f"{row[CSV_SESSION]}:{row[CSV_LINE]}",
        client=client,
        application=row[CSV_APP],
        database=row[CSV_DB],
    )


# --- The ingest API's own records ------------------------------------------------------------------

RECORD_FIELDS = {
    "type",
    "at",
    "grant_id",
    "principal",
    "statement",
    "command",
    "session_id",
    "client_address",
    "application",
    "database",
    "object",
    "ended_at",
    "rows",
    "id",
}


def _text(entry: dict, name: str, limit: int, *, required: bool = False) -> str:
    value = entry.get(name)
    if value is None:
        if required:
            raise ValueError(f"{name} is required")
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be text")
    return clean(value, limit)


def _instant(value, name: str) -> datetime:
    if not isinstance(value, str) or len(value) > 40:
        raise ValueError(f"{name} must be an ISO 8601 time with its offset")
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"{name} must be an ISO 8601 time with its offset") from exc
    if at.tzinfo is None:
        raise ValueError(f"{name} needs an offset (e.g. Z or +00:00)")
    try:
        return _within_range(at)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from exc


def parse_record(entry) -> Observed | None:
    """One record sent to ``POST /api/v1/activity/``: a PostgreSQL jsonlog entry (what a log shipper
    forwards), or ``{"type": "statement" | "session", "at", "principal" | "grant_id", …}`` (what a
    target's tooling reports). None for a jsonlog line that is not a pgaudit line. Raises ValueError
    saying what is wrong. The class of a statement is always computed here, never taken from the sender."""
    if not isinstance(entry, dict):
        raise ValueError("each record is a JSON object")
    if "type" not in entry and "message" in entry:
        return parse_jsonlog(entry)
    unknown = sorted(set(entry) - RECORD_FIELDS)
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(unknown[:5])}")
    kind = entry.get("type")
    if kind not in ("statement", "session"):
        raise ValueError('type is "statement" or "session"')
    grant_id = entry.get("grant_id")
    if grant_id is not None and (isinstance(grant_id, bool) or not isinstance(grant_id, int) or grant_id < 1):
        raise ValueError("grant_id must be a positive integer")
    principal = _text(entry, "principal", LIMITS["principal"])
    if not principal and grant_id is None:
        raise ValueError("principal or grant_id is required")
    rows = entry.get("rows")
    if rows is not None and (isinstance(rows, bool) or not isinstance(rows, int) or not 0 <= rows < 2**62):
        raise ValueError("rows must be a non-negative integer")
    record_id = _text(entry, "id", 150)
    client = entry.get("client_address")
    if client is not None and address(client if isinstance(client, str) else None) is None:
        raise ValueError("client_address must be an IP address")
    statement = _text(entry, "statement", STATEMENT_MAX_CHARS * 2)
    command = _text(entry, "command", LIMITS["command"]).upper() or command_of(statement)
    session_key = _text(entry, "session_id", LIMITS["session_key"])
    ended = entry.get("ended_at")
    observed = Observed(
        kind=kind,
        source="ingest",
        principal=principal,
        occurred_at=_instant(entry.get("at"), "at"),
        statement=clean_statement(statement),
        command=command if kind == "statement" else "",
        statement_class=classify(command, statement) if kind == "statement" else "",
        session_key=session_key,
        client_address=address(client),
        application=_text(entry, "application", LIMITS["application"]),
        database=_text(entry, "database", LIMITS["database"]),
        object_name=_text(entry, "object", LIMITS["object_name"]),
        ended_at=_instant(ended, "ended_at") if ended is not None else None,
        state="ended" if kind == "session" and ended is not None else "",
        rows=rows,
        source_key=f"api:{record_id}" if record_id else None,
        grant_hint=grant_id,
    )
    if observed.ended_at is not None and observed.ended_at < observed.occurred_at:
        raise ValueError("ended_at is before at")
    return observed


# --- Reading a server log file from where the last run stopped -------------------------------------


def read_new(path: str, cursor: dict | None, *, max_bytes: int) -> tuple[bytes, dict]:
    """The complete lines written to ``path`` since ``cursor`` ({"inode", "offset"}), at most about
    ``max_bytes``, and the cursor after them. A file with a new inode, or shorter than the offset (it was
    rotated or truncated), is read from its start. An incomplete last line is left for the next run."""
    stat = os.stat(path)
    offset = 0
    if cursor and cursor.get("inode") == stat.st_ino and cursor.get("offset", 0) <= stat.st_size:
        offset = int(cursor["offset"])
    with open(path, "rb") as handle:
        handle.seek(offset)
        data = handle.read(max_bytes)
    end = data.rfind(b"\n") + 1
    return data[:end], {"inode": stat.st_ino, "offset": offset + end}


def split_csvlog(data: bytes) -> tuple[list[list[str]], int]:
    """csvlog records in ``data`` and how many bytes they took. A record may span lines (a quoted statement
    keeps its newlines): a line ends a record when the record's double quotes so far are balanced. A record
    cut at the end of ``data`` is left for the next run."""
    records: list[list[str]] = []
    consumed = pending_start = 0
    quotes = 0
    position = 0
    for line in data.splitlines(keepends=True):
        position += len(line)
        quotes += line.count(b'"')
        if quotes % 2 or not line.endswith(b"\n"):
            continue
        text = data[pending_start:position].decode("utf-8", errors="replace")
        records.extend(csv.reader([text.rstrip("\r\n")]))
        consumed = pending_start = position
        quotes = 0
    return records, consumed
