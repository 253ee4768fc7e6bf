"""Four-eyes policy changes: the list of proposals, each with its diff, and approve / reject / withdraw.
Portal admins only (others get 404: the page does not exist for them)."""

from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST, require_safe

from accessgov import filters, paging, permissions
from accessgov.exceptions import AccessGovError
from accessgov.http import PortalRequest
from accessgov.models import ChangeRequest
from accessgov.services import changes as services
from accessgov.views.common import refused


def _ensure_admin(request: PortalRequest) -> None:
    if not permissions.can_manage_changes(request.user):
        raise Http404("No such page.")


@require_safe
def change_list_view(request: PortalRequest) -> HttpResponse:
    """Changes waiting for a second admin (all of them), and the decided ones searchable and paged."""
    _ensure_admin(request)
    changes = ChangeRequest.objects.select_related("proposed_by", "decided_by", "beneficiary")
    decided_filter = filters.ChangeFilter(request.GET, queryset=changes.exclude(status=ChangeRequest.Status.PENDING))
    page = filters.page_of(decided_filter, **paging.cursors(request.GET))
    return render(
        request,
        "accessgov/changes/list.html",
        {
            "pending": changes.filter(status=ChangeRequest.Status.PENDING).order_by("proposed_at"),
            "filter": decided_filter,
            "page": page,
            "recent": page.rows,
        },
        status=400 if decided_filter.errors else 200,
    )


@require_safe
def change_detail_view(request: PortalRequest, pk: int) -> HttpResponse:
    _ensure_admin(request)
    change = get_object_or_404(
        ChangeRequest.objects.select_related("proposed_by", "decided_by", "beneficiary__created_by"), pk=pk
    )
    mine = change.proposed_by_id == request.user.pk
    problem = permissions.change_approval_problem(request.user, change)
    return render(
        request,
        "accessgov/changes/detail.html",
        {
            "change": change,
            "rows": change.changes.values(),
            "mine": mine,
            "can_approve": problem is None,
            "approval_problem": problem if change.status == ChangeRequest.Status.PENDING and not mine else "",
        },
    )


@require_POST
def change_approve_view(request: PortalRequest, pk: int) -> HttpResponse:
    _ensure_admin(request)
    get_object_or_404(ChangeRequest, pk=pk)
    back = reverse("change_detail", args=[pk])
    try:
        change = services.change_approve(request.user, pk, client_address=request.client_address)
    except AccessGovError as error:
        return refused(request, error, back)
    messages.success(request, f"Applied: {change.summary}.")
    return redirect(back)


@require_POST
def change_reject_view(request: PortalRequest, pk: int) -> HttpResponse:
    _ensure_admin(request)
    get_object_or_404(ChangeRequest, pk=pk)
    back = reverse("change_detail", args=[pk])
    try:
        change = services.change_reject(
            request.user, pk, comment=request.POST.get("comment", ""), client_address=request.client_address
        )
    except AccessGovError as error:
        return refused(request, error, back)
    messages.success(request, f"{change.get_status_display()}: {change.summary}.")
    return redirect(back)
