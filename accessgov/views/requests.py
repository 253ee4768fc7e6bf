"""Requesting access, following a request, and deciding it."""

from urllib.parse import urlsplit

from django.contrib import messages
from django.db.models import Exists, OuterRef
from django.http import HttpResponse, QueryDict
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST, require_safe

from accessgov import (
    catalog,
    clock,
    drafts,
    exports,
    filters,
    inputs,
    paging,
    permissions,
    policies,
    selectors,
    workflow,
)
from accessgov.activity import selectors as activity_selectors
from accessgov.exceptions import AccessGovError, PolicyViolation, StepUpRequired
from accessgov.forms import AccessRequestForm, DecisionForm, format_duration_input
from accessgov.http import PortalRequest
from accessgov.models import AccessRequest, AutoApprovalRule
from accessgov.services import access_requests as services
from accessgov.views.approvals import filtered_queue_count
from accessgov.views.common import (
    act_with_step_up,
    confirm_page,
    confirmed,
    invalid_filters,
    plural,
    posted_back,
    refused,
    status_for,
)


def _visible_request(request: PortalRequest, pk: int) -> AccessRequest:
    return permissions.get_visible_access_request_or_404(
        request.user, pk, AccessRequest.objects.select_related("role__system", "requester", "extends_grant")
    )


@require_http_methods(["GET", "HEAD", "POST"])
def request_new_view(request: PortalRequest) -> HttpResponse:
    """The new-request form: only roles I am eligible for, with each role's policy beside it."""
    now = clock.now()
    roles = permissions.eligible_roles(request.user, now).order_by("system__name", "name")
    # What the person typed before their session ended (accessgov.drafts), filled in again — not sent.
    kept = drafts.take(request, request.path) if request.method == "GET" else None
    form = AccessRequestForm(request.POST or kept, roles=roles)
    status = 200
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            access_request = services.access_request_submit(
                request.user,
                role=data["role"],
                duration=data["duration"],
                justification=data["justification"],
                ticket=data["ticket"],
                starts_at=data["starts_at"],
                client_address=request.client_address,
            )
        except AccessGovError as error:
            form.add_error(_request_field(error), str(error))
            status = status_for(error)
            if "already have a pending request" in str(error):
                pending = (
                    AccessRequest.objects.pending_at(clock.now())
                    .filter(requester=request.user, role=data["role"])
                    .first()
                )
                if pending is not None:
                    form.pending_url = reverse("request_detail", args=[pending.pk])
        else:
            if access_request.status == AccessRequest.Status.APPROVED:
                messages.success(request, f"Approved automatically ({access_request.auto_approved_by_rule}).")
                return redirect("my_access")
            if permissions.approvers_for_role(access_request.role) - {request.user}:
                messages.success(request, "Request sent. Approvers have been notified.")
            else:
                messages.warning(
                    request,
                    f"Request sent, but nobody can approve {access_request.role} yet: an owner of "
                    f"{access_request.role.system.name} must name an approver before it lapses.",
                )
            return redirect("request_detail", pk=access_request.pk)
    elif request.method == "POST":
        status = 400
    # Read once, when the page is shown: the form's options and the policy table beside them.
    listed = list(roles.annotate(has_auto_rules=Exists(AutoApprovalRule.objects.filter(role=OuterRef("pk")))))
    form.list_roles(listed)
    if not form.is_bound and (role_id := inputs.parse_id(request.GET.get("role"))):
        role = next((r for r in listed if r.pk == role_id), None)
        if role:
            form.initial = {"role": role, "duration": format_duration_input(role.default_duration)}
    policy_rows = [
        {
            "role": role,
            "max": policies.format_duration(role.max_duration),
            "default": policies.format_duration(role.default_duration),
            "approvals": role.approvals_required,
            "pending": policies.format_duration(role.pending_timeout),
            "auto_rules": role.has_auto_rules,
            "ticket_example": policies.ticket_example(role.ticket_pattern) if role.ticket_pattern else None,
        }
        for role in listed
    ]
    context = {"form": form, "policies": policy_rows, "admins": [] if listed else permissions.admins_to_ask()}
    return render(request, "accessgov/requests/new.html", context, status=status)


def _my_requests_filter(request: PortalRequest) -> filters.MyRequestFilter:
    access_filter = filters.MyRequestFilter(request.GET, queryset=selectors.my_requests(request.user))
    catalog.limit_to_catalogue(access_filter.form, request.user, access_filter.now)
    return access_filter


# What the my-requests table shows (the page loads nothing else; ``lapses_at`` for the status at now).
MY_REQUESTS_PAGE_FIELDS = (
    "kind",
    "status",
    "lapses_at",
    "requested_duration",
    "created_at",
    "role__name",
    "role__system__name",
)


