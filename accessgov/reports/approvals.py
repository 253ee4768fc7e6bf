"""Approval metrics: decisions, time to decision, per system and per approver."""

import statistics
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import django_filters
from django.db.models import (
    DurationField,
    Exists,
    ExpressionWrapper,
    F,
    OuterRef,
    QuerySet,
)

from accessgov import charts, permissions
from accessgov.models import AccessRequest, Decision, User
from accessgov.models.requests import AccessRequestQuerySet
from accessgov.reports.base import (
    APPROVE,
    DENY,
    Report,
    ReportFilterSet,
    ReportForm,
    SortKey,
    chart_weeks,
    day_start,
    decider_names,
    median,
    names,
    p90,
    role_filter,
    seconds,
    sort_filter,
    system_filter,
    user_filter,
    week_of,
)

APPROVALS_COLUMNS = [
    "request_id",
    "kind",
    "requester",
    "system",
    "role",
    "created_at",
    "decided_at",
    "outcome",
    "decision_seconds",
    "approved_by",
    "denied_by",
    "auto_approved_by_rule",
]

DECIDED = [AccessRequest.Status.APPROVED, AccessRequest.Status.DENIED, AccessRequest.Status.LAPSED]
# Over ``decided_as_of``'s annotations: an unswept lapse took until its deadline.
DECISION_TIME = ExpressionWrapper(F("decided_now") - F("created_at"), output_field=DurationField())


def approvals_base(user: User) -> QuerySet[AccessRequest]:
    """Requests ``user`` may see, break-glass activations aside (no approval); ``ApprovalFilter`` keeps those
    decided at its instant (``decided_as_of``)."""
    return permissions.visible_access_requests(user).exclude(kind=AccessRequest.Kind.BREAK_GLASS)


def decided_as_of(
    qs: AccessRequestQuerySet, now: datetime, since: datetime | None = None, until: datetime | None = None
) -> QuerySet[AccessRequest]:
    """The requests of ``qs`` decided at ``now`` (approved, auto-approved, denied or lapsed — a lapse the sweep has
    not recorded yet too), decided in [``since``, ``until``) where given, each annotated with its status
    (``status_now``) and decision time (``decided_now``) at ``now``: ``AccessRequest.status_at`` and
    ``decided_at_as_of`` as the queryset says them, so the counts, the period, the sort and the rows agree with
    every other page before the sweep comes by."""
    return qs.decided_within(now, DECIDED, since, until).annotate_status_at(now).annotate_decided_at_as_of(now)


def request_outcome(access_request: AccessRequest, now: datetime) -> str:
    """approved (by people), auto_approved, denied or lapsed, at ``now`` (``AccessRequest.status_at``)."""
    status = access_request.status_at(now)
    if status == AccessRequest.Status.APPROVED and access_request.auto_approved_by_rule:
        return "auto_approved"
    return status


class ApprovalFilter(ReportFilterSet):
    """Requests decided at the filter set's ``now`` (``decided_as_of``); the period is when they were decided."""

    # A month's decisions on an approver's roles are a few hundred rows: joined before the page was
    # cut, PostgreSQL hashed the whole user table for them (8.5 ms); the page's 51 ids first: ~1 ms.
    page_ids_first = True

    OUTCOMES = [
        ("approved", "Approved by people"),
        ("auto_approved", "Auto-approved"),
        ("denied", "Denied"),
        ("lapsed", "Lapsed"),
    ]
    sort_keys = {
        "id": SortKey("Request", F("pk"), "int"),
        "requester": SortKey("Requester", F("requester__username")),
        "system": SortKey("System", F("role__system__name")),
        "created_at": SortKey("Submitted", F("created_at"), "datetime"),
        "decided_at": SortKey("Decided", F("decided_now"), "datetime"),
        "decision_time": SortKey("Time to decision", DECISION_TIME, "duration"),
    }

    system = system_filter("role__system")
    role = role_filter()
    user = user_filter("requester__username", "Requester")
    approver = django_filters.CharFilter(method="filter_approver", label="Approver")
    outcome = django_filters.ChoiceFilter(choices=OUTCOMES, method="filter_outcome", label="Outcome")
    sort = sort_filter(sort_keys)

    class Meta:
        model = AccessRequest
        form = ReportForm
        fields = ["since", "until", "system", "role", "user", "approver", "outcome", "sort"]

    def filter_queryset(self, queryset):
        cleaned = self.form.cleaned_data
        since, until = cleaned.get("since"), cleaned.get("until")
        decided = decided_as_of(
            queryset, self.now, since and day_start(since), until and day_start(until + timedelta(days=1))
        )
        return super().filter_queryset(decided)

    def filter_since(self, queryset, name, value):
        return queryset  # the period is decided_as_of's, applied in filter_queryset: one pair of index ranges

    def filter_until(self, queryset, name, value):
        return queryset

    def filter_approver(self, queryset, name, value):
        decided = Decision.objects.filter(access_request=OuterRef("pk"), approver__username__iexact=value)
        return queryset.filter(Exists(decided))

    def filter_outcome(self, queryset, name, value):
        approved = AccessRequest.Status.APPROVED
        if value == "approved":
            return queryset.filter(status=approved, auto_approved_by_rule="")
        if value == "auto_approved":
            return queryset.filter(status=approved).exclude(auto_approved_by_rule="")
        return queryset.with_status_at(value, self.now)


