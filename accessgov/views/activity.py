"""Activity evidence pages (issue 17): who is connected right now and the findings waiting for a second
person; signing a finding off; the activity CSV export; the right-sizing report and its four-eyed
proposals. Thin: permissions, a selector or a service, render."""

from datetime import UTC, datetime, time, timedelta

from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST, require_safe

from accessgov import clock, exports, inputs, permissions
from accessgov.activity import selectors
from accessgov.exceptions import AccessGovError
from accessgov.forms import ActivityExportFilters
from accessgov.http import PortalRequest
from accessgov.services import activity as services
from accessgov.views.common import invalid_filters, posted_back, refused


@require_safe
def activity_view(request: PortalRequest) -> HttpResponse:
    now = clock.now()
    open_findings = list(selectors.open_findings(request.user)[:200])
    recent = list(
        selectors.visible_findings(request.user).filter(status="signed_off").order_by("-signed_off_at", "-pk")[:20]
    )
    return render(
        request,
        "accessgov/activity/index.html",
        {
            "sessions": selectors.live_sessions(request.user, now),
            "open_findings": open_findings,
            "recent_findings": recent,
            "can_sign_off": {f.pk for f in open_findings if permissions.can_sign_off_finding(request.user, f)},
            "now": now,
        },
    )


@require_POST
def finding_sign_off_view(request: PortalRequest, pk: int) -> HttpResponse:
    finding = selectors.visible_findings(request.user).filter(pk=pk).first()
    if finding is None:
        raise Http404("No such finding.")
    # Back to the page it was signed off on (the activity page or the grant's), else the grant's activity.
    back = posted_back(
        request,
        reverse("grant_detail", args=[finding.grant_id]) + "#activity" if finding.grant_id else reverse("activity"),
    )
    comment = request.POST.get("comment", "")
    if "\x00" in comment:
        return refused(request, "The comment holds characters that cannot be stored.", back, status=400)
    try:
        services.activity_finding_sign_off(request.user, pk, comment=comment, client_address=request.client_address)
    except AccessGovError as error:
        return refused(request, error, back)
    messages.success(request, f"Signed off: {finding.get_kind_display()} ({finding.principal}).")
    return redirect(back)


@require_GET
def activity_export_view(request: PortalRequest):
    """Activity rows as CSV (formula-safe, recorded as an export): the rows the pages would show the viewer;
    statement text only for systems whose text they may read. Filters: grant, system, since, until (days,
    ``until`` included); a filter that does not parse is a 400 naming it, and nothing is exported."""
    form = ActivityExportFilters(request.GET)
    if not form.is_valid():
        return invalid_filters(form)
    wanted = form.cleaned_data
    since = datetime.combine(wanted["since"], time.min, UTC) if wanted["since"] else None
    until = datetime.combine(wanted["until"] + timedelta(days=1), time.min, UTC) if wanted["until"] else None
    rows = selectors.activity_for_export(
        request.user, grant_id=wanted["grant"], system_id=wanted["system"], since=since, until=until
    )
    return exports.stream_csv(
        request,
        filename=exports.file_name("activity", since=wanted["since"], until=wanted["until"]),
        header=selectors.EXPORT_HEADER,
        rows=selectors.export_rows(request.user, rows),
        report="activity",
        filters={
            "grant": wanted["grant"],
            "system": wanted["system"],
            "since": request.GET.get("since"),
            "until": request.GET.get("until"),
        },
        row_count=rows.count,
        parameters=form.fields,
    )


# --- Right-sizing --------------------------------------------------------------------------------------


@require_safe
def right_sizing_view(request: PortalRequest) -> HttpResponse:
    now = clock.now()
    report = selectors.right_sizing(request.user, now)
    return render(
        request,
        "accessgov/reports/right_sizing.html",
        {**report, "can_propose": permissions.can_propose_right_sizing(request.user), "now": now},
    )


@require_POST
def right_sizing_propose_view(request: PortalRequest) -> HttpResponse:
    """One click: propose a role's shorter maximum, or the end of an idle eligibility (four-eyed)."""
    back = reverse("report_right_sizing")
    if not permissions.can_propose_right_sizing(request.user):
        return refused(request, "Only portal admins propose policy changes; another admin approves them.", back, 403)
    action = request.POST.get("action", "")
    target = inputs.parse_id(request.POST.get("id", ""))
    if target is None:
        return refused(request, "Choose a role or an eligibility from the report.", back, 400)
    try:
        if action == "max_duration":
            minutes = inputs.parse_id(request.POST.get("minutes", ""))
            if minutes is None or timedelta(minutes=min(minutes, 10**9)) > inputs.MAX_DURATION:
                return refused(request, "Give the new maximum in minutes.", back, 400)
            change = services.right_sizing_propose_max_duration(
                request.user, target, timedelta(minutes=minutes), client_address=request.client_address
            )
        elif action == "end_eligibility":
            change = services.right_sizing_propose_end_eligibility(
                request.user, target, client_address=request.client_address
            )
        else:
            return refused(request, "Unknown proposal.", back, 400)
    except AccessGovError as error:
        return refused(request, error, back)
    messages.success(request, f"Proposed: {change.summary}. Another admin approves it on the changes page.")
    return redirect("change_detail", pk=change.pk)
