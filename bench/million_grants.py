"""1,000,000 active grants: scheduler and worker memory stay flat (nothing is held per grant outside the
database), the grants that end meanwhile are still removed on time, and restarts stay fast.

    .venv/bin/python bench/million_grants.py [--grants 1000000] [--due 200] [--eta-contrast 20000]

Needs PostgreSQL and Redis on 127.0.0.1 like the other benchmarks. Creates the databases
accessgov_bench_million and accessgov_bench_million_target and a few roles (dropped afterwards).

Method: the production shape is started first on an almost empty database — the scheduler
(``manage.py run_scheduler``), beat, a worker for the default queue (prefork, concurrency 4) and one for
notifications — and their resident memory (RSS, a prefork worker's pool included) is sampled every half
second for the whole run. Baseline: their RSS before any grant exists. Then 1,000,000 active grants are
created set-based (SQL ``INSERT … SELECT`` over 10,000 users × 1,000 roles on 200 manual systems, ending
over the next 1–30 days) while they run. Then ``--due`` grants on a PostgreSQL target are approved through
the services and made to end over 10 s: their revocation lag (expires_at → removed and confirmed) is what
the million must not slow down. Then each process is stopped with SIGTERM (the time to exit) and
started again (the time until it works: the scheduler holds the lease, the worker answers a task).
``next_due`` (what every scheduler round asks) is timed with the million in place.

``--eta-contrast N`` (same run, for comparison): what the design before issue 15 did — one Celery eta
message per grant, held by a worker — with N timers an hour ahead on an extra solo worker: its RSS growth
per timer and its SIGTERM time.
"""

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import PG, REDIS_URL, fresh_database, measured_on, pct, production_like_env, rss_mb, write_section  # noqa: E402

DB = "accessgov_bench_million"
TARGET_DB = "accessgov_bench_million_target"
MANAGED = "bmil_payments_rw"
PROVISIONER = "bmil_provisioner"
LOG_DIR = ROOT / "var" / "bench" / "million"

production_like_env(DB, CELERY_BROKER_URL=REDIS_URL, CELERY_RESULT_BACKEND=REDIS_URL, LOG_LEVEL="WARNING")

SEED_SQL = [
    """INSERT INTO accessgov_user (password, is_superuser, username, first_name, last_name, email, is_staff,
           is_active, date_joined, session_stamp, is_service_account, inbox_read_through, notification_preferences,
           time_zone)
       SELECT '!', false, 'muser' || g, 'First' || g, 'Last' || g, '', false, true, now() - interval '400 days', md5(g::text),
              false, 0, '{}'::jsonb, ''
       FROM generate_series(0, %(users)s - 1) g""",
    """INSERT INTO accessgov_system (name, slug, environment, description, slack_webhook_url, connector,
           connector_config, connector_secret, reconcile_remove_drift, created_at)
       SELECT 'System ' || g, 'system-' || g, 'production', '', '', 'manual', '{}'::jsonb, '', false, now()
       FROM generate_series(0, 199) g""",
    """INSERT INTO accessgov_role (system_id, name, description, risk_tier, default_duration, max_duration,
           approvals_required, ticket_required, ticket_pattern, step_up_required, break_glass_allowed,
           pending_timeout, target_name, ticket_projects, ticket_issue_types, ticket_assigned_to_requester,
           ticket_bound, access_level)
       SELECT s.id, 'role-' || k, '', 'medium', interval '1 hour', interval '800 hours', 1, false, '', false, false,
              interval '24 hours', '', '', '', false, false, ''
       FROM accessgov_system s, generate_series(0, 4) k WHERE s.slug LIKE 'system-%%'""",
    # Grant g: user g %% users, role (g / users + 7 * user) %% roles: distinct (user, role) pairs.
    """INSERT INTO accessgov_accessrequest (requester_id, role_id, kind, status, requested_duration, approved_duration,
           starts_at, justification, ticket, created_at, lapses_at, decided_at, auto_approved_by_rule, extends_grant_id,
           reminder_sent_at, ticket_title, ticket_url, ticket_bound, incident_id, auto_approval_note,
           auto_approval_evidence)
       SELECT u.min_id + g %% %(users)s, r.min_id + ((g / %(users)s) + 7 * (g %% %(users)s)) %% r.n, 'access',
              'approved', interval '720 hours', interval '720 hours', NULL, 'Long-running access ' || g, '',
              now() - interval '1 hour', now() + interval '23 hours', now() - interval '1 hour', '', NULL, NULL,
              '', '', false, '', '', '{}'::jsonb
       FROM generate_series(0, %(grants)s - 1) g,
            (SELECT min(id) AS min_id FROM accessgov_user WHERE username LIKE 'muser%%') u,
            (SELECT min(id) AS min_id, count(*) AS n FROM accessgov_role WHERE name LIKE 'role-%%') r""",
    """INSERT INTO accessgov_grant (access_request_id, user_id, role_id, status, is_break_glass, starts_at, expires_at,
           created_at, activated_at, ended_at, end_reason, ended_by_id, extension_count, expiry_reminder_sent_at,
           provisioning_state, provisioning_error, provisioned_at, removal_requested_at, removed_at,
           removal_confirmed_at, removal_alerted_at)
       SELECT a.id, a.requester_id, a.role_id, 'active', false, a.decided_at,
              now() + interval '1 day' + (a.id %% 2500000) * interval '1 second', a.decided_at, a.decided_at, NULL, '',
              NULL, 0, NULL, 'applied', '', a.decided_at, NULL, NULL, NULL, NULL
       FROM accessgov_accessrequest a WHERE a.justification LIKE 'Long-running access %%'""",
    "ANALYZE",
]


