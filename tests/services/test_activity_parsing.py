"""The pure parts of activity capture (issue 17): statement classification, server log parsing (jsonlog,
csvlog, pgaudit's CSV message), the ingest API's record validation, reading a growing log file from where
the last run stopped, and the capture settings an admin may save. No database."""

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from accessgov.activity import config
from accessgov.activity.classify import classify, command_of
from accessgov.activity.logs import log_time, parse_csvlog, parse_jsonlog_line, parse_record, read_new, split_csvlog
from accessgov.activity.postgres import digest_difference, principal_pattern
from accessgov.services.activity.store import reason_speaks_only_of_reading

CASES = [
    ("select * from t", "SELECT", "read"),
    ("  /* hint */ -- note\n (SELECT 1)", "SELECT", "read"),
    ("WITH x AS (SELECT 1) SELECT * FROM x", "WITH", "read"),
    ("with gone as (delete from t returning *) select * from gone", "WITH", "write"),
    ("update t set a = 1", "UPDATE", "write"),
    ("INSERT INTO t VALUES (1)", "INSERT", "write"),
    ("merge into t using s on true when matched then delete", "MERGE", "write"),
    ("truncate t", "TRUNCATE", "write"),
    ("copy t from stdin", "COPY", "write"),
    ("copy t to stdout", "COPY", "read"),
    ("copy (select * from t where a = 'from') to stdout", "COPY", "read"),
    ("explain select 1", "EXPLAIN", "read"),
    ("explain analyze delete from t", "EXPLAIN", "write"),
    ("create table t (a int)", "CREATE TABLE", "ddl"),
    ("CREATE OR REPLACE FUNCTION f() RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql", "CREATE FUNCTION", "ddl"),
    ("create unique index if not exists i on t (a)", "CREATE INDEX", "ddl"),
    ("create materialized view v as select 1", "CREATE MATERIALIZED VIEW", "ddl"),
    ("drop table t", "DROP TABLE", "ddl"),
    ("alter table t add column b int", "ALTER TABLE", "ddl"),
    ("alter table t owner to mallory", "ALTER TABLE", "privilege"),
    ("grant select on t to mallory", "GRANT", "privilege"),
    ("revoke all on t from public", "REVOKE", "privilege"),
    ("create role mallory login", "CREATE ROLE", "privilege"),
    ("ALTER USER mallory SUPERUSER", "ALTER USER", "privilege"),
    ("drop role mallory", "DROP ROLE", "privilege"),
    ("alter default privileges grant select on tables to x", "ALTER DEFAULT PRIVILEGES", "privilege"),
    ("alter system set log_statement = 'none'", "ALTER SYSTEM", "privilege"),
    ("set session authorization mallory", "SET SESSION AUTHORIZATION", "privilege"),
    ("set role payments_rw", "SET ROLE", "session"),
    ("SET search_path = x", "SET", "session"),
    ("begin", "BEGIN", "session"),
    ("show all", "SHOW", "session"),
    ("refresh materialized view v", "REFRESH MATERIALIZED VIEW", "write"),
    ("do $$ begin perform 1; end $$", "DO", "other"),
    ("vacuum t", "VACUUM", "other"),
    ("", "", "other"),
]


@pytest.mark.parametrize(("statement", "command", "cls"), CASES)
def test_statements_are_classified_by_their_command(statement, command, cls):
    assert command_of(statement) == command
    assert classify(command, statement) == cls


def test_pgaudits_class_is_trusted_for_what_it_knows_and_ownership_is_a_privilege_change():
    assert classify("SELECT", "select f()", "WRITE") == "write"  # a function that writes: pgaudit saw it
    assert classify("CREATE ROLE", "create role x", "ROLE") == "privilege"
    assert classify("ALTER TABLE", "alter table t owner to x", "DDL") == "privilege"
    assert classify("SET", "set work_mem = '1GB'", "MISC_SET") == "session"


def _jsonlog(message: str, **extra) -> str:
    entry = {
        "timestamp": "2026-12-04 20:55:10.890 UTC",
        "user": "alice",
        "dbname": "app",
        "pid": 4012,
        "remote_host": "10.1.2.3",
        "session_id": "6b1328ae.fac",
        "line_num": 4,
        "application_name": "psql",
        "message": message,
        **extra,
    }
    return json.dumps(entry)


def test_a_pgaudit_jsonlog_line_becomes_a_classified_statement():
    row = parse_jsonlog_line(
        _jsonlog(
            'AUDIT: SESSION,4,1,DDL,CREATE TABLE,TABLE,public.t2,"create table t2(a int, ""b,c"" int)",<not logged>'
        )
    )
    assert row.principal == "alice" and row.command == "CREATE TABLE" and row.statement_class == "ddl"
    assert row.statement == 'create table t2(a int, "b,c" int)' and row.object_name == "public.t2"
    assert row.occurred_at == datetime(2026, 12, 4, 20, 55, 10, 890000, tzinfo=UTC)
    assert row.client_address == "10.1.2.3" and row.session_key == "6b1328ae.fac"
    assert row.source_key == "6b1328ae.fac:4" and row.source == "pgaudit"


