"""The list pages' filters: search, filters that validate, whitelisted sorts and keyset paging.

Each list page and its CSV export read the same FilterSet over the same selector (STYLE.md: "lists and
exports share one filterset and one selector"), so the file is exactly what the page pages through, in
the same order. The sort, the cursor and the ``headers``/``page`` helpers are the compliance reports'
(``reports.ReportFilterSet``): one keyset implementation for the whole portal. A sort key that is not in
a list's ``sort_keys`` is a form error (400), a cursor that does not decode starts from the first page,
and a search longer than ``SEARCH_MAX_LENGTH`` is a form error, never a query.
"""

from collections.abc import Callable
from typing import ClassVar

import django_filters
from django import forms
from django.db.models import F, Q, QuerySet

from accessgov import catalog, inputs
from accessgov.models import (
    AccessRequest,
    ChangeRequest,
    Eligibility,
    Grant,
    OutboxItem,
    ReviewCampaign,
    Role,
    System,
    User,
)
from accessgov.paging import Page
from accessgov.reports.base import ReportFilterSet, SortKey, user_filter

SEARCH_MAX_LENGTH = 200
SEARCH_MAX_WORDS = 8
PAGE_SIZE = 50


class SearchFilter(django_filters.CharFilter):
    """Free text over several columns: every word must appear (case-insensitive) in one of them; a word
    that is an id (``123`` or ``#123``) also matches the row's own id. Bounded: at most
    SEARCH_MAX_LENGTH characters (a longer value is a form error) and SEARCH_MAX_WORDS words."""

    def __init__(
        self,
        fields: tuple[str, ...],
        *,
        id_field: str | None = "pk",
        also: Callable[[str], Q] | None = None,
        **kwargs,
    ) -> None:
        kwargs.setdefault("label", "Search")
        kwargs.setdefault("max_length", SEARCH_MAX_LENGTH)
        kwargs.setdefault("widget", forms.TextInput(attrs={"type": "search", "maxlength": SEARCH_MAX_LENGTH}))
        super().__init__(**kwargs)
        self.search_fields = fields
        self.id_field = id_field
        self.also_matches = also  # more matches for a word (a subquery where a join would multiply rows)

    def filter(self, qs: QuerySet, value: str) -> QuerySet:
        for word in (value or "").split()[:SEARCH_MAX_WORDS]:
            match = Q()
            for field in self.search_fields:
                match |= Q(**{f"{field}__icontains": word})
            if self.id_field and (pk := inputs.parse_id(word.removeprefix("#"))) is not None:
                match |= Q(**{self.id_field: pk})
            if self.also_matches is not None:
                match |= self.also_matches(word)
            qs = qs.filter(match)
        return qs


def names_matching(
    word: str, *, role: str = "role", person: str = "", grant: str = "", request: str = "", requester: bool = False
) -> Q:
    """A search word in the names a row points at, as id subqueries on the row's own keys: its role's and
    system's names (the key ``role``), a person's username (``person``), its grant's holder's (``grant``), its
    request's ticket (``request``; and its requester's username with ``requester``). Joins made PostgreSQL walk
    100k grants or 1M events with a lookup per join per row for a rare word (0.1-3.5 s, issue 22's probe); the
    subqueries read the small tables once."""
    people = User.objects.filter(username__icontains=word).values("pk")
    match = Q(
        **{
            f"{role}_id__in": Role.objects.filter(Q(name__icontains=word) | Q(system__name__icontains=word)).values(
                "pk"
            )
        }
    )
    if person:
        match |= Q(**{f"{person}_id__in": people})
    if grant:
        match |= Q(**{f"{grant}_id__in": Grant.objects.filter(user_id__in=people).values("pk")})
    if request:
        asked = Q(ticket__icontains=word) | Q(requester_id__in=people) if requester else Q(ticket__icontains=word)
        match |= Q(**{f"{request}_id__in": AccessRequest.objects.filter(asked).values("pk")})
    return match


