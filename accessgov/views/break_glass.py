"""Break-glass: self-activation for emergencies, and the follow-ups others must acknowledge."""

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from accessgov import clock, permissions, selectors
from accessgov.exceptions import AccessGovError, PolicyViolation, StepUpRequired, TransitionNotAllowed
from accessgov.forms import BreakGlassForm, ReasonForm
from accessgov.http import PortalRequest
from accessgov.models import BreakGlassFollowUp
from accessgov.services import grants as services
from accessgov.templatetags.accessgov_tags import step_up_state
from accessgov.views.common import act_with_step_up, refused, status_for


@require_http_methods(["GET", "HEAD", "POST"])
def break_glass_view(request: PortalRequest) -> HttpResponse:
    roles = permissions.eligible_roles(request.user, clock.now()).filter(break_glass_allowed=True)
    form = BreakGlassForm(request.POST or None, roles=roles, step_up=step_up_state(request))
    status = 200
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            grant = act_with_step_up(
                request,
                data["otp_token"],
                lambda step_up_at: services.break_glass_activate(
                    request.user,
                    role=data["role"],
                    justification=data["justification"],
                    duration=data["duration"],
                    step_up_at=step_up_at,
                    client_address=request.client_address,
                ),
            )
        except AccessGovError as exc:
            form.add_error(_break_glass_field(exc), str(exc))
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


def _break_glass_field(error: AccessGovError) -> str | None:
    """The field a refusal is about, so it is shown next to it (None: the form)."""
    if isinstance(error, StepUpRequired):
        return "otp_token"
    text = str(error).lower()
    if isinstance(error, PolicyViolation) and any(w in text for w in ("duration", "at most", "shortest")):
        return "duration"
    if isinstance(error, PolicyViolation) and "emergency" in text:
        return "justification"
    return None


@require_safe
def follow_ups_view(request: PortalRequest) -> HttpResponse:
    return _follow_ups(request)


def _follow_ups(
    request: PortalRequest, *, error: tuple[int, str, str] | None = None, status: int = 200
) -> HttpResponse:
    """The follow-ups page; ``error`` (follow-up id, message, comment typed) puts a refused
    acknowledgement's reason next to its field, with what was typed kept."""
    now = clock.now()
    follow_ups = selectors.follow_ups_page(request.user)
    rows = [
        {
            "follow_up": f,
            # A use still going on is reviewed once it has ended (``break_glass_acknowledge``): it is "in use",
            # not late, and its form waits for the end instead of offering a sign-off that would be refused.
            "in_use": f.is_open and f.grant.is_active_at(now),
            "overdue": f.is_open and f.due_at <= now and not f.grant.is_active_at(now),
            "can_ack": f.is_open and permissions.can_acknowledge_break_glass(request.user, f.grant),
        }
        for f in follow_ups
    ]
    context = {
        "rows": rows,
        "form": ReasonForm(),
        "now": now,
        "error_pk": error[0] if error else None,
        "error_message": error[1] if error else "",
        "error_comment": error[2] if error else "",
    }
    return render(request, "accessgov/break_glass/follow_ups.html", context, status=status)


@require_POST
def follow_up_acknowledge_view(request: PortalRequest, pk: int) -> HttpResponse:
    follow_up = get_object_or_404(BreakGlassFollowUp, pk=pk)
    if not selectors.follow_ups_for(request.user).filter(pk=follow_up.pk).exists():
        from django.http import Http404

        raise Http404("No such follow-up.")
    form = ReasonForm(request.POST)
    comment = form.cleaned_data["reason"] if form.is_valid() else ""
    try:
        services.break_glass_acknowledge(request.user, pk, comment=comment, client_address=request.client_address)
    except PolicyViolation as error:
        typed = str(request.POST.get("reason", ""))[:2000]
        return _follow_ups(request, error=(pk, str(error), typed), status=400)
    except TransitionNotAllowed as error:
        if follow_up.grant.is_active_at(clock.now()):  # still in use: say so next to the form, keep what was typed
            typed = str(request.POST.get("reason", ""))[:2000]
            return _follow_ups(request, error=(pk, str(error), typed), status=409)
        return refused(request, error, reverse("break_glass_follow_ups"))
    except AccessGovError as error:
        return refused(request, error, reverse("break_glass_follow_ups"))
    messages.success(request, "Follow-up acknowledged.")
    return redirect("break_glass_follow_ups")
