"""Compliance reports: the read side behind /reports/ — FilterSets, selectors, aggregations, CSV rows.

Every report starts from what the viewer may see (``permissions.visible_grants`` or
``permissions.visible_access_requests``; auditors see everything, someone who may see nothing gets
an empty report). One FilterSet per report validates the filters (period in UTC days, system, role,
user, outcome) and the sort, and its ``qs`` is what both the page and the CSV read, so an export is
exactly the rows the page pages through, in the same order. ``filterset.filtered`` is the same rows
before sorting, for counts and charts.

Pages are keyset-paginated (``?after=<cursor>``, no COUNT): rows are ordered by the sort column
(NULLs last) then by id, and the cursor is the last row's (value, id).
"""

import base64
import binascii
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, ClassVar

import django_filters
from django import forms
from django.db.models import (
    Aggregate,
    CharField,
    Count,
    DurationField,
    Exists,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
)
from django.db.models.functions import Coalesce, TruncWeek
from django.utils import timezone

from accessgov import catalog, charts, inputs, permissions
from accessgov.models import AccessRequest, BreakGlassFollowUp, Decision, Grant, User

APPROVE, DENY = Decision.Outcome.APPROVE, Decision.Outcome.DENY


# --- Building blocks ------------------------------------------------------------------------------


class GroupConcat(Aggregate):
    """The grouped values joined with commas (GROUP_CONCAT on SQLite, STRING_AGG on PostgreSQL).
    The order is unspecified; ``names`` sorts them."""

    function = "GROUP_CONCAT"
    template = "%(function)s(%(expressions)s, ',')"
    output_field = CharField()

    def as_postgresql(self, compiler, connection, **extra_context):
        return self.as_sql(
            compiler,
            connection,
            **{**extra_context, "function": "STRING_AGG", "template": "%(function)s(%(expressions)s::text, ',')"},
        )


def names(value: str | None) -> list[str]:
    """Usernames from a GroupConcat value, sorted (usernames cannot contain commas)."""
    return sorted({name for name in (value or "").split(",") if name})


def _decider_names(request_ref: str, outcome: str) -> Subquery:
    """Usernames of the approvers who decided ``outcome`` on the outer row's request."""
    return Subquery(
        Decision.objects.filter(access_request_id=OuterRef(request_ref), outcome=outcome)
        .order_by()
        .values("access_request_id")
        .annotate(names=GroupConcat("approver__username"))
        .values("names")
    )


def day_start(value: date) -> datetime:
    return datetime.combine(value, time.min, tzinfo=UTC)


def seconds(value: timedelta | None) -> float | None:
    return round(value.total_seconds(), 3) if value is not None else None


def week_of(moment: datetime) -> date:
    day = moment.astimezone(UTC).date()
    return day - timedelta(days=day.weekday())


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def p90(values: list[float]) -> float | None:
    """90th percentile by nearest rank: the smallest value that at least 90 % of values do not exceed."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(math.ceil(0.9 * len(ordered)), 1) - 1]


def _yes_no(value: bool) -> str:
    return "true" if value else "false"


# --- Sorting and keyset pagination ---------------------------------------------------------------


@dataclass(frozen=True)
class SortKey:
    """A sortable column: its heading, the expression it orders by, and the cursor's value type."""

    label: str
    expression: Any
    kind: str = "text"  # "int", "text", "datetime" or "duration"
    nullable: bool = False  # NULLs sort last; keys that are never NULL keep plain index-friendly ordering


def _sort_choices(keys: dict[str, SortKey]) -> list[tuple[str, str]]:
    return [choice for key, sort in keys.items() for choice in ((key, sort.label), (f"-{key}", f"{sort.label} ↓"))]