def sort_filter(keys: dict[str, SortKey]) -> django_filters.ChoiceFilter:
    """The ``sort`` parameter: one of ``keys`` ascending or ``-key`` descending; anything else is a form
    error. Set by the column headings, so the field itself is hidden."""
    choices = [choice for key, sort in keys.items() for choice in ((key, sort.label), (f"-{key}", f"{sort.label} ↓"))]
    return django_filters.ChoiceFilter(choices=choices, method="keep", widget=forms.HiddenInput, label="Sort")


class ListFilterSet(ReportFilterSet):
    """A list page's filters. Lists without a meaningful period (``period_field`` empty) drop the
    From/Until filters the reports have."""

    columns: ClassVar[list[tuple[str, str | None]]] = []

    def __init__(self, data=None, queryset=None, **kwargs):
        super().__init__(data, queryset, **kwargs)
        if not self.period_field:
            self.filters.pop("since", None)
            self.filters.pop("until", None)

    def table_headers(self) -> list[dict]:
        return self.headers(self.columns)

    @property
    def narrowed(self) -> bool:
        """A filter or a search narrows the list (the sort alone does not): the page offers Clear."""
        return any(value for name, value in self.query_filters().items() if name != "sort")

    def export_filters(self) -> dict[str, str]:
        """The filters as given, for the export's access event (the sort included: it is the file's order)."""
        filters = self.query_filters()
        if self.data.get("sort"):
            filters["sort"] = self.data.get("sort", "")
        return filters


def _date_input() -> dict:
    return {"widget": forms.DateInput(attrs={"type": "date"})}


# --- My requests -----------------------------------------------------------------------------------


class MyRequestFilter(ListFilterSet):
    """The requester's own requests (``/requests/``) and their CSV. Status (filter and sort) is the status at
    ``now`` (``AccessRequest.status_at``): a pending request past its deadline is lapsed before the sweep comes by."""

    sort_keys: ClassVar[dict[str, SortKey]] = {
        "id": SortKey("#", F("pk"), "int"),
        "role": SortKey("Role", F("role__name")),
        "status": SortKey("Status", F("status_now")),  # annotated by filter_queryset
        "asked": SortKey("Asked", F("created_at"), "datetime"),
    }
    default_sort = "-asked"
    period_field = "created_at"
    columns: ClassVar[list[tuple[str, str | None]]] = [
        ("#", "id"),
        ("Role", "role"),
        ("Kind", None),
        ("Duration", None),
        ("Status", "status"),
        ("Asked", "asked"),
    ]

    q = SearchFilter(("role__name", "role__system__name", "ticket", "justification"))
    system = catalog.system_filter("role__system")
    status = django_filters.ChoiceFilter(choices=AccessRequest.Status.choices, method="filter_status")
    sort = sort_filter(sort_keys)

    class Meta:
        model = AccessRequest
        fields = ["q", "system", "status", "since", "until", "sort"]

    def filter_status(self, queryset, name, value):
        return queryset.with_status_at(value, self.now)

    def filter_queryset(self, queryset):
        if self.sort[0] == "status":
            queryset = queryset.annotate_status_at(self.now, "status_now")
        return super().filter_queryset(queryset)


# --- The approver queue -----------------------------------------------------------------------------


class ApprovalQueueFilter(ListFilterSet):
    """The approver queue (``/approvals/``): pending requests I may decide, oldest first by default."""

    sort_keys: ClassVar[dict[str, SortKey]] = {
        "asked": SortKey("Asked", F("created_at"), "datetime"),
        "lapses": SortKey("Lapses", F("lapses_at"), "datetime"),
        "requester": SortKey("Requester", F("requester__username")),
        "role": SortKey("Role", F("role__name")),
    }
    default_sort = "asked"

    q = SearchFilter(
        (
            "requester__username",
            "requester__first_name",
            "requester__last_name",
            "role__name",
            "role__system__name",
            "ticket",
            "justification",
        )
    )
    system = catalog.system_filter("role__system")
    risk = django_filters.ChoiceFilter(field_name="role__risk_tier", choices=Role.RiskTier.choices, label="Risk")
    sort = django_filters.ChoiceFilter(
        label="Sort",
        choices=[
            ("asked", "Oldest first"),
            ("-asked", "Newest first"),
            ("lapses", "Lapsing soonest"),
            ("requester", "Requester A-Z"),
            ("-requester", "Requester Z-A"),
            ("role", "Role A-Z"),
        ],
        method="keep",
        empty_label=None,
    )

    class Meta:
        model = AccessRequest
        fields = ["q", "system", "risk", "sort"]


