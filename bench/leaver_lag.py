"""Leaver lag: an identity provider's SCIM deactivation → the leaver's access removed and confirmed at a
real PostgreSQL target, with the portal under gunicorn and real Celery workers on Redis (one for the
default queue, one for notifications, as in production). Prints numbers (not pass/fail) and writes
them into docs/PERFORMANCE.md.

    .venv/bin/python bench/leaver_lag.py [--leavers 100] [--spread 10]

Needs PostgreSQL on 127.0.0.1:5432 (trust auth as `postgres`) and Redis on 127.0.0.1:6379. Creates its
own databases (accessgov_bench_leaver, accessgov_bench_leaver_target) and roles, drops the roles after.

Method: N people, each provisioned by the provider (an ExternalIdentity) and holding an active grant
applied at the target (PostgreSQL role membership through the least-privilege provisioner). Then, over
`spread` seconds, one `PATCH /scim/v2/Users/<id>` per person — Okta's deactivation,
``{"op": "replace", "value": {"active": false}}`` — over HTTP to gunicorn, with the provider's SCIM
token. The call deactivates the account (sessions, grants, requests, tokens) in one transaction whose
commit queues the drain; the worker REVOKEs, ends the grantee's sessions and reads pg_auth_members back.
Leaver lag = removal_confirmed_at − the instant the SCIM call was sent (same machine clock). Baselines in
the same run: a `/healthz` round trip to the same gunicorn, and a trivial Celery task round trip.
"""

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import measured_on, pct, production_like_env, write_section  # noqa: E402

APP_DB = "accessgov_bench_leaver"
TARGET_DB = "accessgov_bench_leaver_target"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
MANAGED = "bench_leaver_rw"
PROVISIONER = "bench_leaver_provisioner"
PORT = int(os.environ.get("BENCH_PORT", "8787"))

production_like_env(
    APP_DB,
    ALLOWED_HOSTS="127.0.0.1",
    CELERY_BROKER_URL=REDIS_URL,
    CELERY_RESULT_BACKEND=REDIS_URL,
    LOG_LEVEL="WARNING",
)


def admin(dbname: str = "postgres"):
    import psycopg

    return psycopg.connect(dbname=dbname, autocommit=True, **PG)


def prepare(n: int) -> list[str]:
    with admin() as conn:
        for db in (APP_DB, TARGET_DB):
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (db,),
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{db}"')
            conn.execute(f'CREATE DATABASE "{db}"')
    logins = [f"bench_leaver_{i}" for i in range(n)]
    drop_roles(logins)
    with admin() as conn:
        for statement in [
            f"CREATE ROLE {MANAGED} NOLOGIN",
            f"CREATE ROLE {PROVISIONER} LOGIN PASSWORD 'bench'",
            f"GRANT {MANAGED} TO {PROVISIONER} WITH ADMIN OPTION",
            f"GRANT pg_signal_backend TO {PROVISIONER}",
            f'GRANT CONNECT ON DATABASE "{TARGET_DB}" TO {PROVISIONER}',
            *[f"CREATE ROLE {login} LOGIN" for login in logins],
        ]:
            conn.execute(statement)
    return logins


def drop_roles(logins: list[str]) -> None:
    with admin() as conn:
        existing = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 'bench\\_leaver%'")}
        if (
            PROVISIONER in existing
            and conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (TARGET_DB,)).fetchone()
        ):
            conn.execute(f'REVOKE CONNECT ON DATABASE "{TARGET_DB}" FROM {PROVISIONER}')
        for role in [*logins, PROVISIONER, MANAGED]:
            if role in existing:
                conn.execute(f'DROP ROLE "{role}"')


