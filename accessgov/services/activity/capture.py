"""Capture at PostgreSQL targets: the session sampler and the server log reader (run by the periodic
capture task), and the apply/removal hooks the provisioning outbox calls around GRANT and REVOKE
(statement digest snapshots, pgaudit on the login role).

Target I/O never happens inside a database transaction: a run leases the system's capture state in a short
transaction (so two workers never sample or read one system at once), talks to the target, then writes
what it saw in one transaction (``activity_store``; log file offsets move in that same transaction, so a
line is stored once however often a run is interrupted). Capture problems never block provisioning: they
are recorded on the grant (``GrantActivity.capture_error``) and the system (``ActivityCaptureState``).
"""

import glob
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import transaction
from django.db.models import Q

from accessgov import clock
from accessgov.activity import postgres as pg
from accessgov.activity.classify import classify, command_of
from accessgov.activity.config import CaptureSettings, system_settings
from accessgov.activity.logs import Observed, parse_csvlog, parse_jsonlog, read_new, split_csvlog
from accessgov.connectors import ConnectorError, connector_for
from accessgov.models import ActivityCaptureState, ActivityRecord, Grant, GrantActivity, System
from accessgov.services.activity.store import activity_store, people_principals

logger = logging.getLogger("accessgov.activity")
LEASE = timedelta(seconds=30)
LOG_READ_BYTES = 32 * 1024 * 1024  # per file and run: a backlog is caught up over a few runs
# What every pgaudit line holds, however its JSON is spaced (PostgreSQL writes "message":"AUDIT: …"; a log
# service's re-export may write "message": "AUDIT: …"). parse_jsonlog decides on the decoded message.
AUDIT_MARK = b"AUDIT: "
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SAMPLER_CONNECTORS: dict[int, tuple[str, object]] = {}


def _is_postgres(system: System) -> bool:
    return system.connector == System.Connector.POSTGRES


def _fingerprint(system: System) -> str:
    material = json.dumps([system.connector_config, system.connector_secret], sort_keys=True, default=str)
    return hashlib.sha256(material.encode()).hexdigest()


def _sampler_connector(system: System):
    """The sampler's connector for ``system``, kept per worker process (a new PostgreSQL connection per
    sample would cost the target more than the sample itself); replaced when the settings change."""
    fingerprint = _fingerprint(system)
    kept = _SAMPLER_CONNECTORS.get(system.pk)
    if kept is not None and kept[0] == fingerprint:
        return kept[1]
    if kept is not None:
        kept[1].close()
    connector = connector_for(system)
    _SAMPLER_CONNECTORS[system.pk] = (fingerprint, connector)
    return connector


def close_sampler_connections() -> None:
    for _, connector in _SAMPLER_CONNECTORS.values():
        connector.close()
    _SAMPLER_CONNECTORS.clear()


def _micros(value: int | None) -> datetime | None:
    return None if value is None else _EPOCH + timedelta(microseconds=int(value))


# --- Lease ----------------------------------------------------------------------------------------


def _claim(system: System, now: datetime) -> ActivityCaptureState | None:
    """Lease the system's capture state for LEASE (skip-locked: a run already holding it wins)."""
    ActivityCaptureState.objects.get_or_create(system=system)
    with transaction.atomic():
        state = (
            ActivityCaptureState.objects.select_for_update(skip_locked=True, no_key=True, of=("self",))
            .filter(system=system)
            .filter(Q(lease_until__isnull=True) | Q(lease_until__lte=now))
            .first()
        )
        if state is None:
            return None
        state.lease_until = now + LEASE
        state.save(update_fields=["lease_until"])
        return state


def _release(state: ActivityCaptureState, **fields) -> None:
    fields["lease_until"] = None
    ActivityCaptureState.objects.filter(pk=state.pk).update(**fields)


# --- The periodic run -------------------------------------------------------------------------------