# --- Grants ----------------------------------------------------------------------------------------

GRANT_LIST_COLUMNS = (
    "status",
    "is_break_glass",
    "starts_at",
    "expires_at",
    "ended_at",
    "end_reason",
    "user__username",
    "role__name",
    "role__system__name",
)


class GrantFilter(ListFilterSet):
    """The grants I may see (``/grants/``) and their CSV."""

    sort_keys: ClassVar[dict[str, SortKey]] = {
        "id": SortKey("#", F("pk"), "int"),
        "holder": SortKey("Holder", F("user__username")),
        "role": SortKey("Role", F("role__name")),
        "status": SortKey("Status", F("status")),
        "from": SortKey("From", F("starts_at"), "datetime"),
        "ends": SortKey("Until", F("expires_at"), "datetime"),
    }
    default_sort = "-from"
    period_field = "starts_at"
    columns: ClassVar[list[tuple[str, str | None]]] = [
        ("#", "id"),
        ("Holder", "holder"),
        ("Role", "role"),
        ("Status", "status"),
        ("From", "from"),
        ("Until", "ends"),
        ("Ended", None),
    ]

    q = SearchFilter(("end_reason",), also=lambda word: names_matching(word, person="user", request="access_request"))
    system = catalog.system_filter("role__system")
    role = catalog.role_filter("role")
    status = django_filters.ChoiceFilter(choices=Grant.Status.choices, method="filter_status")
    user = user_filter("user__username", max_length=SEARCH_MAX_LENGTH)
    break_glass = inputs.yes_no_filter("is_break_glass", "Break-glass")
    sort = sort_filter(sort_keys)

    class Meta:
        model = Grant
        fields = ["q", "system", "role", "status", "user", "break_glass", "since", "until", "sort"]

    def filter_status(self, queryset, name, value):
        return queryset.with_status_at(value, self.now)


class InboxFilter(django_filters.FilterSet):
    """The inbox's "what happened" list: words in the role, its system, the reason or who acted (a number:
    the request's id), and "unread only", which ``inbox.happened`` applies (it is the viewer's own marks)."""

    q = SearchFilter(
        ("access_request__role__name", "access_request__role__system__name", "reason", "actor__username"),
        id_field="access_request_id",
    )
    unread = django_filters.BooleanFilter(method="keep", widget=forms.CheckboxInput, label="Unread only")

    def keep(self, queryset, name, value):
        return queryset

    @property
    def narrowed(self) -> bool:
        return bool(self.data.get("q") or self.data.get("unread"))


def page_of(
    filterset: ListFilterSet, rows: QuerySet | None = None, *, after: str = "", back: str = "", size: int | None = None
):
    """One keyset page of ``rows`` (default: the filterset's ``qs``) after the cursor (or before ``back``:
    ``paging.cursors`` reads both from the query string); an empty first page when the filters do not
    validate (the page shows the form errors instead)."""
    if not filterset.is_valid():
        return Page(rows=[], next_cursor=None, is_first=True)
    return filterset.page(filterset.qs if rows is None else rows, after=after, back=back, size=size or PAGE_SIZE)


# --- Policy changes, provisioning tasks, review campaigns, systems, eligibility ----------------------


class ChangeFilter(ListFilterSet):
    """Decided policy changes (``/changes/``, admins): search, outcome, sort, keyset paging (the page
    showed the last 50 only)."""

    sort_keys: ClassVar[dict[str, SortKey]] = {
        "id": SortKey("#", F("pk"), "int"),
        "decided": SortKey("When", F("decided_at"), "datetime", nullable=True),
        "proposer": SortKey("Proposed by", F("proposed_by__username")),
    }
    default_sort = "-decided"
    columns: ClassVar[list[tuple[str, str | None]]] = [
        ("#", "id"),
        ("Change", None),
        ("Outcome", None),
        ("Proposed by", "proposer"),
        ("Decided by", None),
        ("When", "decided"),
    ]

    q = SearchFilter(("summary", "comment", "proposed_by__username", "decided_by__username", "beneficiary__username"))
    status = django_filters.ChoiceFilter(choices=ChangeRequest.Status.choices, label="Outcome")
    sort = sort_filter(sort_keys)

    class Meta:
        model = ChangeRequest
        fields = ["q", "status", "sort"]


