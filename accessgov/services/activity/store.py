"""Storing observed activity: attribute each row to a grant (target + login role + time window), find what
goes beyond the grant, and write rows, per-grant totals, findings and their events in one transaction.

Set-based: the rows of a batch are written with one COPY on PostgreSQL (``bulk_create`` on SQLite); the
per-grant totals with one upsert; findings with one query for those already open plus one insert and one
chained event write for new ones. A per-system transaction-level advisory lock serializes writers of one
system (the sampler, a file reader, pushes), so de-duplication by ``source_key`` is exact.
"""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Q

from accessgov.activity import classify
from accessgov.activity.config import CaptureSettings, system_settings
from accessgov.activity.logs import Observed
from accessgov.connectors import connector_for
from accessgov.exceptions import PolicyViolation
from accessgov.models import (
    AccessEvent,
    ActivityFinding,
    ActivityRecord,
    Grant,
    GrantActivity,
    Role,
    System,
    User,
)
from accessgov.services.events import event_record_rows

Kind = ActivityFinding.Kind
Level = Role.AccessLevel
# Activity by a grantee's login within this long after the grant ended belongs to that grant (as a finding:
# activity after the end); later, it is activity without a grant.
AFTER_END_WINDOW = timedelta(hours=1)
ADVISORY_CLASS = 0x41435456  # "ACTV": pg_advisory_xact_lock(class, system id)
PEOPLE_CACHE_SECONDS = 60
_LEVEL_RANK = {Level.ADMIN: 3, Level.READ_WRITE: 2, Level.READ_ONLY: 1, Level.UNDECLARED: 0}
_READING = ("read", "look", "query", "querie", "investigat", "inspect", "check", "review", "analy", "debug")
_READING += ("diagnos", "audit", "report", "select", "explain", "slow", "monitor", "verify")
_WRITING = ("writ", "fix", "updat", "insert", "delet", "backfill", "migrat", "repair", "correct", "patch")
_WRITING += ("chang", "modif", "remov", "clean", "restor", "import", "load", "kill", "drop", "alter", "creat")
_WRITING += ("grant", "revok", "truncat", "reset", "rotat", "purg", "edit", "set ", "add ")


@dataclass(slots=True)
class Window:
    """A grant's time at the target, for attribution."""

    grant_id: int
    user_id: int
    role_id: int
    access_request_id: int
    level: str
    start: datetime
    end: datetime
    reads_only: bool  # the request's reason speaks only of reading


@dataclass
class StoreResult:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    ignored: int = 0
    attributed: int = 0
    without_grant: int = 0
    findings_raised: int = 0
    record_ids: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {
            "received": self.received,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "ignored": self.ignored,
            "attributed": self.attributed,
            "without_grant": self.without_grant,
            "findings_raised": self.findings_raised,
        }


def reason_speaks_only_of_reading(justification: str) -> bool:
    """A heuristic over the request's reason: it names reading ("investigate slow queries") and nothing
    that changes data ("fix", "backfill", "delete", …). Unclear reasons count as not read-only."""
    text = justification.lower()
    if any(word in text for word in _WRITING):
        return False
    return any(word in text for word in _READING)


def people_principals(system: System) -> dict[str, int]:
    """Login role → user id for every AccessGov account, under the system's principal template (cached a
    minute per process: the sampler asks every few seconds)."""
    connector = connector_for(system)
    template = (system.connector_config or {}).get("principal_template", "{username}")
    key = f"activity:people:{system.pk}:{template}"
    found = cache.get(key)
    if found is None:
        found = {connector.principal_for(name): pk for pk, name in User.objects.values_list("pk", "username")}
        cache.set(key, found, PEOPLE_CACHE_SECONDS)
    return found