@dataclass
class RunResult:
    systems: int = 0
    sampled: int = 0
    sessions_seen: int = 0
    stored: int = 0
    findings: int = 0
    errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def activity_capture_run(now: datetime | None = None) -> RunResult:
    """One capture run over every system with capture settings: sample the systems whose interval has
    passed, and read their server logs. Called by the periodic task (ACTIVITY_SAMPLE_SECONDS)."""
    now = now or clock.now()
    result = RunResult()
    for system in System.objects.filter(connector=System.Connector.POSTGRES).order_by("pk"):
        capture = system_settings(system)
        if not (capture.sessions or capture.log_file):
            continue
        result.systems += 1
        state = _claim(system, now)
        if state is None:
            continue
        fields: dict = {}
        try:
            due = state.last_sampled_at is None or (now - state.last_sampled_at).total_seconds() >= (
                capture.sample_seconds - 0.5
            )
            if capture.sessions and due:
                sampled = activity_sample(system, now, capture=capture)
                result.sampled += 1
                result.sessions_seen += sampled["sessions"]
                result.stored += sampled["stored"]
                result.findings += sampled["findings"]
                fields.update(last_sampled_at=now, last_sample_ms=sampled["ms"])
            if capture.log_file:
                read = activity_read_logs(system, state, now, capture=capture)
                result.stored += read["stored"]
                result.findings += read["findings"]
                fields["last_ingested_at"] = now
            fields["last_error"] = ""
        except (ConnectorError, OSError) as exc:
            result.errors += 1
            fields.update(last_error=str(exc)[:2000], last_error_at=now)
            logger.warning("activity capture of %s failed: %s", system.slug, exc)
        finally:
            _release(state, **fields)
    return result


# --- Level 1: sessions ------------------------------------------------------------------------------


def activity_sample(system: System, now: datetime, *, capture: CaptureSettings | None = None) -> dict:
    """Sample ``pg_stat_activity`` once for people's logins on ``system``: new sessions and the statements
    they are running (or last ran) become activity rows; sessions seen before get their last-seen time and
    state; sessions gone are marked ended. Raises ConnectorError when the target cannot be asked."""
    capture = capture or system_settings(system)
    connector = _sampler_connector(system)
    template = (system.connector_config or {}).get("principal_template", "{username}")
    started = time.perf_counter()
    rows = pg.sample(connector._run, pg.principal_pattern(template))
    ms = (time.perf_counter() - started) * 1000
    people = people_principals(system)
    observed: list[Observed] = []
    seen: dict[str, str] = {}
    for pid, login, backend_us, client, application, database, state, query_us, query in rows:
        if login not in people:
            continue
        session_key = f"{pid}:{backend_us}"
        seen[f"sess:{session_key}"] = state or ""
        common = {
            "principal": login[:200],
            "session_key": session_key,
            "client_address": client,
            "application": (application or "")[:200],
            "database": (database or "")[:200],
        }
        observed.append(
            Observed(
                kind="session",
                source="sampler",
                occurred_at=_micros(backend_us) or now,
                ended_at=now,
                state=(state or "")[:20],
                source_key=f"sess:{session_key}",
                **common,
            )
        )
        if query and query_us is not None and query != "<insufficient privilege>":
            text = query.replace("\x00", "\ufffd")
            command = command_of(text)
            observed.append(
                Observed(
                    kind="statement",
                    source="sampler",
                    occurred_at=_micros(query_us),
                    statement=text,
                    command=command[:60],
                    statement_class=classify(command, text),
                    source_key=f"stmt:{session_key}:{query_us}",
                    **common,
                )
            )
    with transaction.atomic():
        _sessions_touch(system, seen, now)
        stored = activity_store(system, observed, now=now, durable=False)  # the next sample sees them again
    return {"sessions": len(seen), "stored": stored.stored, "findings": stored.findings_raised, "ms": round(ms, 3)}


def _sessions_touch(system: System, seen: dict[str, str], now: datetime) -> None:
    """Sessions the sampler saw before: still there (last seen now, current state), or gone (ended)."""
    open_sessions = ActivityRecord.objects.filter(
        system=system, kind=ActivityRecord.Kind.SESSION, source=ActivityRecord.Source.SAMPLER, seal__isnull=True
    ).exclude(state="ended")
    by_state: dict[str, list[str]] = {}
    for key, state in seen.items():
        by_state.setdefault(state[:20], []).append(key)
    for state, keys in by_state.items():
        open_sessions.filter(source_key__in=keys).update(ended_at=now, state=state)
    open_sessions.exclude(source_key__in=list(seen)).update(state="ended")


# --- Level 3 from a file: the server log -----------------------------------------------------------