class Sampler(threading.Thread):
    """RSS of each named process every ``interval`` seconds (the latest process under each name)."""

    def __init__(self, processes: dict[str, subprocess.Popen], interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.processes, self.interval = processes, interval
        self.samples: dict[str, list[tuple[float, float]]] = {name: [] for name in processes}
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            now = time.monotonic()
            for name, process in list(self.processes.items()):
                if process.poll() is None:
                    self.samples[name].append((now, rss_mb(process.pid)))
            self.stopped.wait(self.interval)

    def now(self, name: str) -> float:
        return rss_mb(self.processes[name].pid)

    def max_between(self, name: str, start: float, end: float) -> float:
        values = [rss for at, rss in self.samples[name] if start <= at <= end]
        return max(values) if values else 0.0


def _log(name: str):
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    return (LOG_DIR / f"{name}.log").open("a")


def start(name: str) -> subprocess.Popen:
    celery = [sys.executable, "-m", "celery", "-A", "portal"]
    quiet = ["--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel=INFO"]
    commands = {
        "scheduler": [sys.executable, "manage.py", "run_scheduler"],
        "beat": [*celery, "beat", "--loglevel=WARNING"],
        "worker": [*celery, "worker", "--queues=celery", "--concurrency=4", "--hostname=bmil-w@%h", *quiet],
        "notifier": [*celery, "worker", "--queues=notifications", "--concurrency=2", "--hostname=bmil-n@%h", *quiet],
        "eta-worker": [*celery, "worker", "--queues=bench-eta", "--pool=solo", "--hostname=bmil-eta@%h", *quiet],
    }
    env = {**os.environ, "LOG_LEVEL": "INFO"} if name == "scheduler" else os.environ.copy()
    return subprocess.Popen(commands[name], cwd=ROOT, env=env, stdout=_log(name), stderr=subprocess.STDOUT)


def wait_for(predicate, timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {what}")


def stop(process: subprocess.Popen, timeout: float = 60) -> float:
    started = time.monotonic()
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
        return float("inf")
    return time.monotonic() - started


def admin(statements: list[str], dbname: str = "postgres") -> None:
    import psycopg

    with psycopg.connect(dbname=dbname, autocommit=True, **PG) as conn:
        for statement in statements:
            conn.execute(statement)


def drop_target_roles(logins: list[str]) -> None:
    import psycopg

    with psycopg.connect(dbname="postgres", autocommit=True, **PG) as conn:
        existing = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 'bmil\\_%'")}
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (TARGET_DB,),
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{TARGET_DB}"')
        for role in [*logins, PROVISIONER, MANAGED]:
            if role in existing:
                conn.execute(f'DROP ROLE "{role}"')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grants", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--due", type=int, default=200, help="grants at a PostgreSQL target ending over 10 s")
    parser.add_argument("--eta-contrast", type=int, default=20_000, help="eta timers for the before/after contrast")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    logins = [f"bmil_user_{i}" for i in range(args.due)]
    drop_target_roles(logins)
    fresh_database(DB)
    admin([f'CREATE DATABASE "{TARGET_DB}"'])
    admin(
        [
            f"CREATE ROLE {MANAGED} NOLOGIN",
            f"CREATE ROLE {PROVISIONER} LOGIN PASSWORD 'bench'",
            f"GRANT {MANAGED} TO {PROVISIONER} WITH ADMIN OPTION",
            f"GRANT pg_signal_backend TO {PROVISIONER}",
            f'GRANT CONNECT ON DATABASE "{TARGET_DB}" TO {PROVISIONER}',
            *[f"CREATE ROLE {login} LOGIN" for login in logins],
        ]
    )
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from celery import Celery
    from django.db import connection, transaction
    from django.utils import timezone
    from guardian.shortcuts import assign_perm

    from accessgov.models import Eligibility, Grant, Role, System, User
    from accessgov.services import access_requests as ar
    from accessgov.services import scheduler as scheduling

    for path in LOG_DIR.glob("*.log"):
        path.unlink()
    client = Celery("bench", broker=REDIS_URL, backend=REDIS_URL, set_as_current=False)
    processes = {name: start(name) for name in ("scheduler", "beat", "worker", "notifier")}
    sampler = Sampler(processes)
    results: dict = {"grants": args.grants, "due": args.due}
    try:
        wait_for(lambda: _ping(client), 60, "the worker")
        wait_for(lambda: "holds the lease" in (LOG_DIR / "scheduler.log").read_text(), 60, "the scheduler")
        sampler.start()
        time.sleep(5)  # a few idle rounds, sweeps and heartbeats
        watched = ("scheduler", "worker", "notifier")
        baseline = {name: sampler.now(name) for name in watched}

        # --- A million active grants, set-based -------------------------------------------------
        t0 = time.perf_counter()
        with connection.cursor() as cursor:
            for statement in SEED_SQL:
                cursor.execute(statement, {"users": args.users, "grants": args.grants})
        results["seed_s"] = time.perf_counter() - t0
        active = Grant.objects.filter(status="active").count()
        if active != args.grants:
            raise SystemExit(f"expected {args.grants} active grants, found {active}")
        time.sleep(10)  # rounds and a sweep with the million in place
        after_seed = {name: sampler.now(name) for name in watched}
        next_due_times = []
        for _ in range(50):
            t0 = time.perf_counter()
            scheduling.next_due(timezone.now())
            next_due_times.append(time.perf_counter() - t0)
        results["next_due_p50"] = statistics.median(next_due_times)
        results["next_due_p99"] = pct(next_due_times, 99)

        # --- Grants at a real target that end among the million ---------------------------------
        system = System.objects.create(
            name="Bench target",
            slug="bench-target",
            connector=System.Connector.POSTGRES,
            connector_config={
                "host": "127.0.0.1",
                "port": 5432,
                "dbname": TARGET_DB,
                "user": PROVISIONER,
                "principal_template": "bmil_{username}",
            },
            connector_secret="bench",
        )
        role = Role.objects.create(
            system=system,
            name="read-write",
            target_name=MANAGED,
            default_duration=timedelta(hours=1),
            max_duration=timedelta(hours=4),
        )
        approver = User.objects.create(username="bmil_approver")
        assign_perm("accessgov.approve_role", approver, role)
        users = User.objects.bulk_create([User(username=login.removeprefix("bmil_")) for login in logins])
        Eligibility.objects.bulk_create([Eligibility(role=role, user=user) for user in users])
        for user in users:
            access_request = ar.access_request_submit(
                user, role=role, duration=timedelta(hours=1), justification="Benchmark: among a million"
            )
            ar.access_request_approve(approver, access_request.pk)
        wait_for(lambda: not Grant.objects.filter(role=role, provisioned_at__isnull=True).exists(), 120, "applied")
        ends_from = timezone.now() + timedelta(seconds=3)
        with transaction.atomic():
            for i, grant in enumerate(Grant.objects.filter(role=role).order_by("pk")):
                Grant.objects.filter(pk=grant.pk).update(expires_at=ends_from + timedelta(seconds=10 * i / args.due))
            scheduling.scheduler_wake()
        wait_for(
            lambda: not Grant.objects.filter(role=role, removal_confirmed_at__isnull=True).exists(), 180, "removals"
        )
        lags = [(g.removal_confirmed_at - g.expires_at).total_seconds() for g in Grant.objects.filter(role=role)]
        results.update(lag_p50=statistics.median(lags), lag_p99=pct(lags, 99), lag_max=max(lags))
        time.sleep(3)
        after_due = {name: sampler.now(name) for name in watched}
        results["rss"] = {
            name: (baseline[name], after_seed[name], after_due[name], sampler.max_between(name, 0, time.monotonic()))
            for name in watched
        }
        results["active_at_end"] = Grant.objects.filter(status="active").count()

        # --- Restarts with the million in place -------------------------------------------------
        results["scheduler_stop_s"] = stop(processes["scheduler"])
        t0 = time.monotonic()
        processes["scheduler"] = start("scheduler")
        log = LOG_DIR / "scheduler.log"
        holds = log.read_text().count("holds the lease")
        wait_for(lambda: log.read_text().count("holds the lease") > holds, 60, "the new scheduler")
        results["scheduler_start_s"] = time.monotonic() - t0
        results["worker_stop_s"] = stop(processes["worker"])
        t0 = time.monotonic()
        processes["worker"] = start("worker")
        wait_for(lambda: _ping(client), 60, "the restarted worker")
        results["worker_start_s"] = time.monotonic() - t0

        # --- Same run, the design before: one eta message per grant, held by a worker ------------
        if args.eta_contrast:
            # Its own baseline: the same worker holding nothing, started and stopped the same way.
            idle = start("eta-worker")
            wait_for(lambda: (LOG_DIR / "eta-worker.log").read_text().count("ready.") >= 1, 60, "the eta worker")
            time.sleep(2)
            idle_stop_s = stop(idle)
            processes["eta-worker"] = start("eta-worker")
            sampler.samples["eta-worker"] = []
            wait_for(lambda: (LOG_DIR / "eta-worker.log").read_text().count("ready.") >= 2, 60, "the eta worker")
            time.sleep(2)
            before = rss_mb(processes["eta-worker"].pid)
            eta = datetime.now(UTC) + timedelta(hours=1)
            with client.producer_or_acquire() as producer:
                for _ in range(args.eta_contrast):
                    client.send_task("accessgov.tasks.heartbeat", eta=eta, queue="bench-eta", producer=producer)
            queue = redis.Redis.from_url(REDIS_URL)
            wait_for(lambda: queue.llen("bench-eta") == 0, 300, "the eta worker to take every timer")
            time.sleep(5)
            held = rss_mb(processes["eta-worker"].pid)
            results["eta"] = {
                "timers": args.eta_contrast,
                "before_mb": before,
                "held_mb": held,
                "per_timer_kb": (held - before) * 1024 / args.eta_contrast,
                "stop_s": stop(processes["eta-worker"], timeout=120),
                "idle_stop_s": idle_stop_s,
            }
    finally:
        sampler.stopped.set()
        for process in processes.values():
            if process.poll() is None:
                process.terminate()
        for process in processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        client.close()
        redis.Redis.from_url(REDIS_URL).flushdb()
        from django.db import connections

        connections.close_all()
        drop_target_roles(logins)

    report = render(results)
    print(report)
    if not args.no_write:
        write_section(report, "million_grants")


def _ping(client) -> bool:
    try:
        return client.send_task("accessgov.tasks.ping").get(timeout=2) == "pong"
    except Exception:
        return False


def render(r: dict) -> str:
    mb = lambda v: f"{v:.0f} MB"  # noqa: E731
    rows = []
    for name, label in (
        ("scheduler", "scheduler (`run_scheduler`)"),
        ("worker", "worker, default queue (prefork, 4 processes)"),
        ("notifier", "worker, notifications (prefork, 2 processes)"),
    ):
        base, seeded, due, peak = r["rss"][name]
        rows.append(
            f"| {label} | {mb(base)} | {mb(seeded)} | {mb(due)} | {mb(peak)} | {(due - base) / base * 100:+.0f} % |"
        )
    lines = [
        f"### {r['grants']:,} active grants: memory, lag of the grants that end, restarts",
        "",
        f"{measured_on()}; "
        f"`bench/million_grants.py` (the grants created set-based in {r['seed_s']:.0f} s while the processes ran).",
        "",
        f"| process | RSS before any grant (baseline) | with the {r['grants']:,} | after the due ones ended | peak | change |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        "| what | p50 | p99 | max | target |",
        "|---|---|---|---|---|",
        f"| revocation lag of {r['due']} grants at a PostgreSQL target ending over 10 s among the {r['grants']:,} | "
        f"{r['lag_p50'] * 1000:.0f} ms | {r['lag_p99'] * 1000:.0f} ms | {r['lag_max'] * 1000:.0f} ms | p99 ≤ 2 s |",
        f"| the scheduler's next-due query (3 index probes) with the {r['grants']:,} in place | "
        f"{r['next_due_p50'] * 1000:.1f} ms | {r['next_due_p99'] * 1000:.1f} ms | | |",
        "",
        f"| restart with {r['grants']:,} active grants | SIGTERM → exited | started → working | target |",
        "|---|---|---|---|",
        f"| scheduler | {r['scheduler_stop_s']:.2f} s | {r['scheduler_start_s']:.2f} s (holds the lease) | < 5 s |",
        f"| worker (default queue) | {r['worker_stop_s']:.2f} s | {r['worker_start_s']:.2f} s (answers a task) | < 5 s |",
    ]
    if "eta" in r:
        e = r["eta"]
        lines += [
            "",
            f"Same run, the design before issue 15 for comparison: a solo worker holding {e['timers']:,} eta timers an "
            f"hour ahead (one per grant) grew from {mb(e['before_mb'])} to {mb(e['held_mb'])} "
            f"({e['per_timer_kb']:.1f} kB per timer: {e['per_timer_kb'] * r['grants'] / 1024 / 1024:.1f} GB for "
            f"{r['grants']:,}) and took {e['stop_s']:.1f} s to stop on SIGTERM (the same worker holding nothing: "
            f"{e['idle_stop_s']:.1f} s).",
        ]
    lines += ["", f"Active grants at the end: {r['active_at_end']:,} (untouched: none of them was due)."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
