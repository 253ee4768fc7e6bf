"""CSV export of 1M access events on PostgreSQL: our streaming export (COPY with the formatting and
formula-neutralising done in SQL) against a raw ``COPY … TO STDOUT`` of the same rows and against an
ORM ``.iterator()`` + csv.writer loop, in the same run; the export is fetched twice, through the Django test
client (the stack without a server) and from gunicorn over HTTP (what a browser gets: the server's socket
writes included). Prints numbers and rewrites its section of docs/PERFORMANCE.md.

    .venv/bin/python bench/export_1m.py [--events 1000000]

Needs PostgreSQL on 127.0.0.1:5432 (trust auth as `postgres`). Creates the database accessgov_bench_export;
gunicorn listens on 127.0.0.1:8022 (``BENCH_EXPORT_PORT``) while it runs.
The events are generated in SQL (generate_series) with realistic text and placeholder hashes: this
measures the export, not the chain (the chain is checked by verify_audit and its tests).
"""

import argparse
import os
import resource
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import (  # noqa: E402
    fresh_database,
    measured_on,
    production_like_env,
    setup_django,
    start_gunicorn,
    verified_client,
    write_section,
)

DB = os.environ.get("BENCH_EXPORT_DB", "accessgov_bench_export")  # another name keeps parallel runs apart

PORT = int(os.environ.get("BENCH_EXPORT_PORT", "8022"))

