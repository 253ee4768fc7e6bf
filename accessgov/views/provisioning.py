"""Provisioning dashboard: what is being applied/removed at targets, what is failing or overdue,
manual tasks to complete, and drift found by reconciliation."""

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from accessgov import catalog, filters, permissions
from accessgov.exceptions import AccessGovError
from accessgov.models import DriftFinding, OutboxItem, System
from accessgov.services import provisioning as services
from accessgov.views.common import refused


def _visible_systems(user):
    if permissions.is_auditor(user):
        return System.objects.all()
    from guardian.shortcuts import get_objects_for_user

    owned = get_objects_for_user(user, "accessgov.own_system", klass=System, accept_global_perms=False)
    return System.objects.filter(
        pk__in=list(owned.values_list("pk", flat=True))
        + list(permissions.decidable_roles(user).values_list("system_id", flat=True))
    )


@require_GET
def provisioning_view(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    grants = permissions.visible_grants(request.user)
    task_filter = filters.ProvisioningFilter(
        request.GET,
        queryset=OutboxItem.objects.filter(done_at__isnull=True, grant__in=grants.values("pk")).select_related(
            "grant__user", "grant__role__system"
        ),
        now=now,
    )
    catalog.limit_to_catalogue(task_filter.form, request.user, now)
    page = filters.page_of(task_filter, after=request.GET.get("after", ""))
    items = page.rows
    rows = [
        {
            "item": item,
            "manual": item.grant.role.system.connector == System.Connector.MANUAL,
            "can_complete": permissions.can_complete_manual_task(request.user, item.grant),
            "overdue": item.action == OutboxItem.Action.REMOVE
            and item.grant.removal_requested_at is not None
            and (now - item.grant.removal_requested_at).total_seconds()
            > 60 * services.settings.PROVISIONING_REMOVAL_ALERT_MINUTES,
        }
        for item in items
    ]
    context = {
        "filter": task_filter,
        "page": page,
        "rows": rows,
        "overdue": services.overdue_removals(grants, now).select_related("user", "role__system")[:100],
        "drift": DriftFinding.objects.filter(
            resolved_at__isnull=True, system__in=_visible_systems(request.user)
        ).select_related("role__system")[:200],
        "now": now,
    }
    return render(request, "accessgov/provisioning/dashboard.html", context, status=400 if task_filter.errors else 200)


@require_POST
def manual_task_done_view(request: HttpRequest, pk: int) -> HttpResponse:
    item = get_object_or_404(OutboxItem.objects.select_related("grant"), pk=pk)
    if not permissions.visible_grants(request.user).filter(pk=item.grant_id).exists():
        raise Http404("No such task.")
    try:
        services.manual_task_complete(request.user, pk)
    except AccessGovError as error:
        return refused(request, error, reverse("provisioning"))
    messages.success(request, f"Marked done: {item.get_action_display().lower()} for grant #{item.grant_id}.")
    return redirect("provisioning")
