"""List and report pages at scale on PostgreSQL: 10k users, 100 roles, 100k requests, 100k grants,
1M access events. Measures server time (Django test client through the whole middleware stack, no
network) p50/p99 and query counts per page, and rewrites its section of docs/PERFORMANCE.md.

    .venv/bin/python bench/report_pages.py [--requests 100000] [--events 1000000] [--repeat 20]

Data is generated in SQL (generate_series) in the database accessgov_bench_pages. Baseline in the same
run: the health check page (one trivial query), the cheapest page through the same stack.
"""

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import (  # noqa: E402
    fresh_database,
    pct,
    production_like_env,
    setup_django,
    verified_client,
    write_section,
)

DB = "accessgov_bench_pages"

production_like_env(DB)

PAGES = [
    ("health check (baseline)", "/healthz"),
    ("approver queue", "/approvals/"),
    ("grants list", "/grants/"),
    ("access history report", "/reports/access/"),
    ("approval metrics report (one month)", "/reports/approvals/?since=2025-03-01&until=2025-03-31"),
    ("break-glass report", "/reports/break-glass/"),
    ("denied requests report", "/reports/denied/"),
    ("audit trail", "/audit/"),
    ("audit trail, filtered by actor", "/audit/?actor=user42"),
]

SEED_SQL = [
    """INSERT INTO accessgov_user (password, is_superuser, username, first_name, last_name, email, is_staff,
           is_active, date_joined, session_stamp)
       SELECT '!', false, 'user' || g, 'First' || g, 'Last' || g, 'user' || g || '@example.com', false, true,
              timestamptz '2024-01-01', md5(g::text)
       FROM generate_series(1, %(users)s) g""",
    """INSERT INTO accessgov_accessrequest (requester_id, role_id, kind, status, requested_duration, approved_duration,
           starts_at, justification, ticket, created_at, lapses_at, decided_at, auto_approved_by_rule, extends_grant_id,
           reminder_sent_at)
       SELECT u.min_id + (g %% %(users)s), r.min_id + (g %% %(roles)s), 'access',
              CASE WHEN g %% 20 = 0 THEN 'denied' ELSE 'approved' END,
              interval '1 hour', CASE WHEN g %% 20 = 0 THEN NULL ELSE interval '1 hour' END, NULL,
              'Incident INC-' || g || ': fix the payout batch', 'OPS-' || g,
              timestamptz '2025-01-01' + g * interval '5 minutes',
              timestamptz '2025-01-01' + g * interval '5 minutes' + interval '24 hours',
              timestamptz '2025-01-01' + g * interval '5 minutes' + interval '7 minutes', '', NULL, NULL
       FROM generate_series(1, %(requests)s) g,
            (SELECT min(id) AS min_id FROM accessgov_user) u, (SELECT min(id) AS min_id FROM accessgov_role) r""",
    """INSERT INTO accessgov_decision (access_request_id, approver_id, requester_id, outcome, comment, duration,
           step_up_at, created_at)
       SELECT a.id, CASE WHEN a.requester_id = u.min_id THEN u.min_id + 1 ELSE u.min_id END, a.requester_id,
              CASE WHEN a.status = 'denied' THEN 'deny' ELSE 'approve' END,
              CASE WHEN a.status = 'denied' THEN 'Use the read replica' ELSE 'ok' END, NULL, NULL, a.decided_at
       FROM accessgov_accessrequest a, (SELECT min(id) AS min_id FROM accessgov_user) u""",
    """INSERT INTO accessgov_grant (access_request_id, user_id, role_id, status, is_break_glass, starts_at, expires_at,
           created_at, activated_at, ended_at, end_reason, ended_by_id, extension_count, expiry_reminder_sent_at,
           provisioning_state, provisioning_error, provisioned_at, removal_requested_at, removed_at,
           removal_confirmed_at, removal_alerted_at)
       SELECT a.id, a.requester_id, a.role_id, 'expired', a.id %% 500 = 0, a.decided_at, a.decided_at + interval '1 hour',
              a.decided_at, a.decided_at, a.decided_at + interval '1 hour', 'expired', NULL, 0, NULL, 'confirmed', '',
              a.decided_at + interval '80 milliseconds', a.decided_at + interval '1 hour',
              a.decided_at + interval '1 hour 150 milliseconds', a.decided_at + interval '1 hour 150 milliseconds', NULL
       FROM accessgov_accessrequest a WHERE a.status = 'approved'""",
    """INSERT INTO accessgov_accessevent (sequence, occurred_at, event_type, actor_label, client_address, reason, data,
           prev_hash, hash)
       SELECT g, timestamptz '2025-01-01' + g * interval '30 seconds',
              (ARRAY['request.submitted','request.approved','grant.activated','grant.expired'])[1 + g %% 4],
              'user' || (g %% %(users)s), '10.1.2.3'::inet, 'Incident INC-' || g, '{}'::jsonb,
              md5(g::text) || md5((g + 1)::text), md5((g + 1)::text) || md5(g::text)
       FROM generate_series(1, %(events)s) g""",
    "ANALYZE",
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    fresh_database(DB)
    setup_django()
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from guardian.shortcuts import assign_perm

    from accessgov.models import Role, System, User

    systems = [System.objects.create(name=f"System {i}", slug=f"system-{i}") for i in range(20)]
    Role.objects.bulk_create([Role(system=systems[i % 20], name=f"role-{i}") for i in range(100)])
    started = time.perf_counter()
    with connection.cursor() as cursor:
        for statement in SEED_SQL:
            cursor.execute(
                statement, {"users": args.users, "roles": 100, "requests": args.requests, "events": args.events}
            )
    seed_s = time.perf_counter() - started

    auditor = User.objects.create(username="bench_auditor", is_superuser=True, is_staff=True)
    approver = User.objects.get(username="user1")
    for system in systems[:5]:
        assign_perm("accessgov.approve_system", approver, system)
    results = []
    for who, user in (("auditor (sees everything)", auditor), ("approver of 5 systems", approver)):
        client = verified_client(user)
        for label, url in PAGES:
            if who.startswith("approver") and url.startswith("/audit"):
                continue
            for _ in range(2):
                if client.get(url).status_code != 200:
                    raise SystemExit(f"{url} did not answer 200")
            times = []
            for _ in range(args.repeat):
                with CaptureQueriesContext(connection) as queries:
                    t0 = time.perf_counter()
                    response = client.get(url)
                    times.append(time.perf_counter() - t0)
            if response.status_code != 200:
                raise SystemExit(f"{url} answered {response.status_code}")
            results.append((who, label, statistics.median(times), pct(times, 99), len(queries)))
            print(
                f"{who:28} {label:40} p50 {statistics.median(times) * 1000:7.1f} ms  p99 {pct(times, 99) * 1000:7.1f} ms  "
                f"{len(queries)} queries",
                flush=True,
            )
    connection.close()
    report = render(results, args, seed_s)
    print(report)
    if not args.no_write:
        write_section(report, "report_pages")


def render(results, args, seed_s: float) -> str:
    lines = [
        f"### List and report pages at scale ({args.users:,} users, {args.requests:,} requests, "
        f"~{args.requests * 19 // 20:,} grants, {args.events:,} events)",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, {os.cpu_count()} cores; "
        f"`bench/report_pages.py`, {args.repeat} requests per page after 2 warm-ups, server time through the "
        f"whole middleware stack (Django test client, no network). Seeding took {seed_s:.0f} s.",
        "",
        "| viewer | page | p50 | p99 | queries | target |",
        "|---|---|---|---|---|---|",
    ]
    for who, label, p50, p99, queries in results:
        target = "baseline" if "baseline" in label else "p50 ≤ 10 ms, p99 ≤ 50 ms"
        lines.append(f"| {who} | {label} | {p50 * 1000:.1f} ms | {p99 * 1000:.1f} ms | {queries} | {target} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
