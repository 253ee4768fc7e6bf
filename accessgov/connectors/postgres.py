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

from accessgov.connectors.base import Connector, ConnectorError, Target

CONNECT_TIMEOUT_SECONDS = 3
REQUIRED = ("host", "dbname", "user")


class PostgresConnector(Connector):
    secret_required = True
    reads_back = True

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
        try:
            return psycopg.connect(
                host=self.config["host"],
                port=self.config.get("port", 5432),
                dbname=self.config["dbname"],
                user=self.config["user"],
                password=self.secret or None,
                sslmode=self.config.get("sslmode", "prefer"),
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
                autocommit=True,
                application_name="accessgov-provisioner",
            )
        except psycopg.Error as exc:
            raise ConnectorError(
                f"Cannot connect to {self.config.get('host')}:{self.config.get('port', 5432)}: {exc.__class__.__name__}"
            ) from None

    def _run(self, statement: sql.Composable, params: tuple = ()) -> list[tuple]:
        with self._connect() as conn:
            try:
                cursor = conn.execute(statement, params)
                return cursor.fetchall() if cursor.description else []
            except psycopg.Error as exc:
                message = (exc.diag.message_primary if exc.diag else None) or exc.__class__.__name__
                raise ConnectorError(f"The target refused: {message}") from None

    def apply(self, target: Target) -> None:
        self._run(
            sql.SQL("GRANT {} TO {}").format(sql.Identifier(target.target_role), sql.Identifier(target.principal))
        )

    def remove(self, target: Target) -> None:
        with self._connect() as conn:
            try:
                conn.execute(
                    sql.SQL("REVOKE {} FROM {}").format(
                        sql.Identifier(target.target_role), sql.Identifier(target.principal)
                    )
                )
                # Sessions of the login role may still hold the privilege (SET ROLE): end them.
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s AND pid <> pg_backend_pid()",
                    (target.principal,),
                )
            except psycopg.Error as exc:
                message = (exc.diag.message_primary if exc.diag else None) or exc.__class__.__name__
                raise ConnectorError(f"The target refused: {message}") from None

    def is_applied(self, target: Target) -> bool:
        rows = self._run(
            sql.SQL(
                "SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
                "JOIN pg_roles u ON u.oid = m.member WHERE g.rolname = %s AND u.rolname = %s"
            ),
            (target.target_role, target.principal),
        )
        return bool(rows)

    def members(self, target_role: str) -> set[str] | None:
        rows = self._run(
            sql.SQL(
                "SELECT u.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
                "JOIN pg_roles u ON u.oid = m.member WHERE g.rolname = %s AND NOT m.admin_option"
            ),
            (target_role,),
        )
        return {row[0] for row in rows}

    def remove_principal(self, principal: str, target_role: str) -> None:
        target = Target(0, principal, target_role, principal, target_role, "")
        self.remove(target)