@require_safe
def my_requests_view(request: PortalRequest) -> HttpResponse:
    """My requests: searchable, filtered, sortable, keyset-paged; the CSV reads the same filterset."""
    access_filter = _my_requests_filter(request)
    # Only what the table shows (the requests' grants and every other column cost a model instance and
    # ≈ 10 timestamps per row for nothing on this page).
    rows = access_filter.qs.select_related(None).select_related("role__system").only(*MY_REQUESTS_PAGE_FIELDS)
    page = filters.page_of(access_filter, rows, **paging.cursors(request.GET))
    context = {"filter": access_filter, "page": page, "access_requests": page.rows, "now": access_filter.now}
    return render(request, "accessgov/requests/mine.html", context, status=400 if access_filter.errors else 200)


MY_REQUESTS_COLUMNS = [
    "request_id",
    "kind",
    "system",
    "role",
    "status",
    "requested_duration_minutes",
    "ticket",
    "justification",
    "created_at",
    "decided_at",
]


@require_GET
def my_requests_export_view(request: PortalRequest) -> HttpResponseBase:
    """My requests as CSV: exactly the page's filters and order, every page."""
    access_filter = _my_requests_filter(request)
    if not access_filter.is_valid():
        return invalid_filters(access_filter.form)
    rows = access_filter.qs
    now = access_filter.now  # the instant the filter read the statuses at: the rows say the same
    return exports.stream_csv(
        request,
        filename=exports.file_name("my-requests"),
        header=MY_REQUESTS_COLUMNS,
        rows=(
            (
                r.pk,
                r.kind,
                r.role.system.name,
                r.role.name,
                r.status_at(now),
                int(r.requested_duration.total_seconds() // 60),
                r.ticket,
                r.justification,
                r.created_at,
                r.decided_at_as_of(now),
            )
            for r in rows.iterator(chunk_size=2000)
        ),
        report="my requests",
        filters=access_filter.export_filters(),
        row_count=rows.count,
        parameters=access_filter.form.fields,
    )


@require_safe
def request_detail_view(request: PortalRequest, pk: int) -> HttpResponse:
    return _detail_page(request, _visible_request(request, pk))


def _detail_page(
    request: PortalRequest,
    access_request: AccessRequest,
    *,
    form: DecisionForm | None = None,
    status: int = 200,
    back: str = "",
) -> HttpResponse:
    """A request's page: timeline, decisions, and the decision form for who may decide (``form``: a
    refused decision's form, kept as it was sent, with ``status``; ``back``: where the form returns to
    after a decision, already checked to be on this site)."""
    now = clock.now()
    can_decide = permissions.can_decide_access_request(request.user, access_request, now)
    context = {
        "access_request": access_request,
        # What it is now (a pending request past its deadline has lapsed, swept or not): AccessRequest.status_at.
        "status": access_request.status_at(now),
        "status_label": access_request.status_label_at(now),
        "pending": access_request.is_pending_at(now),
        "decided_at": access_request.decided_at_as_of(now),
        "timeline": selectors.request_timeline(access_request),
        "decisions": access_request.decisions.select_related("approver"),
        "can_decide": can_decide,
        "can_cancel": permissions.can_cancel_access_request(request.user, access_request),
        "grant": getattr(access_request, "grant", None) if access_request.status == "approved" else None,
        "form": form or DecisionForm(),
        "needs_code": access_request.role.step_up_required,
        "deciders": permissions.deciders_of_access_request(access_request),
        "decide_back": back,
    }
    if can_decide:
        context.update(selectors.requester_context(access_request, now))
    return render(request, "accessgov/requests/detail.html", context, status=status)


def _decide(request: PortalRequest, pk: int, outcome: str) -> HttpResponse:
    access_request = _visible_request(request, pk)
    back = posted_back(request, reverse("request_detail", args=[pk]))
    form = DecisionForm(request.POST)
    if not form.is_valid():
        return _decision_answer(request, access_request, back, status=400, form=form)
    data = form.cleaned_data
    try:
        if outcome == "approve":
            act_with_step_up(
                request,
                data["otp_token"],
                lambda step_up_at: services.access_request_approve(
                    request.user,
                    pk,
                    comment=data["comment"],
                    duration=data["duration"],
                    step_up_at=step_up_at,
                    client_address=request.client_address,
                ),
            )
        else:
            act_with_step_up(
                request,
                data["otp_token"],
                lambda step_up_at: services.access_request_deny(
                    request.user,
                    pk,
                    comment=data["comment"],
                    step_up_at=step_up_at,
                    client_address=request.client_address,
                ),
            )
    except AccessGovError as error:
        field = _decision_field(error, access_request)
        if field:
            form.add_error(field, str(error))
        else:
            messages.error(request, str(error))
        return _decision_answer(request, access_request, back, status=status_for(error), form=form)
    access_request.refresh_from_db()
    messages.success(request, _decided_message(access_request, outcome))
    return _decision_answer(request, access_request, back, status=200)


def _decided_message(access_request: AccessRequest, outcome: str) -> str:
    """What the approver just did, in one line: a shortened approval says for how long; a request that still
    waits for more approvals says so."""
    verb = "Approved" if outcome == "approve" else "Denied"
    approved = access_request.approved_duration
    if outcome == "approve" and approved and approved < access_request.requested_duration:
        verb = f"Approved for {policies.format_duration(approved)} (asked: {policies.format_duration(access_request.requested_duration)})"
    if access_request.status == AccessRequest.Status.PENDING:
        return f"{verb}: request #{access_request.pk}, which still waits for another approver."
    return f"{verb}: request #{access_request.pk}."


def _request_field(error: AccessGovError) -> str | None:
    """The field of the request form a refusal is about, so it is shown next to it (None: the form)."""
    if not isinstance(error, PolicyViolation):
        return None
    text = str(error).lower()
    if "ticket" in text and "cannot be read" not in text:  # an unreadable rule is the admin's to fix
        return "ticket"
    if "scheduled start" in text:
        return "starts_at"
    if any(word in text for word in ("duration", "at most", "shortest")):
        return "duration"
    if "explain why" in text:
        return "justification"
    return None


def _decision_field(error: AccessGovError, access_request: AccessRequest) -> str | None:
    """The field of the decision form a refusal is about, so it is shown next to it (None: the form)."""
    if isinstance(error, StepUpRequired):
        return "otp_token" if access_request.role.step_up_required else None
    if isinstance(error, PolicyViolation):
        text = str(error).lower()
        if any(word in text for word in ("duration", "shorten", "at most", "shortest")):
            return "duration"
        if "deny" in text or "comment" in text:
            return "comment"
    return None


def _filtered_count_for(request: PortalRequest, now) -> int | None:
    """The filtered queue's count for the page an htmx decision came from (its filters are in its URL)."""
    query = urlsplit(request.headers.get("HX-Current-URL", "")).query
    return filtered_queue_count(request.user, now, QueryDict(query))


def _decision_answer(
    request: PortalRequest,
    access_request: AccessRequest,
    back: str,
    *,
    status: int,
    form: DecisionForm | None = None,
) -> HttpResponse:
    """htmx: swap the queue card for its new state (with the message, and the status code); a refusal
    keeps what was typed (the code excepted) with the reason next to its field. Plain POST: back to
    where the form was on success; a refusal shows the request's page with the form as it was sent."""
    if request.headers.get("HX-Request"):
        access_request.refresh_from_db()
        now = clock.now()
        decided = status == 200
        # A refused decision keeps its card whole (the requester's context, the selection box), as in the queue.
        context_of = {} if decided else selectors.requester_contexts([access_request], now).get(access_request.pk, {})
        context = {
            "item": access_request,
            "decided": decided,
            **context_of,
            "last_use": None if decided else activity_selectors.last_use_hints([access_request]).get(access_request.pk),
            "selectable": not decided,
            "selected_ids": set(),
            "form": form or DecisionForm(),
            "now": now,
            "inline_messages": True,
            "filtered_count": _filtered_count_for(request, now),
            "decide_back": back,  # the page the form came from (checked above), not this POST's URL
        }
        return render(request, "accessgov/approvals/_queue_item.html", context, status=status)
    if status != 200:
        access_request.refresh_from_db()
        return _detail_page(request, access_request, form=form, status=status, back=back)
    return redirect(back)


@require_POST
def request_approve_view(request: PortalRequest, pk: int) -> HttpResponse:
    return _decide(request, pk, "approve")


@require_POST
def request_deny_view(request: PortalRequest, pk: int) -> HttpResponse:
    return _decide(request, pk, "deny")


@require_POST
def request_cancel_view(request: PortalRequest, pk: int) -> HttpResponse:
    """Withdraw my pending request: the first POST says what that does, the second (confirm=yes) does it."""
    access_request = _visible_request(request, pk)
    back = reverse("request_detail", args=[pk])
    if not confirmed(request):
        # The service's own checks, before the confirmation page: it must not ask someone else to cancel
        # "your" request, nor confirm what cannot happen.
        try:
            permissions.ensure_can_cancel_access_request(request.user, access_request)
            workflow.ensure_transition("request", access_request.status, AccessRequest.Status.CANCELLED)
        except AccessGovError as error:
            return refused(request, error, back)
        return confirm_page(
            request,
            title=f"Cancel your request #{pk} for {access_request.role}?",
            consequences=_cancel_consequences(access_request),
            confirm_label="Yes, cancel the request",
            back=back,
        )
    try:
        services.access_request_cancel(request.user, pk, client_address=request.client_address)
    except AccessGovError as error:
        return refused(request, error, back)
    messages.success(request, "Request cancelled.")
    return redirect("request_detail", pk=pk)


def _cancel_consequences(access_request: AccessRequest) -> list[str]:
    system = access_request.role.system.name
    if access_request.extends_grant_id is not None:
        return [
            f"Grant #{access_request.extends_grant_id} is not extended: it still ends when it would have.",
            "Approvers no longer see this extension; to ask for more time again you need a new request.",
        ]
    decided = access_request.decisions.count()
    lines = ["It stops waiting: approvers no longer see it in their queue."]
    if decided:
        lines.append(f"{plural(decided, 'decision')} already given on it will count for nothing.")
    lines.append(f"No access is given on {system}. To work there later, make a new request.")
    return lines