def grant_windows(system: System, since: datetime, until: datetime) -> dict[str, list[Window]]:
    """Login role → the windows of the system's grants that overlap [since - AFTER_END_WINDOW, until]:
    from the start to the end (``expires_at`` while active, ``ended_at`` once ended). Grants never
    active (scheduled, or revoked before their start) have no window."""
    connector = connector_for(system)
    rows = (
        Grant.objects.filter(role__system=system, starts_at__lte=until)
        .filter(Q(ended_at__isnull=True) | Q(ended_at__gte=since - AFTER_END_WINDOW))
        .exclude(status=Grant.Status.SCHEDULED)
        .exclude(status=Grant.Status.REVOKED, activated_at__isnull=True)
        .values_list(
            "pk",
            "user_id",
            "user__username",
            "role_id",
            "access_request_id",
            "role__access_level",
            "starts_at",
            "expires_at",
            "ended_at",
            "access_request__justification",
        )
    )
    windows: dict[str, list[Window]] = defaultdict(list)
    for pk, user_id, username, role_id, request_id, level, starts_at, expires_at, ended_at, why in rows:
        end = ended_at or expires_at
        windows[connector.principal_for(username)].append(
            Window(pk, user_id, role_id, request_id, level, starts_at, end, reason_speaks_only_of_reading(why))
        )
    for entries in windows.values():
        entries.sort(key=lambda w: w.start)
    return windows


def _fixed_windows(system: System, grant_ids: set[int]) -> dict[int, Window]:
    """The windows of grants named outright (digest rows), whatever the time."""
    if not grant_ids:
        return {}
    rows = Grant.objects.filter(pk__in=grant_ids, role__system=system).values_list(
        "pk",
        "user_id",
        "role_id",
        "access_request_id",
        "role__access_level",
        "starts_at",
        "expires_at",
        "ended_at",
        "access_request__justification",
    )
    return {
        pk: Window(
            pk,
            user_id,
            role_id,
            request_id,
            level,
            starts_at,
            ended_at or expires_at,
            reason_speaks_only_of_reading(why),
        )
        for pk, user_id, role_id, request_id, level, starts_at, expires_at, ended_at, why in rows
    }


def attribute(windows: list[Window], at: datetime) -> tuple[Window | None, bool]:
    """The grant ``at`` belongs to, and whether it came after that grant's end. Inside several grants at
    once (two roles of one system), the most permissive one (so a finding is never raised wrongly)."""
    inside = [w for w in windows if w.start <= at < w.end]
    if len(inside) == 1:  # nearly always: no ranking to do
        return inside[0], False
    if inside:
        return max(inside, key=lambda w: (_LEVEL_RANK.get(w.level, 0), w.start)), False
    ended = [w for w in windows if w.end <= at < w.end + AFTER_END_WINDOW]
    if ended:
        return max(ended, key=lambda w: w.end), True
    return None, False


def findings_for(row: Observed, window: Window | None, after_end: bool, capture: CaptureSettings) -> list[str]:
    """The finding kinds one row raises (empty: activity within what was granted)."""
    kinds = []
    if window is None:
        kinds.append(Kind.NO_GRANT)
    else:
        if after_end:
            kinds.append(Kind.AFTER_END)
        shared = row.kind == "digest" and row.state == "shared"
        cls = row.statement_class
        if cls and not shared:
            if window.level == Level.READ_ONLY and cls == classify.WRITE:
                kinds.append(Kind.WRITE_UNDER_READ_ONLY)
            if window.level in (Level.READ_ONLY, Level.READ_WRITE):
                if cls == classify.DDL:
                    kinds.append(Kind.DDL)
                elif cls == classify.PRIVILEGE:
                    kinds.append(Kind.PRIVILEGE)
            if window.level == Level.READ_WRITE and cls == classify.WRITE and window.reads_only:
                kinds.append(Kind.BEYOND_REASON)
    if not capture.address_expected(row.client_address):
        kinds.append(Kind.UNEXPECTED_ADDRESS)
    return kinds


_DETAIL = {
    Kind.NO_GRANT: "{principal} was active on {system} without a grant.",
    Kind.AFTER_END: "{principal} was active on {system} after grant #{grant} ended.",
    Kind.WRITE_UNDER_READ_ONLY: "Writes under the read-only grant #{grant}.",
    Kind.DDL: "Schema changes under grant #{grant} ({level}).",
    Kind.PRIVILEGE: "Privilege or role changes under grant #{grant} ({level}).",
    Kind.UNEXPECTED_ADDRESS: "{principal} connected to {system} from an address outside its expected networks.",
    Kind.BEYOND_REASON: "Writes under grant #{grant}, whose request's reason speaks only of reading.",
}


def _lock_system(system_id: int) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [ADVISORY_CLASS, system_id])