def test_other_server_lines_are_skipped_and_garbage_is_refused():
    assert parse_jsonlog_line(_jsonlog("connection authorized: user=alice database=app")) is None
    assert parse_jsonlog_line(_jsonlog("AUDIT: SESSION,1,1,READ,SELECT,,,select 1,<none>", user=None)) is None
    previously = parse_jsonlog_line(_jsonlog("AUDIT: SESSION,1,2,READ,SELECT,,,<previously logged>,<none>"))
    assert previously.statement == "" and previously.command == "SELECT"
    local = parse_jsonlog_line(_jsonlog("AUDIT: SESSION,1,1,READ,SELECT,,,select 1,<none>", remote_host="[local]"))
    assert local.client_address is None
    for garbage in ("not json", "[1]", json.dumps({"message": "x"}), _jsonlog("AUDIT: nonsense")):
        with pytest.raises(ValueError):
            parse_jsonlog_line(garbage)


def test_a_log_service_export_with_spaces_in_its_json_is_read_like_the_servers_own():
    """A probe's finding: lines re-written with json.dumps's default separators ("message": "AUDIT: …") were
    dropped by the pre-filter, silently (0 received, 0 unreadable)."""
    from accessgov.services.activity.capture import _parse_log

    statement = "AUDIT: SESSION,4,1,READ,SELECT,,,select 1,<none>"
    spaced = _jsonlog(statement)
    compact = json.dumps(json.loads(spaced), separators=(",", ":"))
    other = _jsonlog("connection authorized: user=alice database=app")
    data = "\n".join([spaced, compact, other, "not json AUDIT: at all"]).encode()
    observed, unreadable, consumed = _parse_log(data, "jsonlog")
    assert [row.command for row in observed] == ["SELECT", "SELECT"]
    assert (unreadable, consumed) == (1, len(data))  # the broken line is counted, the other server line skipped


def test_log_times_need_an_unambiguous_zone():
    assert log_time("2026-12-04 20:55:10.890 UTC") == datetime(2026, 12, 4, 20, 55, 10, 890000, tzinfo=UTC)
    assert log_time("2026-12-04 22:55:10 +02") == datetime(2026, 12, 4, 22, 55, 10, tzinfo=timezone(timedelta(hours=2)))
    with pytest.raises(ValueError, match="log_timezone"):
        log_time("2026-12-04 21:55:10 CET")


def test_csvlog_records_may_span_lines_and_a_cut_record_waits_for_the_next_run():
    line = (
        '2026-12-04 20:55:10.890 UTC,"alice","app",4012,"10.1.2.3:5555",6b1328ae.fac,7,"SELECT",'
        '2026-12-04 20:55:10 UTC,3/44,0,LOG,00000,"AUDIT: SESSION,5,1,READ,SELECT,,,""select 1,\n 2"",<not logged>"'
        ',,,,,,,,,"psql","client backend",,0\n'
    )
    other = (
        '2026-12-04 20:55:11.000 UTC,,,99,,6b13.1,1,,,,,LOG,00000,"checkpoint starting",,,,,,,,,"","checkpointer",,0\n'
    )
    data = (line + other + line[:60]).encode()
    records, consumed = split_csvlog(data)
    assert len(records) == 2 and consumed == len((line + other).encode())
    row = parse_csvlog(records[0])
    assert row.statement == "select 1,\n 2" and row.client_address == "10.1.2.3" and row.application == "psql"
    assert parse_csvlog(records[1]) is None


def test_a_log_file_is_read_from_where_the_last_run_stopped_and_again_after_rotation(tmp_path):
    path = tmp_path / "postgresql.json"
    path.write_text("one\ntwo\nthr")
    data, cursor = read_new(str(path), None, max_bytes=1000)
    assert data == b"one\ntwo\n" and cursor["offset"] == 8
    path.write_text("one\ntwo\nthree\n")
    data, cursor = read_new(str(path), cursor, max_bytes=1000)
    assert data == b"three\n"
    path.unlink()
    path.write_text("new\n")  # rotated: a new file (inode) is read from its start
    data, _ = read_new(str(path), {**cursor, "inode": -1}, max_bytes=1000)
    assert data == b"new\n"


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ([], "JSON object"),
        ({"type": "query"}, "type"),
        ({"type": "statement", "at": "2031-01-01T00:00:00Z"}, "principal or grant_id"),
        ({"type": "statement", "at": "yesterday", "principal": "a"}, "ISO 8601"),
        ({"type": "statement", "at": "2031-01-01T00:00:00", "principal": "a"}, "offset"),
        ({"type": "statement", "at": "2031-01-01T00:00:00Z", "principal": 7}, "text"),
        ({"type": "statement", "at": "2031-01-01T00:00:00Z", "grant_id": -1}, "grant_id"),
        ({"type": "statement", "at": "2031-01-01T00:00:00Z", "principal": "a", "rows": -3}, "rows"),
        (
            {"type": "session", "at": "2031-01-01T01:00:00Z", "principal": "a", "ended_at": "2031-01-01T00:00:00Z"},
            "before",
        ),
        ({"type": "statement", "at": "2031-01-01T00:00:00Z", "principal": "a", "class": "read"}, "unknown"),
    ],
)
def test_ingest_records_are_validated_strictly(record, problem):
    with pytest.raises(ValueError, match=problem):
        parse_record(record)