def approvals_rows(qs: QuerySet[AccessRequest]) -> QuerySet[AccessRequest]:
    """The page's and the CSV's rows (``ApprovalFilter.qs``, annotated by ``decided_as_of``) with their joins."""
    return qs.select_related("requester", "role__system").annotate(
        approved_by=decider_names("pk", APPROVE),
        denied_by=decider_names("pk", DENY),
        decision_time=DECISION_TIME,
    )


def approvals_csv_row(access_request: AccessRequest, now: datetime) -> list:
    """One row per decided request. The columns (APPROVALS_COLUMNS; stable names, times in UTC):

    request_id; kind: access or extension (break-glass is no approval: see the break-glass export)
    requester, system, role
    created_at: submitted; decided_at: approved, denied or lapsed (a lapse at its deadline, recorded by the sweep
        or not yet)
    outcome: approved (by people), auto_approved, denied or lapsed, at the export's instant
    decision_seconds: decided_at minus created_at
    approved_by, denied_by: the approvers who approved / denied, comma-separated
    auto_approved_by_rule: the rule that approved it, for auto-approvals
    """
    return [
        access_request.pk,
        access_request.kind,
        access_request.requester.username,
        access_request.role.system.name,
        access_request.role.name,
        access_request.created_at,
        access_request.decided_at_as_of(now),
        request_outcome(access_request, now),
        seconds(access_request.decision_time),  # type: ignore[attr-defined]  # annotated by approvals_rows
        ",".join(names(access_request.approved_by)),  # type: ignore[attr-defined]
        ",".join(names(access_request.denied_by)),  # type: ignore[attr-defined]
        access_request.auto_approved_by_rule,
    ]


@dataclass
class TimingRow:
    """Time to decision for one system or one approver: count, median and p90 in seconds."""

    name: str
    count: int
    median: float | None
    p90: float | None
    approvals: int = 0
    denials: int = 0
    auto: int = 0
    lapsed: int = 0


@dataclass
class ApprovalMetrics:
    decided: int
    manual_approvals: int
    auto_approvals: int
    denied: int
    lapsed: int
    median: float | None
    p90: float | None
    by_system: list[TimingRow]
    by_approver: list[TimingRow]
    weekly_median: dict[date, float]
    approval_median: float | None = None  # approvals by people only: what the weekly chart shows


