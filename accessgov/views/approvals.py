"""The approver dashboard: the queue of what I may decide, with context, decided inline via htmx."""

from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from accessgov import inputs, permissions, selectors
from accessgov.activity import selectors as activity_selectors
from accessgov.forms import DecisionForm
from accessgov.models import Role, System


def queue_filters(params: QueryDict) -> dict:
    """The queue's filters from a query string (the page's, or an htmx decision's current URL)."""
    risk = params.get("risk")
    return {
        "system_id": inputs.parse_id(params.get("system")),
        "risk_tier": risk if risk in Role.RiskTier.values else None,
    }


def filtered_queue_count(user, now, filters: dict) -> int | None:
    """How many requests the filtered queue holds, or None when no filter is set (the badge's count
    is the answer then)."""
    if not any(filters.values()):
        return None
    return selectors.approver_queue(user, now, **filters).order_by().count()


@require_GET
def approver_dashboard_view(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    system_id = request.GET.get("system")
    risk = request.GET.get("risk")
    filters = queue_filters(request.GET)
    queue = list(selectors.approver_queue(request.user, now, **filters)[:100])
    contexts = selectors.requester_contexts(queue, now)
    hints = activity_selectors.last_use_hints(queue)
    items = [{"item": r, **contexts[r.pk], "last_use": hints.get(r.pk)} for r in queue]
    systems = System.objects.filter(roles__in=permissions.decidable_roles(request.user)).distinct()
    context = {
        "items": items,
        "systems": systems,
        "risks": Role.RiskTier.choices,
        "selected_system": system_id or "",
        "selected_risk": risk or "",
        "form": DecisionForm(),
        "now": now,
        "overdue_follow_ups": selectors.overdue_follow_ups(request.user, now).count(),
        "filtered_count": filtered_queue_count(request.user, now, filters),
    }
    return render(request, "accessgov/approvals/dashboard.html", context)
