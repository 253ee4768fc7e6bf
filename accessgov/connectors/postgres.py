"""PostgreSQL connector: membership of a pre-existing managed role for the grantee's login role.

apply   GRANT "<managed role>" TO "<login role>"
remove  REVOKE "<managed role>" FROM "<login role>", then terminate the login role's open backends
        (a session that did SET ROLE keeps the privilege until it ends)
verify  read pg_auth_members back

Least privilege for the provisioner account (see docs/CONNECTORS.md):
  CREATE ROLE accessgov_provisioner LOGIN PASSWORD '…';
  GRANT <managed role> TO accessgov_provisioner WITH ADMIN OPTION;   -- per managed role
  GRANT pg_signal_backend TO accessgov_provisioner;                  -- to end sessions
  -- and CONNECT on the database named in the configuration
"""

from typing import Any

import psycopg
from psycopg import sql

from accessgov.connectors.base import Connector, ConnectorError, Target, TargetBusy

CONNECT_TIMEOUT_SECONDS = 3
# How long a removal tried first (``remove_many(patient=False)``) waits for a lock at the target: a member
# another session holds is put off and removed last, with the full lock timeout, behind the others.
IMPATIENT_LOCK_MS = 300
REQUIRED = ("host", "dbname", "user")


class PostgresConnector(Connector):
    secret_required = True
    reads_back = True
    removes_in_bulk = True

    def __init__(self, config: dict[str, Any], secret: str = "") -> None:
        super().__init__(config, secret)
        self._conn: psycopg.Connection | None = None

    @classmethod
    def validate_config(cls, config: dict[str, Any], secret: str) -> list[str]:
        problems = [f"'{key}' is required." for key in REQUIRED if not config.get(key)]
        port = config.get("port", 5432)
        if not isinstance(port, int) or not 0 < port < 65536:
            problems.append("'port' must be a number between 1 and 65535.")
        unknown = set(config) - {*REQUIRED, "port", "principal_template", "sslmode"}
        if unknown:
            problems.append(f"Unknown settings: {', '.join(sorted(unknown))}.")
        if "password" in config:
            problems.append("Put the password in the secret field, not in the settings.")
        return problems

    def _connect(self) -> psycopg.Connection:
        """A connection whose every statement is bounded (PROVISIONING_TARGET_LOCK_TIMEOUT_SECONDS,
        PROVISIONING_TARGET_STATEMENT_TIMEOUT_SECONDS): a session at the target holding a member's row
        makes a REVOKE fail after the lock timeout instead of waiting for ever — and with it a worker or
        a scheduler thread, and every other system's removals behind it. A target that stops answering
        altogether is noticed by TCP keepalives and tcp_user_timeout (the statement timeout is enforced
        by the server, which cannot help then)."""
        from django.conf import settings

        lock_ms = int(settings.PROVISIONING_TARGET_LOCK_TIMEOUT_SECONDS * 1000)
        statement_ms = int(settings.PROVISIONING_TARGET_STATEMENT_TIMEOUT_SECONDS * 1000)
        try:
            conn = psycopg.connect(
                host=self.config["host"],
                port=self.config.get("port", 5432),
                dbname=self.config["dbname"],
                user=self.config["user"],
                password=self.secret or None,
                sslmode=self.config.get("sslmode", "prefer"),
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
                autocommit=True,
                application_name="accessgov-provisioner",
                keepalives=1,
                keepalives_idle=5,
                keepalives_interval=2,
                keepalives_count=3,
                tcp_user_timeout=statement_ms + 5000,
            )
            # SET rather than a startup option (a connection pooler in front of the target may refuse those);
            # both in one round trip.
            conn.execute(f"SET lock_timeout = {lock_ms}; SET statement_timeout = {statement_ms}")
            return conn
        except psycopg.Error as exc:
            host, port = self.config.get("host"), self.config.get("port", 5432)
            raise ConnectorError(f"Cannot connect to {host}:{port}: {exc.__class__.__name__}") from None

    def _connection(self) -> psycopg.Connection:
        """One connection per connector instance, reused across the items of a drain: a new
        PostgreSQL connection costs several milliseconds, which a burst of removals pays per item."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = self._connect()
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _run(self, *statements: tuple[sql.Composable | str, tuple]) -> list[tuple]:
        """Run statements in order on the kept connection (replaced once if it broke)."""
        for attempt in (1, 2):
            conn = self._connection()
            try:
                rows: list[tuple] = []
                for statement, params in statements:
                    cursor = conn.execute(statement, params)
                    rows = cursor.fetchall() if cursor.description else []
                return rows
            except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled) as exc:
                # lock_timeout / statement_timeout: the target is busy, the connection is fine. Not
                # retried here (that would wait as long again); the item is retried with backoff.
                message = (exc.diag.message_primary if exc.diag else None) or exc.__class__.__name__
                self._end_failed_transaction(conn)
                raise TargetBusy(f"The target is busy: {message}") from None
            except psycopg.OperationalError as exc:
                self.close()
                if attempt == 2:
                    raise ConnectorError(f"Lost the connection to the target: {exc.__class__.__name__}") from None
            except psycopg.Error as exc:
                message = (exc.diag.message_primary if exc.diag else None) or exc.__class__.__name__
                self._end_failed_transaction(conn)
                raise ConnectorError(f"The target refused: {message}") from None
        return []

    @staticmethod
    def _end_failed_transaction(conn: psycopg.Connection) -> None:
        """After a failed statement of an explicit ``BEGIN`` (``remove_many(patient=False)``): roll it back,
        so the kept connection is usable again."""
        if conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
            conn.execute("ROLLBACK")

    def apply(self, target: Target) -> None:
        grant = sql.SQL("GRANT {} TO {}").format(sql.Identifier(target.target_role), sql.Identifier(target.principal))
        self._run((grant, ()))

    def remove(self, target: Target) -> None:
        self.remove_many([target])

    def remove_many(self, targets: list[Target], *, patient: bool = True) -> None:
        """One ``REVOKE managed FROM login, login, …`` per managed role, then one terminate for all the
        login roles' sessions: a burst of removals pays three round trips, not three per grant. A
        REVOKE of a membership that is already gone only warns, so this is idempotent; a missing login
        role fails the whole statement (the caller then removes one by one)."""
        principals_by_role: dict[str, list[str]] = {}
        for target in targets:
            principals = principals_by_role.setdefault(target.target_role, [])
            if target.principal not in principals:
                principals.append(target.principal)
        revokes: list[tuple[sql.Composable | str, tuple]] = [
            (
                sql.SQL("REVOKE {} FROM {}").format(
                    sql.Identifier(role), sql.SQL(", ").join(sql.Identifier(p) for p in principals)
                ),
                (),
            )
            for role, principals in principals_by_role.items()
        ]
        # Sessions of the login roles may still hold the privilege (SET ROLE): end them.
        terminate = (
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ANY(%s) AND pid <> pg_backend_pid()"
        )
        statements = [*revokes, (terminate, (sorted({target.principal for target in targets}),))]
        if patient:
            self._run(*statements)
        else:  # in one transaction whose lock wait is short (SET LOCAL ends with it)
            from django.conf import settings

            lock_ms = min(IMPATIENT_LOCK_MS, int(settings.PROVISIONING_TARGET_LOCK_TIMEOUT_SECONDS * 1000))
            self._run(("BEGIN", ()), (f"SET LOCAL lock_timeout = {lock_ms}", ()), *statements, ("COMMIT", ()))

    def is_applied(self, target: Target) -> bool:
        return bool(self.applied_among([target]))

    def applied_among(self, targets: list[Target]) -> set[Target]:
        """One read of pg_auth_members for all ``targets``; each is answered by its own (role, login) pair."""
        query = (
            "SELECT g.rolname, u.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
            "JOIN pg_roles u ON u.oid = m.member WHERE g.rolname = ANY(%s) AND u.rolname = ANY(%s)"
        )
        roles = sorted({target.target_role for target in targets})
        principals = sorted({target.principal for target in targets})
        held = {(role, principal) for role, principal in self._run((query, (roles, principals)))}
        return {target for target in targets if (target.target_role, target.principal) in held}

    def members(self, target_role: str) -> set[str] | None:
        query = (
            "SELECT u.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
            "JOIN pg_roles u ON u.oid = m.member WHERE g.rolname = %s"
        )
        # Members WITH ADMIN OPTION count too (they hold more than a plain member); the provisioner
        # itself is left out by reconciliation, by name.
        return {row[0] for row in self._run((query, (target_role,)))}

    def remove_principal(self, principal: str, target_role: str) -> None:
        target = Target(0, principal, target_role, principal, target_role, "")
        self.remove(target)
        if self.is_applied(target):  # e.g. granted by a superuser (PostgreSQL 16+ only warns then)
            raise ConnectorError(f"{principal} still holds {target_role} after REVOKE.")