def members_left() -> int:
    with admin() as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid WHERE g.rolname = %s "
            "AND NOT m.admin_option",
            (MANAGED,),
        ).fetchone()[0]


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(args, cwd=ROOT, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def worker(queue: str, concurrency: int) -> subprocess.Popen:
    return start(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "portal",
            "worker",
            f"--queues={queue}",
            f"--hostname=leaver-{queue}@%h",
            f"--concurrency={concurrency}",
            "--loglevel=WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def http(method: str, path: str, body: dict | None = None, token: str | None = None) -> tuple[int, float]:
    headers = {"Content-Type": "application/scim+json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{PORT}{path}", data=data, headers=headers, method=method)
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (loopback)
            response.read()
            return response.status, time.perf_counter() - started
    except urllib.error.HTTPError as error:
        return error.code, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leavers", type=int, default=100)
    parser.add_argument("--spread", type=float, default=10.0, help="seconds over which the SCIM calls are sent")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    logins = prepare(args.leavers)

    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from celery import Celery
    from django.db import transaction
    from django.utils import timezone
    from guardian.shortcuts import assign_perm

    from accessgov.models import ApiToken, Eligibility, ExternalIdentity, Grant, IdentityProvider, Role, System, User
    from accessgov.services import access_requests as ar
    from accessgov.services import tokens as token_services

    system = System.objects.create(
        name="Leaver target",
        slug="leaver-target",
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
    approver = User.objects.create(username="bench_approver")
    assign_perm("accessgov.approve_role", approver, role)
    scim_account = User(username="okta-scim", is_service_account=True)
    scim_account.set_unusable_password()
    scim_account.save()
    provider = IdentityProvider.objects.create(
        slug="okta",
        name="Okta",
        issuer="https://example.okta.com",
        client_id="bench",
        scim_enabled=True,
        scim_service_account=scim_account,
    )
    draft = token_services.service_token_draft(
        user=scim_account,
        name="Okta SCIM",
        expires_at=timezone.now() + timedelta(days=1),
        scopes=[ApiToken.Scope.SCIM_PROVISION],
        role_ids=[],
    )
    with transaction.atomic():
        token_services.service_token_create_from(draft.payload, created_by=None)
    users = [User(username=login.removeprefix("bench_")) for login in logins]
    for user in users:
        user.set_unusable_password()
    User.objects.bulk_create(users)
    users = list(User.objects.filter(username__startswith="leaver_").order_by("pk"))
    Eligibility.objects.bulk_create([Eligibility(role=role, user=u) for u in users])
    identities = ExternalIdentity.objects.bulk_create(
        [
            ExternalIdentity(provider=provider, user=u, subject=f"00u{secrets.token_hex(6)}", user_name=u.username)
            for u in users
        ]
    )

    celery = Celery("bench", broker=REDIS_URL, backend=REDIS_URL, set_as_current=False)
    processes = [
        worker("celery", args.concurrency),
        worker("notifications", 2),
        start(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "portal.wsgi",
                f"--bind=127.0.0.1:{PORT}",
                "--workers=2",
                "--log-level=warning",
            ]
        ),
    ]
    try:
        wait_for(lambda: _ping(celery), 30, "the worker")
        wait_for(lambda: _up(), 30, "gunicorn")
        health = [http("GET", "/healthz")[1] for _ in range(50)]
        round_trips = []
        for _ in range(50):
            t0 = time.perf_counter()
            celery.send_task("accessgov.tasks.ping").get(timeout=10)
            round_trips.append(time.perf_counter() - t0)

        for user in users:
            access_request = ar.access_request_submit(
                user, role=role, duration=timedelta(hours=1), justification="Benchmark: a leaver's access"
            )
            ar.access_request_approve(approver, access_request.pk)
        wait_for(
            lambda: not Grant.objects.filter(role=role, provisioned_at__isnull=True).exists(),
            120,
            "every grant applied",
        )
        if members_left() != len(users):
            raise SystemExit("not every grant's membership is at the target")

        secret = draft.secret
        sent: dict[int, float] = {}
        call_times, statuses = [], []
        began = time.monotonic()
        body = {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "value": {"active": False}}],
        }
        for i, identity in enumerate(identities):
            due = began + args.spread * i / len(identities)
            time.sleep(max(0.0, due - time.monotonic()))
            sent[identity.user_id] = time.time()
            status, elapsed = http("PATCH", f"/scim/v2/Users/{identity.scim_id}", body, token=secret)
            statuses.append(status)
            call_times.append(elapsed)
        wait_for(
            lambda: not Grant.objects.filter(role=role, removal_confirmed_at__isnull=True).exists(),
            120,
            "every removal confirmed",
        )
        lags = [g.removal_confirmed_at.timestamp() - sent[g.user_id] for g in Grant.objects.filter(role=role)]
        left = members_left()
        inactive = User.objects.filter(pk__in=sent, is_active=False).count()
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        celery.close()
        from django.db import connections

        connections.close_all()
        drop_roles(logins)

    results = {
        "leavers": len(lags),
        "spread": args.spread,
        "concurrency": args.concurrency,
        "lag_p50": statistics.median(lags),
        "lag_p99": pct(lags, 99),
        "lag_max": max(lags),
        "call_p50": statistics.median(call_times),
        "call_p99": pct(call_times, 99),
        "health_p50": statistics.median(health),
        "rt_p50": statistics.median(round_trips),
        "ok_calls": statuses.count(200),
        "members_left": left,
        "inactive": inactive,
    }
    report = render(results)
    print(report)
    if not args.no_write:
        write_section(report, "leaver_lag")


def _ping(celery) -> bool:
    try:
        return celery.send_task("accessgov.tasks.ping").get(timeout=2) == "pong"
    except Exception:
        return False


def _up() -> bool:
    try:
        return http("GET", "/healthz")[0] in (200, 503)
    except OSError:
        return False


def render(r: dict) -> str:
    ms = lambda s: f"{s * 1000:.0f} ms"  # noqa: E731
    return "\n".join(
        [
            f"### Leaver: SCIM deactivation → access removed and confirmed at PostgreSQL ({r['leavers']} leavers over "
            f"{r['spread']:.0f} s, gunicorn 2 workers, worker concurrency {r['concurrency']})",
            "",
            f"{measured_on()}; `bench/leaver_lag.py`.",
            "",
            "| what | p50 | p99 | max | target |",
            "|---|---|---|---|---|",
            f"| leaver lag: SCIM `PATCH active=false` sent → membership removed and confirmed | {ms(r['lag_p50'])} | "
            f"{ms(r['lag_p99'])} | {ms(r['lag_max'])} | p99 ≤ 5 s |",
            f"| the SCIM call itself (deactivation committed, answer received) | {ms(r['call_p50'])} | {ms(r['call_p99'])} | | |",
            f"| baseline: `/healthz` round trip to the same gunicorn | {ms(r['health_p50'])} | | | |",
            f"| baseline: trivial Celery task round trip over the same Redis | {ms(r['rt_p50'])} | | | |",
            "",
            f"Ratio leaver lag p99 / SCIM call p50: {r['lag_p99'] / r['call_p50']:.1f}×. {r['ok_calls']} of {r['leavers']} "
            f"SCIM calls answered 200; {r['inactive']} accounts inactive afterwards; memberships left at the target: "
            f"{r['members_left']}.",
        ]
    )


if __name__ == "__main__":
    main()
