"""Access history: every grant, how it ended, who approved it and each extension, how fast removal was confirmed."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import django_filters
from django.db.models import (
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    Prefetch,
    Q,
    QuerySet,
)
from django.db.models.functions import Coalesce

from accessgov import charts, exports, inputs, permissions, policies
from accessgov.models import AccessRequest, Decision, Grant, User
from accessgov.reports.base import (
    APPROVE,
    Report,
    ReportFilterSet,
    ReportForm,
    SortKey,
    chart_weeks,
    day_start,
    role_filter,
    seconds,
    sort_filter,
    system_filter,
    user_filter,
    weekly_counts,
    yes_no,
)

ACCESS_HISTORY_COLUMNS = [
    "grant_id",
    "request_id",
    "user",
    "system",
    "role",
    "break_glass",
    "starts_at",
    "expires_at",
    "extensions",
    "outcome",
    "ended_at",
    "ended_by",
    "justification",
    "ticket",
    "approved_by",
    "auto_approved_by_rule",
    "removal_confirmed_at",
    "revocation_lag_seconds",
    "approvals",
]

LAG_EXPRESSION = ExpressionWrapper(F("removal_confirmed_at") - F("ended_at"), output_field=DurationField())

LAG_BUCKETS = [
    ("< 1 s", None, timedelta(seconds=1)),
    ("1-2 s", timedelta(seconds=1), timedelta(seconds=2)),
    ("2-5 s", timedelta(seconds=2), timedelta(seconds=5)),
    ("5-30 s", timedelta(seconds=5), timedelta(seconds=30)),
    ("30 s-5 min", timedelta(seconds=30), timedelta(minutes=5)),
    ("> 5 min", timedelta(minutes=5), None),
]


def access_history_base(user: User) -> QuerySet[Grant]:
    """Every grant ``user`` may see (auditors: all)."""
    return permissions.visible_grants(user)


class AccessHistoryFilter(ReportFilterSet):
    """Grants whose access overlapped the period: started before it ended, ended (or runs until)
    after it began."""

    ENDINGS = [
        ("current", "Not ended"),
        ("expired", "Expired"),
        ("revoked", "Revoked"),
        ("released", "Released early"),
    ]
    sort_keys = {
        "id": SortKey("Grant", F("pk"), "int"),
        "user": SortKey("Holder", F("user__username")),
        "system": SortKey("System", F("role__system__name")),
        "starts_at": SortKey("From", F("starts_at"), "datetime"),
        "expires_at": SortKey("Until", F("expires_at"), "datetime"),
        "ended_at": SortKey("Ended", F("ended_at"), "datetime", nullable=True),
        "lag": SortKey("Revocation lag", LAG_EXPRESSION, "duration", nullable=True),
    }

    system = system_filter("role__system")
    role = role_filter()
    user = user_filter("user__username")
    outcome = django_filters.ChoiceFilter(choices=ENDINGS, method="filter_outcome", label="How it ended")
    break_glass = inputs.yes_no_filter("is_break_glass", "Break-glass")
    sort = sort_filter(sort_keys)

    class Meta:
        model = Grant
        form = ReportForm
        fields = ["since", "until", "system", "role", "user", "outcome", "break_glass", "sort"]

    def filter_since(self, queryset, name, value):
        return queryset.alias(effective_end=Coalesce("ended_at", "expires_at")).filter(
            effective_end__gt=day_start(value)
        )

    def filter_until(self, queryset, name, value):
        return queryset.filter(starts_at__lt=day_start(value + timedelta(days=1)))

    def filter_outcome(self, queryset, name, value):
        if value == "current":
            return queryset.filter(ended_at__isnull=True, expires_at__gt=self.now)
        if value == Grant.EndReason.EXPIRED:
            # The clock decides: past expires_at is expired even if the sweep has not run yet.
            return queryset.filter(Q(end_reason=value) | Q(ended_at__isnull=True, expires_at__lte=self.now))
        return queryset.filter(end_reason=value)


@dataclass(frozen=True)
class Approval:
    """One approval of a part of a grant's access: the request that created the grant, or one of its approved
    extensions. ``approver`` is the person's username, empty when ``rule`` approved it automatically; ``duration``
    is what was approved (the approver's shortened duration, else what was asked; an automatic approval's)."""

    approver: str
    rule: str
    approved_at: datetime
    request_id: int
    is_extension: bool
    duration: timedelta | None

    @property
    def who(self) -> str:
        return self.approver or f'rule "{self.rule}"'

    @property
    def what(self) -> str:
        duration = policies.format_duration(self.duration) if self.duration else ""
        if self.is_extension:
            return "an extension" + (f", +{duration}" if duration else "")
        return "the grant" + (f", {duration}" if duration else "")

    def __str__(self) -> str:
        """As the CSV's ``approvals`` column lists it."""
        return f"{self.who} approved request #{self.request_id} ({self.what}) at {exports.safe_cell(self.approved_at)}"