def encode_cursor(value: Any, pk: int, kind: str) -> str:
    if value is None:
        raw = None
    elif kind == "datetime":
        raw = value.isoformat()
    elif kind == "duration":
        raw = value // timedelta(microseconds=1)
    else:
        raw = value
    return base64.urlsafe_b64encode(json.dumps([raw, pk]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, kind: str) -> tuple[Any, int] | None:
    """(value, id) of the last row of the previous page, or None for a missing or unreadable cursor."""
    if not cursor:
        return None
    try:
        raw, pk = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(pk, int) or isinstance(pk, bool):
            return None
        if raw is None:
            return None, pk
        if kind == "datetime":
            value = datetime.fromisoformat(raw)
            return (value, pk) if value.tzinfo else None
        if kind == "duration":
            return timedelta(microseconds=int(raw)), pk
        if kind == "int":
            return int(raw), pk
        return (raw, pk) if isinstance(raw, str) else None
    except (ValueError, TypeError, binascii.Error, OverflowError):
        return None


def _after(key: SortKey, value: Any, pk: int, descending: bool) -> Q:
    """Rows after (value, pk) in the order ``sort_value`` (NULLs last), then pk, both ascending or descending."""
    beyond, tie = ("sort_value__lt", "pk__lt") if descending else ("sort_value__gt", "pk__gt")
    if value is None:
        return Q(sort_value__isnull=True, **{tie: pk})
    after = Q(**{beyond: value}) | Q(sort_value=value, **{tie: pk})
    return after | Q(sort_value__isnull=True) if key.nullable else after


@dataclass
class Page:
    rows: list
    next_cursor: str | None
    is_first: bool


class ReportForm(forms.Form):
    def clean(self):
        cleaned = super().clean()
        since, until = cleaned.get("since"), cleaned.get("until")
        if since and until and since > until:
            raise forms.ValidationError("The period starts after it ends: swap From and Until.")
        return cleaned


class ReportFilterSet(django_filters.FilterSet):
    """The period filter (UTC days, both included), the sort, and the split between ``filtered``
    (rows, unordered: for counts and charts) and ``qs`` (the same rows, ordered for the table/CSV)."""

    # Days between inputs.MIN_DATE and MAX_DATE: "until 9999-12-31" overflowed computing the day after.
    since = inputs.DateFilter(method="filter_since", label="From (UTC)", widget=forms.DateInput(attrs={"type": "date"}))
    until = inputs.DateFilter(
        method="filter_until", label="Until (UTC, inclusive)", widget=forms.DateInput(attrs={"type": "date"})
    )

    sort_keys: ClassVar[dict[str, SortKey]] = {}
    default_sort: ClassVar[str] = "-id"
    period_field: ClassVar[str] = ""
    _filtered: QuerySet

    def __init__(self, data=None, queryset=None, *, now: datetime | None = None, **kwargs):
        self.now = now or timezone.now()
        super().__init__(data, queryset, **kwargs)

    def filter_since(self, queryset, name, value):
        return queryset.filter(**{f"{self.period_field}__gte": day_start(value)})

    def filter_until(self, queryset, name, value):
        return queryset.filter(**{f"{self.period_field}__lt": day_start(value + timedelta(days=1))})

    def keep(self, queryset, name, value):
        return queryset  # the sort is applied after filtering, see filter_queryset

    @property
    def sort(self) -> tuple[str, bool]:
        """(sort key, descending) chosen by the ``sort`` parameter, or the report's default."""
        cleaned = getattr(self.form, "cleaned_data", {}) if self.form.is_bound else {}
        value = cleaned.get("sort") or self.default_sort
        return value.lstrip("-"), value.startswith("-")

    def filter_queryset(self, queryset):
        self._filtered = super().filter_queryset(queryset)
        key, descending = self.sort
        sort_key = self.sort_keys[key]
        ordered = self._filtered.annotate(sort_value=sort_key.expression)
        nulls_last = True if sort_key.nullable else None
        if descending:
            return ordered.order_by(F("sort_value").desc(nulls_last=nulls_last), "-pk")
        return ordered.order_by(F("sort_value").asc(nulls_last=nulls_last), "pk")

    @property
    def filtered(self) -> QuerySet:
        """The filtered rows without ordering (empty when the filters are invalid)."""
        if not self.is_valid():  # an unbound filterset is never valid either
            return self.qs.none()
        self.qs  # noqa: B018 - evaluating the property runs filter_queryset, which sets _filtered
        return self._filtered

    @property
    def period(self) -> tuple[date | None, date | None]:
        cleaned = getattr(self.form, "cleaned_data", {}) if self.is_valid() else {}
        return cleaned.get("since"), cleaned.get("until")

    def query_filters(self) -> dict[str, str]:
        """The filters as given (query string values), for the export's access event."""
        return {name: self.data.get(name, "") for name in self.filters if self.data.get(name, "")}

    def headers(self, columns: Iterable[tuple[str, str | None]]) -> list[dict]:
        """Table headings; sortable ones get the sort parameter a click sets and their aria-sort state."""
        key, descending = self.sort
        result = []
        for label, sort_key in columns:
            heading: dict[str, Any] = {"label": label, "param": None, "state": None}
            if sort_key:
                current = sort_key == key
                heading["state"] = ("descending" if descending else "ascending") if current else "none"
                heading["param"] = sort_key if current and descending else f"-{sort_key}"
                heading["arrow"] = ("↓" if descending else "↑") if current else ""
            result.append(heading)
        return result

    def page(self, rows: QuerySet, *, after: str, size: int) -> Page:
        """One page of ``rows`` (this filterset's ``qs`` with display joins) after the cursor."""
        key, descending = self.sort
        sort_key = self.sort_keys[key]
        kind = sort_key.kind
        cursor = decode_cursor(after, kind)
        if cursor is not None and (cursor[0] is not None or sort_key.nullable):
            rows = rows.filter(_after(sort_key, cursor[0], cursor[1], descending))
        elif cursor is not None:
            cursor = None  # a NULL cursor on a column that has none: start over
        fetched = list(rows[: size + 1])
        more = len(fetched) > size
        fetched = fetched[:size]
        next_cursor = encode_cursor(fetched[-1].sort_value, fetched[-1].pk, kind) if more else None
        return Page(rows=fetched, next_cursor=next_cursor, is_first=cursor is None)


def _system_filter(field_name: str) -> catalog.IdFilter:
    return catalog.system_filter(field_name)


def _role_filter(field_name: str = "role") -> catalog.IdFilter:
    return catalog.role_filter(field_name)


def _user_filter(field_name: str, label: str = "User") -> django_filters.CharFilter:
    return django_filters.CharFilter(field_name=field_name, lookup_expr="iexact", label=label)


def _sort_filter(keys: dict[str, SortKey]) -> django_filters.ChoiceFilter:
    return django_filters.ChoiceFilter(choices=_sort_choices(keys), method="keep", widget=forms.HiddenInput)


def _weekly_counts(filtered: QuerySet, field: str, *, series_field: str | None = None) -> dict:
    """{week (Monday): {series name: count}} in one query."""
    fields = ["week", series_field] if series_field else ["week"]
    counts: dict[date, dict[str, int]] = defaultdict(dict)
    rows = (
        filtered.order_by()
        .annotate(week=TruncWeek(field, tzinfo=UTC))
        .values(*fields)
        .annotate(n=Count("pk"))
        .values_list(*fields, "n")
    )
    for row in rows:
        week, name, n = (row[0], row[1], row[2]) if series_field else (row[0], "", row[1])
        counts[week.astimezone(UTC).date() if isinstance(week, datetime) else week][name] = n
    return counts


def _chart_weeks(data_weeks: Iterable[date], period: tuple[date | None, date | None], today: date) -> list[date]:
    bounds = [*data_weeks, *(d for d in period if d and d <= today)]
    return charts.weeks_between(min(bounds), max(bounds)) if bounds else []


# --- 1. Access history ---------------------------------------------------------------------------

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

    system = _system_filter("role__system")
    role = _role_filter()
    user = _user_filter("user__username")
    outcome = django_filters.ChoiceFilter(choices=ENDINGS, method="filter_outcome", label="How it ended")
    break_glass = django_filters.BooleanFilter(field_name="is_break_glass", label="Break-glass")
    sort = _sort_filter(sort_keys)

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


def access_history_rows(qs: QuerySet[Grant]) -> QuerySet[Grant]:
    """The page's and the CSV's rows: the joins and the approvers they show (who ended a grant by
    prefetch: one join fewer roughly halves PostgreSQL's planning time)."""
    return (
        qs.select_related("user", "role__system", "access_request")
        .prefetch_related("ended_by")
        .annotate(approved_by=_decider_names("access_request_id", APPROVE))
    )


def grant_outcome(grant: Grant, now: datetime) -> str:
    """scheduled / active / expired / revoked / released, with the clock deciding expiry."""
    if grant.ended_at is not None:
        return grant.end_reason or grant.status
    if grant.expires_at <= now:
        return Grant.EndReason.EXPIRED
    return grant.status


def grant_ended_at(grant: Grant, now: datetime) -> datetime | None:
    if grant.ended_at is not None:
        return grant.ended_at
    return grant.expires_at if grant.expires_at <= now else None


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
    approved_by: the approvers of that request, comma-separated; auto_approved_by_rule: the rule,
        when no person approved
    removal_confirmed_at: when removal at the target was confirmed
    revocation_lag_seconds: removal_confirmed_at minus ended_at, when known
    """
    return [
        grant.pk,
        grant.access_request_id,
        grant.user.username,
        grant.role.system.name,
        grant.role.name,
        _yes_no(grant.is_break_glass),
        grant.starts_at,
        grant.expires_at,
        grant.extension_count,
        grant_outcome(grant, now),
        grant_ended_at(grant, now),
        grant.ended_by.username if grant.ended_by else "",
        grant.access_request.justification,
        grant.access_request.ticket,
        ",".join(names(grant.approved_by)),
        grant.access_request.auto_approved_by_rule,
        grant.removal_confirmed_at,
        seconds(grant.revocation_lag),
    ]


def grants_per_week_chart(filterset: AccessHistoryFilter) -> str:
    counts = _weekly_counts(filterset.filtered, "starts_at", series_field="role__system__name")
    weeks = _chart_weeks(counts, filterset.period, filterset.now.date())
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


# --- 2. Approval metrics -------------------------------------------------------------------------

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
DECISION_TIME = ExpressionWrapper(F("decided_at") - F("created_at"), output_field=DurationField())


def approvals_base(user: User) -> QuerySet[AccessRequest]:
    """Requests ``user`` may see that were decided (approved, auto-approved, denied or lapsed)."""
    return (
        permissions.visible_access_requests(user)
        .filter(status__in=DECIDED)
        .exclude(kind=AccessRequest.Kind.BREAK_GLASS)
    )


def request_outcome(access_request: AccessRequest) -> str:
    if access_request.status == AccessRequest.Status.APPROVED and access_request.auto_approved_by_rule:
        return "auto_approved"
    return access_request.status


class ApprovalFilter(ReportFilterSet):
    """Decided requests; the period is when they were decided."""

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
        "decided_at": SortKey("Decided", F("decided_at"), "datetime"),
        "decision_time": SortKey("Time to decision", DECISION_TIME, "duration"),
    }
    period_field = "decided_at"

    system = _system_filter("role__system")
    role = _role_filter()
    user = _user_filter("requester__username", "Requester")
    approver = django_filters.CharFilter(method="filter_approver", label="Approver")
    outcome = django_filters.ChoiceFilter(choices=OUTCOMES, method="filter_outcome", label="Outcome")
    sort = _sort_filter(sort_keys)

    class Meta:
        model = AccessRequest
        form = ReportForm
        fields = ["since", "until", "system", "role", "user", "approver", "outcome", "sort"]

    def filter_approver(self, queryset, name, value):
        decided = Decision.objects.filter(access_request=OuterRef("pk"), approver__username__iexact=value)
        return queryset.filter(Exists(decided))

    def filter_outcome(self, queryset, name, value):
        approved = AccessRequest.Status.APPROVED
        if value == "approved":
            return queryset.filter(status=approved, auto_approved_by_rule="")
        if value == "auto_approved":
            return queryset.filter(status=approved).exclude(auto_approved_by_rule="")
        return queryset.filter(status=value)


def approvals_rows(qs: QuerySet[AccessRequest]) -> QuerySet[AccessRequest]:
    return qs.select_related("requester", "role__system").annotate(
        approved_by=_decider_names("pk", APPROVE),
        denied_by=_decider_names("pk", DENY),
        decision_time=DECISION_TIME,
    )


def approvals_csv_row(access_request: AccessRequest, now: datetime) -> list:
    """One row per decided request. The columns (APPROVALS_COLUMNS; stable names, times in UTC):

    request_id; kind: access or extension (break-glass is no approval: see the break-glass export)
    requester, system, role
    created_at: submitted; decided_at: approved, denied or lapsed
    outcome: approved (by people), auto_approved, denied or lapsed
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
        access_request.decided_at,
        request_outcome(access_request),
        seconds(access_request.decision_time),
        ",".join(names(access_request.approved_by)),
        ",".join(names(access_request.denied_by)),
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


def approval_metrics(filtered: QuerySet[AccessRequest]) -> ApprovalMetrics:
    """Time to decision by system (request submitted → decided, for requests people decided) and by
    approver (request submitted → that approver's decision), with auto/manual, denied and lapsed
    counts and the weekly median time to a manual approval. Two queries, whatever the number of rows;
    percentiles are computed here because SQLite has none (median: middle value or mean of the two
    middle ones; p90: nearest rank)."""
    per_system: dict[str, dict[str, Any]] = defaultdict(lambda: {"times": [], "counts": defaultdict(int)})
    weekly: dict[date, list[float]] = defaultdict(list)
    every_time: list[float] = []
    approval_times: list[float] = []
    totals: dict[str, int] = defaultdict(int)
    requests = filtered.order_by().values_list(
        "role__system__name", "status", "auto_approved_by_rule", "created_at", "decided_at"
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
    weeks = _chart_weeks(weekly, filterset.period, filterset.now.date())
    slowest = max(weekly, key=weekly.__getitem__, default=None)
    summary = (
        f"Median time from request to approval by people, per week, over {charts.plural(len(weeks), 'week')}; "
        f"overall median {charts.format_seconds(metrics.approval_median)}"
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


# --- 3. Break-glass ------------------------------------------------------------------------------

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

    system = _system_filter("role__system")
    role = _role_filter()
    user = _user_filter("user__username")
    follow_up = django_filters.ChoiceFilter(choices=STATUSES, method="filter_follow_up", label="Follow-up")
    sort = _sort_filter(sort_keys)

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
        grant_outcome(grant, now),
        grant_ended_at(grant, now),
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
    counts = _weekly_counts(filterset.filtered, "starts_at")
    weeks = _chart_weeks(counts, filterset.period, filterset.now.date())
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


# --- 4. Denied requests --------------------------------------------------------------------------

DENIED_COLUMNS = [
    "request_id",
    "kind",
    "requester",
    "system",
    "role",
    "created_at",
    "decided_at",
    "requested_duration_seconds",
    "justification",
    "ticket",
    "denied_by",
    "denial_comment",
    "approved_by",
]


def denied_base(user: User) -> QuerySet[AccessRequest]:
    return permissions.visible_access_requests(user).filter(status=AccessRequest.Status.DENIED)


def _denial(field: str) -> Subquery:
    return Subquery(
        Decision.objects.filter(access_request_id=OuterRef("pk"), outcome=DENY).order_by("created_at").values(field)[:1]
    )


class DeniedFilter(ReportFilterSet):
    """Denied requests; the period is when they were denied."""

    sort_keys = {
        "id": SortKey("Request", F("pk"), "int"),
        "requester": SortKey("Requester", F("requester__username")),
        "system": SortKey("System", F("role__system__name")),
        "decided_at": SortKey("Denied", F("decided_at"), "datetime"),
        "denied_by": SortKey("Denied by", _denial("approver__username"), nullable=True),
    }
    period_field = "decided_at"

    system = _system_filter("role__system")
    role = _role_filter()
    user = _user_filter("requester__username", "Requester")
    approver = django_filters.CharFilter(method="filter_approver", label="Denied by")
    sort = _sort_filter(sort_keys)

    class Meta:
        model = AccessRequest
        form = ReportForm
        fields = ["since", "until", "system", "role", "user", "approver", "sort"]

    def filter_approver(self, queryset, name, value):
        denial = Decision.objects.filter(access_request=OuterRef("pk"), outcome=DENY, approver__username__iexact=value)
        return queryset.filter(Exists(denial))


def denied_rows(qs: QuerySet[AccessRequest]) -> QuerySet[AccessRequest]:
    return qs.select_related("requester", "role__system").annotate(
        denied_by=_denial("approver__username"),
        denial_comment=_denial("comment"),
        approved_by=_decider_names("pk", APPROVE),
    )


def denied_csv_row(access_request: AccessRequest, now: datetime) -> list:
    """One row per denied request. The columns (DENIED_COLUMNS; stable names, times in UTC):

    request_id; kind: access or extension; requester, system, role
    created_at: submitted; decided_at: denied
    requested_duration_seconds; justification, ticket: as the requester wrote them
    denied_by: the approver who denied it; denial_comment: the reason they gave (the requester reads it)
    approved_by: approvals recorded before the denial (roles needing several), comma-separated
    """
    return [
        access_request.pk,
        access_request.kind,
        access_request.requester.username,
        access_request.role.system.name,
        access_request.role.name,
        access_request.created_at,
        access_request.decided_at,
        seconds(access_request.requested_duration),
        access_request.justification,
        access_request.ticket,
        access_request.denied_by or "",
        access_request.denial_comment or "",
        ",".join(names(access_request.approved_by)),
    ]


# --- The registry the views use ------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    """What a report page and its CSV export share."""

    name: str  # in the export's access event and file name
    title: str
    filterset_class: type[ReportFilterSet]
    base: Callable[[User], QuerySet]
    rows: Callable[[QuerySet], QuerySet]
    columns: list[str]
    csv_row: Callable[[Any, datetime], list]


ACCESS_HISTORY = Report(
    "access_history",
    "Access history",
    AccessHistoryFilter,
    access_history_base,
    access_history_rows,
    ACCESS_HISTORY_COLUMNS,
    access_history_csv_row,
)
APPROVALS = Report(
    "approval_metrics",
    "Approval metrics",
    ApprovalFilter,
    approvals_base,
    approvals_rows,
    APPROVALS_COLUMNS,
    approvals_csv_row,
)
BREAK_GLASS = Report(
    "break_glass",
    "Break-glass",
    BreakGlassFilter,
    break_glass_base,
    break_glass_rows,
    BREAK_GLASS_COLUMNS,
    break_glass_csv_row,
)
DENIED = Report(
    "denied_requests", "Denied requests", DeniedFilter, denied_base, denied_rows, DENIED_COLUMNS, denied_csv_row
)
