"""My access (with countdowns), extending and releasing, and the grants list for approvers/auditors."""

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST, require_safe

from accessgov import catalog, clock, exports, filters, paging, permissions, selectors
from accessgov.activity import selectors as activity_selectors
from accessgov.exceptions import AccessGovError
from accessgov.forms import ExtensionForm, ReasonForm
from accessgov.http import PortalRequest
from accessgov.models import Grant
from accessgov.services import access_requests as request_services
from accessgov.services import grants as services
from accessgov.views.common import confirm_page, confirmed, invalid_filters, local_time, refused, status_for


@require_safe
def my_access_view(request: PortalRequest) -> HttpResponse:
    now = clock.now()
    user_id = request.user.pk
    context = {
        "active_grants": selectors.MY_ACTIVE_GRANTS.list(user_id=user_id, now=now),
        "scheduled_grants": selectors.MY_SCHEDULED_GRANTS.list(user_id=user_id, now=now),
        "pending_requests": selectors.MY_PENDING_REQUESTS.list(user_id=user_id, now=now),
        "recent_ended": selectors.MY_RECENTLY_ENDED_GRANTS.list(user_id=user_id),
        "now": now,
    }
    return render(request, "accessgov/grants/my_access.html", context)


def _visible_grant(request: PortalRequest, pk: int) -> Grant:
    return permissions.get_visible_grant_or_404(
        request.user, pk, Grant.objects.select_related("role__system", "user", "access_request")
    )


@require_safe
def grant_detail_view(request: PortalRequest, pk: int) -> HttpResponse:
    return _grant_detail(request, _visible_grant(request, pk))


def _grant_detail(
    request: PortalRequest, grant: Grant, *, revoke_form: ReasonForm | None = None, status: int = 200
) -> HttpResponse:
    now = clock.now()
    activity = activity_selectors.grant_activity(grant, request.user)
    context = {
        "grant": grant,
        "now": now,
        "active": grant.is_active_at(now),
        "timeline": selectors.grant_timeline(grant),
        # Issue 18: why it ended (a review names its campaign and the reviewer's reason), from its end event.
        "end_reason_text": selectors.grant_end_reason(grant),
        "can_revoke": permissions.can_revoke_grant(request.user, grant),
        "revoke_form": revoke_form or ReasonForm(),
        "activity": activity,
        "can_sign_off": {
            f.pk for f in activity.findings if f.is_open and permissions.can_sign_off_finding(request.user, f)
        },
    }
    return render(request, "accessgov/grants/detail.html", context, status=status)


@require_POST
def grant_release_view(request: PortalRequest, pk: int) -> HttpResponse:
    grant = _visible_grant(request, pk)
    if not permissions.can_release_grant(request.user, grant):
        # Refused before the confirmation page, which would ask someone else to release "your" access.
        return refused(
            request, "Only the person who holds a grant can release it.", reverse("grant_detail", args=[pk]), status=403
        )
    if not confirmed(request) and grant.status == grant.Status.SCHEDULED:
        return confirm_page(
            request,
            title=f"Cancel your scheduled access to {grant.role}?",
            consequences=[
                f"It would have started at {local_time(grant.starts_at)}; it will not start, and nothing was given at "
                f"{grant.role.system.name}.",
                "To work there later you need a new request.",
            ],
            confirm_label="Yes, cancel it",
            back=reverse("my_access"),
        )
    if not confirmed(request):
        return confirm_page(
            request,
            title=f"Release your access to {grant.role}?",
            consequences=[
                f"1 grant ends now: your access to {grant.role} (it had until {local_time(grant.expires_at)}).",
                f"AccessGov removes it at {grant.role.system.name}; to work there again you need a new request.",
            ],
            confirm_label="Yes, release it now",
            back=reverse("my_access"),
        )
    try:
        grant = services.grant_release(request.user, pk, client_address=request.client_address)
    except AccessGovError as error:
        return refused(request, error, reverse("my_access"))
    if grant.status == grant.Status.EXPIRED:
        messages.info(request, f"Your access to {grant.role} had already ended; its removal at the target is queued.")
    elif grant.provisioning_state == grant.Provisioning.NOT_APPLIED and grant.activated_at is None:
        messages.success(request, f"You cancelled your scheduled access to {grant.role}.")
    else:
        messages.success(request, f"You released your access to {grant.role}.")
    return redirect("my_access")


