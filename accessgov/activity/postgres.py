"""What activity capture asks a PostgreSQL target, over the connector's own connection (its provisioner
login; docs/ACTIVITY.md lists the rights each level needs).

- Sessions (level 1): one read of ``pg_stat_activity`` per sample for the client backends of login roles
  that match the system's principal template (the caller keeps only people's logins).
- Statement digest (level 2): ``pg_stat_statements`` for given roles in the target database, as a snapshot;
  the difference of two snapshots is what ran in between.
- Statement log (level 3): ``ALTER ROLE <login> SET pgaudit.log`` for the grant's lifetime (a setting on the
  login role: pgaudit settings are not inherited through role membership), reset at removal; directly, or
  through a SECURITY DEFINER wrapper function a DBA installs (least privilege).
"""

from collections.abc import Callable
from typing import Any

from psycopg import sql

Run = Callable[..., list[tuple]]
QUERY_TEXT_CHARS = 4000

SAMPLE_SQL = (
    "SELECT pid, usename, (extract(epoch FROM backend_start) * 1000000)::bigint, host(client_addr), "
    "application_name, datname, state, (extract(epoch FROM query_start) * 1000000)::bigint, left(query, %s) "
    "FROM pg_stat_activity WHERE backend_type = 'client backend' AND usename LIKE %s AND usename <> current_user"
)

DIGEST_SQL = (
    "SELECT r.rolname, s.queryid, s.toplevel, s.calls, s.rows, s.total_exec_time, left(s.query, %s) "
    "FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid "
    "WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND r.rolname = ANY(%s)"
)


def principal_pattern(template: str) -> str:
    """A LIKE pattern matching every login the template can produce ("tgt_{username}_x" → "tgt\\_%\\_x")."""
    escaped = template.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("{username}", "%")


def sample(run: Run, pattern: str) -> list[tuple]:
    """(pid, login, backend_start µs, client address, application, database, state, query_start µs, query)
    for every client session whose login matches ``pattern`` (the provisioner's own left out)."""
    return run((SAMPLE_SQL, (QUERY_TEXT_CHARS, pattern)))


def digest_snapshot(run: Run, roles: list[str]) -> dict[str, list[Any]]:
    """pg_stat_statements for ``roles`` in this database: {"role|queryid|toplevel": [calls, rows, ms, query]}."""
    rows = run((DIGEST_SQL, (QUERY_TEXT_CHARS, roles)))
    return {
        f"{role}|{queryid}|{int(bool(toplevel))}": [int(calls), int(rows_), round(float(ms), 3), query]
        for role, queryid, toplevel, calls, rows_, ms, query in rows
    }


def digest_difference(start: dict[str, list[Any]], end: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """What ran between two snapshots, per (role, normalised statement). An entry that went down (the
    statistics were reset, or the entry was evicted and came back) counts from zero: a lower bound."""
    lines = []
    for key, (calls, rows, ms, query) in end.items():
        before = start.get(key)
        reset = before is not None and calls < before[0]
        if before is not None and not reset:
            calls, rows, ms = calls - before[0], rows - before[1], round(ms - before[2], 3)
        if calls <= 0:
            continue
        role, queryid, toplevel = key.split("|")
        lines.append(
            {
                "role": role,
                "queryid": queryid,
                "toplevel": toplevel == "1",
                "calls": calls,
                "rows": max(rows, 0),
                "ms": max(ms, 0.0),
                "query": query or "",
                "lower_bound": reset,
            }
        )
    return sorted(lines, key=lambda line: (-line["calls"], line["role"], line["queryid"]))


def pgaudit_statement(login: str, value: str | None, function: str = "") -> tuple[sql.Composable, tuple]:
    """The statement that sets (``value``) or resets (None) pgaudit.log on ``login``."""
    if function:
        name = sql.SQL(".").join(sql.Identifier(part) for part in function.split("."))
        return sql.SQL("SELECT {}(%s, %s)").format(name), (login, value)
    if value is None:
        return sql.SQL("ALTER ROLE {} RESET pgaudit.log").format(sql.Identifier(login)), ()
    return sql.SQL("ALTER ROLE {} SET pgaudit.log = {}").format(sql.Identifier(login), sql.Literal(value)), ()


# The wrapper a DBA installs for least privilege (docs/ACTIVITY.md); the tests install it too.
PGAUDIT_FUNCTION_SQL = """
CREATE SCHEMA IF NOT EXISTS accessgov_capture;
CREATE OR REPLACE FUNCTION accessgov_capture.set_pgaudit(login name, classes text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = login) OR login = session_user THEN
        RAISE EXCEPTION 'accessgov_capture.set_pgaudit: % is not a grantee login', login;
    END IF;
    IF classes IS NULL THEN
        EXECUTE format('ALTER ROLE %I RESET pgaudit.log', login);
    ELSE
        EXECUTE format('ALTER ROLE %I SET pgaudit.log = %L', login, classes);
    END IF;
END;
$$;
REVOKE ALL ON FUNCTION accessgov_capture.set_pgaudit(name, text) FROM PUBLIC;
"""
