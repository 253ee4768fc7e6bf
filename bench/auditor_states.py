"""The auditor's slow states at scale: the filters and sorts the page bench (bench/report_pages.py, default
states only) does not open, on the dataset of bench/seed_scale.py (10k users, ~100k requests and grants, 1M
events). Server time through the whole middleware stack (Django test client, no network), p50/p99 and the
query count per state, the health check as the same run's baseline. Each state is fetched ``--repeat`` times
per round after two warm-ups (the CPU column: this process's CPU time per request, the database's
not included — steadier than the wall time on a shared machine); with several rounds the states are visited in turn each round, so a slow
minute of a shared machine lands on all of them.

States (docs/DECISIONS.md, "Left as found: the audit trail's search"): the denied report filtered by who
denied (the busiest denier and a rare one) and sorted by it, the right-sizing report, the break-glass
follow-ups, and the grants list and the access report sorted by each column that is not the default — both
directions, the first page and the page after it.

    .venv/bin/python bench/auditor_states.py [--repeat 30] [--rounds 1] [--only right-sizing]
    .venv/bin/python bench/auditor_states.py --profile '/reports/right-sizing/'   # cProfile of 10 GETs
    .venv/bin/python bench/auditor_states.py --sql '/reports/denied/?sort=denied_by'  # each query, timed

``BENCH_SCALE_DB`` names a copy of the scale database (bench/common.py), so parallel work stays apart.
Prints only; it writes nothing.
"""

import argparse
import os
import re
import statistics
import sys
import time
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
)

production_like_env(SCALE_DB)

NEXT_LINK = re.compile(r'href="(\?[^"]*\bafter=[^"]*)"')


def deniers() -> tuple[str, str]:
    """The username who denied the most requests, and one who denied a single one (or the fewest)."""
    from django.db.models import Count

    from accessgov.models import Decision

    counts = (
        Decision.objects.filter(outcome=Decision.Outcome.DENY)
        .values_list("approver__username")
        .annotate(n=Count("pk"))
        .order_by("-n", "approver__username")
    )
    ranked = list(counts)
    return ranked[0][0], ranked[-1][0]


def states() -> list[tuple[str, str]]:
    busiest, rare = deniers()
    result = [
        ("health check (baseline)", "/healthz"),
        (f"denied, denied by {busiest} (busiest)", f"/reports/denied/?approver={busiest}"),
        (f"denied, denied by {rare} (rare)", f"/reports/denied/?approver={rare}"),
        ("denied, sorted by denier", "/reports/denied/?sort=denied_by"),
        ("denied, sorted by denier ↓", "/reports/denied/?sort=-denied_by"),
        ("right-sizing", "/reports/right-sizing/"),
        ("break-glass follow-ups", "/break-glass/follow-ups/"),
    ]
    for key in ("holder", "role", "status", "ends"):
        for sort in (key, f"-{key}"):
            result.append((f"grants list, sort={sort}", f"/grants/?sort={sort}"))
    for key in ("user", "system", "expires_at", "ended_at", "lag"):
        for sort in (key, f"-{key}"):
            result.append((f"access report, sort={sort}", f"/reports/access/?sort={sort}"))
    return result


def with_next_pages(client, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Each sorted state, then the page after its first (the cursor from its Next link)."""
    import html

    result = []
    for label, url in pairs:
        result.append((label, url))
        if "sort=" not in url:
            continue
        match = NEXT_LINK.search(client.get(url).content.decode())
        if match:
            path = url.split("?", 1)[0]
            result.append((f"{label}, page 2", path + html.unescape(match.group(1))))
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--only", default="", help="only the states whose label contains this text")
    parser.add_argument("--profile", metavar="URL", help="print a cProfile of 10 GETs of URL, then stop")
    parser.add_argument("--sql", metavar="URL", help="print each query of one GET of URL with its time, then stop")
    args = parser.parse_args()

    import django

    django.setup()
    import portal.wsgi  # noqa: F401 - what a gunicorn worker runs at start-up (its views loaded, gc.freeze)

    require_scale_data()
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from accessgov.models import User

    client = verified_client(User.objects.get(username="bench_auditor"))
    if args.profile:
        client.get(args.profile)
        print(profile_top(lambda: [client.get(args.profile) for _ in range(10)], 60))
        return
    if args.sql:
        client.get(args.sql)
        with CaptureQueriesContext(connection) as queries:
            connection.force_debug_cursor = True
            status = client.get(args.sql).status_code
        print(f"{args.sql}: {status}, {len(queries)} queries")
        for query in queries:
            print(f"--- {float(query['time']) * 1000:.1f} ms\n{query['sql']}\n")
        return

    chosen = [(label, url) for label, url in states() if args.only in label or "baseline" in label]
    chosen = with_next_pages(client, chosen)
    times: dict[str, list[float]] = {label: [] for label, _ in chosen}
    cpu: dict[str, list[float]] = {label: [] for label, _ in chosen}
    counts: dict[str, int] = {}
    print(measured_on())
    print(f"{SCALE_DB}; {args.rounds} round(s) × {args.repeat} GETs per state, as bench_auditor\n")
    stolen_before, started = stolen_seconds(), time.perf_counter()
    for _ in range(args.rounds):
        for label, url in chosen:
            for _ in range(2):
                if (status := client.get(url).status_code) != 200:
                    raise SystemExit(f"{url} answered {status}")
            for _ in range(args.repeat):
                with CaptureQueriesContext(connection) as queries:
                    t0, c0 = time.perf_counter(), time.process_time()
                    client.get(url)
                    times[label].append(time.perf_counter() - t0)
                    cpu[label].append(time.process_time() - c0)
            counts[label] = len(queries)
    stolen = (stolen_seconds() - stolen_before) / ((time.perf_counter() - started) * (os.cpu_count() or 1))
    print(f"{'state':52} {'p50':>9} {'p99':>9} {'queries':>8} {'CPU p50':>10}")
    for label, _url in chosen:
        values = times[label]
        flag = "" if "baseline" in label or pct(values, 99) <= 0.050 else "  over 50 ms"
        print(
            f"{label:52} {statistics.median(values) * 1000:6.1f} ms {pct(values, 99) * 1000:6.1f} ms "
            f"{counts[label]:8} {statistics.median(cpu[label]) * 1000:7.1f} ms{flag}"
        )
    print(f"\nCPU time stolen by the host during the run: {stolen:.0%} of the cores' time")


if __name__ == "__main__":
    main()
