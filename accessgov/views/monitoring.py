"""Monitoring: who has production access right now (live), and Prometheus metrics."""

import hmac
import statistics
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from accessgov import clock, permissions, selectors
from accessgov.models import AccessRequest, Grant, JobRun, SchedulerLease
from accessgov.services.scheduler import LEASE_NAME

PENDING_AGE_BUCKETS = [
    ("lt_1h", timedelta(hours=1)),
    ("1h_to_4h", timedelta(hours=4)),
    ("4h_to_24h", timedelta(hours=24)),
]


# The most grant rows the live page renders (it refreshes every 10 s): past it, each system says how many
# more there are and links its full list. Rendering every active grant cost 124-173 ms at 1,000 of them and
# grew without bound (issue 22's slow-filters probe).
LIVE_ROWS = 300


@require_safe
def live_access_view(request: HttpRequest) -> HttpResponse:
    """Active grants I may see, grouped by system, with time left (break-glass first within a system, then the
    soonest to end; at most LIVE_ROWS rows, every system's count); htmx refreshes the table."""
    now = clock.now()
    active = permissions.visible_grants(request.user).active(now)
    systems: dict[int, dict] = {
        row["role__system_id"]: {
            "name": row["role__system__name"],
            "id": row["role__system_id"],
            "total": row["total"],
            "break_glass": row["break_glass"],
            "grants": [],
        }
        for row in active.values("role__system_id", "role__system__name")
        .annotate(total=Count("pk"), break_glass=Count("pk", filter=Q(is_break_glass=True)))
        .order_by("role__system__name")
    }
    for grant in active.select_related("user", "role__system").order_by(
        "role__system__name", "role__system_id", "-is_break_glass", "expires_at", "pk"
    )[:LIVE_ROWS]:
        # A grant that began (or a role that moved) between the two reads: its system is listed all the same.
        systems.setdefault(
            grant.role.system_id,
            {"name": grant.role.system.name, "id": grant.role.system_id, "total": 0, "break_glass": 0, "grants": []},
        )["grants"].append(grant)
    for system in systems.values():  # counts never below the rows shown, for the same reason
        system["total"] = max(system["total"], len(system["grants"]))
        system["break_glass"] = max(system["break_glass"], sum(g.is_break_glass for g in system["grants"]))
    context = {
        "systems": sorted(systems.values(), key=lambda system: (system["name"], system["id"])),
        "total": sum(system["total"] for system in systems.values()),
        "shown": LIVE_ROWS,
        "now": now,
    }
    template = "accessgov/monitoring/_live_table.html" if request.htmx else "accessgov/monitoring/live.html"
    return render(request, template, context)


def _authorized(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    offered = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    return bool(token) and hmac.compare_digest(offered.encode(), token.encode())


@never_cache
@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text format. Disabled (404) unless METRICS_TOKEN is set; 404 for a wrong token too."""
    if not _authorized(request):
        raise Http404("No metrics here.")
    now = clock.now()
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lines.append(f"{name}{labels} {value}")

    active = Grant.objects.active(now).values("role__system__slug").annotate(n=Count("pk")).order_by()
    metric(
        "accessgov_active_grants",
        "gauge",
        "Grants giving access now, by system.",
        [(f'{{system="{row["role__system__slug"]}"}}', row["n"]) for row in active],
    )
    pending = list(AccessRequest.objects.pending_at(clock.now()).values_list("created_at", flat=True))
    buckets = {name: 0 for name, _ in PENDING_AGE_BUCKETS} | {"gt_24h": 0}
    for created in pending:
        age = now - created
        name = next((n for n, limit in PENDING_AGE_BUCKETS if age < limit), "gt_24h")
        buckets[name] += 1
    metric(
        "accessgov_pending_requests",
        "gauge",
        "Pending requests by age.",
        [(f'{{age="{name}"}}', n) for name, n in buckets.items()],
    )
    metric(
        "accessgov_overdue_removals",
        "gauge",
        "Ended grants whose removal at the target is overdue.",
        [("", selectors.overdue_removals(Grant.objects.all(), now).count())],
    )
    lags = [
        (g.removal_confirmed_at - g.ended_at).total_seconds()
        for g in Grant.objects.filter(removal_confirmed_at__gte=now - timedelta(hours=24), ended_at__isnull=False).only(
            "removal_confirmed_at", "ended_at"
        )
    ]
    quantiles = []
    if lags:
        ordered = sorted(lags)
        quantiles = [
            ('{quantile="0.5"}', statistics.median(ordered)),
            ('{quantile="0.99"}', ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]),
        ]
    metric(
        "accessgov_revocation_lag_seconds", "summary", "Access ended -> removed and confirmed, last 24 h.", quantiles
    )
    lines.append(f"accessgov_revocation_lag_seconds_count {len(lags)}")
    lines.append(f"accessgov_revocation_lag_seconds_sum {round(sum(lags), 3)}")
    sweep = JobRun.objects.filter(name="sweep").first()
    metric(
        "accessgov_sweep_duration_seconds",
        "gauge",
        "Duration of the last expiry sweep.",
        [("", round(sweep.duration_seconds, 4) if sweep else 0)],
    )
    metric(
        "accessgov_sweep_last_run_timestamp_seconds",
        "gauge",
        "When the last sweep finished (Unix time).",
        [("", sweep.finished_at.timestamp() if sweep else 0)],
    )
    lease = SchedulerLease.objects.filter(name=LEASE_NAME).first()
    metric(
        "accessgov_scheduler_lease_renewed_timestamp_seconds",
        "gauge",
        "When the expiry scheduler holding the lease last renewed it (Unix time; 0: never). Alert when it "
        "falls more than a few seconds behind: no scheduler is running, only the sweep ends grants.",
        [("", lease.renewed_at.timestamp() if lease and lease.renewed_at else 0)],
    )
    return HttpResponse("\n".join(lines) + "\n", content_type="text/plain; version=0.0.4; charset=utf-8")
