"""Systems and roles: policy at a glance, and eligibility managed by the system's owners."""

from django.contrib import messages
from django.db.models import Prefetch
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST, require_safe

from accessgov import clock, filters, inputs, paging, permissions, policies
from accessgov.exceptions import AccessGovError
from accessgov.forms import EligibilityForm, ReasonForm
from accessgov.http import PortalRequest
from accessgov.models import AccessRequest, Eligibility, Grant
from accessgov.services import eligibility as services
from accessgov.views.common import confirm_page, confirmed, plural, refused, status_for


@require_safe
def system_list_view(request: PortalRequest) -> HttpResponse:
    """The systems in my catalogue (``permissions.visible_systems``, the API's rule), each with the
    roles of it in my catalogue."""
    now = clock.now()
    roles = permissions.visible_roles(request.user, now).order_by("name")
    system_filter = filters.SystemFilter(request.GET, queryset=permissions.visible_systems(request.user, now), now=now)
    rows = (
        system_filter.qs.prefetch_related(Prefetch("roles", queryset=roles, to_attr="catalogue_roles"))
        if system_filter.is_valid()
        else None
    )
    page = filters.page_of(system_filter, rows, **paging.cursors(request.GET))
    context = {"filter": system_filter, "page": page, "systems": page.rows}
    if not page.rows and not system_filter.narrowed:
        context["admins"] = permissions.admins_to_ask()
    return render(
        request,
        "accessgov/systems/list.html",
        context,
        status=400 if system_filter.errors else 200,
    )


@require_safe
def system_detail_view(request: PortalRequest, slug: str) -> HttpResponse:
    """A system in my catalogue (404 otherwise: no existence oracle) with the policy of its roles in my
    catalogue, and, for its owners, who may request them."""
    system = get_object_or_404(permissions.visible_systems(request.user, clock.now()), slug=slug)
    return _system_page(request, system)


def _system_page(
    request: PortalRequest, system, *, form: EligibilityForm | None = None, status: int = 200
) -> HttpResponse:
    """The system's page; ``form``: a refused eligibility form, kept as it was sent, with ``status``."""
    now = clock.now()
    can_manage = permissions.can_manage_eligibility(request.user, system)
    eligible = set(permissions.eligible_roles(request.user, now).filter(system=system).values_list("pk", flat=True))
    roles = [
        {
            "role": role,
            "max": policies.format_duration(role.max_duration),
            "pending": policies.format_duration(role.pending_timeout),
            "eligible": role.pk in eligible,
        }
        for role in permissions.visible_roles(request.user, now).filter(system=system).order_by("name")
    ]
    eligibility_filter = filters.EligibilityFilter(
        request.GET,
        queryset=Eligibility.objects.active(now)
        .filter(role__system=system)
        .select_related("role", "user", "group", "created_by")
        if can_manage
        else Eligibility.objects.none(),
        now=now,
    )
    page = filters.page_of(eligibility_filter, **paging.cursors(request.GET))
    eligibilities = page.rows
    context = {
        "system": system,
        "owners": sorted(
            (u for u in permissions.owners_of_system(system) if not u.is_service_account),
            key=lambda u: u.get_username(),
        ),
        "roles": roles,
        "can_manage": can_manage,
        "eligibilities": eligibilities,
        "filter": eligibility_filter,
        "page": page,
        "form": (form or EligibilityForm(system=system, actor=request.user, initial=_renewal(request, system, now)))
        if can_manage
        else None,
        "end_form": ReasonForm(),
    }
    if eligibility_filter.errors and status == 200:
        status = 400
    return render(request, "accessgov/systems/detail.html", context, status=status)


def _renewal(request: PortalRequest, system, now) -> dict:
    """The add form filled in to renew the eligibility named by ``?renew=<id>`` (one of this system's, current)."""
    eligibility = (
        Eligibility.objects.active(now)
        .filter(role__system=system, pk=inputs.parse_id(request.GET.get("renew")) or 0)
        .select_related("role")
        .first()
    )
    if eligibility is None:
        return {}
    return {"role": eligibility.role, "user": eligibility.user_id, "group": eligibility.group_id, "reason": "Renewed"}