def _existing_keys(system_id: int, keys: list[str]) -> set[str]:
    if not keys:
        return set()
    if connection.vendor == "postgresql":
        table = connection.ops.quote_name(ActivityRecord._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT source_key FROM {table} WHERE system_id = %s AND source_key = ANY(%s)",  # noqa: S608 - fixed SQL
                [system_id, keys],
            )
            return {key for (key,) in cursor.fetchall()}
    found: set[str] = set()
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        found.update(
            ActivityRecord.objects.filter(system_id=system_id, source_key__in=chunk).values_list(
                "source_key", flat=True
            )
        )
    return found


_COPY_COLUMNS = (*ActivityRecord.HASHED_FIELDS, "ingested_at")  # what a seal covers, and when it came


def _write(rows: list[tuple]) -> list[int]:
    """Write ``rows`` (values in _COPY_COLUMNS order, id None) and return their ids in order."""
    if not rows:
        return []
    if connection.vendor == "postgresql":
        table = ActivityRecord._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT nextval((SELECT pg_get_serial_sequence(%s, 'id')::regclass)) FROM generate_series(1, %s)",
                [table, len(rows)],
            )
            ids = sorted(pk for (pk,) in cursor.fetchall())
            columns = ", ".join(connection.ops.quote_name(name) for name in _COPY_COLUMNS)
            with cursor.cursor.copy(f"COPY {connection.ops.quote_name(table)} ({columns}) FROM STDIN") as copy:
                write_row = copy.write_row
                for pk, row in zip(ids, rows, strict=True):
                    write_row((pk, *row[1:]))
        return ids
    objects = ActivityRecord.objects.bulk_create(
        [ActivityRecord(**dict(zip(_COPY_COLUMNS[1:], row[1:], strict=True))) for row in rows], batch_size=500
    )
    return [obj.pk for obj in objects]


_COUNTERS = ("session_count", "statement_count", "read_count", "write_count", "ddl_count", "privilege_count")
_COUNTERS += ("other_count", "digest_calls", "finding_count")
_CLASS_COUNTER = {
    classify.READ: "read_count",
    classify.WRITE: "write_count",
    classify.DDL: "ddl_count",
    classify.PRIVILEGE: "privilege_count",
}


