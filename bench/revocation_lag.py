"""Revocation lag and approval → applied latency against a real PostgreSQL target, with real
Celery workers on Redis (one for the default queue, one for notifications, as in production).
Prints numbers (not pass/fail) and writes them into docs/PERFORMANCE.md.

    .venv/bin/python bench/revocation_lag.py [--grants 200] [--spread 10] [--email-ms 200]

Needs PostgreSQL on 127.0.0.1:5432 (trust auth as `postgres`) and Redis on 127.0.0.1:6379 — the
services CI starts. It creates its own databases (accessgov_bench, accessgov_bench_target) and
roles, and drops the roles afterwards.

Method: N users are eligible for a role on a system with the postgres connector (least-privilege
provisioner). Each request is approved through the services; the outbox drain task applies the
membership at the target (approval → applied = provisioned_at − activated_at). Then every grant's
end is moved to now + i·spread/N (so N grants end over `spread` seconds) and its expiry timer is
scheduled at that instant, exactly as activation does. At its end the first timer expires every
grant due by then and drains the removals itself: REVOKE (one statement per batch), terminate the
grantees' sessions, read pg_auth_members back; the other timers find nothing left. Revocation lag =
removal_confirmed_at − expires_at. With --email-ms grantees have addresses and each email takes that
long to send (bench/slow_email.py), as through a real mail relay. Baselines measured in the same
run: a trivial task round trip over the same Redis, and how late an eta task with nothing to do starts.
"""

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import pct, write_section  # noqa: E402

APP_DB = "accessgov_bench_lag"  # accessgov_bench holds the scale dataset (seed_scale.py)
TARGET_DB = "accessgov_bench_target"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
MANAGED = "bench_payments_rw"
PROVISIONER = "bench_provisioner"

os.environ.update(
    {
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DEBUG": "1",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{APP_DB}",
        "CELERY_BROKER_URL": REDIS_URL,
        "CELERY_RESULT_BACKEND": REDIS_URL,
        "VAR_DIR": str(ROOT / "var" / "bench"),
        "LOG_LEVEL": "WARNING",
    }
)


def admin_sql(statements: list[str], dbname: str = "postgres") -> None:
    import psycopg

    with psycopg.connect(dbname=dbname, autocommit=True, **PG) as conn:
        for statement in statements:
            conn.execute(statement)


def prepare_databases(n: int) -> list[str]:
    import psycopg

    with psycopg.connect(dbname="postgres", autocommit=True, **PG) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname IN (%s, %s) AND pid <> pg_backend_pid()",
            (APP_DB, TARGET_DB),
        )
        for db in (APP_DB, TARGET_DB):
            conn.execute(f'DROP DATABASE IF EXISTS "{db}"')
            conn.execute(f'CREATE DATABASE "{db}"')
    logins = [f"bench_user_{i}" for i in range(n)]
    drop_roles(logins)
    admin_sql(
        [
            f"CREATE ROLE {MANAGED} NOLOGIN",
            f"CREATE ROLE {PROVISIONER} LOGIN PASSWORD 'bench'",
            f"GRANT {MANAGED} TO {PROVISIONER} WITH ADMIN OPTION",
            f"GRANT pg_signal_backend TO {PROVISIONER}",
            f'GRANT CONNECT ON DATABASE "{TARGET_DB}" TO {PROVISIONER}',
            *[f"CREATE ROLE {login} LOGIN" for login in logins],
        ]
    )
    return logins


def drop_roles(logins: list[str]) -> None:
    import psycopg

    with psycopg.connect(dbname="postgres", autocommit=True, **PG) as conn:
        existing = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 'bench\\_%'")}
        if (
            PROVISIONER in existing
            and conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (TARGET_DB,)).fetchone()
        ):
            conn.execute(f'REVOKE CONNECT ON DATABASE "{TARGET_DB}" FROM {PROVISIONER}')
        for role in [*logins, PROVISIONER, MANAGED]:
            if role in existing:
                conn.execute(f'DROP ROLE "{role}"')


