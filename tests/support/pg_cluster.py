"""A private PostgreSQL cluster for the activity capture tests: created with initdb on a free port, with
``pg_stat_statements`` and ``pgaudit`` preloaded and the server log written as jsonlog and csvlog, so the tests see
exactly what a production target with activity capture shows. One cluster per test session (a session
fixture in conftest); each test makes its own target database and roles in it (``tests.support.pg_target``).

Needs the PostgreSQL server binaries and Debian's ``postgresql-15-pgaudit`` (``.ci/run`` installs it).
Run as root, the cluster runs as the ``postgres`` OS user (initdb refuses root). Stopped by its PID.
"""

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

CONF = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{dir}'
max_connections = {max_connections}
shared_buffers = 32MB
fsync = off
synchronous_commit = off
full_page_writes = off
shared_preload_libraries = 'pg_stat_statements,pgaudit'
pg_stat_statements.track = all
logging_collector = on
log_destination = 'jsonlog,csvlog'
log_directory = '{dir}/log'
log_filename = 'postgresql.log'
log_file_mode = 0644
log_timezone = 'UTC'
log_rotation_age = 0
log_rotation_size = 0
"""

HBA = """
local all all trust
host all postgres 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
"""


def bindir() -> Path | None:
    """The newest installed PostgreSQL server's binaries (Debian layout), or None."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return candidates[-1].parent if candidates else None


def missing() -> str | None:
    """Why a private cluster cannot be made here, or None."""
    binaries = bindir()
    if binaries is None:
        return "needs the PostgreSQL server binaries (initdb) under /usr/lib/postgresql"
    libdir = subprocess.run(
        [str(binaries / "pg_config"), "--pkglibdir"], capture_output=True, text=True, check=False
    ).stdout.strip()
    if not libdir or not (Path(libdir) / "pgaudit.so").exists():
        version = binaries.parent.name
        return f"needs pgaudit (Debian package postgresql-{version}-pgaudit)"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivateCluster:
    """initdb + start on a free port; ``stop()`` ends the postmaster by its PID and removes the files."""

    def __init__(self, *, max_connections: int = 60) -> None:
        self.max_connections = max_connections
        self.bindir = bindir()
        self.dir = Path(tempfile.mkdtemp(prefix="accessgov-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        self.host = "127.0.0.1"
        self.superuser = "postgres"
        self.pid: int | None = None
        self._as_postgres = os.geteuid() == 0

    @property
    def jsonlog(self) -> Path:
        return self.dir / "log" / "postgresql.json"

    @property
    def csvlog(self) -> Path:
        return self.dir / "log" / "postgresql.csv"

    def _run(self, *args: str) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, cwd=str(self.dir))

    def start(self) -> "PrivateCluster":
        if self._as_postgres:
            owner = pwd.getpwnam("postgres")
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
        os.chmod(self.dir, 0o755)  # noqa: S103 - the server (postgres) and the tests (root) both read its log
        self._run("initdb", "-D", str(self.data), "-U", self.superuser, "--auth=trust", "-E", "UTF8", "--no-sync")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(CONF.format(port=self.port, dir=self.dir, max_connections=self.max_connections))
        (self.data / "pg_hba.conf").write_text(HBA)
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "30", "-l", str(self.dir / "start.log"), "start")
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])
        return self

    def connect(self, dbname: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(host=self.host, port=self.port, user=self.superuser, dbname=dbname, autocommit=True)

    def stop(self) -> None:
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGINT)  # fast shutdown
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and Path(f"/proc/{self.pid}").exists():
                time.sleep(0.05)
            self.pid = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def wait_for_log(self, needle: str, timeout: float = 5.0, *, path: Path | None = None) -> bool:
        """The logging collector writes asynchronously: wait until ``needle`` is in the log (the jsonlog,
        unless another file is named)."""
        path = path or self.jsonlog
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists() and needle in path.read_text(errors="replace"):
                return True
            time.sleep(0.05)
        return False