class ProvisioningFilter(ListFilterSet):
    """Provisioning tasks waiting to be applied or removed (``/provisioning/``)."""

    sort_keys: ClassVar[dict[str, SortKey]] = {
        "queued": SortKey("Queued", F("pk"), "int"),
        "attempts": SortKey("Attempts", F("attempts"), "int"),
        "next": SortKey("Next try", F("next_attempt_at"), "datetime"),
    }
    default_sort = "queued"
    columns: ClassVar[list[tuple[str, str | None]]] = [
        ("Grant", "queued"),
        ("Action", None),
        ("System", None),
        ("Attempts", "attempts"),
        ("Last error", None),
        ("Next try", "next"),
        ("Done", None),
    ]

    q = SearchFilter(
        ("grant__user__username", "grant__role__name", "grant__role__system__name", "last_error"),
        id_field="grant_id",
    )
    system = catalog.system_filter("grant__role__system")
    action = django_filters.ChoiceFilter(choices=OutboxItem.Action.choices)
    sort = sort_filter(sort_keys)

    class Meta:
        model = OutboxItem
        fields = ["q", "system", "action", "sort"]


class CampaignFilter(ListFilterSet):
    """Access review campaigns (``/reviews/``)."""

    sort_keys: ClassVar[dict[str, SortKey]] = {
        "opened": SortKey("Opened", F("created_at"), "datetime"),
        "due": SortKey("Due", F("due_at"), "datetime"),
        "name": SortKey("Name", F("name")),
    }
    default_sort = "-opened"

    q = SearchFilter(
        ("name", "period"),
        id_field=None,
        # A subquery, not a join: the list's counts are aggregates over the campaign's items.
        also=lambda word: Q(
            pk__in=ReviewCampaign.systems.through.objects.filter(system__name__icontains=word).values(
                "reviewcampaign_id"
            )
        ),
    )
    status = django_filters.ChoiceFilter(choices=ReviewCampaign.Status.choices)
    sort = django_filters.ChoiceFilter(
        label="Sort",
        choices=[("-opened", "Newest first"), ("opened", "Oldest first"), ("due", "Due soonest"), ("name", "Name")],
        method="keep",
        empty_label=None,
    )

    class Meta:
        model = ReviewCampaign
        fields = ["q", "status", "sort"]


class SystemFilter(ListFilterSet):
    """The systems in my catalogue (``/systems/``)."""

    sort_keys: ClassVar[dict[str, SortKey]] = {"name": SortKey("Name", F("name"))}
    default_sort = "name"

    q = SearchFilter(("name", "slug", "description"), id_field=None)
    environment = django_filters.ChoiceFilter(choices=System.Environment.choices)
    sort = django_filters.ChoiceFilter(
        label="Sort", choices=[("name", "Name A-Z"), ("-name", "Name Z-A")], method="keep", empty_label=None
    )

    class Meta:
        model = System
        fields = ["q", "environment", "sort"]


class EligibilityFilter(ListFilterSet):
    """Who may request a system's roles (the owner's table on ``/systems/<slug>/``)."""

    sort_keys: ClassVar[dict[str, SortKey]] = {
        "role": SortKey("Role", F("role__name")),
        "since": SortKey("Since", F("starts_at"), "datetime"),
        "ends": SortKey("Until", F("ends_at"), "datetime", nullable=True),
    }
    default_sort = "role"

    q = SearchFilter(("user__username", "group__name", "role__name", "reason"), id_field=None)
    sort = sort_filter(sort_keys)

    class Meta:
        model = Eligibility
        fields = ["q", "sort"]
