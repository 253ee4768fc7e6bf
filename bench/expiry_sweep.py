"""Expiry sweep: 100,000 grants due at the same instant on PostgreSQL, expired, audited and queued for
removal by the real set-based sweep (``grants.grant_expire_due``).

    .venv/bin/python bench/expiry_sweep.py [--grants 100000] [--runs 5] [--phases] [--profile]

Creates the database accessgov_bench_sweep (another with ``BENCH_SWEEP_DB=name``, to keep parallel runs
apart; ``BENCH_REDIS_URL`` likewise): 10,000 users, 200 systems, 1,000 roles, and N approved
requests whose active grants all ended in the last minute (generated in SQL). Then one call of
``grant_expire_due(now)`` — what the scheduler and the beat sweep both run — is timed end to end
(including its commits and publishing its tasks to the benchmarks' Redis; no worker runs). Checked
afterwards: every grant expired, exactly one ``grant.expired`` event per grant, a valid hash chain
(``verify_chain``), one removal outbox row per grant. Baseline in the same run: one SQL ``UPDATE``
flipping the same 100,000 rows (rolled back). Both from a fresh checkpoint; ``--runs`` times (each on a
freshly seeded database), reported run by run with the median: single runs on this 2-core machine move
±15 %. ``SWEEP_WRITERS=1`` measures one writer.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import (  # noqa: E402
    REDIS_URL,
    cpu_seconds_by_group,
    flush_bench_redis,
    fresh_database,
    idle_seconds,
    measured_on,
    production_like_env,
    profile_top,
    write_section,
)

DB = os.environ.get("BENCH_SWEEP_DB", "accessgov_bench_sweep")  # another name keeps parallel work apart

production_like_env(DB, CELERY_BROKER_URL=REDIS_URL, CELERY_RESULT_BACKEND=REDIS_URL)

SEED_SQL = [
    """INSERT INTO accessgov_user (password, is_superuser, username, first_name, last_name, email, is_staff,
           is_active, date_joined, session_stamp, is_service_account, inbox_read_through,
           notification_preferences, time_zone)
       SELECT '!', false, 'user' || g, 'First' || g, 'Last' || g, 'user' || g || '@example.com', false, true,
              now() - interval '400 days', md5(g::text), false, 0, '{}'::jsonb, ''
       FROM generate_series(0, %(users)s - 1) g""",
    """INSERT INTO accessgov_system (name, slug, environment, description, slack_webhook_url, connector,
           connector_config, connector_secret, reconcile_remove_drift, created_at)
       SELECT 'System ' || g, 'system-' || g, 'production', '', '', 'manual', '{}'::jsonb, '', false, now()
       FROM generate_series(0, 199) g""",
    """INSERT INTO accessgov_role (system_id, name, description, risk_tier, default_duration, max_duration,
           approvals_required, ticket_required, ticket_pattern, step_up_required, break_glass_allowed,
           pending_timeout, target_name, ticket_projects, ticket_issue_types, ticket_assigned_to_requester, ticket_bound,
           access_level)
       SELECT s.id, 'role-' || k, '', 'medium', interval '1 hour', interval '8 hours', 1, false, '', false, false,
              interval '24 hours', '', '', '', false, false, ''
       FROM accessgov_system s, generate_series(0, 4) k""",
    # Grant g: user g %% users, role (g / users + 7 * user) %% roles: distinct (user, role) pairs.
    """INSERT INTO accessgov_accessrequest (requester_id, role_id, kind, status, requested_duration, approved_duration,
           starts_at, justification, ticket, created_at, lapses_at, decided_at, auto_approved_by_rule, extends_grant_id,
           reminder_sent_at, auto_approval_evidence, auto_approval_note, incident_id, ticket_bound, ticket_title,
           ticket_url)
       SELECT u.min_id + g %% %(users)s, r.min_id + ((g / %(users)s) + 7 * (g %% %(users)s)) %% r.n, 'access',
              'approved', interval '1 hour', interval '1 hour', NULL, 'Incident INC-' || g || ': fix the payout batch',
              '', now() - interval '1 hour 5 minutes', now() + interval '23 hours', now() - interval '1 hour', '', NULL, NULL, '{}'::jsonb, '', '', false, '', ''
       FROM generate_series(0, %(grants)s - 1) g,
            (SELECT min(id) AS min_id FROM accessgov_user) u,
            (SELECT min(id) AS min_id, count(*) AS n FROM accessgov_role) r""",
    """INSERT INTO accessgov_grant (access_request_id, user_id, role_id, status, is_break_glass, starts_at, expires_at,
           created_at, activated_at, ended_at, end_reason, ended_by_id, extension_count, expiry_reminder_sent_at,
           provisioning_state, provisioning_error, provisioned_at, removal_requested_at, removed_at,
           removal_confirmed_at, removal_alerted_at)
       SELECT a.id, a.requester_id, a.role_id, 'active', false, a.decided_at,
              now() - (a.id %% 60) * interval '1 second' - interval '1 second', a.decided_at, a.decided_at, NULL, '',
              NULL, 0, a.decided_at + interval '45 minutes', 'applied', '', a.decided_at + interval '80 milliseconds',
              NULL, NULL, NULL, NULL
       FROM accessgov_accessrequest a""",
    "ANALYZE",
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--grants", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=None, help="override grant_expire_due's default")
    parser.add_argument("--runs", type=int, default=5, help="seed, baseline and sweep this many times")
    parser.add_argument("--profile", action="store_true", help="run the sweep under cProfile (slower)")
    parser.add_argument("--phases", action="store_true", help="print the wall time of each phase of the sweep")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings

    from accessgov.services.grants import EXPIRE_BATCH_SIZE

    runs = []
    for n in range(1, args.runs + 1):
        run = one_run(args)
        print(
            f"run {n}: sweep {run['sweep_s']:.2f} s, bare UPDATE {run['baseline_s']:.2f} s, "
            f"ratio {run['sweep_s'] / run['baseline_s']:.1f}×"
        )
        runs.append(run)
    results = {
        "grants": args.grants,
        "runs": runs,
        "batch_size": args.batch_size or EXPIRE_BATCH_SIZE,
        "writers": settings.SWEEP_WRITERS,
    }
    report = render(results)
    print(report)
    if not args.no_write and not args.profile:
        write_section(report, "expiry_sweep")


def one_run(args) -> dict:
    """A fresh database, seeded; the bare UPDATE (rolled back), then the sweep over the same rows, each
    from a fresh checkpoint; then the checks."""
    from django.core.management import call_command
    from django.db import connection, transaction
    from django.utils import timezone

    from accessgov.ledger.verify import verify_chain
    from accessgov.models import AccessEvent, Grant, OutboxItem
    from accessgov.services.grants import grant_expire_due

    connection.close()
    fresh_database(DB)
    call_command("migrate", verbosity=0)
    t0 = time.perf_counter()
    with connection.cursor() as cursor:
        for statement in SEED_SQL:
            cursor.execute(statement, {"users": args.users, "grants": args.grants})
    seed_s = time.perf_counter() - t0

    now = timezone.now()
    due = Grant.objects.filter(status="active", expires_at__lte=now).count()
    if due != args.grants:
        raise SystemExit(f"expected {args.grants} due grants, found {due}")

    # Each timed write starts from a fresh checkpoint (seeding wrote ≈ 200 MB of WAL: a checkpoint due in
    # the middle of one of them, and not the other, was most of the run-to-run noise).
    with connection.cursor() as cursor:
        cursor.execute("CHECKPOINT")
    # Baseline: one UPDATE flipping the same rows, rolled back.
    t0 = time.perf_counter()
    with transaction.atomic():
        Grant.objects.filter(status="active", expires_at__lte=now).update(status="expired", ended_at=now)
        baseline_s = time.perf_counter() - t0
        transaction.set_rollback(True)

    # What the scheduler and the workers have loaded at start-up, loaded before the clock starts (the
    # sweep imports them lazily; inside the timed call that was 0.4-0.6 s of module import, once).
    import accessgov.services.webhooks
    import accessgov.tasks  # noqa: F401

    with connection.cursor() as cursor:
        cursor.execute("CHECKPOINT")
    sweep_kwargs = {} if args.batch_size is None else {"batch_size": args.batch_size}
    counter = {}
    phases = time_phases() if args.phases else {}
    cpu0, groups0, idle0 = time.process_time(), cpu_seconds_by_group(), idle_seconds()
    t0 = time.perf_counter()
    if args.profile:
        print(profile_top(lambda: counter.setdefault("n", grant_expire_due(now, **sweep_kwargs)), 35))
    else:
        counter["n"] = grant_expire_due(now, **sweep_kwargs)
    sweep_s = time.perf_counter() - t0
    if phases:
        groups, (idle, iowait) = cpu_seconds_by_group(), (b - a for a, b in zip(idle0, idle_seconds(), strict=True))
        print(f"phase {'(CPU of this Python process, all threads)':<40} {time.process_time() - cpu0:6.3f} s")
        print(
            f"phase {'(CPU of PostgreSQL, all its processes)':<40} {groups['PostgreSQL'] - groups0['PostgreSQL']:6.3f} s"
        )
        print(f"phase {'(cores idle, summed over both)':<40} {idle:6.3f} s, waiting for I/O {iowait:.3f} s")
        for name, seconds in phases.items():
            print(f"phase {name:<40} {seconds:6.3f} s (summed over the writers)")

    expired = Grant.objects.filter(status="expired", end_reason="expired").count()
    events = AccessEvent.objects.filter(event_type="grant.expired").count()
    removals = OutboxItem.objects.filter(action="remove", done_at__isnull=True).count()
    removal_pending = Grant.objects.filter(provisioning_state="removal_pending").count()
    t0 = time.perf_counter()
    chain = verify_chain()
    verify_s = time.perf_counter() - t0
    connection.close()
    flush_bench_redis()
    if not (expired == events == removals == removal_pending == args.grants == counter["n"]) or not chain.ok:
        raise SystemExit(
            f"incomplete sweep: returned {counter['n']}, expired {expired}, events {events}, outbox {removals}, "
            f"removal_pending {removal_pending}, chain {chain.as_dict()}"
        )
    return {"sweep_s": sweep_s, "baseline_s": baseline_s, "verify_s": verify_s, "seed_s": seed_s}


_PHASES: dict[str, float] = {}


def time_phases() -> dict[str, float]:
    """Wall time per phase of the sweep (wrapping the functions it calls, once; summed over its batches
    and writers), reset for each run."""
    if _PHASES:
        _PHASES.update(dict.fromkeys(_PHASES, 0.0))
        return _PHASES
    from concurrent.futures import Future

    from django.db.backends.base.base import BaseDatabaseWrapper

    from accessgov import dbsql
    from accessgov.ledger import record
    from accessgov.services import grants

    totals = _PHASES

    def timed(owner, attribute: str, name: str) -> None:
        original = getattr(owner, attribute)

        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                totals[name] = totals.get(name, 0.0) + time.perf_counter() - started

        setattr(owner, attribute, wrapper)

    timed(grants._DueBatches, "take", "taking a batch (waiting for the other writer + UPDATE)")
    timed(dbsql, "grants_update_due", "UPDATE … RETURNING (due rows)")
    timed(dbsql, "outbox_insert", "outbox INSERT … SELECT")
    timed(Future, "result", "waiting for the events' worker thread")
    timed(record, "lock_head", "ledger lock + head")
    timed(record, "_copy_rows", "events: hash chain + COPY")
    timed(BaseDatabaseWrapper, "commit", "COMMIT + after-commit hooks")
    return totals


def render(r: dict) -> str:
    runs = r["runs"]
    ratios = sorted(run["sweep_s"] / run["baseline_s"] for run in runs)
    sweeps = sorted(run["sweep_s"] for run in runs)
    median = statistics.median
    lines = [
        f"### Expiry sweep: {r['grants']:,} grants due at the same instant on PostgreSQL",
        "",
        f"{measured_on()}; "
        "`bench/expiry_sweep.py`: one call of `grant_expire_due(now)` (what the scheduler and the beat sweep run), "
        f"set-based in batches of {r['batch_size']:,} with `SKIP LOCKED` (`UPDATE … RETURNING`, events by `COPY`, "
        f"outbox by `INSERT … SELECT`), written by {r['writers']} writer(s) (`SWEEP_WRITERS`). {len(runs)} runs, each on "
        "a freshly seeded database, the bare `UPDATE` and the sweep each from a fresh checkpoint.",
        "",
        "| run | expired + one chained `grant.expired` event each + removal queued, "
        f"{r['grants']:,} grants (target ≤ 5 s) | baseline: one SQL `UPDATE` flipping the same rows (rolled back) "
        "| ratio (target ≤ 3×) |",
        "|---|---|---|---|",
    ]
    for n, run in enumerate(runs, 1):
        lines.append(
            f"| {n} | {run['sweep_s']:.2f} s | {run['baseline_s']:.2f} s | {run['sweep_s'] / run['baseline_s']:.1f}× |"
        )
    lines += [
        f"| **median** | **{median(sweeps):.2f} s** | {median(run['baseline_s'] for run in runs):.2f} s "
        f"| **{median(ratios):.1f}×** |",
        "",
        f"Sweep {sweeps[0]:.2f}–{sweeps[-1]:.2f} s, ratio {ratios[0]:.1f}–{ratios[-1]:.1f}×. Checked after each run: every "
        "grant expired, one event per grant, the chain verifies "
        f"({median(run['verify_s'] for run in runs):.1f} s for {r['grants']:,} events), one removal outbox row per grant.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
