"""Statement classification: read, write (DML), DDL, privilege/role changes, session/config, other.

From the statement's own leading keywords (comments and parentheses skipped), or from the class pgaudit
gives a line (READ, WRITE, DDL, ROLE, FUNCTION, MISC, MISC_SET) with the command it names. Pure functions:
no database, no Django — the ingest calls them for every line, so they are kept cheap (one regular
expression per statement).
"""

import re

READ, WRITE, DDL, PRIVILEGE, SESSION, OTHER = "read", "write", "ddl", "privilege", "session", "other"

# Leading whitespace, -- comments, /* */ comments and opening parentheses before the first keyword.
_LEAD = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/|\()*", re.S)
_WORD = re.compile(r"[A-Za-z_]+")
_WRITE_IN_CTE = re.compile(r"\b(INSERT|UPDATE|DELETE|MERGE)\b", re.I)
_OWNER_TO = re.compile(r"\bOWNER\s+TO\b", re.I)

_ROLE_OBJECTS = {"ROLE", "USER", "GROUP"}
_SESSION_WORDS = {
    "SET",
    "RESET",
    "SHOW",
    "BEGIN",
    "START",
    "COMMIT",
    "END",
    "ROLLBACK",
    "ABORT",
    "SAVEPOINT",
    "RELEASE",
    "DISCARD",
    "LISTEN",
    "UNLISTEN",
    "NOTIFY",
    "PREPARE",
    "DEALLOCATE",
    "CLOSE",
    "LOAD",
}
_READ_WORDS = {"SELECT", "TABLE", "VALUES", "FETCH", "DECLARE", "MOVE"}
_WRITE_WORDS = {"INSERT", "UPDATE", "DELETE", "MERGE", "TRUNCATE", "REFRESH"}
_DDL_WORDS = {"CREATE", "ALTER", "DROP", "COMMENT", "REINDEX", "CLUSTER", "IMPORT", "SECURITY"}
_PRIVILEGE_WORDS = {"GRANT", "REVOKE", "REASSIGN"}
# Two-word commands, named as pgaudit and psql name them ("CREATE TABLE", "ALTER ROLE", "SET ROLE").
_TWO_WORD = {"CREATE", "ALTER", "DROP", "SET", "REFRESH", "IMPORT", "SECURITY", "REASSIGN", "START"}
_SKIP_SECOND = {"OR", "REPLACE", "UNIQUE", "TEMP", "TEMPORARY", "UNLOGGED", "GLOBAL", "LOCAL", "IF", "NOT", "EXISTS"}


def _words(statement: str, limit: int = 6) -> list[str]:
    text = statement[:400]
    match = _LEAD.match(text)
    start = match.end() if match else 0
    return [w.upper() for w in _WORD.findall(text, start)[:limit]]


COMMAND_MAX = 60  # the width of ActivityRecord.command: no command of SQL's is near it; a longer word is not one


def command_of(statement: str) -> str:
    """The statement's command as pgaudit names it: "SELECT", "UPDATE", "CREATE TABLE", "ALTER ROLE",
    "SET ROLE", … ("" for an empty statement); at most COMMAND_MAX characters, whatever the statement starts
    with."""
    return _command_of(statement)[:COMMAND_MAX]


def _command_of(statement: str) -> str:
    words = _words(statement)
    if not words:
        return ""
    first = words[0]
    if first in _TWO_WORD and len(words) > 1:
        rest = [w for w in words[1:] if w not in _SKIP_SECOND]
        if first == "ALTER" and words[1:3] == ["DEFAULT", "PRIVILEGES"]:
            return "ALTER DEFAULT PRIVILEGES"
        if first == "REFRESH":
            return "REFRESH MATERIALIZED VIEW"
        if first == "SET" and words[1] == "SESSION" and words[2:3] == ["AUTHORIZATION"]:
            return "SET SESSION AUTHORIZATION"
        if rest:
            second = rest[0]
            if second in ("MATERIALIZED", "FOREIGN", "EVENT") and len(rest) > 1:
                return f"{first} {second} {rest[1]}"
            if first in ("CREATE", "ALTER", "DROP") or (first == "SET" and second == "ROLE"):
                return f"{first} {second}"
    if first == "WITH":
        return "WITH"
    if first == "COPY":
        return "COPY"
    return first


def classify(command: str, statement: str = "", audit_class: str = "") -> str:
    """The class of one statement. ``audit_class`` is pgaudit's (trusted for READ, WRITE, DDL and ROLE);
    otherwise the command decides. Ownership changes (``ALTER … OWNER TO``) count as privilege changes."""
    audit_class = audit_class.upper()
    if audit_class == "ROLE":
        return PRIVILEGE
    if audit_class == "DDL":
        return PRIVILEGE if _OWNER_TO.search(statement) or _is_role_command(command) else DDL
    if audit_class == "READ":
        return READ
    if audit_class == "WRITE":
        return WRITE
    return _classify_command(command, statement)


def _is_role_command(command: str) -> bool:
    parts = command.split()
    return len(parts) >= 2 and parts[0] in ("CREATE", "ALTER", "DROP") and parts[1] in _ROLE_OBJECTS


def _classify_command(command: str, statement: str) -> str:
    if not command:
        return OTHER
    first = command.split(" ", 1)[0]
    if command in ("ALTER DEFAULT PRIVILEGES", "SET SESSION AUTHORIZATION") or first in _PRIVILEGE_WORDS:
        return PRIVILEGE
    if _is_role_command(command) or command == "ALTER SYSTEM":
        return PRIVILEGE
    if first == "DROP" and command == "DROP OWNED":
        return PRIVILEGE
    if first in _DDL_WORDS:
        return PRIVILEGE if _OWNER_TO.search(statement) else DDL
    if first in _WRITE_WORDS:
        return WRITE
    if first in _SESSION_WORDS or command == "SET ROLE":
        return SESSION
    if first == "WITH":
        return WRITE if _WRITE_IN_CTE.search(statement) else READ
    if first == "COPY":
        return (
            WRITE
            if re.search(r"\bFROM\b", statement[:400], re.I) and not statement.lstrip()[4:].lstrip().startswith("(")
            else READ
        )
    if first == "EXPLAIN":
        # EXPLAIN ANALYZE runs the statement it explains.
        words = _words(statement, 12)
        if "ANALYZE" in words[1:3]:
            inner = [w for w in words[1:] if w not in ("ANALYZE", "VERBOSE")]
            return _classify_command(inner[0], statement) if inner else READ
        return READ
    if first in _READ_WORDS:
        return READ
    return OTHER
