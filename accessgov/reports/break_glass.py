"""Break-glass: every self-activation and the follow-up another person owes it."""

from datetime import datetime

import django_filters
from django.db.models import (
    Count,
    F,
    Q,
    QuerySet,
)

from accessgov import charts, permissions
from accessgov.models import BreakGlassFollowUp, Grant, User
from accessgov.reports.base import (
    Report,
    ReportFilterSet,
    ReportForm,
    SortKey,
    chart_weeks,
    role_filter,
    seconds,
    sort_filter,
    system_filter,
    user_filter,
    weekly_counts,
)

BREAK_GLASS_COLUMNS = [
    "grant_id",
    "request_id",
    "user",
    "system",
    "role",
    "activated_at",
    "expires_at",
    "outcome",
    "ended_at",
    "ended_by",
    "justification",
    "follow_up_status",
    "follow_up_due_at",
    "acknowledged_by",
    "acknowledged_at",
    "acknowledgement_comment",
    "revocation_lag_seconds",
]


def break_glass_base(user: User) -> QuerySet[Grant]:
    return permissions.visible_grants(user).filter(is_break_glass=True)


def follow_up_of(grant: Grant) -> BreakGlassFollowUp | None:
    try:
        return grant.follow_up
    except BreakGlassFollowUp.DoesNotExist:
        return None


def follow_up_status(follow_up: BreakGlassFollowUp | None, now: datetime) -> str:
    if follow_up is None or follow_up.acknowledged_at is not None:
        return "acknowledged" if follow_up else ""
    return "overdue" if follow_up.due_at <= now else "open"


class BreakGlassFilter(ReportFilterSet):
    """Break-glass activations; the period is when they were activated."""

    STATUSES = [("open", "Open"), ("overdue", "Overdue"), ("acknowledged", "Acknowledged")]
    sort_keys = {
        "id": SortKey("Grant", F("pk"), "int"),
        "user": SortKey("Used by", F("user__username")),
        "system": SortKey("System", F("role__system__name")),
        "starts_at": SortKey("Activated", F("starts_at"), "datetime"),
        "due_at": SortKey("Follow-up due", F("follow_up__due_at"), "datetime", nullable=True),
        "acknowledged_at": SortKey("Acknowledged", F("follow_up__acknowledged_at"), "datetime", nullable=True),
    }
    period_field = "starts_at"

    system = system_filter("role__system")
    role = role_filter()
    user = user_filter("user__username")
    follow_up = django_filters.ChoiceFilter(choices=STATUSES, method="filter_follow_up", label="Follow-up")
    sort = sort_filter(sort_keys)

    class Meta:
        model = Grant
        form = ReportForm
        fields = ["since", "until", "system", "role", "user", "follow_up", "sort"]

    def filter_follow_up(self, queryset, name, value):
        if value == "acknowledged":
            return queryset.filter(follow_up__acknowledged_at__isnull=False)
        open_ = queryset.filter(follow_up__isnull=False, follow_up__acknowledged_at__isnull=True)
        if value == "overdue":
            return open_.filter(follow_up__due_at__lte=self.now)
        return open_.filter(follow_up__due_at__gt=self.now)


def break_glass_rows(qs: QuerySet[Grant]) -> QuerySet[Grant]:
    # Who ended it and who acknowledged the follow-up come by prefetch: two more joins took PostgreSQL
    # 15 ms to plan (the rows themselves take 3 ms).
    return qs.select_related("user", "role__system", "access_request", "follow_up").prefetch_related(
        "ended_by", "follow_up__acknowledged_by"
    )


def break_glass_csv_row(grant: Grant, now: datetime) -> list:
    """One row per break-glass activation. The columns (BREAK_GLASS_COLUMNS; stable names, times in UTC):

    grant_id, request_id; user: who used break-glass; system, role
    activated_at, expires_at; outcome: active, expired, revoked or released; ended_at, ended_by
    justification: the emergency, as written at activation
    follow_up_status: open, overdue or acknowledged; follow_up_due_at
    acknowledged_by, acknowledged_at, acknowledgement_comment: who reviewed it, when, and what they
        checked
    revocation_lag_seconds: removal_confirmed_at minus ended_at, when known
    """
    follow_up = follow_up_of(grant)
    return [
        grant.pk,
        grant.access_request_id,
        grant.user.username,
        grant.role.system.name,
        grant.role.name,
        grant.starts_at,
        grant.expires_at,
        grant.state_at(now),
        grant.ended_at_as_of(now),
        grant.ended_by.username if grant.ended_by else "",
        grant.access_request.justification,
        follow_up_status(follow_up, now),
        follow_up.due_at if follow_up else None,
        follow_up.acknowledged_by.username if follow_up and follow_up.acknowledged_by else "",
        follow_up.acknowledged_at if follow_up else None,
        follow_up.comment if follow_up else "",
        seconds(grant.revocation_lag),
    ]


def activations_per_week_chart(filterset: BreakGlassFilter) -> str:
    counts = weekly_counts(filterset.filtered, "starts_at")
    weeks = chart_weeks(counts, filterset.period, filterset.now.date())
    values = [counts.get(w, {}).get("", 0) for w in weeks]
    total = sum(values)
    summary = f"{charts.plural(total, 'break-glass activation')} in {charts.plural(len(weeks), 'week')}" + (
        f"; at most {max(values)} in one week." if total else "."
    )
    return charts.column_chart(
        chart_id="chart-break-glass-per-week",
        title="Break-glass activations per week",
        summary=summary,
        category_label="Week of",
        categories=[charts.week_label(w) for w in weeks],
        series=[charts.Series("Activations", values)],
    )


def follow_up_counts(filterset: BreakGlassFilter) -> dict[str, int]:
    now = filterset.now
    unacknowledged = Q(follow_up__isnull=False, follow_up__acknowledged_at__isnull=True)
    return filterset.filtered.order_by().aggregate(
        total=Count("pk"),
        open=Count("pk", filter=unacknowledged & Q(follow_up__due_at__gt=now)),
        overdue=Count("pk", filter=unacknowledged & Q(follow_up__due_at__lte=now)),
        acknowledged=Count("pk", filter=Q(follow_up__acknowledged_at__isnull=False)),
    )


BREAK_GLASS = Report(
    "break_glass",
    "Break-glass",
    BreakGlassFilter,
    break_glass_base,
    break_glass_rows,
    BREAK_GLASS_COLUMNS,
    break_glass_csv_row,
    page_fields=(
        *("status", "end_reason", "starts_at", "expires_at", "ended_at", "ended_by", "is_break_glass"),
        *("user__username", "role__name", "role__system__name", "access_request__justification"),
        *("follow_up__due_at", "follow_up__acknowledged_at", "follow_up__acknowledged_by", "follow_up__comment"),
    ),
)