@require_POST
def grant_revoke_view(request: PortalRequest, pk: int) -> HttpResponse:
    grant = _visible_grant(request, pk)
    form = ReasonForm(request.POST)
    if not form.is_valid():
        if not permissions.can_revoke_grant(request.user, grant):
            return refused(request, "You may not revoke this access.", reverse("grant_detail", args=[pk]), status=403)
        form.errors["reason"] = form.error_class(["Say why you revoke this access: the holder will read it."])
        return _grant_detail(request, grant, revoke_form=form, status=400)
    if not confirmed(request):
        if not permissions.can_revoke_grant(request.user, grant):
            return refused(request, "You may not revoke this access.", reverse("grant_detail", args=[pk]), status=403)
        return confirm_page(
            request,
            title=f"Revoke {grant.user}'s access to {grant.role}?",
            consequences=[
                f"1 grant ends now: {grant.user} loses access to {grant.role} "
                f"(it had until {local_time(grant.expires_at)}).",
                f"AccessGov removes it at {grant.role.system.name}; {grant.user} is told, with your reason: "
                f"“{form.cleaned_data['reason']}”.",
            ],
            confirm_label="Yes, revoke access now",
            back=reverse("grant_detail", args=[pk]),
            keep=("reason",),
        )
    try:
        grant = services.grant_revoke(
            request.user, pk, reason=form.cleaned_data["reason"], client_address=request.client_address
        )
    except AccessGovError as error:
        return refused(request, error, reverse("grant_detail", args=[pk]))
    if grant.status == grant.Status.EXPIRED:
        messages.info(request, f"{grant.user}'s access to {grant.role} had already ended; its removal is queued.")
    else:
        messages.success(request, f"Revoked {grant.user}'s access to {grant.role}.")
    return redirect("grant_detail", pk=pk)


@require_http_methods(["GET", "HEAD", "POST"])
def grant_extend_view(request: PortalRequest, pk: int) -> HttpResponse:
    grant = _visible_grant(request, pk)
    if not permissions.can_release_grant(request.user, grant):
        # They may see the grant (an approver, an owner, an auditor): an action they may not take is a 403.
        raise PermissionDenied("Only the person who holds this access can ask to extend it.")
    form = ExtensionForm(request.POST or None, initial={"duration": "1h", "ends_at": grant.expires_at})
    status = 200
    if request.method != "POST" and (refusal := request_services.extension_refusal(request.user, grant, clock.now())):
        # Said before anything is typed (break-glass, ended, no longer eligible, already at the role's maximum).
        return render(request, "accessgov/grants/extend.html", {"grant": grant, "refusal": str(refusal)})
    if request.method == "POST" and form.is_valid():
        try:
            extension = request_services.access_request_submit_extension(
                request.user,
                grant_id=pk,
                duration=form.cleaned_data["duration"],
                justification=form.cleaned_data["justification"],
                ticket=form.cleaned_data["ticket"],
                seen_expires_at=form.cleaned_data["ends_at"],
                client_address=request.client_address,
            )
        except AccessGovError as error:
            form.add_error(None, str(error))
            status = status_for(error)
        else:
            if extension.status == "approved":
                messages.success(request, "Extended.")
                return redirect("my_access")
            messages.success(request, "Extension requested. Approvers have been notified.")
            return redirect("request_detail", pk=extension.pk)
    elif request.method == "POST":
        status = 400
    return render(request, "accessgov/grants/extend.html", {"grant": grant, "form": form}, status=status)


GRANTS_PAGE_SIZE = filters.PAGE_SIZE
GRANTS_EXPORT_COLUMNS = [
    "grant_id",
    "request_id",
    "user",
    "system",
    "role",
    "status",
    "break_glass",
    "starts_at",
    "expires_at",
    "ended_at",
    "end_reason",
]


def _grant_filter(request: PortalRequest) -> filters.GrantFilter:
    grant_filter = filters.GrantFilter(request.GET, queryset=selectors.grant_list(request.user))
    catalog.limit_to_catalogue(grant_filter.form, request.user, grant_filter.now)
    return grant_filter


@require_safe
def grants_list_view(request: PortalRequest) -> HttpResponse:
    """Active and past grants I may see (approvers: their roles; owners: their systems; auditors: all):
    searchable, sortable, keyset-paged; the CSV reads the same filterset."""
    grant_filter = _grant_filter(request)
    # The columns the table shows: loading whole users, roles and systems cost a third of the page.
    rows = grant_filter.qs.only(*filters.GRANT_LIST_COLUMNS) if grant_filter.is_valid() else None
    page = filters.page_of(grant_filter, rows, **paging.cursors(request.GET), size=GRANTS_PAGE_SIZE)
    return render(
        request,
        "accessgov/grants/list.html",
        {"filter": grant_filter, "page": page, "grants": page.rows, "now": clock.now()},
        status=400 if grant_filter.errors else 200,
    )


@require_GET
def grants_export_view(request: PortalRequest) -> HttpResponseBase:
    """The grants list as CSV: exactly the page's filters and order, every page."""
    grant_filter = _grant_filter(request)
    if not grant_filter.is_valid():
        return invalid_filters(grant_filter.form)
    rows = grant_filter.qs.only(*filters.GRANT_LIST_COLUMNS, "access_request_id")
    now = grant_filter.now  # what each grant is at the export's instant: an expiry not yet swept is expired
    return exports.stream_csv(
        request,
        filename=exports.file_name("grants"),
        header=GRANTS_EXPORT_COLUMNS,
        rows=(
            (
                g.pk,
                g.access_request_id,
                g.user.username,
                g.role.system.name,
                g.role.name,
                g.status_at(now),
                "true" if g.is_break_glass else "false",
                g.starts_at,
                g.expires_at,
                g.ended_at_as_of(now),
                g.end_reason_at(now),
            )
            for g in rows.iterator(chunk_size=2000)
        ),
        report="grants",
        filters=grant_filter.export_filters(),
        row_count=rows.count,
        parameters=grant_filter.form.fields,
    )
