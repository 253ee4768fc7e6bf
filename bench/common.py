"""Shared by the benchmarks: a fresh PostgreSQL database for a Django run, a verified session,
percentiles, gunicorn serving the portal, and rewriting a marked section of docs/PERFORMANCE.md."""

import os
import platform
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
# The large dataset of bench/seed_scale.py, shared by the page, time-to-access and load benchmarks.
SCALE_DB = os.environ.get("BENCH_SCALE_DB", "accessgov_bench")  # another name keeps parallel work apart
# Every seeded user signs in with this password (and their own TOTP device); bench data only.
BENCH_PASSWORD = "bench-password-2026"
# The benchmarks' own Redis database (the test suites use others).
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")


def production_like_env(database: str, **extra: str) -> None:
    """Settings for a benchmark process: DEBUG off (DEBUG keeps every query in memory), plain HTTP."""
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "DEBUG": "0",
            "SECRET_KEY": "bench-only-secret-key-0123456789abcdefghijklmnopqrstuvwxyz",
            "ALLOWED_HOSTS": "testserver",
            "SECURE_SSL_REDIRECT": "0",
            "SECURE_COOKIES": "0",
            "STATIC_MANIFEST": "0",
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{database}",
            "VAR_DIR": str(ROOT / "var" / "bench"),
            "LOG_LEVEL": "ERROR",
            **extra,
        }
    )


def fresh_database(*names: str) -> None:
    """Drop and create the named databases (ending their sessions first)."""
    import psycopg

    with psycopg.connect(dbname="postgres", autocommit=True, **PG) as conn:
        for name in names:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')


def setup_django() -> None:
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def verified_client(user):
    """A test client signed in with password and a (bench-only) OTP device."""
    from django.test import Client
    from django_otp import DEVICE_ID_SESSION_KEY
    from django_otp.plugins.otp_totp.models import TOTPDevice

    device = TOTPDevice.objects.filter(user=user, confirmed=True).first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name="bench", confirmed=True)
    client = Client()
    client.force_login(user)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    return client


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def write_section(report: str, section: str) -> None:
    path = ROOT / "docs" / "PERFORMANCE.md"
    begin, end = f"<!-- bench:{section} -->", f"<!-- /bench:{section} -->"
    text = path.read_text() if path.exists() else "# Performance\n\n"
    block = f"{begin}\n{report}\n{end}"
    if begin in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
    print(f"\nwrote {path.relative_to(ROOT)}")


def already_seeded() -> bool:
    """The scale database holds the seed, and its pending requests have not lapsed yet."""
    import psycopg

    try:
        with psycopg.connect(dbname=SCALE_DB, **PG) as conn:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM accessgov_user WHERE username = 'bench_auditor'), "
                "(SELECT count(*) FROM accessgov_accessrequest WHERE status = 'pending' "
                "AND lapses_at > now() + interval '2 hours')"
            ).fetchone()
    except psycopg.Error:
        return False
    return row[0] == 1 and row[1] > 0


def unapplied_migrations() -> list[str]:
    """The project's migrations the scale database has not applied (a seed made by older code)."""
    import psycopg

    files = sorted(path.stem for path in (ROOT / "accessgov" / "migrations").glob("0*.py"))
    with psycopg.connect(dbname=SCALE_DB, **PG) as conn:
        applied = {name for (name,) in conn.execute("SELECT name FROM django_migrations WHERE app = 'accessgov'")}
    return [name for name in files if name not in applied]


def require_scale_data() -> None:
    """Stop with a clear message unless bench/seed_scale.py has filled the scale database with this code's
    schema."""
    if not already_seeded():
        raise SystemExit(
            f"{SCALE_DB} is not seeded (or its pending requests have lapsed): run bench/seed_scale.py first."
        )
    if missing := unapplied_migrations():
        raise SystemExit(
            f"{SCALE_DB} was seeded before migration(s) {', '.join(missing)}: reseed (bench/seed_scale.py --reset) "
            f"or migrate it (DATABASE_URL=postgres://postgres@127.0.0.1:5432/{SCALE_DB} manage.py migrate)."
        )