def start_worker(concurrency: int, queue: str) -> subprocess.Popen:
    """A worker consuming ``queue``, as in production (docker-compose.yml): the default queue's worker
    expires and removes, the notifications queue's worker sends emails and webhooks."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "portal",
            "worker",
            f"--queues={queue}",
            f"--hostname=bench-{queue}@%h",
            f"--concurrency={concurrency}",
            "--loglevel=WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def reap_worker(worker: subprocess.Popen) -> None:
    """Wait for a worker told to stop (SIGTERM: it finishes its current tasks), killing it after 30 s."""
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:  # still finishing queued notifications: the numbers are in
        worker.kill()
        worker.wait(timeout=10)


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grants", type=int, default=200)
    parser.add_argument("--spread", type=float, default=10.0, help="seconds over which the grants end")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--notify-concurrency", type=int, default=2, help="processes of the notifications worker")
    parser.add_argument(
        "--email-ms",
        type=int,
        default=0,
        help="grantees have email addresses and sending each email takes this long (an SMTP relay's latency)",
    )
    parser.add_argument("--no-write", action="store_true", help="do not update docs/PERFORMANCE.md")
    parser.add_argument("--section", default="revocation_lag", help="which marked section of PERFORMANCE.md to rewrite")
    args = parser.parse_args()
    if args.email_ms:
        os.environ.update({"EMAIL_BACKEND": "bench.slow_email.SlowEmailBackend", "BENCH_EMAIL_MS": str(args.email_ms)})

    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    logins = prepare_databases(args.grants)

    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from celery import Celery
    from django.utils import timezone
    from guardian.shortcuts import assign_perm

    from accessgov.models import AccessEvent, Eligibility, Grant, Role, System, User
    from accessgov.services import access_requests as ar

    system = System.objects.create(
        name="Bench target",
        slug="bench-target",
        connector=System.Connector.POSTGRES,
        connector_config={
            "host": "127.0.0.1",
            "port": 5432,
            "dbname": TARGET_DB,
            "user": PROVISIONER,
            "principal_template": "bench_{username}",
        },
        connector_secret="bench",
    )
    role = Role.objects.create(
        system=system,
        name="read-write",
        target_name=MANAGED,
        approvals_required=1,
        default_duration=timedelta(hours=1),
        max_duration=timedelta(hours=4),
    )
    approver = User.objects.create(username="bench_approver", email="approver@example.com")
    assign_perm("accessgov.approve_role", approver, role)
    users = [
        User(username=name, email=f"{name}@example.com" if args.email_ms else "")
        for name in (login.removeprefix("bench_") for login in logins)
    ]
    User.objects.bulk_create(users)
    users = list(User.objects.filter(username__startswith="user_").order_by("pk"))
    Eligibility.objects.bulk_create([Eligibility(role=role, user=u) for u in users])

    client = Celery("bench", broker=REDIS_URL, backend=REDIS_URL, set_as_current=False)
    workers = [
        start_worker(args.concurrency, "celery"),
        start_worker(args.notify_concurrency, "notifications"),
    ]
    try:
        wait_for(lambda: _ping(client), 30, "the worker")
        # --- Baselines in this run ---------------------------------------------------------------
        round_trips = []
        for _ in range(50):
            t0 = time.perf_counter()
            client.send_task("accessgov.tasks.ping").get(timeout=10)
            round_trips.append(time.perf_counter() - t0)
        eta_late = []
        for _ in range(20):
            eta = datetime.now(UTC) + timedelta(milliseconds=300)
            result = client.send_task("accessgov.tasks.heartbeat", eta=eta, ignore_result=False)
            ran_at = result.get(timeout=10)
            eta_late.append(ran_at - eta.timestamp())

        # --- Approval → applied ------------------------------------------------------------------
        for user in users:
            access_request = ar.access_request_submit(
                user, role=role, duration=timedelta(hours=1), justification="Benchmark run: apply and remove"
            )
            ar.access_request_approve(approver, access_request.pk)
        wait_for(
            lambda: Grant.objects.filter(role=role, provisioned_at__isnull=True).count() == 0,
            120,
            "every grant to be applied",
        )
        applied = [(g.provisioned_at - g.activated_at).total_seconds() for g in Grant.objects.filter(role=role)]

        # --- Revocation lag ----------------------------------------------------------------------
        start = timezone.now() + timedelta(seconds=3)
        grants = list(Grant.objects.filter(role=role).order_by("pk"))
        for i, grant in enumerate(grants):
            ends = start + timedelta(seconds=args.spread * i / len(grants))
            Grant.objects.filter(pk=grant.pk).update(expires_at=ends)
            client.send_task("accessgov.tasks.expire_grant", args=[grant.pk], eta=ends)
        wait_for(
            lambda: Grant.objects.filter(role=role, removal_confirmed_at__isnull=True).count() == 0,
            args.spread + 120,
            "every removal to be confirmed",
        )
        lags = [(g.removal_confirmed_at - g.expires_at).total_seconds() for g in Grant.objects.filter(role=role)]
        expired_by_timer = AccessEvent.objects.filter(
            event_type="grant.expired", actor_label="system:expiry-timer"
        ).count()
        members_left = _members_left()
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            reap_worker(worker)
        client.close()
        from django.db import connections

        connections.close_all()
        drop_roles(logins)

    results = {
        "grants": len(lags),
        "spread_s": args.spread,
        "email_ms": args.email_ms,
        "concurrency": args.concurrency,
        "notify_concurrency": args.notify_concurrency,
        "applied_p50": statistics.median(applied),
        "applied_p99": pct(applied, 99),
        "applied_max": max(applied),
        "lag_p50": statistics.median(lags),
        "lag_p99": pct(lags, 99),
        "lag_max": max(lags),
        "rt_p50": statistics.median(round_trips),
        "rt_p99": pct(round_trips, 99),
        "eta_late_p50": statistics.median(eta_late),
        "eta_late_max": max(eta_late),
        "expired_by_timer": expired_by_timer,
        "members_left": members_left,
    }
    report = render(results)
    print(report)
    if not args.no_write:
        write_section(report, args.section)


def _ping(client) -> bool:
    try:
        return client.send_task("accessgov.tasks.ping").get(timeout=2) == "pong"
    except Exception:
        return False


def _members_left() -> int:
    import psycopg

    with psycopg.connect(dbname="postgres", **PG) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid WHERE g.rolname = %s "
            "AND NOT m.admin_option",
            (MANAGED,),
        ).fetchone()
    return row[0]


def render(r: dict) -> str:
    ms = lambda s: f"{s * 1000:.0f} ms"  # noqa: E731
    return "\n".join(
        [
            f"### Provisioning against PostgreSQL: {r['grants']} grants ending over {r['spread_s']:.0f} s "
            f"(worker concurrency {r['concurrency']}, notifications worker {r['notify_concurrency']}"
            + (f"; each email takes {r['email_ms']} ms to send" if r["email_ms"] else "")
            + ")",
            "",
            f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}; `bench/revocation_lag.py`.",
            "",
            "| what | p50 | p99 | max | target |",
            "|---|---|---|---|---|",
            f"| approval → applied at the target (provisioned_at − activated_at) | {ms(r['applied_p50'])} | "
            f"{ms(r['applied_p99'])} | {ms(r['applied_max'])} | p99 ≤ 1 s |",
            f"| revocation lag: expires_at → removed and confirmed (grants ending over {r['spread_s']:.0f} s) | "
            f"{ms(r['lag_p50'])} | {ms(r['lag_p99'])} | {ms(r['lag_max'])} | p99 ≤ 2 s |",
            f"| baseline: trivial task round trip over the same Redis | {ms(r['rt_p50'])} | {ms(r['rt_p99'])} | | |",
            f"| baseline: an empty eta task starts late by | {ms(r['eta_late_p50'])} | | {ms(r['eta_late_max'])} | |",
            "",
            f"Ratio revocation lag p99 / task round trip p50: {r['lag_p99'] / r['rt_p50']:.0f}×. "
            f"{r['expired_by_timer']} of {r['grants']} grants were expired by their eta timer (the rest by the sweep); "
            f"memberships left at the target afterwards: {r['members_left']}.",
        ]
    )


if __name__ == "__main__":
    main()
