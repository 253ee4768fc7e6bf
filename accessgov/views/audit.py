"""The audit trail for auditors: every access event (filterable, keyset-paginated), every model change
(django-auditlog), the chain integrity check, and the same rows as a streaming CSV."""

import re
from datetime import UTC, datetime, time
from typing import Any

import django_filters
from auditlog.models import LogEntry
from django.contrib import messages
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.db import connection, models
from django.db.models import Max, Q, QuerySet
from django.http import HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.dateparse import parse_datetime, parse_duration
from django.utils.http import urlencode
from django.views.decorators.http import require_GET, require_POST, require_safe

from accessgov import catalog, exports, filters, inputs, paging, permissions, policies
from accessgov.http import PortalRequest
from accessgov.ledger.export import EXPORT_COLUMNS, GRANTEE_NAME, events_copy_select
from accessgov.models import AccessEvent, AccessRequest, Grant, Role, User
from accessgov.reports.base import ReportForm
from accessgov.services.audit import audit_verify
from accessgov.views.common import invalid_filters

PAGE_SIZE = 50
EVENTS_KEYSET = paging.Keyset("sequence", unique=True)  # newest first; ?before=<sequence>
EVENTS_OLDEST_FIRST = paging.Keyset("sequence", unique=True, descending=False)  # ?after=<sequence>
CHANGES_KEYSET = paging.Keyset("pk", unique=True)


def _ensure_auditor(request: PortalRequest) -> None:
    if not permissions.is_auditor(request.user):
        raise PermissionDenied("The audit trail is for auditors.")


class EventFilter(django_filters.FilterSet):
    q = filters.SearchFilter(
        ("actor_label", "reason"),
        id_field=None,
        also=lambda word: filters.names_matching(word, grant="grant", request="access_request", requester=True),
    )
    event_type = django_filters.ChoiceFilter(choices=AccessEvent.Type.choices, label="Event")
    actor = django_filters.CharFilter(field_name="actor_label", label="Actor")  # exact: uses the index
    system = catalog.system_filter("role__system", method="filter_system")
    access_request = inputs.IdFilter(field_name="access_request_id", label="Request #")
    grant = inputs.IdFilter(field_name="grant_id", label="Grant #")
    grantee = django_filters.CharFilter(method="filter_grantee", label="Grantee", max_length=filters.SEARCH_MAX_LENGTH)
    sort = django_filters.ChoiceFilter(
        choices=[("-sequence", "Newest first"), ("sequence", "Oldest first")],
        method="filter_order",
        label="Order",
        empty_label=None,
    )
    since = inputs.DateFilter(method="filter_since", label="From (UTC)")
    until = inputs.DateFilter(method="filter_until", label="Until (UTC, inclusive)")

    class Meta:
        model = AccessEvent
        form = ReportForm  # a period that starts after it ends is the form's error, not an empty page
        fields = ["q", "event_type", "actor", "system", "access_request", "grant", "grantee", "since", "until", "sort"]

    def filter_order(self, queryset, name, value):
        """Chain order, newest (the default) or oldest first; the CSV is always oldest first (chain order)."""
        return queryset.order_by("sequence") if value == "sequence" else queryset

    def filter_grantee(self, queryset, name, value):
        """Events about ``value``'s access: their grants, and their requests (before any grant exists). The
        ids first (three small reads), then the events by the indexes on them: a join walked the whole
        ledger (1.2-1.5 s over 1M events, issue 22's probe)."""
        people = list(User.objects.filter(username__iexact=value).values_list("pk", flat=True))
        grants = list(Grant.objects.filter(user_id__anyof=people).values_list("pk", flat=True)) if people else []
        asked = (
            list(AccessRequest.objects.filter(requester_id__anyof=people).values_list("pk", flat=True))
            if people
            else []
        )
        return queryset.filter(Q(grant_id__anyof=grants) | Q(grant=None, access_request_id__anyof=asked))

    def filter_system(self, queryset, name, value):
        """Events of the system's roles, by the index on the event's role (a join walked the whole ledger for a
        quiet system)."""
        return queryset.filter(role_id__anyof=list(Role.objects.filter(system_id=value).values_list("pk", flat=True)))

    def filter_since(self, queryset, name, value):
        return queryset.filter(occurred_at__gte=datetime.combine(value, time.min, tzinfo=UTC))

    def filter_until(self, queryset, name, value):
        return queryset.filter(occurred_at__lte=datetime.combine(value, time.max, tzinfo=UTC))