def activity_read_logs(
    system: System, state: ActivityCaptureState, now: datetime, *, capture: CaptureSettings | None = None
) -> dict:
    """Read what the server logged since the last run (jsonlog or csvlog, every file the pattern names,
    oldest first), store its pgaudit lines, and move each file's offset in the same transaction."""
    capture = capture or system_settings(system)
    cursors = dict(state.log_cursors or {})
    totals = {"stored": 0, "findings": 0, "unreadable": 0}
    paths = sorted(glob.glob(capture.log_file), key=lambda p: (os.path.getmtime(p), p))
    for path in paths:
        data, cursor = read_new(path, cursors.get(path), max_bytes=LOG_READ_BYTES)
        if not data:
            cursors[path] = cursor
            continue
        observed, unreadable, consumed = _parse_log(data, capture.log_format)
        if capture.log_format == "csvlog":
            cursor["offset"] = cursor["offset"] - len(data) + consumed
        totals["unreadable"] += unreadable
        with transaction.atomic():
            stored = activity_store(system, observed, now=now, durable=False)  # the offset moves with the rows
            cursors[path] = cursor
            ActivityCaptureState.objects.filter(pk=state.pk).update(log_cursors=cursors)
        totals["stored"] += stored.stored
        totals["findings"] += stored.findings_raised
    # Files that no longer exist (rotated away) leave the cursor list.
    for path in set(cursors) - set(paths):
        cursors.pop(path)
    ActivityCaptureState.objects.filter(pk=state.pk).update(log_cursors=cursors)
    state.log_cursors = cursors
    return totals


def _parse_log(data: bytes, log_format: str) -> tuple[list[Observed], int, int]:
    observed: list[Observed] = []
    unreadable = 0
    if log_format == "csvlog":
        records, consumed = split_csvlog(data)
        for record in records:
            try:
                row = parse_csvlog(record)
            except ValueError:
                unreadable += 1
                continue
            if row is not None:
                observed.append(row)
        return observed, unreadable, consumed
    # Only pgaudit lines are activity: the rest of the server's log (checkpoints, connections, errors) is not
    # even decoded (AUDIT_MARK: a line without it cannot be one).
    lines = [line for line in data.splitlines() if AUDIT_MARK in line]
    append = observed.append
    for start in range(0, len(lines), 5000):
        chunk = lines[start : start + 5000]
        try:
            # One decoder call for thousands of lines (a JSON array of them) costs a third less than one per line.
            entries = json.loads(b"[" + b",".join(chunk) + b"]")
        except (ValueError, UnicodeDecodeError):
            entries = None
        if entries is None or len(entries) != len(chunk):  # a broken line: find it line by line
            entries = []
            for line in chunk:
                try:
                    entries.append(json.loads(line))
                except (ValueError, UnicodeDecodeError):
                    unreadable += 1
        for entry in entries:
            try:
                row = parse_jsonlog(entry) if isinstance(entry, dict) else None
            except ValueError:
                unreadable += 1
                continue
            if row is not None:
                append(row)
    return observed, unreadable, len(data)


def activity_ingest_file(system: System, path: str, *, log_format: str = "jsonlog", now: datetime | None = None):
    """Ingest a whole server log file by hand (``manage.py ingest_activity``; the benchmark)."""
    with open(path, "rb") as handle:
        data = handle.read()
    observed, unreadable, _ = _parse_log(data, log_format)
    result = activity_store(system, observed, now=now or clock.now(), durable=False)
    return result, unreadable


# --- Levels 2 and 3 around provisioning ------------------------------------------------------------


def _grant_activity_update(grant: Grant, **fields) -> None:
    with transaction.atomic():
        GrantActivity.objects.get_or_create(grant=grant)
        GrantActivity.objects.filter(pk=grant.pk).update(**fields)


def capture_before_apply(grant: Grant, connector) -> None:
    """Called by the outbox just before access is applied (no transaction open). For PostgreSQL systems with
    capture: turn pgaudit on for the grantee's login role (level 3) and snapshot pg_stat_statements for the
    login and the managed role (level 2). Never raises: a capture problem is recorded on the grant and shown."""
    try:
        _before_apply(grant, connector)
    except Exception:  # capture must never hold up provisioning
        logger.exception("activity capture at apply of grant %s failed", grant.pk)


