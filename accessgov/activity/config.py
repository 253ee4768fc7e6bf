"""A system's activity capture settings: ``connector_config["activity"]`` (so changing them is a four-eyed
connector change like any other connector setting).

    "activity": {
        "sessions": true,            # PostgreSQL: sample pg_stat_activity (level 1)
        "sample_seconds": 5,         # how often (1-300)
        "digest": true,              # PostgreSQL: pg_stat_statements snapshots at apply and removal (level 2)
        "statement_log": true,       # PostgreSQL: pgaudit on the grantee's login role for the grant (level 3)
        "pgaudit_log": "all",        # the pgaudit.log value set on the login role
        "pgaudit_function": "accessgov_capture.set_pgaudit",  # optional least-privilege wrapper (docs)
        "log_file": "/var/log/postgresql/postgresql-*.json",  # optional: read the server log from here
        "log_format": "jsonlog",     # or "csvlog"
        "expected_networks": ["10.20.0.0/16"]  # any connector: activity from elsewhere is a finding
    }

Lines can also be pushed to ``POST /api/v1/activity/`` (log shippers, managed databases, webhook targets).
"""

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

POSTGRES_ONLY = ("sessions", "sample_seconds", "digest", "statement_log", "pgaudit_log", "pgaudit_function")
FILE_KEYS = ("log_file", "log_format")
KNOWN = {*POSTGRES_ONLY, *FILE_KEYS, "expected_networks"}
PGAUDIT_CLASSES = {"read", "write", "function", "role", "ddl", "misc", "misc_set", "all", "none"}
_QUALIFIED_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")
LOG_SUFFIXES = (".json", ".csv", ".log")
DEFAULT_SAMPLE_SECONDS = 5


@dataclass(frozen=True)
class CaptureSettings:
    sessions: bool = False
    sample_seconds: int = DEFAULT_SAMPLE_SECONDS
    digest: bool = False
    statement_log: bool = False
    pgaudit_log: str = "all"
    pgaudit_function: str = ""
    log_file: str = ""
    log_format: str = "jsonlog"
    expected_networks: tuple = field(default_factory=tuple)

    @property
    def levels(self) -> list[str]:
        """The target-side levels in force, for the grant's record."""
        return [name for name in ("sessions", "digest", "statement_log") if getattr(self, name)]

    @property
    def captures_at_target(self) -> bool:
        return bool(self.levels)

    def address_expected(self, client_address: str | None) -> bool:
        """True when no networks are configured, the address is unknown (a local socket), or it is inside one."""
        if not self.expected_networks or client_address is None:
            return True
        ip = ipaddress.ip_address(client_address)
        return any(ip in network for network in self.expected_networks)


def settings_for(connector: str, config: dict[str, Any] | None) -> CaptureSettings:
    """The capture settings of a system (connector name and connector_config); invalid values are ignored
    (the admin form refuses them before they are saved)."""
    raw = (config or {}).get("activity") or {}
    if not isinstance(raw, dict) or problems(connector, raw):
        return CaptureSettings()
    postgres = connector == "postgres"
    return CaptureSettings(
        sessions=postgres and bool(raw.get("sessions")),
        sample_seconds=int(raw.get("sample_seconds", DEFAULT_SAMPLE_SECONDS)),
        digest=postgres and bool(raw.get("digest")),
        statement_log=postgres and bool(raw.get("statement_log")),
        pgaudit_log=str(raw.get("pgaudit_log", "all")),
        pgaudit_function=str(raw.get("pgaudit_function", "")),
        log_file=str(raw.get("log_file", "")),
        log_format=str(raw.get("log_format", "jsonlog")),
        expected_networks=tuple(ipaddress.ip_network(n, strict=False) for n in raw.get("expected_networks", [])),
    )


def system_settings(system) -> CaptureSettings:
    return settings_for(system.connector, system.connector_config)


def problems(connector: str, activity: Any) -> list[str]:
    """What is wrong with an ``"activity"`` block for this connector, as sentences for the admin form."""
    if activity is None:
        return []
    if not isinstance(activity, dict):
        return ['"activity" must be an object, e.g. {"sessions": true}.']
    found = []
    unknown = sorted(set(activity) - KNOWN)
    if unknown:
        found.append(f"Unknown activity settings: {', '.join(unknown)}.")
    if connector != "postgres":
        target_side = sorted(k for k in activity if k in POSTGRES_ONLY or k in FILE_KEYS)
        if target_side:
            found.append(
                f"{', '.join(target_side)}: only for the PostgreSQL connector; other targets report activity "
                "through the ingest API."
            )
    for name in ("sessions", "digest", "statement_log"):
        if name in activity and not isinstance(activity[name], bool):
            found.append(f"activity.{name} is true or false.")
    seconds = activity.get("sample_seconds", DEFAULT_SAMPLE_SECONDS)
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not 1 <= seconds <= 300:
        found.append("activity.sample_seconds is a whole number of seconds from 1 to 300.")
    pgaudit_log = activity.get("pgaudit_log", "all")
    if not isinstance(pgaudit_log, str) or not all(
        part.strip().lstrip("-").lower() in PGAUDIT_CLASSES for part in pgaudit_log.split(",")
    ):
        found.append('activity.pgaudit_log lists pgaudit classes, e.g. "all" or "read, write, ddl, role".')
    function = activity.get("pgaudit_function", "")
    if function and (not isinstance(function, str) or not _QUALIFIED_NAME.match(function)):
        found.append("activity.pgaudit_function is a function name such as accessgov_capture.set_pgaudit.")
    log_file = activity.get("log_file", "")
    if log_file and (
        not isinstance(log_file, str) or not log_file.startswith("/") or not log_file.endswith(LOG_SUFFIXES)
    ):
        found.append("activity.log_file is an absolute path (a * pattern is allowed) ending in .json, .csv or .log.")
    if activity.get("log_format", "jsonlog") not in ("jsonlog", "csvlog"):
        found.append('activity.log_format is "jsonlog" or "csvlog".')
    networks = activity.get("expected_networks", [])
    if not isinstance(networks, list) or len(networks) > 100:
        found.append("activity.expected_networks is a list of networks such as 10.0.0.0/8.")
    else:
        for network in networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except (TypeError, ValueError):
                found.append(f"activity.expected_networks: {str(network)[:50]!r} is not a network.")
    return found
