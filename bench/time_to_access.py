"""Time to access for an auto-approved request: the new-request form POST → grant active, server
time, on the scale dataset (bench/seed_scale.py) in PostgreSQL with persistent connections.

    .venv/bin/python bench/time_to_access.py [--requests 100] [--profile]

Method: N users, each eligible for a role that needs no approval and holding no grant or pending
request for it, are signed in (password + TOTP device, session marked verified). Each POSTs the real
form at /requests/new/ through the whole middleware stack (Django test client, no network); the
view validates, the service locks the role, checks eligibility and policy, writes the request, its
approval, the grant, three chained access events and the provisioning outbox row, and publishes
the expiry timer and the outbox drain to Redis after commit (no worker runs: the tasks are dropped
afterwards). Each response must be the redirect to "My access", and every grant must be active
(``Grant.objects.active(now)``) afterwards. Baselines in the same run, same stack: the health check
(one trivial query) and a GET of the same form.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import (  # noqa: E402
    REDIS_URL,
    SCALE_DB,
    flush_bench_redis,
    measured_on,
    pct,
    process_cpu_seconds,
    production_like_env,
    profile_top,
    require_scale_data,
    verified_client,
    write_section,
)

production_like_env(SCALE_DB, CELERY_BROKER_URL=REDIS_URL, CELERY_RESULT_BACKEND=REDIS_URL)


def candidates(n: int):
    """(user, role) pairs: the role needs no approval, the user is eligible and holds nothing for it."""
    from django.db.models import Exists, OuterRef
    from django.utils import timezone

    from accessgov.models import AccessRequest, Eligibility, Grant

    now = timezone.now()
    busy_grant = Grant.objects.current().filter(user=OuterRef("user"), role=OuterRef("role"))
    busy_request = AccessRequest.objects.filter(requester=OuterRef("user"), role=OuterRef("role"), status="pending")
    rows = (
        Eligibility.objects.active(now)
        .filter(user__isnull=False, role__approvals_required=0, role__ticket_required=False)
        .exclude(Exists(busy_grant))
        .exclude(Exists(busy_request))
        .select_related("user", "role")
        .order_by("user_id", "role_id")
    )
    pairs, seen = [], set()
    for eligibility in rows.iterator():
        if eligibility.user_id in seen:
            continue
        seen.add(eligibility.user_id)
        pairs.append((eligibility.user, eligibility.role))
        if len(pairs) == n:
            break
    if len(pairs) < n:
        raise SystemExit(f"only {len(pairs)} free (user, auto-approved role) pairs: reseed with --reset")
    return pairs


def timed(client, method: str, url: str, data=None) -> tuple[float, object]:
    t0 = time.perf_counter()
    response = client.post(url, data) if method == "POST" else client.get(url)
    return time.perf_counter() - t0, response


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--profile", action="store_true", help="print a cProfile of 20 extra POSTs")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    import django

    django.setup()
    import portal.wsgi  # noqa: F401 - what a gunicorn worker runs at start-up (its views loaded, gc.freeze)

    require_scale_data()
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from accessgov.models import Grant

    extra = 20 if args.profile else 0
    pairs = candidates(args.requests + 2 + extra)
    clients = [(verified_client(user), role) for user, role in pairs]

    def form(role) -> dict:
        return {"role": role.pk, "duration": "1h", "justification": "Benchmark: investigate the payout incident"}

    # Warm-ups (first request of the process: URL resolver, templates, connection).
    for client, role in clients[:2]:
        seconds, response = timed(client, "POST", "/requests/new/", form(role))
        if response.status_code != 302:
            raise SystemExit(f"warm-up POST answered {response.status_code}")
    measured = clients[2 : 2 + args.requests]

    started = timezone.now()
    health, form_get, posts, queries = [], [], [], []
    # CPU the POSTs cost, in this process (Django and the test client) and in its PostgreSQL backend: time
    # stolen by the host (a shared machine) is in neither, so these compare across runs where wall time cannot.
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    django_cpu = postgres_cpu = 0.0
    for client, role in measured:
        health.append(timed(client, "GET", "/healthz")[0])
        form_get.append(timed(client, "GET", "/requests/new/")[0])
        cpu0, pg0 = time.process_time(), process_cpu_seconds(backend)
        with CaptureQueriesContext(connection) as captured:
            seconds, response = timed(client, "POST", "/requests/new/", form(role))
        django_cpu += time.process_time() - cpu0
        postgres_cpu += process_cpu_seconds(backend) - pg0
        if response.status_code != 302 or response.url != "/access/":
            raise SystemExit(f"POST answered {response.status_code} {getattr(response, 'url', '')}")
        posts.append(seconds)
        queries.append(len(captured))
    now = timezone.now()
    users = [c.session["_auth_user_id"] for c, _ in measured]
    active = Grant.objects.active(now).filter(user_id__in=users, created_at__gte=started).count()
    if active != len(measured):
        raise SystemExit(f"only {active} of {len(measured)} grants are active")

    if args.profile:
        rest = clients[2 + args.requests :]
        print(profile_top(lambda: [c.post("/requests/new/", form(r)) for c, r in rest], 40))
    connection.close()
    flush_bench_redis()

    results = {
        "n": len(posts),
        "p50": statistics.median(posts),
        "p99": pct(posts, 99),
        "max": max(posts),
        "queries": statistics.median(queries),
        "health_p50": statistics.median(health),
        "form_p50": statistics.median(form_get),
        "active": active,
        "django_cpu": django_cpu / len(posts),
        "postgres_cpu": postgres_cpu / len(posts),
    }
    report = render(results)
    print(report)
    if not args.no_write and not args.profile:  # a profiled run is slower: it never replaces the numbers
        write_section(report, "time_to_access")


def render(r: dict) -> str:
    ms = lambda s: f"{s * 1000:.1f} ms"  # noqa: E731
    return "\n".join(
        [
            "### Time to access, auto-approved request (form POST → grant active)",
            "",
            f"{measured_on()}; "
            f"`bench/time_to_access.py`, {r['n']} requests by {r['n']} signed-in users on the scale dataset "
            "(PostgreSQL, persistent connection, tasks published to Redis), Django test client through the whole "
            "middleware stack.",
            "",
            "| what | p50 | p99 | max | queries | target |",
            "|---|---|---|---|---|---|",
            f"| POST /requests/new/ → 302, grant active | {ms(r['p50'])} | {ms(r['p99'])} | {ms(r['max'])} | "
            f"{r['queries']:.0f} | p50 ≤ 50 ms |",
            f"| baseline: GET /healthz (same stack, one trivial query) | {ms(r['health_p50'])} | | | | |",
            f"| baseline: GET /requests/new/ (the form) | {ms(r['form_p50'])} | | | | |",
            "",
            f"Ratio POST p50 / health check p50: {r['p50'] / r['health_p50']:.0f}×. "
            f"{r['active']} of {r['n']} grants active right after their POST. CPU per POST (time stolen by the host "
            f"not included): {ms(r['django_cpu'])} in this process (Django and the test client), "
            f"{ms(r['postgres_cpu'])} in its PostgreSQL backend.",
        ]
    )


if __name__ == "__main__":
    main()