def flush_bench_redis() -> None:
    """Drop the tasks a benchmark published without a worker to run them (the benchmarks' own Redis db)."""
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()


def profile_top(func, lines: int = 25) -> str:
    """Run ``func`` under cProfile and return the top functions by cumulative time (for the reports)."""
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.runcall(func)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(lines)
    return out.getvalue()


CPU_GROUPS = {"gunicorn": "gunicorn", "PostgreSQL": "postgres", "locust": "locust", "Redis": "redis-server"}


def cpu_seconds_by_group() -> dict[str, float]:
    """CPU time used so far (user + system, from /proc) by the live processes of each CPU_GROUPS entry,
    matched on the command line. Differences of two readings give each group's share of a window."""
    ticks = dict.fromkeys(CPU_GROUPS, 0)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = f.read().decode(errors="replace")
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        for group, marker in CPU_GROUPS.items():
            if marker in command:
                ticks[group] += int(fields[11]) + int(fields[12])
                break
    hz = os.sysconf("SC_CLK_TCK")
    seconds = {group: n / hz for group, n in ticks.items()}
    seconds[STOLEN] = stolen_seconds()
    return seconds


def process_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process ``pid`` has used so far, from /proc (clock-tick resolution)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# CPU time the hypervisor gave to other machines while ours wanted it ("steal" in /proc/stat): on a shared
# host it can take a large share of a benchmark's window, and the numbers are then not this code's.
STOLEN = "stolen by the host"


def stolen_seconds() -> float:
    """Steal time so far, summed over every CPU (0 where the kernel does not count it)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return 0.0
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0


def idle_seconds() -> tuple[float, float]:
    """Idle time so far, summed over every CPU: (``idle``, ``iowait``) of /proc/stat."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    hz = os.sysconf("SC_CLK_TCK")
    return int(fields[4]) / hz, int(fields[5]) / hz


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PrivateRedis:
    """A redis-server of the benchmark alone (never the shared one), without persistence: stopping it
    loses every queued message, as a crashed broker would. Restarted on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = workdir
        self.process = None
        workdir.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        import subprocess
        import time

        self.process = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""),
                *("--appendonly", "no", "--dir", str(self.workdir)),
            ],
            stdout=(self.workdir / "redis.log").open("a"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while not self.ping():
            if time.monotonic() > deadline:
                raise SystemExit("the private redis-server did not start")
            time.sleep(0.05)

    def ping(self) -> bool:
        import socket

        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Down hard (SIGKILL): clients see refused connections."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def rss_mb(pid: int, *, with_children: bool = True) -> float:
    """Resident memory of a process (and its children: a prefork worker's pool), in MB, from /proc."""
    pids = [pid]
    if with_children:
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            children = []
        pids += [int(child) for child in children]
    total_kb = 0
    for one in pids:
        try:
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return total_kb / 1024


def start_gunicorn(port: int, workers: int = 1, threads: int = 1, worker_class: str | None = None) -> subprocess.Popen:
    """gunicorn serving the portal on 127.0.0.1:``port`` (this process's environment), once /healthz answers."""
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "portal.wsgi",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--worker-class",
        worker_class or ("gthread" if threads > 1 else "sync"),
        "--access-logfile",
        "/dev/null",
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(command, cwd=ROOT, env=os.environ.copy(), stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                if response.status == 200:
                    return process
        except OSError:
            time.sleep(0.2)
    process.terminate()
    raise SystemExit("gunicorn did not answer /healthz within 60 s")


def interpreter() -> str:
    """The Python the benchmark runs on: its version and the interpreter binary, which says how it was built
    (a distribution's or the image's, built with PGO and LTO, or pyenv's default build, with neither)."""
    base = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
    return f"{platform.python_implementation()} {platform.python_version()} ({base})"


def measured_on() -> str:
    """The line every benchmark's section starts with: when, on what, by which interpreter."""
    return (
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, {os.cpu_count()} cores, "
        f"{interpreter()}"
    )