def _approvals_prefetch() -> list[Prefetch]:
    """The approvals ``grant_approvals`` reads, three queries per page or export chunk whatever its size: the
    approvers of the grants' requests, their approved extensions, and those extensions' approvers."""
    approvals = (
        Decision.objects.filter(outcome=APPROVE)
        .select_related("approver")
        .only("access_request_id", "approver__username", "duration", "created_at")
        .order_by("created_at", "pk")
    )
    extensions = (
        AccessRequest.objects.filter(status=AccessRequest.Status.APPROVED)
        .only("extends_grant_id", "requested_duration", "approved_duration", "auto_approved_by_rule", "decided_at")
        .order_by("decided_at", "pk")
        .prefetch_related(Prefetch("decisions", queryset=approvals, to_attr="approvals"))
    )
    return [
        Prefetch("access_request__decisions", queryset=approvals, to_attr="approvals"),
        Prefetch("extension_requests", queryset=extensions, to_attr="approved_extensions"),
    ]


def grant_approvals(grant: Grant) -> list[Approval]:
    """Everyone and every rule that approved a part of ``grant``'s access, each with when and what: its request's
    approvers, then each approved extension's, oldest first (from ``access_history_rows``' prefetch). Empty for
    break-glass, which nobody approves beforehand."""
    parts = [(grant.access_request, False), *((e, True) for e in grant.approved_extensions)]  # type: ignore[attr-defined]
    result = []
    for access_request, is_extension in parts:
        decisions = access_request.approvals  # prefetched by access_history_rows
        result += [
            Approval(
                d.approver.username,
                "",
                d.created_at,
                access_request.pk,
                is_extension,
                d.duration or access_request.requested_duration,
            )
            for d in decisions
        ]
        if not decisions and access_request.auto_approved_by_rule:
            result.append(
                Approval(
                    "",
                    access_request.auto_approved_by_rule,
                    access_request.decided_at,
                    access_request.pk,
                    is_extension,
                    access_request.approved_duration,
                )
            )
    return result


def access_history_rows(qs: QuerySet[Grant]) -> QuerySet[Grant]:
    """The page's and the CSV's rows: the joins and the approvals they show (``grant_approvals``; who ended a
    grant by prefetch: one join fewer roughly halves PostgreSQL's planning time)."""
    return qs.select_related("user", "role__system", "access_request").prefetch_related(
        "ended_by", *_approvals_prefetch()
    )


def access_history_csv_row(grant: Grant, now: datetime) -> list:
    """One row per grant. The columns (ACCESS_HISTORY_COLUMNS; stable names, times in UTC ISO-8601):

    grant_id, request_id: the grant and the access request that produced it
    user: who held the access (username); system, role: what it was to
    break_glass: true or false
    starts_at, expires_at: from when, until when (expires_at after any extensions)
    extensions: how many times it was extended
    outcome: scheduled, active, expired, revoked or released (expired as soon as expires_at passed,
        whether or not the sweep has run)
    ended_at: when access ended (empty while current); ended_by: who revoked or released it (empty
        when it expired)
    justification, ticket: why, as written on the request that created the grant (extensions have
        their own, on the approval metrics export)
    approved_by: everyone who approved a part of this access — the request that created the grant and each
        approved extension — usernames, comma-separated; auto_approved_by_rule: the rule, when no person
        approved the request that created the grant
    removal_confirmed_at: when removal at the target was confirmed
    revocation_lag_seconds: removal_confirmed_at minus ended_at, when known
    approvals: each approval of a part of this access, oldest first, "; "-separated: who (a username, or
        rule "<name>" when approved automatically) approved which request (the grant, or an extension) for
        how long, and when, e.g. `approver approved request #7 (an extension, +2 h) at 2025-03-03T11:00:00Z`
    """
    approvals = grant_approvals(grant)
    return [
        grant.pk,
        grant.access_request_id,
        grant.user.username,
        grant.role.system.name,
        grant.role.name,
        yes_no(grant.is_break_glass),
        grant.starts_at,
        grant.expires_at,
        grant.extension_count,
        grant.state_at(now),
        grant.ended_at_as_of(now),
        grant.ended_by.username if grant.ended_by else "",
        grant.access_request.justification,
        grant.access_request.ticket,
        ",".join(sorted({a.approver for a in approvals if a.approver})),
        grant.access_request.auto_approved_by_rule,
        grant.removal_confirmed_at,
        seconds(grant.revocation_lag),
        "; ".join(str(a) for a in approvals),
    ]


