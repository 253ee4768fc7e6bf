"""A throw-away PostgreSQL target for the PostgreSQL connector tests.

Each ``PgTarget`` creates, on the test server, its own database (``accessgov_target_<suffix>``) with a
table, a managed NOLOGIN role that may read it, a least-privilege provisioner (LOGIN, ADMIN OPTION on
the managed role, pg_signal_backend, CONNECT) and, on demand, login roles for grantees. Roles are
cluster-wide, so every name carries a random suffix and ``drop()`` removes all of them (after
ending their sessions), whatever state the test left them in.
"""

import secrets
from typing import Any

import psycopg
from psycopg import sql

TABLE = "payments"


class PgTarget:
    def __init__(self, *, host: str, port: int, superuser: str, password: str = "") -> None:
        self.host, self.port, self.superuser, self.superuser_password = host, port, superuser, password
        self.suffix = secrets.token_hex(4)
        self.dbname = f"accessgov_target_{self.suffix}"
        self.managed = f"tgt_payments_rw_{self.suffix}"
        self.provisioner = f"tgt_provisioner_{self.suffix}"
        self.password = secrets.token_urlsafe(18)  # the provisioner's: goes into System.connector_secret
        self.principal_template = f"tgt_{{username}}_{self.suffix}"
        self.logins: dict[str, str] = {}  # principal -> password
        self._created_db = False

    # --- connections ----------------------------------------------------------------------------

    def _connect(self, *, user: str, password: str, dbname: str) -> psycopg.Connection:
        return psycopg.connect(
            host=self.host,
            port=self.port,
            dbname=dbname,
            user=user,
            password=password or None,
            autocommit=True,
            connect_timeout=5,
            application_name="accessgov-tests",
        )

    def admin(self, *, dbname: str | None = None) -> psycopg.Connection:
        """A superuser connection (to the target database unless told otherwise)."""
        return self._connect(user=self.superuser, password=self.superuser_password, dbname=dbname or self.dbname)

    def connect_as(self, principal: str) -> psycopg.Connection:
        """A session of a grantee's login role on the target database."""
        return self._connect(user=principal, password=self.logins[principal], dbname=self.dbname)

    # --- life cycle -----------------------------------------------------------------------------

    def create(self) -> "PgTarget":
        ident = sql.Identifier
        with self.admin(dbname="postgres") as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(ident(self.dbname)))
            self._created_db = True
            # Least privilege: nobody may connect unless granted CONNECT explicitly.
            conn.execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(ident(self.dbname)))
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(ident(self.managed)))
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(ident(self.provisioner), sql.Literal(self.password))
            )
            conn.execute(
                sql.SQL("GRANT {} TO {} WITH ADMIN OPTION").format(ident(self.managed), ident(self.provisioner))
            )
            conn.execute(sql.SQL("GRANT pg_signal_backend TO {}").format(ident(self.provisioner)))
            conn.execute(
                sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(ident(self.dbname), ident(self.provisioner))
            )
        with self.admin() as conn:
            conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, amount numeric NOT NULL)").format(ident(TABLE)))
            conn.execute(sql.SQL("INSERT INTO {} VALUES (1, 10.50), (2, 99.00)").format(ident(TABLE)))
            conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(ident(TABLE), ident(self.managed)))
        return self

    def drop(self) -> None:
        """Drop the database and every role this target created (ending their sessions first)."""
        roles = [*self.logins, self.provisioner, self.managed]
        with self.admin(dbname="postgres") as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ANY(%s) OR datname = %s",
                (roles, self.dbname),
            )
            if self._created_db:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.dbname)))
            for role in roles:
                # Memberships and the database's privileges go with the role / the database.
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))

    # --- the world at the target ----------------------------------------------------------------

    def principal(self, username: str) -> str:
        return self.principal_template.format(username=username)

    def create_login(self, username: str) -> str:
        """The login role a grantee uses at the target (named by the principal template)."""
        principal = self.principal(username)
        password = secrets.token_urlsafe(12)
        with self.admin(dbname="postgres") as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(principal), sql.Literal(password))
            )
            self.logins[principal] = password
            conn.execute(
                sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                    sql.Identifier(self.dbname), sql.Identifier(principal)
                )
            )
        return principal

    def grant_by_hand(self, principal: str) -> None:
        """What a DBA does outside AccessGov (drift)."""
        with self.admin() as conn:
            conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(self.managed), sql.Identifier(principal)))

    def members(self) -> set[str]:
        """Direct members of the managed role, the provisioner's ADMIN OPTION membership excluded."""
        with self.admin() as conn:
            rows = conn.execute(
                "SELECT u.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
                "JOIN pg_roles u ON u.oid = m.member WHERE g.rolname = %s AND NOT m.admin_option",
                (self.managed,),
            ).fetchall()
        return {row[0] for row in rows}

    def sessions_of(self, principal: str) -> int:
        with self.admin() as conn:
            return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (principal,)).fetchone()[0]

    def read_table_as_managed(self, session: psycopg.Connection) -> int:
        """In a grantee's session: take the managed role and read the table (raises if not allowed)."""
        session.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(self.managed)))
        return session.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(TABLE))).fetchone()[0]

    def connector_config(self, **overrides: Any) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "dbname": self.dbname,
            "user": self.provisioner,
            "principal_template": self.principal_template,
            **overrides,
        }
