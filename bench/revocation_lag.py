"""Revocation lag and approval → applied latency against a real PostgreSQL target, with the production
shape: the expiry scheduler (``manage.py run_scheduler``), beat, and Celery workers on Redis (one for the
default queue, one for notifications). Prints numbers (not pass/fail) and writes them into
docs/PERFORMANCE.md.

    .venv/bin/python bench/revocation_lag.py [--grants 200] [--spread 10] [--email-ms 200]
    .venv/bin/python bench/revocation_lag.py --redis-outage 60 --section revocation_lag_outage

Needs PostgreSQL on 127.0.0.1:5432 (trust auth as `postgres`) and Redis on 127.0.0.1:6379 — the
services CI starts. It creates its own databases (accessgov_bench, accessgov_bench_target) and
roles, and drops the roles afterwards. With --redis-outage it runs its own redis-server on a free port
(never the shared one) and stops it.

Method: N users are eligible for a role on a system with the postgres connector (least-privilege
provisioner). Each request is approved through the services; the scheduler (woken by the commit) or the
worker's after-commit drain applies the membership at the target (approval → applied = provisioned_at −
activated_at). Then every grant's end is moved to now + i·spread/N (so N grants end over `spread`
seconds) in one transaction that wakes the scheduler (NOTIFY), as the services do when they write a
deadline. Nothing is queued per grant: the scheduler sleeps until the next end the database holds,
expires every grant due by then in one set-based pass and drains the removals (REVOKE in one statement
per batch, terminate the grantees' sessions, read pg_auth_members back). Revocation lag =
removal_confirmed_at − expires_at. With --email-ms grantees have addresses and each email takes that long
to send (bench/slow_email.py), as through a real mail relay.

--redis-outage S: after the approvals Redis is killed for S seconds and every grant ends during the
outage (spread over it, 5 s from either edge); then Redis comes back on the same port. Reported: the lag
from each grant's end, the lag measured from Redis's return (a grant removed before Redis returned
counts 0), how long after the return the worker answered a task again, and whether every process
(scheduler, beat, both workers) is still the one started — nobody restarts anything.

Baselines measured in the same run: a trivial task round trip over the same Redis, and one scheduler
round with nothing due (lease renewal + the next-due query, on a probe lease).
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import PrivateRedis, measured_on, pct, write_section  # noqa: E402

APP_DB = "accessgov_bench_lag"  # accessgov_bench holds the scale dataset (seed_scale.py)
TARGET_DB = "accessgov_bench_target"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
MANAGED = "bench_payments_rw"
PROVISIONER = "bench_provisioner"
LOG_DIR = ROOT / "var" / "bench" / "log"


def bench_env(broker_url: str) -> None:
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "DEBUG": "1",
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{APP_DB}",
            "CELERY_BROKER_URL": broker_url,
            "CELERY_RESULT_BACKEND": broker_url,
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


def _log(name: str):
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    return (LOG_DIR / f"{name}.log").open("w")


def start_scheduler(name: str = "scheduler") -> subprocess.Popen:
    """``manage.py run_scheduler``, as in production (docker-compose.yml), logging at INFO."""
    return subprocess.Popen(
        [sys.executable, "manage.py", "run_scheduler"],
        cwd=ROOT,
        env={**os.environ, "LOG_LEVEL": "INFO"},
        stdout=_log(name),
        stderr=subprocess.STDOUT,
    )


def start_beat() -> subprocess.Popen:
    """Beat: the 30 s sweep (the safety net), as in production."""
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "portal", "beat", "--loglevel=WARNING"],
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=_log("beat"),
        stderr=subprocess.STDOUT,
    )


def start_worker(concurrency: int, queue: str) -> subprocess.Popen:
    """A worker consuming ``queue``, as in production (docker-compose.yml): the default queue's worker
    provisions after approvals and sweeps, the notifications queue's worker sends emails and webhooks."""
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
        stdout=_log(f"worker-{queue}"),
        stderr=subprocess.STDOUT,
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
    parser.add_argument(
        "--redis-outage", type=float, default=0, help="kill a private Redis for this many seconds while grants end"
    )
    parser.add_argument("--no-write", action="store_true", help="do not update docs/PERFORMANCE.md")
    parser.add_argument("--section", default="revocation_lag", help="which marked section of PERFORMANCE.md to rewrite")
    args = parser.parse_args()
    private_redis = PrivateRedis(ROOT / "var" / "bench" / "redis") if args.redis_outage else None
    if private_redis:
        private_redis.start()
    broker_url = private_redis.url if private_redis else REDIS_URL
    bench_env(broker_url)
    if args.email_ms:
        os.environ.update({"EMAIL_BACKEND": "bench.slow_email.SlowEmailBackend", "BENCH_EMAIL_MS": str(args.email_ms)})

    import redis

    redis.Redis.from_url(broker_url).flushdb()
    logins = prepare_databases(args.grants)

    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from celery import Celery
    from django.db import transaction
    from django.db.models import Count
    from django.utils import timezone
    from guardian.shortcuts import assign_perm

    from accessgov.models import AccessEvent, Eligibility, Grant, Role, System, User
    from accessgov.services import access_requests as ar
    from accessgov.services import scheduler as scheduling

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

    client = Celery("bench", broker=broker_url, backend=broker_url, set_as_current=False)
    processes = {
        "scheduler": start_scheduler(),
        "beat": start_beat(),
        "worker": start_worker(args.concurrency, "celery"),
        "notifier": start_worker(args.notify_concurrency, "notifications"),
    }
    outage: dict = {}
    try:
        wait_for(lambda: _ping(client), 30, "the worker")
        wait_for(lambda: "holds the lease" in (LOG_DIR / "scheduler.log").read_text(), 30, "the scheduler")
        # --- Baselines in this run ---------------------------------------------------------------
        round_trips = []
        for _ in range(50):
            t0 = time.perf_counter()
            client.send_task("accessgov.tasks.ping").get(timeout=10)
            round_trips.append(time.perf_counter() - t0)
        idle_rounds = []
        for _ in range(50):  # what the scheduler does every second when nothing is due (on a probe lease)
            t0 = time.perf_counter()
            scheduling.scheduler_lease_acquire("bench-probe", timezone.now(), ttl_seconds=5, name="bench-probe")
            scheduling.next_due(timezone.now())
            idle_rounds.append(time.perf_counter() - t0)

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
        pids = {name: process.pid for name, process in processes.items()}

        # --- Revocation lag ----------------------------------------------------------------------
        if private_redis:
            private_redis.stop()
            outage["stopped"] = timezone.now()
            start = outage["stopped"] + timedelta(seconds=5)
            spread = max(args.redis_outage - 10, 0)
        else:
            start, spread = timezone.now() + timedelta(seconds=3), args.spread
        grants = list(Grant.objects.filter(role=role).order_by("pk"))
        with transaction.atomic():  # as the services do when they write a deadline: one NOTIFY
            for i, grant in enumerate(grants):
                ends = start + timedelta(seconds=spread * i / len(grants))
                Grant.objects.filter(pk=grant.pk).update(expires_at=ends)
            scheduling.scheduler_wake()
        if private_redis:
            time.sleep(
                max(0.0, (outage["stopped"] + timedelta(seconds=args.redis_outage) - timezone.now()).total_seconds())
            )
            outage["removed_during"] = Grant.objects.filter(role=role, removal_confirmed_at__isnull=False).count()
            private_redis.start()
            outage["returned"] = timezone.now()
            # A fresh client per try: the old one's result connection went down with Redis.
            wait_for(lambda: _ping_fresh(broker_url), 120, "a worker after Redis returned")
            outage["worker_back_s"] = (timezone.now() - outage["returned"]).total_seconds()
        wait_for(
            lambda: Grant.objects.filter(role=role, removal_confirmed_at__isnull=True).count() == 0,
            spread + 120,
            "every removal to be confirmed",
        )
        ended = list(Grant.objects.filter(role=role))
        lags = [(g.removal_confirmed_at - g.expires_at).total_seconds() for g in ended]
        if private_redis:
            outage["from_return"] = [
                max(0.0, (g.removal_confirmed_at - outage["returned"]).total_seconds()) for g in ended
            ]
            outage["alive"] = [name for name, process in processes.items() if process.poll() is None]
            outage["same_pids"] = all(processes[name].pid == pid for name, pid in pids.items())
        by_actor = dict(
            AccessEvent.objects.filter(event_type="grant.expired")
            .values_list("actor_label")
            .annotate(n=Count("pk"))
            .order_by()
        )
        members_left = _members_left()
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            reap_worker(process)
        client.close()
        from django.db import connections

        connections.close_all()
        drop_roles(logins)
        if private_redis:
            import gc

            gc.collect()  # the probe clients' results unsubscribe while Redis is still there
            private_redis.stop()

    results = {
        "grants": len(lags),
        "spread_s": spread,
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
        "idle_round_p50": statistics.median(idle_rounds),
        "idle_round_p99": pct(idle_rounds, 99),
        "by_actor": by_actor,
        "members_left": members_left,
        "outage_s": args.redis_outage,
    }
    if private_redis:
        results.update(
            {
                "removed_during": outage["removed_during"],
                "from_return_p50": statistics.median(outage["from_return"]),
                "from_return_p99": pct(outage["from_return"], 99),
                "from_return_max": max(outage["from_return"]),
                "worker_back_s": outage["worker_back_s"],
                "alive": outage["alive"],
                "same_pids": outage["same_pids"],
            }
        )
    report = render(results)
    print(report)
    if not args.no_write:
        write_section(report, args.section)


