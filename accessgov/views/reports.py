"""Compliance reports: access history, approval metrics, break-glass use, denied requests.

Each report is a page (filters, charts, a keyset-paginated sortable table) and a CSV export of the
same FilterSet's rows. What anyone sees or exports is limited by ``permissions`` (see
``accessgov.reports``): someone who may see nothing gets an empty report, never an error.
"""

import hashlib
import json

from django.conf import settings
from django.core.cache import cache
from django.db.models import Count, Max
from django.http import HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_safe

from accessgov import catalog, clock, exports, paging, permissions, reports
from accessgov.http import PortalRequest
from accessgov.reports import access_history, approvals, break_glass
from accessgov.reports.base import ReportFilterSet
from accessgov.views.common import invalid_filters

PAGE_SIZE = 50

ACCESS_HEADERS = [
    ("Grant", "id"),
    ("Holder", "user"),
    ("System · role", "system"),
    ("From", "starts_at"),
    ("Until", "expires_at"),
    ("How it ended", "ended_at"),
    ("Why", None),
    ("Approved by", None),
    ("Revocation lag", "lag"),
]
APPROVALS_HEADERS = [
    ("Request", "id"),
    ("Requester", "requester"),
    ("System · role", "system"),
    ("Submitted", "created_at"),
    ("Decided", "decided_at"),
    ("Time to decision", "decision_time"),
    ("Outcome", None),
    ("Decided by", None),
]
BREAK_GLASS_HEADERS = [
    ("Grant", "id"),
    ("Used by", "user"),
    ("System · role", "system"),
    ("Activated", "starts_at"),
    ("Why", None),
    ("Follow-up due", "due_at"),
    ("Follow-up", "acknowledged_at"),
]
DENIED_HEADERS = [
    ("Request", "id"),
    ("Requester", "requester"),
    ("System · role", "system"),
    ("Submitted", None),
    ("Denied", "decided_at"),
    ("Denied by", "denied_by"),
    ("Reason", None),
]


def _filterset(request: PortalRequest, report: reports.Report) -> ReportFilterSet:
    return report.filterset_class(request.GET, queryset=report.base(request.user), now=clock.now())


def _page(request: PortalRequest, report: reports.Report, template: str, headers: list, extra=None) -> HttpResponse:
    filterset = _filterset(request, report)
    catalog.limit_to_catalogue(filterset.form, request.user, filterset.now)
    valid = filterset.is_valid()
    rows = report.rows(filterset.qs)
    if report.page_fields:
        rows = rows.only(*report.page_fields)
    page = (
        filterset.page(rows, **paging.cursors(request.GET), size=PAGE_SIZE)
        if valid
        else paging.Page(rows=[], next_cursor=None, is_first=True)
    )
    context = {
        "report": report,
        "filter": filterset,
        "page": page,
        "rows": page.rows,
        "headers": filterset.headers(headers),
        "now": filterset.now,
        **(_summaries(request, report, filterset, extra) if extra and valid else {}),
    }
    return render(request, template, context, status=200 if valid else 400)


def _summaries(request: PortalRequest, report: reports.Report, filterset, extra) -> dict:
    """Charts and totals aggregate every matching row (a scan of up to every grant or decision), so
    they are kept for REPORT_SUMMARY_CACHE_SECONDS per report, filters and viewer's visibility (all
    for auditors, else per person); the page says when they were computed. Paging and sorting the
    table do not recompute them. ``summary_key`` and ``summary_seconds`` let a template keep the
    rendered summary too (``{% cache %}``: the approval metrics' per-system and per-approver tables
    cost more to render than the page's rows)."""
    seconds = settings.REPORT_SUMMARY_CACHE_SECONDS
    if seconds <= 0:
        return {**extra(filterset), "summaries_at": filterset.now, "summary_seconds": 0, "summary_key": ""}
    scope = "all" if permissions.is_auditor(request.user) else f"user-{request.user.pk}"
    params = sorted((k, v) for k, v in request.GET.items() if k not in ("after", "back", "sort"))
    digest = hashlib.sha256(json.dumps([report.name, scope, params]).encode()).hexdigest()
    key = f"report-summary:{digest}"
    cached = cache.get(key)
    if cached is None:
        cached = {**extra(filterset), "summaries_at": filterset.now}
        cache.set(key, cached, seconds)
    return {**cached, "summary_seconds": seconds, "summary_key": digest}


def _export(request: PortalRequest, report: reports.Report) -> HttpResponseBase:
    """Stream the filtered rows as CSV, recording the export first (``exports.stream_csv``).

    The row count and an id ceiling are read together, so rows created while the file streams do
    not make it disagree with the count in the export's access event."""
    filterset = _filterset(request, report)
    if not filterset.is_valid():
        return invalid_filters(filterset.form)
    snapshot = filterset.filtered.order_by().aggregate(rows=Count("pk"), top=Max("pk"))
    rows = report.rows(filterset.qs.filter(pk__lte=snapshot["top"] or 0))
    now = filterset.now
    response = exports.stream_csv(
        request,
        filename=exports.file_name(
            report.name.replace("_", "-"),
            since=filterset.form.cleaned_data.get("since"),
            until=filterset.form.cleaned_data.get("until"),
        ),
        header=report.columns,
        rows=(report.csv_row(row, now) for row in rows.iterator(chunk_size=2000)),
        report=report.name,
        filters=filterset.query_filters(),
        row_count=snapshot["rows"],
        parameters=filterset.form.fields,
    )
    response["Cache-Control"] = "private, no-store"
    return response


@require_safe
def reports_index_view(request: PortalRequest) -> HttpResponse:
    return render(request, "accessgov/reports/index.html")


@require_safe
def access_report_view(request: PortalRequest) -> HttpResponse:
    return _page(
        request,
        reports.ACCESS_HISTORY,
        "accessgov/reports/access.html",
        ACCESS_HEADERS,
        lambda filterset: {
            "grants_chart": access_history.grants_per_week_chart(filterset),
            "lag_chart": access_history.revocation_lag_chart(filterset),
        },
    )


@require_GET
def access_report_export_view(request: PortalRequest) -> HttpResponseBase:
    return _export(request, reports.ACCESS_HISTORY)


def _approval_context(filterset: approvals.ApprovalFilter) -> dict:
    metrics = approvals.approval_metrics(filterset.filtered)
    return {"metrics": metrics, "median_chart": approvals.median_time_to_approve_chart(filterset, metrics)}


@require_safe
def approvals_report_view(request: PortalRequest) -> HttpResponse:
    return _page(request, reports.APPROVALS, "accessgov/reports/approvals.html", APPROVALS_HEADERS, _approval_context)


@require_GET
def approvals_report_export_view(request: PortalRequest) -> HttpResponseBase:
    return _export(request, reports.APPROVALS)


@require_safe
def break_glass_report_view(request: PortalRequest) -> HttpResponse:
    return _page(
        request,
        reports.BREAK_GLASS,
        "accessgov/reports/break_glass.html",
        BREAK_GLASS_HEADERS,
        lambda filterset: {
            "activations_chart": break_glass.activations_per_week_chart(filterset),
            "counts": break_glass.follow_up_counts(filterset),
        },
    )


@require_GET
def break_glass_report_export_view(request: PortalRequest) -> HttpResponseBase:
    return _export(request, reports.BREAK_GLASS)


@require_safe
def denied_report_view(request: PortalRequest) -> HttpResponse:
    return _page(request, reports.DENIED, "accessgov/reports/denied.html", DENIED_HEADERS)


@require_GET
def denied_report_export_view(request: PortalRequest) -> HttpResponseBase:
    return _export(request, reports.DENIED)