def test_the_class_of_a_reported_statement_is_computed_never_taken_from_the_sender():
    row = parse_record(
        {
            "type": "statement",
            "at": "2031-01-01T00:00:00Z",
            "principal": "a",
            "command": "SELECT",
            "statement": "DROP TABLE t",
        }
    )
    assert row.command == "SELECT" and row.statement_class == "read"  # the command given is what was run
    row = parse_record(
        {"type": "statement", "at": "2031-01-01T00:00:00Z", "principal": "a", "statement": "DROP TABLE t"}
    )
    assert row.command == "DROP TABLE" and row.statement_class == "ddl"


def test_the_digest_is_the_difference_of_two_snapshots_with_resets_as_lower_bounds():
    start = {"alice|1|1": [3, 3, 1.0, "select $1"], "alice|2|1": [10, 0, 5.0, "update t set a = $1"]}
    end = {
        "alice|1|1": [5, 7, 2.5, "select $1"],
        "alice|2|1": [4, 0, 1.0, "update t set a = $1"],  # reset meanwhile
        "payments_rw|3|1": [1, 0, 0.1, "create table x (a int)"],
        "alice|4|1": [2, 2, 0.1, "select 2"],
    }
    start["alice|4|1"] = [2, 2, 0.1, "select 2"]  # unchanged: nothing ran
    lines = {(line["role"], line["queryid"]): line for line in digest_difference(start, end)}
    assert lines[("alice", "1")]["calls"] == 2 and lines[("alice", "1")]["rows"] == 4
    assert lines[("alice", "2")]["calls"] == 4 and lines[("alice", "2")]["lower_bound"] is True
    assert lines[("payments_rw", "3")]["calls"] == 1
    assert ("alice", "4") not in lines


def test_a_login_pattern_matches_only_what_the_template_makes():
    assert principal_pattern("tgt_{username}_ab12") == "tgt\\_%\\_ab12"
    assert principal_pattern("{username}") == "%"
    assert principal_pattern("u%{username}") == "u\\%%"


def test_a_reason_that_speaks_only_of_reading():
    assert reason_speaks_only_of_reading("Investigate slow checkout queries, INC-2041")
    assert not reason_speaks_only_of_reading("Backfill the refunds table (DATA-88)")
    assert not reason_speaks_only_of_reading("Investigate and fix the refunds table")
    assert not reason_speaks_only_of_reading("INC-2050")  # unclear: no finding on a guess


def test_capture_settings_an_admin_may_save():
    good = {
        "sessions": True,
        "sample_seconds": 5,
        "digest": True,
        "statement_log": True,
        "pgaudit_log": "read, write, ddl, role, -misc",
        "pgaudit_function": "accessgov_capture.set_pgaudit",
        "log_file": "/var/log/postgresql/postgresql-*.json",
        "log_format": "jsonlog",
        "expected_networks": ["10.0.0.0/8", "2001:db8::/32"],
    }
    assert config.problems("postgres", good) == []
    settings = config.settings_for("postgres", {"activity": good})
    assert settings.levels == ["sessions", "digest", "statement_log"]
    assert settings.address_expected("10.2.3.4") and not settings.address_expected("192.0.2.1")
    assert config.problems("webhook", {"expected_networks": ["10.0.0.0/8"]}) == []
    bad = {
        "sessions": "yes",
        "sample_seconds": 0,
        "pgaudit_log": "everything",
        "pgaudit_function": "x; DROP TABLE t",
        "log_file": "relative/../etc/shadow",
        "log_format": "stderr",
        "expected_networks": ["not-a-net"],
        "surprise": 1,
    }
    problems = " ".join(config.problems("postgres", bad))
    for needle in (
        "Unknown",
        "sessions",
        "sample_seconds",
        "pgaudit_log",
        "pgaudit_function",
        "log_file",
        "log_format",
        "not-a-net",
    ):
        assert needle in problems, needle
    assert "only for the PostgreSQL connector" in " ".join(config.problems("webhook", {"sessions": True}))
    assert config.settings_for("postgres", {"activity": bad}).levels == []  # invalid settings capture nothing