def grants_per_week_chart(filterset: AccessHistoryFilter) -> str:
    counts = weekly_counts(filterset.filtered, "starts_at", series_field="role__system__name")
    weeks = chart_weeks(counts, filterset.period, filterset.now.date())
    systems = sorted({name for per_week in counts.values() for name in per_week})
    total = sum(n for per_week in counts.values() for n in per_week.values())
    busiest = max(weeks, key=lambda w: sum(counts.get(w, {}).values()), default=None)
    summary = f"{charts.plural(total, 'grant')} started in {charts.plural(len(weeks), 'week')}"
    summary += f" on {charts.plural(len(systems), 'system')}"
    peak = sum(counts.get(busiest, {}).values()) if busiest else 0
    summary += f"; the busiest week began {busiest:%d %b %Y} ({peak})." if peak else "."
    return charts.column_chart(
        chart_id="chart-grants-per-week",
        title="Grants per week, by system",
        summary=summary,
        category_label="Week of",
        categories=[charts.week_label(w) for w in weeks],
        series=[charts.Series(name, [counts.get(w, {}).get(name, 0) for w in weeks]) for name in systems],
    )


def revocation_lag_chart(filterset: AccessHistoryFilter) -> str:
    """How long removal at the target took after access ended, in buckets, in one query."""
    lagged = filterset.filtered.alias(lag=LAG_EXPRESSION)
    buckets: dict[str, Any] = {}
    for index, (_label, low, high) in enumerate(LAG_BUCKETS):
        condition = Q(lag__isnull=False)
        if low is not None:
            condition &= Q(lag__gte=low)
        if high is not None:
            condition &= Q(lag__lt=high)
        buckets[f"b{index}"] = Count("pk", filter=condition)
    buckets["unconfirmed"] = Count(
        "pk",
        filter=Q(ended_at__isnull=False, removal_confirmed_at__isnull=True)
        & ~Q(provisioning_state=Grant.Provisioning.NOT_APPLIED),
    )
    counts = lagged.aggregate(**buckets)
    values = [counts[f"b{i}"] for i in range(len(LAG_BUCKETS))]
    known = sum(values)
    slow = values[-1] + values[-2]
    summary = (
        f"{charts.plural(known, 'ended grant')} with a confirmed removal: {values[0]} within a second, "
        f"{slow} after 30 s or more; {counts['unconfirmed']} ended without a confirmed removal yet."
    )
    return charts.column_chart(
        chart_id="chart-revocation-lag",
        title="Revocation lag: from end of access to confirmed removal",
        summary=summary,
        category_label="Lag",
        categories=[label for label, _low, _high in LAG_BUCKETS],
        series=[charts.Series("Grants", values)],
    )


ACCESS_HISTORY = Report(
    "access_history",
    "Access history",
    AccessHistoryFilter,
    access_history_base,
    access_history_rows,
    ACCESS_HISTORY_COLUMNS,
    access_history_csv_row,
    page_fields=(
        *("status", "end_reason", "starts_at", "expires_at", "ended_at", "ended_by", "is_break_glass"),
        *("extension_count", "removal_confirmed_at", "user__username", "role__name", "role__system__name"),
        *("access_request__justification", "access_request__ticket", "access_request__auto_approved_by_rule"),
        *("access_request__requested_duration", "access_request__approved_duration", "access_request__decided_at"),
    ),
)