production_like_env(DB, ALLOWED_HOSTS="127.0.0.1,testserver")


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    fresh_database(DB)
    setup_django()
    from django.db import connection

    from accessgov.models import User

    t0 = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO accessgov_accessevent
                (sequence, occurred_at, event_type, actor_label, client_address, reason, data, prev_hash, hash)
            SELECT g,
                   timestamptz '2025-01-01' + g * interval '17 seconds',
                   (ARRAY['request.submitted','request.approved','grant.activated','grant.expired'])[1 + g %% 4],
                   'user' || (g %% 10000),
                   ('10.' || (g %% 250) || '.' || (g %% 199) || '.' || (g %% 97))::inet,
                   CASE WHEN g %% 1000 = 0 THEN '=HYPERLINK("x") "quoted", comma' ELSE 'Incident INC-' || g || ': fix payouts' END,
                   jsonb_build_object('duration_seconds', 3600, 'ticket', 'OPS-' || g),
                   md5(g::text) || md5((g + 1)::text),
                   md5((g + 1)::text) || md5(g::text)
            FROM generate_series(1, %s) AS g
            """,
            [args.events],
        )
        cursor.execute("ANALYZE accessgov_accessevent")
    seed_s = time.perf_counter() - t0

    auditor = User.objects.create(username="bench_auditor", is_superuser=True, is_staff=True)
    client = verified_client(auditor)

    # Baseline: raw COPY of the same rows, bytes discarded.
    raw_conn = connection.connection
    t0 = time.perf_counter()
    raw_bytes = 0
    with (
        raw_conn.cursor() as cursor,
        cursor.copy("COPY (SELECT * FROM accessgov_accessevent ORDER BY sequence) TO STDOUT WITH (FORMAT csv)") as copy,
    ):
        for chunk in copy:
            raw_bytes += len(chunk)
    raw_s = time.perf_counter() - t0

    # Ours: the real view, through the whole middleware stack, streamed.
    rss_before = maxrss_mb()
    t0 = time.perf_counter()
    response = client.get("/audit/export.csv")
    first_byte_s = first_row_s = None
    total = 0
    lines = 0
    for chunk in response.streaming_content:
        if first_byte_s is None:
            first_byte_s = time.perf_counter() - t0  # the header: sent before the query runs
        elif first_row_s is None:
            first_row_s = time.perf_counter() - t0
        total += len(chunk)
        lines += chunk.count(b"\n")
    ours_s = time.perf_counter() - t0
    rss_growth = maxrss_mb() - rss_before

    # For comparison: the ORM path (what SQLite uses), same rows, bytes discarded.
    from accessgov import exports
    from accessgov.models import AccessEvent

    t0 = time.perf_counter()
    orm_bytes = 0
    events = AccessEvent.objects.select_related("role__system").order_by("sequence")
    rows = (
        (
            e.sequence,
            e.occurred_at,
            e.event_type,
            e.actor_label,
            e.client_address,
            e.access_request_id,
            e.grant_id,
            "",
            "",
            e.reason,
            e.data,
            e.prev_hash,
            e.hash,
        )
        for e in events.iterator(chunk_size=2000)
    )
    for piece in exports.csv_rows(["h"], rows):
        orm_bytes += len(piece)
    orm_s = time.perf_counter() - t0

    # The same export as a browser gets it: gunicorn (one sync worker), over HTTP.
    from django.conf import settings

    connection.close()
    http = http_export(f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}")
    if http["http_rows"] != lines:  # every row, and the first export's own event (recorded after its rows)
        raise SystemExit(f"the HTTP export held {http['http_rows']} rows, expected {lines}")

    results = {
        **http,
        "events": args.events,
        "seed_s": seed_s,
        "raw_s": raw_s,
        "raw_mb": raw_bytes / 1e6,
        "ours_s": ours_s,
        "first_byte_s": first_byte_s or 0.0,
        "first_row_s": first_row_s or 0.0,
        "ours_mb": total / 1e6,
        "rows": lines - 1,
        "rss_growth_mb": rss_growth,
        "orm_s": orm_s,
        "status": response.status_code,
    }
    report = render(results)
    print(report)
    connection.close()
    if not args.no_write:
        write_section(report, "export_1m")


def http_export(cookie: str) -> dict:
    """GET /audit/export.csv from gunicorn with one sync worker, read to the end: wall time, first byte, and the
    worker's CPU time (the server's share: the response iterator and one socket write per piece it yields)."""
    server = start_gunicorn(PORT)
    try:
        worker = int(subprocess.check_output(["pgrep", "-P", str(server.pid)]).split()[0])

        def cpu_s() -> float:
            fields = Path(f"/proc/{worker}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        request = urllib.request.Request(f"http://127.0.0.1:{PORT}/audit/export.csv", headers={"Cookie": cookie})
        cpu0, t0 = cpu_s(), time.perf_counter()
        first_s, size, lines = None, 0, 0
        with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310 - the local bench server
            status = response.status
            while chunk := response.read1(1 << 16):
                first_s = first_s or time.perf_counter() - t0
                size += len(chunk)
                lines += chunk.count(b"\n")
        return {
            "http_s": time.perf_counter() - t0,
            "http_first_s": first_s or 0.0,
            "http_mb": size / 1e6,
            "http_cpu_s": cpu_s() - cpu0,
            "http_status": status,
            "http_rows": lines - 1,
        }
    finally:
        server.terminate()
        server.wait(timeout=30)


def render(r: dict) -> str:
    return "\n".join(
        [
            f"### CSV export of {r['events']:,} access events on PostgreSQL",
            "",
            f"{measured_on()}; "
            "`bench/export_1m.py` (the real `/audit/export.csv` view through the middleware stack, as an auditor: "
            "through the Django test client, then from gunicorn over HTTP).",
            "",
            "| what | time | first byte | size | peak memory growth | target |",
            "|---|---|---|---|---|---|",
            f"| AccessGov export (COPY, formatting + formula-neutralising in SQL), {r['rows']:,} rows, HTTP {r['status']} | "
            f"{r['ours_s']:.2f} s | {r['first_byte_s'] * 1000:.0f} ms (first rows {r['first_row_s']:.2f} s) | {r['ours_mb']:.0f} MB | {r['rss_growth_mb']:.0f} MB | "
            "≤ 5 s, first byte < 1 s, < 100 MB |",
            f"| the same, from gunicorn (one sync worker) over HTTP, HTTP {r['http_status']} | {r['http_s']:.2f} s | "
            f"{r['http_first_s'] * 1000:.0f} ms | {r['http_mb']:.0f} MB | (worker CPU {r['http_cpu_s']:.2f} s) | ≤ 5 s, first byte < 1 s |",
            f"| baseline: raw `COPY … TO STDOUT` of the same rows | {r['raw_s']:.2f} s | | {r['raw_mb']:.0f} MB | | |",
            f"| comparison: ORM `.iterator()` + csv.writer (the SQLite path) | {r['orm_s']:.2f} s | | | | |",
            "",
            f"Ratio export / raw COPY: {r['ours_s'] / r['raw_s']:.1f}× (target ≤ 4×); ORM loop / export: "
            f"{r['orm_s'] / r['ours_s']:.1f}×. Seeding {r['events']:,} rows took {r['seed_s']:.1f} s.",
        ]
    )


if __name__ == "__main__":
    main()
