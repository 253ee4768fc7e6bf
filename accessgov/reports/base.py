"""What every compliance report shares: the filter set (period, sort, the split between ``filtered``
and ``qs``), sort keys, filter builders, the small aggregations and formatting helpers, weekly counts for
charts, and ``Report`` (what a report's page and its CSV share). Paging is ``accessgov/paging.py``."""

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
    OuterRef,
    QuerySet,
    Subquery,
)
from django.db.models.functions import TruncWeek

from accessgov import catalog, charts, clock, inputs, paging
from accessgov.models import Decision, User

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


def decider_names(request_ref: str, outcome: str) -> Subquery:
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


def whole_seconds(value: timedelta | None) -> int | None:
    """A duration someone chose (asked for, granted, allowed): whole seconds, as the API and the reports give it."""
    return int(value.total_seconds()) if value is not None else None


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


def yes_no(value: bool) -> str:
    return "true" if value else "false"


# --- Sorting (paged by accessgov/paging.py) ---------------------------------------------------------------


@dataclass(frozen=True)
class SortKey:
    """A sortable column: its heading, the expression it orders by, and the cursor's value type."""

    label: str
    expression: Any
    kind: str = "text"  # "int", "text", "datetime" or "duration"
    nullable: bool = False  # NULLs sort last; keys that are never NULL keep plain index-friendly ordering


def sort_choices(keys: dict[str, SortKey]) -> list[tuple[str, str]]:
    return [choice for key, sort in keys.items() for choice in ((key, sort.label), (f"-{key}", f"{sort.label} ↓"))]


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
        self.now = now or clock.now()
        super().__init__(data, queryset, **kwargs)

    def get_form_class(self):
        """Every report's and list's form checks its period (``ReportForm``), whatever form its Meta names."""
        form_class = super().get_form_class()
        return (
            form_class
            if issubclass(form_class, ReportForm)
            else type(form_class.__name__, (ReportForm, form_class), {})
        )

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

    @property
    def is_sorted_by_default(self) -> bool:
        return self.sort == (self.default_sort.lstrip("-"), self.default_sort.startswith("-"))

    def filter_queryset(self, queryset):
        self._filtered = super().filter_queryset(queryset)
        sort_key = self.sort_keys[self.sort[0]]
        return self._filtered.annotate(sort_value=sort_key.expression).order_by(*self.keyset().order_by())

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

    def keyset(self) -> paging.Keyset:
        """How ``qs`` is ordered: the chosen sort's value (annotated as ``sort_value``), then id."""
        key, descending = self.sort
        sort_key = self.sort_keys[key]
        return paging.Keyset("sort_value", sort_key.kind, descending=descending, nullable=sort_key.nullable)

    # paging.keyset_page's ids_first for the default sort too: set where measured faster (the plan joined the
    # whole user table).
    page_ids_first = False

    def page(self, rows: QuerySet, *, after: str, size: int, back: str = "") -> paging.Page:
        """One page of ``rows`` (this filterset's ``qs`` with display joins) after the cursor (or before ``back``).
        Sorted by another column than the default, the page's ids come first: such a sort reads every matching
        row, and with the display joins and per-row subqueries in the same statement PostgreSQL joined and
        computed them for every row before sorting (56-160 ms a page over 100k grants, issue 22's probe)."""
        ids_first = self.page_ids_first or not self.is_sorted_by_default
        return paging.keyset_page(rows, self.keyset(), cursor=after, size=size, ids_first=ids_first, back=back)


def system_filter(field_name: str) -> catalog.IdFilter:
    return catalog.system_filter(field_name)


def role_filter(field_name: str = "role") -> catalog.IdFilter:
    return catalog.role_filter(field_name)


class UserNameFilter(django_filters.CharFilter):
    """A person by username, any case, on the row's key to them (``field_name`` ``<key>__username``): their ids
    first (one read of the users' table), then the rows by the key's index. ``iexact`` through the join walked
    every row to find a few (50-75 ms over 100k grants, issue 22's probe)."""

    def filter(self, qs: QuerySet, value: str) -> QuerySet:
        if not value:
            return qs
        people = list(User.objects.filter(username__iexact=value).values_list("pk", flat=True))
        return qs.filter(**{f"{self.field_name.removesuffix('__username')}_id__anyof": people})


def user_filter(field_name: str, label: str = "User", max_length: int = 200) -> UserNameFilter:
    return UserNameFilter(field_name=field_name, label=label, max_length=max_length)


def sort_filter(keys: dict[str, SortKey]) -> django_filters.ChoiceFilter:
    return django_filters.ChoiceFilter(
        choices=sort_choices(keys), method="keep", widget=forms.HiddenInput, label="Sort by column"
    )


def weekly_counts(filtered: QuerySet, field: str, *, series_field: str | None = None) -> dict:
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


def chart_weeks(data_weeks: Iterable[date], period: tuple[date | None, date | None], today: date) -> list[date]:
    bounds = [*data_weeks, *(d for d in period if d and d <= today)]
    return charts.weeks_between(min(bounds), max(bounds)) if bounds else []


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
    # The columns the page's table shows (``QuerySet.only``; related fields by path): building a model
    # instance costs per loaded column, and a page loaded every column of five joined tables. Empty: all.
    # The CSV export, which writes more of them, loads every column.
    page_fields: tuple[str, ...] = ()
