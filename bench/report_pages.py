"""List and report pages at scale on PostgreSQL, on the dataset of bench/seed_scale.py (10k users,
1k roles, ~100k requests and grants, 1M chained events, pending requests in approver queues).
Measures server time (Django test client through the whole middleware stack, no network) p50/p99 and
query counts per page, and rewrites its section of docs/PERFORMANCE.md.

    .venv/bin/python bench/seed_scale.py          # once (idempotent)
    .venv/bin/python bench/report_pages.py [--repeat 20] [--profile /grants/]

Viewers: bench_auditor (the auditor group: sees everything) and bench_approver (approve_system on 5
of 200 systems) on the list and report pages (the approver's home too), and a requester (user9998 at full
scale) on the pages most people open: home, my access, my requests, the request form. Baseline in the same run: the health check page (one trivial query), the cheapest
page through the same stack.
"""

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import (  # noqa: E402
    SCALE_DB,
    measured_on,
    pct,
    production_like_env,
    profile_top,
    require_scale_data,
    stolen_seconds,
    verified_client,
    write_section,
)

production_like_env(SCALE_DB)


def pages() -> list[tuple[str, str]]:
    last_month_end = datetime.now(UTC).replace(day=1) - timedelta(days=1)
    since, until = last_month_end.replace(day=1), last_month_end
    return [
        ("health check (baseline)", "/healthz"),
        ("approver queue", "/approvals/"),
        ("grants list", "/grants/"),
        ("grants list, active only", "/grants/?status=active"),
        ("access history report", "/reports/access/"),
        ("approval metrics report (last month)", f"/reports/approvals/?since={since:%Y-%m-%d}&until={until:%Y-%m-%d}"),
        ("break-glass report", "/reports/break-glass/"),
        ("denied requests report", "/reports/denied/"),
        ("audit trail", "/audit/"),
        ("audit trail, filtered by actor", "/audit/?actor=user42"),
    ]


# A requester's everyday pages (70 % of the load test's mix), and the approver's home.
REQUESTER_PAGES = [
    ("health check (baseline)", "/healthz"),
    ("home", "/"),
    ("my access", "/access/"),
    ("my requests", "/requests/"),
    ("request form", "/requests/new/"),
]


def everyday_requester():
    """The seed's second-to-last person (user9998 at full scale): eligible for roles, with requests, no
    approver rights — the seed gives approver and owner rights to its first people only."""
    from accessgov.models import User

    return User.objects.get(username=f"user{User.objects.filter(username__startswith='user').count() - 2}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument(
        "--profile", metavar="URL", help="print a cProfile of 10 GETs of URL (as the auditor), then stop"
    )
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    import django

    django.setup()
    import portal.wsgi  # noqa: F401 - what a gunicorn worker runs at start-up (its views loaded, gc.freeze)

    require_scale_data()
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from accessgov.models import AccessEvent, AccessRequest, Grant, User

    auditor = User.objects.get(username="bench_auditor")
    approver = User.objects.get(username="bench_approver")
    requester = everyday_requester()
    if args.profile:
        client = verified_client(auditor)
        client.get(args.profile)
        print(profile_top(lambda: [client.get(args.profile) for _ in range(10)], 45))
        return
    sizes = {
        "users": User.objects.count(),
        "requests": AccessRequest.objects.count(),
        "pending": AccessRequest.objects.filter(status="pending").count(),
        "grants": Grant.objects.count(),
        "events": AccessEvent.objects.count(),
    }
    results = []
    stolen_before, started = stolen_seconds(), time.perf_counter()
    viewers = (
        ("auditor (sees everything)", auditor, pages()),
        ("approver of 5 systems", approver, [*pages(), ("home", "/")]),
        ("requester", requester, REQUESTER_PAGES),
    )
    for who, user, viewer_pages in viewers:
        client = verified_client(user)
        for label, url in viewer_pages:
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
    sizes["stolen"] = (stolen_seconds() - stolen_before) / ((time.perf_counter() - started) * (os.cpu_count() or 1))
    report = render(results, args, sizes)
    print(report)
    if not args.no_write:
        write_section(report, "report_pages")


def render(results, args, sizes: dict) -> str:
    lines = [
        f"### List and report pages at scale ({sizes['users']:,} users, {sizes['requests']:,} requests of which "
        f"{sizes['pending']:,} pending, {sizes['grants']:,} grants, {sizes['events']:,} events)",
        "",
        f"{measured_on()}; "
        f"`bench/report_pages.py` on the `bench/seed_scale.py` dataset, {args.repeat} requests per page after 2 "
        "warm-ups, server time through the whole middleware stack (Django test client, no network). "
        f"CPU time stolen by the host (another machine's) during the run: {sizes['stolen']:.0%} of the cores' time.",
        "",
        "| viewer | page | p50 | p99 | queries | target |",
        "|---|---|---|---|---|---|",
    ]
    for who, label, p50, p99, queries in results:
        if "baseline" in label:
            target = "baseline"
        elif label in ("home", "my access", "request form"):
            target = "(not a list page: shown for the load mix)"
        else:
            target = "p50 ≤ 10 ms, p99 ≤ 50 ms"
        lines.append(f"| {who} | {label} | {p50 * 1000:.1f} ms | {p99 * 1000:.1f} ms | {queries} | {target} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