def _ping_fresh(broker_url: str) -> bool:
    from celery import Celery

    client = Celery("bench-probe", broker=broker_url, backend=broker_url, set_as_current=False)
    try:
        return _ping(client)
    finally:
        client.close()


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
    actors = ", ".join(f"{n} by {label}" for label, n in sorted(r["by_actor"].items()))
    if r["outage_s"]:
        title = (
            f"### Redis down for {r['outage_s']:.0f} s: {r['grants']} grants ending during the outage "
            f"(scheduler, beat, worker concurrency {r['concurrency']}, notifications worker {r['notify_concurrency']})"
        )
        what = f"revocation lag: expires_at → removed and confirmed (grants ending over {r['spread_s']:.0f} s of the outage)"
    else:
        title = (
            f"### Provisioning against PostgreSQL: {r['grants']} grants ending over {r['spread_s']:.0f} s "
            f"(scheduler, beat, worker concurrency {r['concurrency']}, notifications worker {r['notify_concurrency']}"
            + (f"; each email takes {r['email_ms']} ms to send" if r["email_ms"] else "")
            + ")"
        )
        what = f"revocation lag: expires_at → removed and confirmed (grants ending over {r['spread_s']:.0f} s)"
    lines = [
        title,
        "",
        f"{measured_on()}; "
        f"`bench/revocation_lag.py`" + (f" --redis-outage {r['outage_s']:.0f}" if r["outage_s"] else "") + ".",
        "",
        "| what | p50 | p99 | max | target |",
        "|---|---|---|---|---|",
        f"| approval → applied at the target (provisioned_at − activated_at) | {ms(r['applied_p50'])} | "
        f"{ms(r['applied_p99'])} | {ms(r['applied_max'])} | p99 ≤ 1 s |",
        f"| {what} | {ms(r['lag_p50'])} | {ms(r['lag_p99'])} | {ms(r['lag_max'])} | p99 ≤ 2 s |",
    ]
    if r["outage_s"]:
        lines.append(
            f"| revocation lag measured from Redis's return (removed before it: 0) | {ms(r['from_return_p50'])} | "
            f"{ms(r['from_return_p99'])} | {ms(r['from_return_max'])} | p99 ≤ 5 s |"
        )
    lines += [
        f"| baseline: trivial task round trip over the same Redis | {ms(r['rt_p50'])} | {ms(r['rt_p99'])} | | |",
        f"| baseline: one scheduler round with nothing due (lease + next-due query) | {ms(r['idle_round_p50'])} | "
        f"{ms(r['idle_round_p99'])} | | |",
        "",
        f"Ratio revocation lag p99 / task round trip p50: {r['lag_p99'] / r['rt_p50']:.0f}×. "
        f"Expired: {actors}; memberships left at the target afterwards: {r['members_left']}.",
    ]
    if r["outage_s"]:
        lines += [
            "",
            f"{r['removed_during']} of {r['grants']} removals were confirmed while Redis was down. After Redis "
            f"returned, the worker answered a task again after {r['worker_back_s']:.1f} s (kombu's reconnection "
            f"backoff). Processes still running at the end, none restarted: {', '.join(r['alive'])} "
            f"({'same' if r['same_pids'] else 'NOT the same'} process ids as at the start).",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