def _before_apply(grant: Grant, connector) -> None:
    system = grant.role.system
    capture = system_settings(system)
    if not _is_postgres(system) or not capture.captures_at_target:
        return
    login = connector.principal_for(grant.user.get_username())
    now = clock.now()
    fields: dict = {"levels": capture.levels, "capture_error": ""}
    problems = []
    if capture.statement_log:
        try:
            connector._run(pg.pgaudit_statement(login, capture.pgaudit_log, capture.pgaudit_function))
            fields["pgaudit_set_at"] = now
        except ConnectorError as exc:
            problems.append(f"pgaudit could not be turned on for {login}: {exc}")
    if capture.digest:
        try:
            fields["digest_start"] = pg.digest_snapshot(connector._run, [login, grant.role.target])
            fields["digest_started_at"] = clock.now()
        except ConnectorError as exc:
            problems.append(f"pg_stat_statements could not be read: {exc}")
    if problems:
        fields["capture_error"] = " ".join(problems)[:2000]
        logger.warning("activity capture at apply of grant %s: %s", grant.pk, fields["capture_error"])
    _grant_activity_update(grant, **fields)


def capture_after_remove(grants: list[Grant], connector) -> None:
    """Called by the outbox once removal is confirmed at the target (no transaction open): turn pgaudit off
    for each grantee's login role (unless another current grant of theirs on the system still needs it)
    and store the statement digest — what ran between the apply snapshot and now. Never raises."""
    for grant in grants:
        try:
            _after_remove(grant, connector)
        except Exception:  # capture must never hold up provisioning
            logger.exception("activity capture at removal of grant %s failed", grant.pk)


def _after_remove(grant: Grant, connector) -> None:
    system = grant.role.system
    capture = system_settings(system)
    if not _is_postgres(system) or not capture.captures_at_target:
        return
    login = connector.principal_for(grant.user.get_username())
    now = clock.now()
    fields: dict = {}
    problems = []
    record = GrantActivity.objects.filter(pk=grant.pk).first()
    if capture.statement_log:
        still_needed = (
            Grant.objects.current().filter(user_id=grant.user_id, role__system=system).exclude(pk=grant.pk).exists()
        )
        if not still_needed:
            try:
                connector._run(pg.pgaudit_statement(login, None, capture.pgaudit_function))
                fields["pgaudit_reset_at"] = now
            except ConnectorError as exc:
                problems.append(f"pgaudit could not be turned off for {login}: {exc}")
    if capture.digest and record is not None and record.digest_start is not None and record.digest_ended_at is None:
        try:
            end = pg.digest_snapshot(connector._run, [login, grant.role.target])
        except ConnectorError as exc:
            problems.append(f"pg_stat_statements could not be read at removal: {exc}")
        else:
            _store_digest(grant, login, pg.digest_difference(record.digest_start, end), now)
            fields["digest_ended_at"] = now
    if problems:
        fields["capture_error"] = ((record.capture_error + " ") if record and record.capture_error else "") + " ".join(
            problems
        )
    if fields:
        _grant_activity_update(grant, **fields)


def _store_digest(grant: Grant, login: str, lines: list[dict], now: datetime) -> None:
    """The digest as activity rows of the grant. Statements run after ``SET ROLE <managed role>`` are counted
    by PostgreSQL under the managed role, which other grantees may have used at the same time: such lines
    are marked "shared" (they raise no finding and are not this grant's alone)."""
    managed = grant.role.target
    overlapping = (
        Grant.objects.filter(role=grant.role, starts_at__lt=grant.ended_at or now)
        .filter(Q(ended_at__isnull=True) | Q(ended_at__gt=grant.starts_at))
        .exclude(pk=grant.pk)
        .exclude(status=Grant.Status.SCHEDULED)
        .exists()
    )
    observed = []
    for line in lines:
        command = command_of(line["query"])
        shared = line["role"] == managed and line["role"] != login and overlapping
        observed.append(
            Observed(
                kind="digest",
                source="pg_stat_statements",
                principal=line["role"][:200],
                occurred_at=now,
                statement=line["query"],
                command=command[:60],
                statement_class=classify(command, line["query"]),
                calls=line["calls"],
                rows=line["rows"],
                state="shared" if shared else ("lower bound" if line["lower_bound"] else ""),
                source_key=f"digest:{grant.pk}:{line['role']}:{line['queryid']}:{int(line['toplevel'])}"[:200],
                grant_id=grant.pk,
            )
        )
    activity_store(grant.role.system, observed, now=now)
