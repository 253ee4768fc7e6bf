"""The approver dashboard: the queue of what I may decide, with context, decided inline via htmx or
several at once (one authenticator code for the batch, each decision its own service call and event)."""

from django.contrib import messages
from django.http import HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST, require_safe

from accessgov import catalog, clock, drafts, filters, paging, selectors
from accessgov.activity import selectors as activity_selectors
from accessgov.exceptions import AccessGovError
from accessgov.forms import BulkDecisionForm, DecisionForm
from accessgov.http import PortalRequest
from accessgov.services import access_requests as services
from accessgov.views.common import CodeRefused, act_with_step_up

QUEUE_PAGE_SIZE = filters.PAGE_SIZE
QUEUE_FILTER_FIELDS = ("q", "system", "risk")  # what narrows the queue (sorting and paging do not)
# What the queue's cards and decision forms show (templates/jinja2/accessgov/approvals/): loading only these
# columns of the request, its requester, role and system (not the extended grant) halves the columns the
# ORM builds and reads for a page of cards (docs/PERFORMANCE.md).
QUEUE_PAGE_FIELDS = (
    *("requester", "role", "kind", "status", "requested_duration", "starts_at", "justification", "created_at"),
    "lapses_at",
    *("ticket", "ticket_title", "ticket_url", "auto_approval_note"),
    *("requester__username", "requester__first_name", "requester__last_name"),
    *("role__name", "role__system", "role__approvals_required", "role__risk_tier", "role__step_up_required"),
    "role__system__name",
)


def filtered_queue_count(user, now, params: QueryDict) -> int | None:
    """How many requests the filtered queue holds (the page's query string, or an htmx decision's
    current URL), or None when no filter narrows it (the badge's count is the answer then)."""
    if not any(params.get(name) for name in QUEUE_FILTER_FIELDS):
        return None
    queue_filter = filters.ApprovalQueueFilter(params, queryset=selectors.approver_queue(user, now), now=now)
    if not queue_filter.is_valid():
        return None
    return queue_filter.qs.order_by().count()


def _dashboard(request: PortalRequest, *, bulk_form: BulkDecisionForm | None = None, status: int = 200) -> HttpResponse:
    now = clock.now()
    rows = selectors.approver_queue(request.user, now).select_related(None).select_related("role__system", "requester")
    queue_filter = filters.ApprovalQueueFilter(request.GET, queryset=rows.only(*QUEUE_PAGE_FIELDS), now=now)
    catalog.limit_to_catalogue(queue_filter.form, request.user, now)
    page = filters.page_of(queue_filter, **paging.cursors(request.GET), size=QUEUE_PAGE_SIZE)
    queue = page.rows
    contexts = selectors.requester_contexts(queue, now)
    hints = activity_selectors.last_use_hints(queue)
    items = [{"item": r, **contexts[r.pk], "last_use": hints.get(r.pk)} for r in queue]
    _refill_kept_decision(request, items)
    context = {
        "filter": queue_filter,
        "page": page,
        "items": items,
        "form": DecisionForm(),
        "bulk_form": bulk_form or BulkDecisionForm(),
        "bulk_step_up": any(r.role.step_up_required for r in queue),
        "selected_ids": set(request.POST.getlist("ids")) if bulk_form is not None else set(),
        "now": now,
        "overdue_follow_ups": selectors.overdue_follow_up_count(request.user, now),
        "filtered_count": filtered_queue_count(request.user, now, request.GET),
    }
    if queue_filter.errors:
        status = 400
    return render(request, "accessgov/approvals/dashboard.html", context, status=status)


def _refill_kept_decision(request: PortalRequest, items: list[dict]) -> None:
    """A decision typed before the session ended (accessgov.drafts) fills its card's form again, not sent."""
    action = drafts.kept_action(request)
    if not action:
        return
    for entry in items:
        pk = entry["item"].pk
        for name in ("request_approve", "request_deny"):
            if action == reverse(name, args=[pk]):
                entry["form"] = DecisionForm(drafts.take(request, action))
                return


@require_safe
def approver_dashboard_view(request: PortalRequest) -> HttpResponse:
    return _dashboard(request)


@require_POST
def bulk_decide_view(request: PortalRequest) -> HttpResponse:
    """Approve or deny several requests from the queue. Everything typed is checked first (ids, outcome,
    the deny comment); the authenticator code is spent last, once for the whole batch; each
    request is then decided by its own service call (its own lock, checks and event). A request that is
    not in the person's queue (someone else's, already decided, another approver's role) is reported
    per item as not in the queue, without saying whether it exists."""
    form = BulkDecisionForm(request.POST)
    if not form.is_valid():
        return _dashboard(request, bulk_form=form, status=400)
    data = form.cleaned_data
    now = clock.now()
    in_queue = {
        r.pk: r
        for r in selectors.approver_queue(request.user, now)
        .filter(pk__in=data["ids"])
        .select_related(None)
        .select_related("role__system")
    }
    decide = services.access_request_approve if data["outcome"] == "approve" else services.access_request_deny

    def decide_batch(step_up_at) -> dict[int, str | None]:
        """Each ticked request decided by its own service call: its refusal (or None) per id."""
        outcomes: dict[int, str | None] = {}
        for pk in in_queue:
            try:
                decide(
                    request.user,
                    pk,
                    comment=data["comment"],
                    step_up_at=step_up_at,
                    client_address=request.client_address,
                )
            except AccessGovError as error:
                outcomes[pk] = str(error)
            else:
                outcomes[pk] = None
        return outcomes

    # The code is spent last, once for the batch, and only if a decision in it needs one (otp.rehearse).
    try:
        outcomes = act_with_step_up(request, data["otp_token"], decide_batch) if in_queue else {}
    except CodeRefused as error:
        form.add_error("otp_token", str(error))
        return _dashboard(request, bulk_form=form, status=403)
    decided, refused = 0, 0
    for pk in data["ids"]:
        access_request = in_queue.get(pk)
        if access_request is None:
            refused += 1
            messages.error(request, f"#{pk}: not in your queue; nothing was done.")
        elif outcomes.get(pk) is not None:
            refused += 1
            messages.error(request, f"#{pk} {access_request.role}: {outcomes[pk]}")
        else:
            decided += 1
    verb = "Approved" if data["outcome"] == "approve" else "Denied"
    if decided:
        messages.success(request, f"{verb} {decided} request{'s' if decided != 1 else ''}.")
    if refused:
        messages.warning(request, f"{refused} of {len(data['ids'])} not decided: see each reason.")
    back = request.POST.get("back") or ""
    if not back.startswith("/") or not url_has_allowed_host_and_scheme(back, allowed_hosts=None):
        back = reverse("approvals")
    return redirect(back)
