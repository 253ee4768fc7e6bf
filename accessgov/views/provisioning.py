"""Provisioning dashboard: what is being applied/removed at targets, what is failing or overdue,
manual tasks to complete, and drift found by reconciliation."""

from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST, require_safe

from accessgov import catalog, clock, filters, paging, permissions, selectors
from accessgov.exceptions import AccessGovError
from accessgov.http import PortalRequest
from accessgov.models import OutboxItem
from accessgov.services import provisioning as services
from accessgov.views.common import refused


@require_safe
def provisioning_view(request: PortalRequest) -> HttpResponse:
    now = clock.now()
    task_filter = filters.ProvisioningFilter(request.GET, queryset=selectors.provisioning_tasks(request.user), now=now)
    catalog.limit_to_catalogue(task_filter.form, request.user, now)
    page = filters.page_of(task_filter, **paging.cursors(request.GET))
    context = selectors.provisioning_dashboard(request.user, now, items=page.rows)
    context.update({"filter": task_filter, "page": page})
    return render(request, "accessgov/provisioning/dashboard.html", context, status=400 if task_filter.errors else 200)


@require_POST
def manual_task_done_view(request: PortalRequest, pk: int) -> HttpResponse:
    item = get_object_or_404(OutboxItem.objects.select_related("grant__role__system"), pk=pk)
    if not permissions.can_view_grant(request.user, item.grant):
        raise Http404("No such task.")
    try:
        services.manual_task_complete(request.user, pk, client_address=request.client_address)
    except AccessGovError as error:
        return refused(request, error, reverse("provisioning"))
    messages.success(request, f"Marked done: {item.get_action_display().lower()} for grant #{item.grant_id}.")
    return redirect("provisioning")