def trail_events():
    """Every access event with what the trail and its CSV show beside it (the role's system, the grantee:
    the grant's holder, or the requester of a request that has no grant yet), newest first."""
    return AccessEvent.objects.select_related("role__system").annotate(grantee=GRANTEE_NAME).order_by("-sequence")


TRAIL_PAGE_FIELDS = (
    "sequence",
    "occurred_at",
    "event_type",
    "actor_label",
    "client_address",
    "reason",
    "access_request_id",
    "grant_id",
    "role__name",
    "role__system__name",
)


def export_row(e: Any) -> tuple:  # an AccessEvent annotated with its grantee (trail_events)
    """One event as the CSV row (EXPORT_COLUMNS) the ORM path writes; the COPY path writes the same cells."""
    return (
        e.sequence,
        e.occurred_at,
        e.event_type,
        e.actor_label,
        e.client_address,
        e.access_request_id,
        e.grant_id,
        e.grantee or "",
        e.role.system.name if e.role else "",
        e.role.name if e.role else "",
        e.reason,
        e.data,
        e.prev_hash,
        e.hash,
    )


def _filtered(request: PortalRequest) -> tuple[EventFilter, QuerySet[AccessEvent]]:
    """The page's filter and its events; no events when a filter does not parse (the page names it)."""
    events = trail_events()
    event_filter = EventFilter(request.GET, queryset=events)
    return event_filter, event_filter.qs if event_filter.is_valid() else events.none()


@require_safe
def audit_trail_view(request: PortalRequest) -> HttpResponse:
    _ensure_auditor(request)
    event_filter, events = _filtered(request)
    oldest_first = event_filter.is_valid() and event_filter.form.cleaned_data.get("sort") == "sequence"
    # Keyset on the chain's sequence: ?before=<n> newest first, ?after=<n> oldest first.
    cursor_param = "after" if oldest_first else "before"
    keyset = EVENTS_OLDEST_FIRST if oldest_first else EVENTS_KEYSET
    # Only the columns the page shows (the data, hashes and the role's and system's other columns were
    # most of the rows' fetch and conversion time: 7 -> 2 ms for a page of 50).
    rows = events.order_by(*keyset.order_by()).only(*TRAIL_PAGE_FIELDS)
    page = paging.keyset_page(
        rows, keyset, cursor=request.GET.get(cursor_param), size=PAGE_SIZE, ids_first=True, back=request.GET.get("back")
    )
    query = request.GET.copy()
    for cursor in ("before", "after", "back"):
        query.pop(cursor, None)
    head = AccessEvent.objects.order_by("-sequence").values("sequence", "hash").first()
    context = {
        "filter": event_filter,
        "events": page.rows,
        "next_before": page.next_cursor,
        "prev_back": page.prev_cursor,
        "cursor_param": cursor_param,
        "query": query.urlencode(),
        "export_query": exports.export_query(request.GET, event_filter.form.fields),
        "head": head,
    }
    return render(request, "accessgov/audit/trail.html", context, status=400 if event_filter.errors else 200)


@require_GET
def audit_export_view(request: PortalRequest) -> HttpResponseBase:
    """The filtered events as CSV, oldest first (exactly the page's filter, all pages). On PostgreSQL
    the rows come from COPY with the formatting and escaping done in SQL; elsewhere through the ORM."""
    _ensure_auditor(request)
    event_filter, events = _filtered(request)
    if event_filter.errors:
        return invalid_filters(event_filter.form)
    # Freeze the set before the export records its own event: the file holds exactly the rows counted.
    last = AccessEvent.objects.aggregate(last=Max("sequence"))["last"] or 0
    events = events.filter(sequence__lte=last)
    given = {k: request.GET.get(k, "") for k in event_filter.form.fields}
    common: dict[str, Any] = {
        "filename": exports.file_name(
            "audit-trail",
            since=event_filter.form.cleaned_data.get("since"),
            until=event_filter.form.cleaned_data.get("until"),
        ),
        "header": EXPORT_COLUMNS,
        "report": "audit trail",
        "filters": given,
        "row_count": events.count,
        "parameters": event_filter.form.fields,
    }
    if connection.vendor == "postgresql":
        select_sql, params = events_copy_select(events)
        return exports.stream_copy_csv(request, select_sql=select_sql, params=params, **common)
    rows = (export_row(e) for e in events.order_by("sequence").iterator(chunk_size=2000))
    return exports.stream_csv(request, rows=rows, **common)