def grant_totals_add(totals: dict[int, dict[str, Any]]) -> None:
    """Add to the per-grant totals (creating rows as needed) with one upsert: counters are added, first and
    last activity widened. Works on PostgreSQL and SQLite (both have INSERT … ON CONFLICT)."""
    if not totals:
        return
    table = connection.ops.quote_name(GrantActivity._meta.db_table)
    least, greatest = ("LEAST", "GREATEST") if connection.vendor == "postgresql" else ("MIN", "MAX")
    columns = [
        "grant_id",
        "levels",
        "capture_error",
        "late_activity",
        *_COUNTERS,
        "first_activity_at",
        "last_activity_at",
    ]
    updates = [f"{c} = {table}.{c} + excluded.{c}" for c in _COUNTERS]
    updates.append(
        f"first_activity_at = {least}(COALESCE({table}.first_activity_at, excluded.first_activity_at), "
        "COALESCE(excluded.first_activity_at, " + f"{table}.first_activity_at))"
    )
    # Rows for a grant already sealed: flag it, the next sweep seals them (no scan of the activity table).
    updates.append(f"late_activity = CASE WHEN {table}.sealed_at IS NULL THEN {table}.late_activity ELSE TRUE END")
    updates.append(
        f"last_activity_at = {greatest}(COALESCE({table}.last_activity_at, excluded.last_activity_at), "
        "COALESCE(excluded.last_activity_at, " + f"{table}.last_activity_at))"
    )
    placeholders = "(" + ", ".join(["%s"] * len(columns)) + ")"
    params: list[Any] = []
    for grant_id, values in sorted(totals.items()):
        params += [grant_id, "[]", "", False]
        params += [values.get(c, 0) for c in _COUNTERS]
        params += [
            connection.ops.adapt_datetimefield_value(values.get("first")),
            connection.ops.adapt_datetimefield_value(values.get("last")),
        ]
    sql = (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES "  # noqa: S608 - fixed SQL; values are bound params
        + ", ".join([placeholders] * len(totals))
        + f" ON CONFLICT (grant_id) DO UPDATE SET {', '.join(updates)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def activity_store(system: System, observed: list[Observed], *, now: datetime, durable: bool = True) -> StoreResult:
    """Attribute, check and store ``observed`` rows of ``system``, in one transaction (opened here, or the
    caller's). Rows by logins that are not people's (application users, the provisioner) are ignored; rows
    seen before (same ``source_key``) are skipped. Raises PolicyViolation when a row names a grant of
    another system (nothing is stored then).

    ``durable=False`` (server log files, samples) commits without waiting for the WAL flush on PostgreSQL
    (``synchronous_commit = off`` for this transaction): a crash can lose the last fraction of a second of
    commits, and with them the log offset moved in the same transaction, so the lines are read again —
    nothing is lost, and 100k lines no longer wait a second for their fsync. Pushes to the API stay durable:
    their sender is told they are stored."""
    result = StoreResult(received=len(observed))
    if not observed:
        return result
    capture = system_settings(system)
    people = people_principals(system)
    hinted = {row.grant_hint for row in observed if row.grant_hint is not None}
    hint_principals: dict[int, str] = {}
    if hinted:
        connector = connector_for(system)
        found = dict(Grant.objects.filter(pk__in=hinted, role__system=system).values_list("pk", "user__username"))
        missing = sorted(hinted - set(found))
        if missing:
            raise PolicyViolation(f"grant_id {missing[0]} is not a grant of {system.slug}.")
        hint_principals = {pk: connector.principal_for(name) for pk, name in found.items()}
    with transaction.atomic():
        if not durable and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit = off")
        _lock_system(system.pk)
        fresh: list[Observed] = []
        seen: set[str] = set()
        for row in observed:
            if row.grant_hint is not None:
                row.principal = hint_principals[row.grant_hint]
            if row.principal not in people and row.grant_id is None:
                result.ignored += 1
                continue
            if row.source_key is not None:
                if row.source_key in seen:
                    result.duplicates += 1
                    continue
                seen.add(row.source_key)
            fresh.append(row)
        existing = _existing_keys(system.pk, [row.source_key for row in fresh if row.source_key is not None])
        if existing:
            result.duplicates += sum(1 for row in fresh if row.source_key in existing)
            fresh = [row for row in fresh if row.source_key not in existing]
        if not fresh:
            return result
        times = [row.occurred_at for row in fresh]
        windows = grant_windows(system, min(times), max(times))
        fixed = _fixed_windows(system, {row.grant_id for row in fresh if row.grant_id is not None})
        rows: list[tuple] = []
        raised: list[tuple[int, list[str], Observed, Window | None]] = []  # (row index, kinds, row, window)
        for index, row in enumerate(fresh):
            if row.grant_id is not None:
                window, after_end = fixed.get(row.grant_id), False
            else:
                window, after_end = attribute(windows.get(row.principal, ()), row.occurred_at)
            kinds = findings_for(row, window, after_end, capture)
            if kinds:
                raised.append((index, kinds, row, window))
            rows.append(
                (
                    None,
                    system.pk,
                    window.grant_id if window else None,
                    row.kind,
                    row.source,
                    row.principal,
                    row.occurred_at,
                    row.ended_at,
                    row.state,
                    row.session_key,
                    row.client_address,
                    row.application,
                    row.database,
                    row.command,
                    row.statement_class,
                    row.statement,
                    row.object_name,
                    row.calls,
                    row.rows,
                    row.source_key,
                    ",".join(kinds),
                    now,
                )
            )
        ids = _write(rows)
        result.stored, result.record_ids = len(ids), ids
        result.attributed = sum(1 for row in rows if row[2] is not None)
        result.without_grant = result.stored - result.attributed
        totals = _totals(fresh, rows)
        result.findings_raised = _findings_record(system, raised, ids, people, now, totals)
        grant_totals_add(totals)
    return result


def _totals(fresh: list[Observed], rows: list[tuple]) -> dict[int, dict[str, Any]]:
    totals: dict[int, dict[str, Any]] = {}
    for row, stored in zip(fresh, rows, strict=True):
        grant_id = stored[2]
        if grant_id is None:
            continue
        entry = totals.setdefault(grant_id, {})
        if row.kind == "session":
            entry["session_count"] = entry.get("session_count", 0) + 1
        elif row.kind == "digest":
            entry["digest_calls"] = entry.get("digest_calls", 0) + row.calls
            continue  # no instant of its own: first/last activity come from sessions and statements
        else:
            entry["statement_count"] = entry.get("statement_count", 0) + 1
            counter = _CLASS_COUNTER.get(row.statement_class, "other_count")
            entry[counter] = entry.get(counter, 0) + 1
        at = row.occurred_at
        if entry.get("first") is None or at < entry["first"]:
            entry["first"] = at
        last = row.ended_at or at
        if entry.get("last") is None or last > entry["last"]:
            entry["last"] = last
    return totals


def _findings_record(
    system: System,
    raised: list[tuple[int, list[str], Observed, Window | None]],
    ids: list[int],
    people: dict[str, int],
    now: datetime,
    totals: dict[int, dict[str, Any]],
) -> int:
    """Count the batch's findings into the open ones, and open (with an ``activity.finding`` event each)
    those not open yet. Returns how many were opened."""
    if not raised:
        return 0
    grouped: dict[tuple, dict[str, Any]] = {}
    for index, kinds, row, window in raised:
        for kind in kinds:
            key = (window.grant_id, "", kind) if window and kind != Kind.NO_GRANT else (None, row.principal, kind)
            entry = grouped.get(key)
            if entry is None:
                grouped[key] = {
                    "count": 1,
                    "first": row.occurred_at,
                    "last": row.occurred_at,
                    "example": ids[index],
                    "command": row.command,
                    "row": row,
                    "window": window if kind != Kind.NO_GRANT else None,
                }
            else:
                entry["count"] += 1
                entry["first"] = min(entry["first"], row.occurred_at)
                entry["last"] = max(entry["last"], row.occurred_at)
    grant_ids = {key[0] for key in grouped if key[0] is not None}
    principals = {key[1] for key in grouped if key[0] is None}
    open_findings = ActivityFinding.objects.select_for_update(no_key=True, of=("self",)).filter(
        Q(grant_id__in=grant_ids) | Q(system=system, grant__isnull=True, principal__in=principals),
        status=ActivityFinding.Status.OPEN,
    )
    by_key = {(f.grant_id, "" if f.grant_id else f.principal, f.kind): f for f in open_findings}
    new: list[ActivityFinding] = []
    for key, entry in grouped.items():
        finding = by_key.get(key)
        if finding is not None:
            ActivityFinding.objects.filter(pk=finding.pk).update(
                count=finding.count + entry["count"], last_seen_at=max(finding.last_seen_at, entry["last"])
            )
            continue
        window: Window | None = entry["window"]
        row: Observed = entry["row"]
        detail = _DETAIL[key[2]].format(
            principal=row.principal,
            system=system.name,
            grant=window.grant_id if window else "",
            level=Level(window.level).label if window else "",
        )
        new.append(
            ActivityFinding(
                system=system,
                grant_id=window.grant_id if window else None,
                role_id=window.role_id if window else None,
                user_id=window.user_id if window else people.get(row.principal),
                principal=row.principal,
                kind=key[2],
                first_seen_at=entry["first"],
                last_seen_at=entry["last"],
                count=entry["count"],
                example_record_id=entry["example"],
                example_command=entry["command"],
                detail=detail[:300],
                raised_at=now,
            )
        )
        if window:
            totals.setdefault(window.grant_id, {})
            totals[window.grant_id]["finding_count"] = totals[window.grant_id].get("finding_count", 0) + 1
    if not new:
        return 0
    created = ActivityFinding.objects.bulk_create(new)
    windows = {entry["window"].grant_id: entry["window"] for entry in grouped.values() if entry["window"]}
    event_record_rows(
        [
            {
                "occurred_at": now,
                "event_type": AccessEvent.Type.ACTIVITY_FINDING,
                "actor_label": "system:activity",
                "grant_id": finding.grant_id,
                "role_id": finding.role_id,
                "access_request_id": windows[finding.grant_id].access_request_id if finding.grant_id else None,
                "reason": finding.detail,
                # No statement text: webhook receivers are outside the portal's visibility rules.
                "data": {
                    "finding_id": finding.pk,
                    "kind": finding.kind,
                    "system": system.slug,
                    "principal": finding.principal,
                    "count": finding.count,
                    "command": finding.example_command,
                    "first_seen_at": finding.first_seen_at.isoformat(),
                },
            }
            for finding in created
        ]
    )
    return len(created)