def approval_metrics(filtered: QuerySet) -> ApprovalMetrics:
    """Over ``ApprovalFilter.filtered`` (each request as of the filter's instant, ``decided_as_of``): time to decision by system (request submitted → decided, for requests people decided) and by
    approver (request submitted → that approver's decision), with auto/manual, denied and lapsed
    counts and the weekly median time to a manual approval. Two queries, whatever the number of rows;
    percentiles are computed here because SQLite has none (median: middle value or mean of the two
    middle ones; p90: nearest rank)."""
    per_system: dict[str, dict[str, Any]] = defaultdict(lambda: {"times": [], "counts": defaultdict(int)})
    weekly: dict[date, list[float]] = defaultdict(list)
    every_time: list[float] = []
    approval_times: list[float] = []
    totals: dict[str, int] = defaultdict(int)
    requests = filtered.order_by().values_list(  # annotated by decided_as_of: each request as of the filter's now
        "role__system__name", "status_now", "auto_approved_by_rule", "created_at", "decided_now"
    )
    for system, status, rule, created_at, decided_at in requests.iterator(chunk_size=5000):
        outcome = "auto_approved" if status == AccessRequest.Status.APPROVED and rule else status
        totals[outcome] += 1
        per_system[system]["counts"][outcome] += 1
        if outcome in ("approved", "denied") and decided_at is not None:
            elapsed = (decided_at - created_at).total_seconds()
            per_system[system]["times"].append(elapsed)
            every_time.append(elapsed)
            if outcome == "approved":
                weekly[week_of(decided_at)].append(elapsed)
                approval_times.append(elapsed)
    per_approver: dict[str, dict[str, Any]] = defaultdict(lambda: {"times": [], "counts": defaultdict(int)})
    decisions = Decision.objects.filter(access_request__in=filtered.values("pk")).values_list(
        "approver__username", "outcome", "created_at", "access_request__created_at"
    )
    for approver, outcome, decided_at, submitted_at in decisions.iterator(chunk_size=5000):
        per_approver[approver]["times"].append((decided_at - submitted_at).total_seconds())
        per_approver[approver]["counts"][outcome] += 1

    def timing(name: str, entry: dict[str, Any], *, approver: bool) -> TimingRow:
        counts = entry["counts"]
        return TimingRow(
            name=name,
            count=len(entry["times"]),
            median=median(entry["times"]),
            p90=p90(entry["times"]),
            approvals=counts[APPROVE] if approver else counts["approved"],
            denials=counts[DENY] if approver else counts["denied"],
            auto=counts["auto_approved"],
            lapsed=counts["lapsed"],
        )

    return ApprovalMetrics(
        decided=sum(totals.values()),
        manual_approvals=totals["approved"],
        auto_approvals=totals["auto_approved"],
        denied=totals["denied"],
        lapsed=totals["lapsed"],
        median=median(every_time),
        p90=p90(every_time),
        by_system=sorted(
            (timing(name, entry, approver=False) for name, entry in per_system.items()),
            key=lambda row: (-row.count, row.name),
        ),
        by_approver=sorted(
            (timing(name, entry, approver=True) for name, entry in per_approver.items()),
            key=lambda row: (-row.count, row.name),
        ),
        weekly_median={week: statistics.median(times) for week, times in weekly.items()},
        approval_median=median(approval_times),
    )


def median_time_to_approve_chart(filterset: ApprovalFilter, metrics: ApprovalMetrics) -> str:
    weekly = metrics.weekly_median
    weeks = chart_weeks(weekly, filterset.period, filterset.now.date())
    slowest = max(weekly, key=weekly.__getitem__, default=None)
    summary = (
        f"Median time from request to approval by people, per week, over {charts.plural(len(weeks), 'week')}; "
        f"median time to approve over the period {charts.format_seconds(metrics.approval_median)} (approvals only; the tile above counts denials too)"
        + (f"; slowest week began {slowest:%d %b %Y} ({charts.format_seconds(weekly[slowest])})." if slowest else ".")
    )
    return charts.column_chart(
        chart_id="chart-median-approval",
        title="Median time to approve, per week",
        summary=summary,
        category_label="Week of",
        categories=[charts.week_label(w) for w in weeks],
        series=[charts.Series("Median time to approve", [weekly.get(w) for w in weeks])],
        format_value=charts.format_seconds,
        durations=True,
    )


APPROVALS = Report(
    "approval_metrics",
    "Approval metrics",
    ApprovalFilter,
    approvals_base,
    approvals_rows,
    APPROVALS_COLUMNS,
    approvals_csv_row,
    page_fields=(
        *("kind", "status", "auto_approved_by_rule", "created_at", "decided_at", "lapses_at"),
        *("requester__username", "role__name", "role__system__name"),
    ),
)