@require_POST
def audit_verify_view(request: PortalRequest) -> HttpResponse:
    _ensure_auditor(request)
    verification = audit_verify(
        request.user, client_address=request.client_address, reason="Integrity check from the audit trail page"
    )
    report, seals = verification.chain, verification.seals
    if report.ok:
        messages.success(
            request, f"Chain intact: {report.checked} events, head #{report.head_sequence} {report.head_hash[:16]}…"
        )
    else:
        messages.error(request, f"Chain BROKEN: {report.problem}")
    if seals.ok:
        messages.success(request, f"Activity seals intact: {seals.seals} seals over {seals.rows} rows.")
    else:
        messages.error(request, f"Activity seals BROKEN: {seals.problem}")
    return redirect("audit_trail")


# The provisioning queue's rows change on every attempt (lease, next attempt, tries): bookkeeping the ledger's
# provisioning events already tell as facts. Hidden unless asked for.
BOOKKEEPING_MODELS = ("outboxitem",)
_MICROSECONDS = re.compile(r"(\d{2}:\d{2}:\d{2})\.\d+")


@require_safe
def model_changes_view(request: PortalRequest) -> HttpResponse:
    """Field-level changes of every model (django-auditlog), newest first, keyset-paginated: each change as
    field, before and after (choices as their labels, a related record as its id, times to the second);
    the provisioning queue's bookkeeping only when asked for."""
    _ensure_auditor(request)
    models = dict(
        LogEntry.objects.values_list("content_type__model", "content_type__model")
        .distinct()
        .order_by("content_type__model")
    )
    labels = {ct.model: str(ct.name).capitalize() for ct in ContentType.objects.filter(model__in=models)}
    model = request.GET.get("model", "")
    bookkeeping = request.GET.get("bookkeeping") == "1"
    entries = LogEntry.objects.select_related("content_type", "actor").order_by("-pk")
    status = 200
    if model and model not in models:
        entries, status = entries.none(), 400
    elif model:
        entries = entries.filter(content_type__model=model)
    elif not bookkeeping:
        entries = entries.exclude(content_type__model__in=BOOKKEEPING_MODELS)
    page = paging.keyset_page(
        entries, CHANGES_KEYSET, cursor=request.GET.get("before"), size=PAGE_SIZE, back=request.GET.get("back")
    )
    rows = [
        {
            "entry": entry,
            "label": labels.get(entry.content_type.model, entry.content_type.model),
            "fields": _fields(entry),
        }
        for entry in page.rows
    ]
    query = {"model": model, **({"bookkeeping": "1"} if bookkeeping else {})}
    return render(
        request,
        "accessgov/audit/changes.html",
        {
            "rows": rows,
            "next_before": page.next_cursor,
            "next_query": urlencode({**query, "before": page.next_cursor or ""}),
            "prev_query": urlencode({**query, "back": page.prev_cursor}) if page.prev_cursor else "",
            "model": model,
            "unknown_model": status == 400,
            "bookkeeping": bookkeeping,
            "create": LogEntry.Action.CREATE,
            "models": sorted(((name, labels.get(name, name)) for name in models), key=lambda m: m[1]),
        },
        status=status,
    )


def _fields(entry: LogEntry) -> list[tuple[str, str, str]]:
    """(field, before, after) of one entry, for people: only the model's own columns (not its id, not the
    reverse relations older entries recorded), a choice as its label, a related record as #id, times to
    the second, long text cut at 200 characters. No query: a page of 50 entries stays one statement."""
    model = entry.content_type.model_class()
    own = {f.name: f for f in model._meta.concrete_fields} if model is not None else {}
    shown = []
    for name, values in (entry.changes_dict or {}).items():
        field = own.get(name)
        if field is None or field.primary_key or not isinstance(values, list | tuple) or len(values) != 2:
            continue
        choices = dict(field.flatchoices) if field.choices else {}
        before, after = (_shown(value, choices, field.is_relation, field) for value in values)
        if entry.action == LogEntry.Action.CREATE and after == "—":
            continue  # a new record: only what it was created with
        shown.append((str(field.verbose_name).capitalize(), before, after))
    return shown


def _shown(value: Any, choices: dict, related: bool, field: Any = None) -> str:
    if value is None or value in ("None", ""):
        return "—"
    if isinstance(field, models.DateTimeField) and (instant := parse_datetime(str(value))) is not None:
        local = timezone.localtime(instant if instant.tzinfo else instant.replace(tzinfo=UTC))
        return f"{local:%Y-%m-%d %H:%M:%S} {local.tzname()}"  # the viewer's zone, as every time on the page
    if isinstance(field, models.DurationField) and (length := parse_duration(str(value))) is not None:
        return policies.format_duration(length)
    text = str(choices.get(value, value))
    if related and text.isdigit():
        return f"#{text}"
    text = _MICROSECONDS.sub(r"\1", text)
    return text if len(text) <= 200 else text[:199] + "…"
