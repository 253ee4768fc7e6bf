"""The scale benchmarks' seed (bench/seed_scale.py), which `make bench` and every page and load number in
docs/PERFORMANCE.md stand on, still runs: a small dataset of the same shape, seeded into its own database
and verified (its hash chain included) by the script itself, then dropped."""

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

pytestmark = pytest.mark.postgres
ROOT = Path(__file__).resolve().parents[2]


def test_sizes_the_seed_cannot_build_are_refused_with_a_reason():
    run = subprocess.run(
        [sys.executable, "bench/seed_scale.py", "--requests", "50", "--recent", "100"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and "--recent must be at least 1 and less than --requests" in run.stderr


@contextmanager
def bench_run(script: str, *args: str, database: str, timeout: int, **env_vars: str) -> Iterator[str]:
    """Run ``bench/<script>`` with ``args`` and ``env_vars`` (the benchmark's own settings, not the suite's),
    assert it succeeded and give its output; the benchmark's ``database`` is dropped afterwards, however it ended."""
    try:
        yield _run_bench(script, *args, timeout=timeout, **env_vars)
    finally:
        with psycopg.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@pytest.mark.redis
def test_the_scale_seed_builds_a_verified_dataset_and_the_page_and_load_benchmarks_run_on_it():
    """One small seed (seeding is most of the time) for the four: the seed, bench/report_pages.py,
    bench/page_floor.py and bench/load_test.py, each as `make bench` runs it, only shorter."""
    name = f"accessgov_bench_smoke_{os.getpid()}"
    sizes = ["--users", "400", "--systems", "4", "--requests", "800", "--recent", "100", "--events", "3000"]
    with bench_run("seed_scale.py", "--reset", *sizes, database=name, timeout=600, BENCH_SCALE_DB=name) as output:
        assert f"seeded {name}" in output
        with psycopg.connect(host="127.0.0.1", port=5432, user="postgres", dbname=name) as conn:
            users, grants, pending, events = conn.execute(
                """SELECT (SELECT count(*) FROM accessgov_user),
                          (SELECT count(*) FROM accessgov_grant),
                          (SELECT count(*) FROM accessgov_accessrequest WHERE status = 'pending'),
                          (SELECT count(*) FROM accessgov_accessevent)"""
            ).fetchone()
            personas = {
                row[0]
                for row in conn.execute(
                    "SELECT username FROM accessgov_user WHERE username IN ('bench_auditor', 'bench_approver')"
                )
            }
        assert users >= 400 and grants > 0 and pending > 0 and events >= 3000, (users, grants, pending, events)
        assert personas == {"bench_auditor", "bench_approver"}

        pages = _run_bench("report_pages.py", "--repeat", "2", "--no-write", BENCH_SCALE_DB=name)
        rows = re.findall(
            r"^\| (auditor|approver|requester)[^|]*\| ([^|]+) \| ([\d.]+) ms \| [\d.]+ ms \| (\d+) \|", pages, re.M
        )
        # Ten pages for the auditor, the same but the two audit-trail pages plus home for the approver, five for a requester.
        assert len(rows) == 10 + 9 + 5, pages[-3000:]
        assert all(float(p50) > 0 and int(queries) >= 3 for _, _, p50, queries in rows), rows
        assert "| requester | my requests |" in pages

        # The floor under the grants list shows the page's grants (the bench compares them), through the same
        # stack, for both viewers.
        floor = _run_bench("page_floor.py", "--rounds", "1", "--repeat", "2", "--no-write", BENCH_SCALE_DB=name)
        served = re.findall(r"^\| (auditor|approver)[^|]*\| ([^|]+?) \| ([\d.]+) ms \|", floor, re.M)
        assert len(served) == 10 and all(float(ms) > 0 for *_, ms in served), floor[-2000:]
        assert {who for who, *_ in served} == {"auditor", "approver"}, floor[-2000:]
        summaries = re.findall(r"^- (auditor|approver).*: the floor is \d+% of the page", floor, re.M)
        assert summaries == ["auditor", "approver"], floor[-2000:]

        # Its own port and Redis database (bench/common.py's default, 14, is a test worker's under xdist).
        port, redis_url = str(21000 + os.getpid() % 9000), "redis://127.0.0.1:6379/10"
        # 18 s: sign-in (PBKDF2 for six people) and the 5 s warm-up leave a window of ≈ 8 s; with 10 s it was ≈ 2 s,
        # and the one approver's few requests sometimes missed its queue.
        short = ["--seconds", "18", "--users", "6", "--rate", "2", "--baseline-seconds", "7"]
        load = _run_bench(
            "load_test.py",
            *short,
            "--skip-saturation",
            "--no-write",
            BENCH_SCALE_DB=name,
            BENCH_PORT=port,
            BENCH_REDIS_URL=redis_url,
        )
        served = re.search(r"^target +(\d+) req/s over (\d+) s .* errors (\d+) \(sign-in errors (\d+)\)$", load, re.M)
        assert served and int(served[1]) > 0 and served.groups()[2:] == ("0", "0"), load[-3000:]
        assert int(served[2]) >= 5, f"a measured window of {served[2]} s is too short to see every page: {load[-3000:]}"
        baseline = re.search(r"\| baseline: /healthz only, no think time \| as fast as possible \| (\d+) req/s", load)
        assert baseline and int(baseline[1]) > 0, load[-3000:]
        for page in ("home", "my access", "request (auto-approved) → my access", "release grant", "approver queue"):
            assert f"| {page} |" in load, page


def _run_bench(script: str, *args: str, timeout: int = 300, **env_vars: str) -> str:
    """``bench/<script>`` with the benchmark's own settings (not the suite's); its output, once it succeeded."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE")}
    env.update(env_vars)
    run = subprocess.run(
        [sys.executable, f"bench/{script}", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return run.stdout


def test_the_export_benchmark_runs_through_the_test_client_and_gunicorn():
    """bench/export_1m.py on a small ledger in its own database and port: both fetches give every row."""
    name, port = f"accessgov_bench_export_smoke_{os.getpid()}", str(20000 + os.getpid() % 10000)
    args = ["--events", "1500", "--no-write"]
    with bench_run(
        "export_1m.py", *args, database=name, timeout=300, BENCH_EXPORT_DB=name, BENCH_EXPORT_PORT=port
    ) as output:
        assert "1,500 rows, HTTP 200" in output
        assert "over HTTP, HTTP 200" in output


@pytest.mark.parametrize("script", ["million_grants.py", "expiry_sweep.py", "export_1m.py"])
def test_a_benchmark_that_seeds_by_hand_written_sql_sets_every_column_a_row_needs(script):
    """These benchmarks seed their rows by hand-written ``INSERT … SELECT`` statements (a million grants in
    seconds): a migration that added a required column (no null, no database default) broke
    bench/million_grants.py silently once, found only when `make bench` reached it. Every required column of
    each of our tables they fill must be in the statement's column list."""
    from django.apps import apps
    from django.db.models.fields import NOT_PROVIDED

    statements = re.findall(r"INSERT INTO (accessgov_\w+)\s*\(([^)]*)\)", (ROOT / "bench" / script).read_text())
    assert statements, f"bench/{script} seeds nothing by hand any more: drop it from this test"
    models = {model._meta.db_table: model for model in apps.get_models()}
    for table, columns in statements:
        listed = {column.strip() for column in columns.split(",")}
        required = {
            field.column
            for field in models[table]._meta.concrete_fields
            if not field.null and not field.primary_key and field.db_default is NOT_PROVIDED
        }
        assert required <= listed, f"bench/{script}, {table}: the seed does not set {sorted(required - listed)}"