@require_POST
def eligibility_add_view(request: PortalRequest, slug: str) -> HttpResponse:
    system = get_object_or_404(permissions.visible_systems(request.user, clock.now()), slug=slug)
    back = reverse("system_detail", args=[slug])
    if not permissions.can_manage_eligibility(request.user, system):
        return refused(request, "Only the system's owners manage who may request its roles.", back, status=403)
    form = EligibilityForm(request.POST, system=system, actor=request.user)
    if not form.is_valid():
        return _system_page(request, system, form=form, status=400)
    data = form.cleaned_data
    try:
        services.eligibility_add(
            request.user,
            role=data["role"],
            user=data["user"],
            group=data["group"],
            ends_at=data["ends_at"],
            reason=data["reason"],
            client_address=request.client_address,
        )
    except AccessGovError as error:
        form.add_error(None, str(error))
        return _system_page(request, system, form=form, status=status_for(error))
    # In the owner's zone and named, as pages write instants ("2026-12-07 23:30 EST").
    local_end = timezone.localtime(data["ends_at"]) if data["ends_at"] else None
    until = f" until {local_end:%Y-%m-%d %H:%M} {local_end.tzname()}" if local_end else ""
    messages.success(request, f"{data['user'] or data['group']} may now request {data['role']}{until}.")
    return redirect(back)


@require_POST
def eligibility_end_view(request: PortalRequest, pk: int) -> HttpResponse:
    eligibility = get_object_or_404(Eligibility.objects.select_related("role__system"), pk=pk)
    if not permissions.can_manage_eligibility(request.user, eligibility.role.system):
        raise Http404("No such eligibility.")
    back = reverse("system_detail", args=[eligibility.role.system.slug])
    form = ReasonForm(request.POST)
    if eligibility.ends_at is not None and eligibility.ends_at <= clock.now():
        return refused(request, "This eligibility has already ended.", back, status=409)
    reason = " ".join(form.data.get("reason", "").split())
    if not confirmed(request) or not reason:
        return confirm_page(
            request,
            title=f"End {_who(eligibility)}'s eligibility for {eligibility.role}?",
            consequences=_end_consequences(eligibility),
            confirm_label="Yes, end eligibility",
            back=back,
            ask_reason="Why (recorded, and told to anyone whose pending request is withdrawn)",
            problem="Say why it ends." if confirmed(request) else "",
        )
    try:
        services.eligibility_end(request.user, pk, reason=reason, client_address=request.client_address)
    except AccessGovError as error:
        return refused(request, error, back)
    messages.success(request, "Eligibility ended.")
    return redirect(back)


def _who(eligibility: Eligibility) -> str:
    return eligibility.user.username if eligibility.user else f"group {getattr(eligibility.group, 'name', '')}"


def _end_consequences(eligibility: Eligibility) -> list[str]:
    """What ending an eligibility does (services.eligibility_end), counted for its confirmation page."""
    if eligibility.user_id:
        people = [eligibility.user_id]
    else:
        people = list(eligibility.group.user_set.values_list("pk", flat=True)) if eligibility.group else []
    pending = (
        AccessRequest.objects.pending_at(clock.now()).filter(role=eligibility.role, requester_id__in=people).count()
    )
    running = Grant.objects.current().filter(role=eligibility.role, user_id__in=people).count()
    one = len(people) == 1
    return [
        f"{plural(len(people), 'person', 'people')} {'loses' if one else 'lose'} eligibility for "
        f"{eligibility.role} now (unless another eligibility covers {'them' if not one else 'that person'}): "
        "no new requests.",
        f"{plural(pending, 'pending request')} on this role from them "
        f"{'is' if pending == 1 else 'are'} withdrawn if nothing else makes them eligible.",
        f"{plural(running, 'grant')} already running "
        f"{'runs to its' if running == 1 else 'run to their'} own end (revoke a grant on its page to end it now).",
    ]
