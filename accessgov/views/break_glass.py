"""Break-glass: self-activation for emergencies, and the follow-ups others must acknowledge."""

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accessgov import permissions, selectors
from accessgov.exceptions import AccessGovError
from accessgov.forms import BreakGlassForm, ReasonForm
from accessgov.models import BreakGlassFollowUp
from accessgov.services import grants as services
from accessgov.views.common import refused, status_for, step_up_with_code


@require_http_methods(["GET", "POST"])
def break_glass_view(request: HttpRequest) -> HttpResponse:
    roles = permissions.eligible_roles(request.user, timezone.now()).filter(break_glass_allowed=True)
    form = BreakGlassForm(request.POST or None, roles=roles)
    status = 200
    if request.method == "POST" and form.is_valid():
        step_up_at, error = step_up_with_code(request, form.cleaned_data["otp_token"])
        if error:
            form.add_error("otp_token", error)
            status = 403
        else:
            try:
                grant = services.break_glass_activate(
                    request.user,
                    role=form.cleaned_data["role"],
                    justification=form.cleaned_data["justification"],
                    duration=form.cleaned_data["duration"],
                    step_up_at=step_up_at,
                    client_address=request.client_address,
                )
            except AccessGovError as exc:
                form.add_error(None, str(exc))
                status = status_for(exc)
            else:
                messages.warning(
                    request,
                    f"Break-glass access to {grant.role} is active. Approvers and auditors "
                    "have been notified; someone will review it within 24 hours.",
                )
                return redirect("my_access")
    elif request.method == "POST":
        status = 400
    return render(request, "accessgov/break_glass/new.html", {"form": form, "roles": roles}, status=status)


@require_GET
def follow_ups_view(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    follow_ups = selectors.follow_ups_for(request.user).order_by("acknowledged_at", "due_at")[:200]
    rows = [
        {
            "follow_up": f,
            "overdue": f.is_open and f.due_at <= now,
            "can_ack": f.is_open and permissions.can_acknowledge_break_glass(request.user, f.grant),
        }
        for f in follow_ups
    ]
    return render(request, "accessgov/break_glass/follow_ups.html", {"rows": rows, "form": ReasonForm(), "now": now})


@require_POST
def follow_up_acknowledge_view(request: HttpRequest, pk: int) -> HttpResponse:
    follow_up = get_object_or_404(BreakGlassFollowUp, pk=pk)
    if not selectors.follow_ups_for(request.user).filter(pk=follow_up.pk).exists():
        from django.http import Http404

        raise Http404("No such follow-up.")
    form = ReasonForm(request.POST)
    comment = form.cleaned_data["reason"] if form.is_valid() else ""
    try:
        services.break_glass_acknowledge(request.user, pk, comment=comment, client_address=request.client_address)
    except AccessGovError as error:
        return refused(request, error, reverse("break_glass_follow_ups"))
    messages.success(request, "Follow-up acknowledged.")
    return redirect("break_glass_follow_ups")
