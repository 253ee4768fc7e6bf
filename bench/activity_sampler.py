"""Activity capture, level 1: what sampling ``pg_stat_activity`` costs the target at 100 active grants.

    .venv/bin/python bench/activity_sampler.py [--grants 100] [--window 60]

Starts a private PostgreSQL 15 cluster (initdb, pg_stat_statements + pgaudit preloaded, as the tests do) as the
target, with 100 grantee logins holding the managed role, each with an open session that has run a query (the
sampler records 100 sessions and 100 statements on its first run, then keeps them up to date). AccessGov's own
database is accessgov_bench_sampler on the local server. Then, in the foreground, three windows of the same
length: no sampling (the baseline: the target with 100 idle sessions), the real ``activity_sample`` every 5 s
(the default interval) and every 1 s. Target CPU is the user + system time of every process of the private
cluster (postmaster and its children, from /proc); the worker's own CPU is the sampling process's.
"""

import argparse
import os
import platform
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import fresh_database, production_like_env, setup_django, write_section  # noqa: E402

DB = "accessgov_bench_sampler"
production_like_env(DB)


def cluster_cpu_seconds(postmaster: int) -> float:
    """User + system CPU so far of the postmaster and every process it started (from /proc)."""
    hz = os.sysconf("SC_CLK_TCK")
    ticks = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(pid) == postmaster or int(fields[1]) == postmaster:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / hz


def window(postmaster: int, seconds: float, interval: float | None, system) -> dict:
    """One measured window: sample every ``interval`` seconds (None: not at all)."""
    from django.utils import timezone

    from accessgov.services.activity import activity_sample

    samples, sample_ms = 0, []
    cpu_before, worker_before, started = cluster_cpu_seconds(postmaster), time.process_time(), time.monotonic()
    next_at = started
    while time.monotonic() - started < seconds:
        if interval is not None and time.monotonic() >= next_at:
            result = activity_sample(system, timezone.now())
            samples += 1
            sample_ms.append(result["ms"])
            next_at += interval
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    target = cluster_cpu_seconds(postmaster) - cpu_before
    worker = time.process_time() - worker_before
    return {
        "seconds": elapsed,
        "samples": samples,
        "target_cpu": target,
        "target_pct": 100 * target / elapsed,
        "worker_cpu": worker,
        "query_ms": sorted(sample_ms)[len(sample_ms) // 2] if sample_ms else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--grants", type=int, default=100)
    parser.add_argument("--window", type=float, default=60.0)
    args = parser.parse_args()

    import psycopg
    from psycopg import sql

    from tests.support.pg_cluster import PrivateCluster, missing
    from tests.support.pg_target import PgTarget

    reason = missing()
    if reason:
        raise SystemExit(f"The sampler benchmark {reason}.")
    fresh_database(DB)
    setup_django()
    from django.utils import timezone

    from accessgov.models import AccessRequest, Eligibility, Grant, Role, System, User

    cluster = PrivateCluster(max_connections=args.grants + 40).start()
    sessions: list[psycopg.Connection] = []
    try:
        target = PgTarget(host=cluster.host, port=cluster.port, superuser=cluster.superuser).create()
        with target.admin() as conn:
            conn.execute(sql.SQL("GRANT pg_read_all_stats TO {}").format(sql.Identifier(target.provisioner)))
        now = timezone.now()
        system = System.objects.create(
            name="Payments DB",
            slug="payments-db",
            connector=System.Connector.POSTGRES,
            connector_config=target.connector_config(activity={"sessions": True, "sample_seconds": 1}),
            connector_secret=target.password,
        )
        role = Role.objects.create(system=system, name="read-write", target_name=target.managed, approvals_required=0)
        users = User.objects.bulk_create([User(username=f"person{i:03d}", password="!") for i in range(args.grants)])
        Eligibility.objects.bulk_create(
            [Eligibility(role=role, user=u, starts_at=now - timedelta(days=1)) for u in users]
        )
        requests = AccessRequest.objects.bulk_create(
            [
                AccessRequest(
                    requester=u,
                    role=role,
                    status="approved",
                    requested_duration=timedelta(hours=4),
                    justification="Bench: on-call investigation",
                    created_at=now,
                    lapses_at=now,
                    decided_at=now,
                )
                for u in users
            ]
        )
        Grant.objects.bulk_create(
            [
                Grant(
                    access_request=r,
                    user_id=r.requester_id,
                    role=role,
                    status="active",
                    starts_at=now - timedelta(minutes=5),
                    expires_at=now + timedelta(hours=4),
                    activated_at=now,
                )
                for r in requests
            ]
        )
        for user in users:
            principal = target.create_login(user.username)
            target.grant_by_hand(principal)
            session = target.connect_as(principal)
            target.read_table_as_managed(session)
            sessions.append(session)
        time.sleep(2)  # connections settled
        window(cluster.pid, 5, 1, system)  # warm-up: the first sample records 100 sessions + 100 statements

        baseline = window(cluster.pid, args.window, None, system)
        every5 = window(cluster.pid, args.window, 5, system)
        every1 = window(cluster.pid, args.window, 1, system)
    finally:
        for session in sessions:
            session.close()
        cluster.stop()

    def added(w: dict) -> float:
        return w["target_pct"] - baseline["target_pct"]

    def per_sample(w: dict) -> float:
        return 1000 * (w["target_cpu"] - baseline["target_cpu"] * w["seconds"] / baseline["seconds"]) / w["samples"]

    cpu = platform.processor() or platform.machine()
    report = f"""### Activity capture: the session sampler's cost on the target at {args.grants} active grants

Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores ({cpu}, load average {os.getloadavg()[0]:.1f}), `bench/activity_sampler.py`, in the
foreground. Target: a private PostgreSQL 15 cluster (pg_stat_statements + pgaudit loaded) with {args.grants} grantee
logins, each holding the managed role with an open session; the real `activity_sample` (one `pg_stat_activity`
read over the kept provisioner connection, then AccessGov's own writes in its database). Target CPU is every
process of the target cluster (postmaster and children) over windows of {args.window:.0f} s, as % of one core
(read from /proc in clock ticks of {1000 / os.sysconf("SC_CLK_TCK"):.0f} ms: a resolution of
{100 / os.sysconf("SC_CLK_TCK") / args.window:.3f} % over a window).

| window | samples | target CPU | added by sampling | per sample on the target | worker CPU per sample |
|---|---|---|---|---|---|
| no sampling (baseline) | 0 | {baseline["target_pct"]:.3f} % | — | — | — |
| every 5 s (the default) | {every5["samples"]} | {every5["target_pct"]:.3f} % | **{added(every5):+.3f} %** | {per_sample(every5):.1f} ms | {1000 * every5["worker_cpu"] / every5["samples"]:.0f} ms |
| every 1 s | {every1["samples"]} | {every1["target_pct"]:.3f} % | {added(every1):+.3f} % | {per_sample(every1):.1f} ms | {1000 * every1["worker_cpu"] / every1["samples"]:.0f} ms |

Target: < 1 % CPU on the target at 100 active grants — {"**met**" if added(every5) < 1 else "**missed**"} at the default interval
({added(every5):.3f} % of one core{"" if added(every1) >= 1 else f"; {added(every1):.3f} % even every second"}). The
`pg_stat_activity` query itself takes a median {every5["query_ms"]:.1f} ms as seen from the worker. The worker's side (building the rows,
de-duplicating, updating the sessions' last-seen time in AccessGov's database) is the larger part and runs on the
AccessGov host, not the target."""
    print(report)
    write_section(report, "activity_sampler")


if __name__ == "__main__":
    main()
