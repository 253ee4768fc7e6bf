"""Access reviews: campaigns with progress, opening one by hand, the reviewer's work list (keep/revoke
with decision helpers, bulk keep with a confirmation step), reassignment and closing by an auditor, and
the evidence CSV."""

from datetime import datetime, timedelta
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q
from django.http import Http404, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST, require_safe

from accessgov import clock, exports, filters, inputs, paging, permissions, selectors
from accessgov.exceptions import AccessGovError, PolicyViolation
from accessgov.forms import ReviewCampaignForm, ReviewReassignForm
from accessgov.http import PortalRequest
from accessgov.models import AccessEvent, ReviewCampaign, ReviewItem, User
from accessgov.services import reviews as services
from accessgov.views.common import confirm_page, confirmed, local_time, plural, refused

EVIDENCE_COLUMNS = [
    "item",
    "subject",
    "role",
    "system",
    "reviewer",
    "decision",
    "comment",
    "decided_at",
    "applied_at",
    "outcome",
    # What the item certifies and why it came out so (an auditor reading the file alone, a probe's finding).
    # Named as in the evidence pack's review_items.csv.
    "item_kind",
    "eligibility_id",
    "grant_id",
    "decided_by",
    "answered",
    # The campaign's rule for unanswered items (revoke, keep_and_flag), on the items whose outcome it set.
    "no_response_rule",
    # The eligibility's end before and after the close moved it (empty: the close did not move it; "before"
    # empty and "after" set: it had no end). From the review.applied events, the record of the change.
    "eligibility_ends_before",
    "eligibility_ends_after",
]


def _visible_campaigns(user):
    return selectors.campaign_list(user)


@require_safe
def campaign_list_view(request: PortalRequest) -> HttpResponse:
    now = clock.now()
    campaign_filter = filters.CampaignFilter(request.GET, queryset=_visible_campaigns(request.user), now=now)
    page = filters.page_of(campaign_filter, **paging.cursors(request.GET))
    campaigns = page.rows
    for c in campaigns:
        c.percent = round(100 * c.answered / c.total) if c.total else 100
        c.bar = c.percent // 10 * 10
        c.overdue = c.is_overdue_at(now)
    return render(
        request,
        "accessgov/reviews/list.html",
        {
            "filter": campaign_filter,
            "page": page,
            "campaigns": campaigns,
            "is_auditor": permissions.is_auditor(request.user),
        },
        status=400 if campaign_filter.errors else 200,
    )


@require_http_methods(["GET", "HEAD", "POST"])
def campaign_create_view(request: PortalRequest) -> HttpResponse:
    if not permissions.is_auditor(request.user):
        raise PermissionDenied("Only auditors open access reviews.")
    form = ReviewCampaignForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            campaign = services.review_campaign_create(
                request.user,
                name=data["name"],
                systems=list(data["systems"]),
                due_at=data["due_at"],
                no_response=data["no_response"],
                keep_for=timedelta(days=data["keep_days"]),
                grace=timedelta(days=data["grace_days"]),
                long_grant_threshold=timedelta(days=data["long_grant_days"]),
                client_address=request.client_address,
            )
        except AccessGovError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, f"Review opened with {campaign.items.count()} items; reviewers were told.")
            return redirect("review_detail", pk=campaign.pk)
    return render(request, "accessgov/reviews/new.html", {"form": form}, status=400 if form.errors else 200)


def _campaign(
    request: PortalRequest, pk: int
) -> Any:  # a ReviewCampaign annotated with total, answered, mine, mine_open
    campaign: Any = _visible_campaigns(request.user).filter(pk=pk).first()  # annotated with its counts
    if campaign is None:
        raise Http404("No such review.")
    return campaign


@require_safe
def campaign_detail_view(request: PortalRequest, pk: int) -> HttpResponse:
    return _detail(request, _campaign(request, pk))


def _detail(
    request: PortalRequest,
    campaign: ReviewCampaign,
    *,
    item_error: tuple[int, str, str] | None = None,
    status: int = 200,
) -> HttpResponse:
    """The campaign page; ``item_error`` (item id, message, comment typed) puts a refused decision's
    reason next to that item's field, with what was typed kept."""
    auditor = permissions.is_auditor(request.user)
    now = clock.now()
    items = selectors.review_items_with_helpers(campaign.items.all(), now)
    mine = items.filter(reviewer=request.user)
    all_items = list(items) if auditor else None
    per_reviewer = (
        campaign.items.values("reviewer__username")
        .annotate(total=Count("pk"), answered=Count("pk", filter=~Q(decision="")))
        .order_by("reviewer__username")
    )
    context = {
        "campaign": campaign,
        "percent": (percent := round(100 * campaign.answered / campaign.total) if campaign.total else 100),
        "bar": percent // 10 * 10,
        "my_items": mine,
        "all_items": all_items,
        "per_reviewer": [
            {**row, "bar": (round(100 * row["answered"] / row["total"]) if row["total"] else 100) // 10 * 10}
            for row in per_reviewer
        ],
        "is_auditor": auditor,
        "open": campaign.status == ReviewCampaign.Status.OPEN,
        "overdue": campaign.is_overdue_at(now),
        "reassign_form": _reviewer_choices(campaign, all_items) if all_items is not None else None,
        "error_item": item_error[0] if item_error else None,
        "error_message": item_error[1] if item_error else "",
        "error_comment": item_error[2] if item_error else "",
    }
    return render(request, "accessgov/reviews/detail.html", context, status=status)


@require_POST
def item_decide_view(request: PortalRequest, pk: int) -> HttpResponse:
    item = get_object_or_404(ReviewItem, pk=pk)
    campaign = _campaign(request, item.campaign_id)
    back = reverse("review_detail", args=[item.campaign_id])
    comment = request.POST.get("comment", "")
    try:
        services.review_item_decide(
            request.user,
            pk,
            decision=request.POST.get("decision", ""),
            comment=comment,
            client_address=request.client_address,
        )
    except PolicyViolation as error:
        # Something the person can fix in the row (a reason to revoke): say so there, keep what was typed.
        return _detail(request, campaign, item_error=(pk, str(error), comment), status=400)
    except AccessGovError as error:
        return refused(request, error, back)
    messages.success(request, "Decision recorded.")
    return redirect(back)


@require_http_methods(["POST"])
def bulk_keep_view(request: PortalRequest, pk: int) -> HttpResponse:
    """Keep the selected items: the first POST asks for confirmation, the second (confirm=yes) applies."""
    campaign = _campaign(request, pk)
    ids = [pk for pk in map(inputs.parse_id, request.POST.getlist("items")) if pk is not None]
    items = list(
        campaign.items.filter(pk__in=ids, reviewer=request.user).select_related(
            "role__system", "subject_user", "subject_group"
        )
    )
    back = reverse("review_detail", args=[pk])
    if not items:
        return refused(request, "Select at least one of your items to keep.", back, status=400)
    if request.POST.get("confirm") != "yes":
        return render(request, "accessgov/reviews/confirm_keep.html", {"campaign": campaign, "items": items})
    try:
        for item in items:
            services.review_item_decide(request.user, item.pk, decision="keep", client_address=request.client_address)
    except AccessGovError as error:
        return refused(request, error, back)
    messages.success(request, f"Kept {len(items)} item{'s' if len(items) != 1 else ''}.")
    return redirect(back)


def _reviewer_choices(campaign: ReviewCampaign, items: list) -> ReviewReassignForm:
    """The reassign form, and on each item the candidates who are not its subject (offering one led to a refusal)."""
    form = ReviewReassignForm(candidates=_reassign_candidates(campaign))
    candidates = list(form.fields["reviewer"].queryset)
    subjects = services.subjects_by_item(items)
    for item in items:
        item.reviewer_choices = [u for u in candidates if u.pk not in subjects.get(item.pk, set())]
    return form


def _reassign_candidates(campaign: ReviewCampaign):
    """Owners of the campaign's systems and auditors (the service refuses the item's own subject)."""
    owners = {u.pk for system in campaign.systems.all() for u in permissions.owners_of_system(system)}
    return User.objects.filter(pk__in=owners | {u.pk for u in permissions.auditors()}).order_by("username")


@require_POST
def item_reassign_view(request: PortalRequest, pk: int) -> HttpResponse:
    item = get_object_or_404(ReviewItem, pk=pk)
    campaign = _campaign(request, item.campaign_id)
    if not permissions.is_auditor(request.user):
        raise PermissionDenied("Only auditors reassign review items.")
    back = reverse("review_detail", args=[campaign.pk]) + "#all"
    form = ReviewReassignForm(request.POST, candidates=_reassign_candidates(campaign))
    if not form.is_valid():
        return refused(request, "Choose one of the system's owners or an auditor.", back, status=400)
    try:
        services.review_item_reassign(
            request.user, pk, reviewer=form.cleaned_data["reviewer"], client_address=request.client_address
        )
    except AccessGovError as error:
        return refused(request, error, back)
    messages.success(request, f"Item {pk} is now with {form.cleaned_data['reviewer']}.")
    return redirect(back)


@require_POST
def campaign_close_view(request: PortalRequest, pk: int) -> HttpResponse:
    campaign = _campaign(request, pk)
    if not permissions.is_auditor(request.user):
        raise PermissionDenied("Only auditors close access reviews.")
    back = reverse("review_detail", args=[pk])
    if campaign.status != ReviewCampaign.Status.OPEN:
        return refused(request, "This campaign is already closed.", back, status=409)
    if not confirmed(request):
        return confirm_page(
            request,
            title=f"Close “{campaign.name}” and apply it?",
            consequences=_close_consequences(campaign, clock.now()),
            confirm_label="Yes, close and apply",
            back=back,
        )
    try:
        services.review_campaign_close(request.user, pk, client_address=request.client_address)
    except AccessGovError as error:
        return refused(request, error, reverse("review_detail", args=[pk]))
    messages.success(request, "Review closed; its decisions were applied.")
    return redirect("review_detail", pk=pk)


def _close_consequences(campaign: ReviewCampaign, now) -> list[str]:
    preview = services.review_campaign_close_preview(campaign.pk)
    lines = []
    if campaign.due_at > now:
        lines.append(f"The review is due {local_time(campaign.due_at)}; reviewers can no longer answer after this.")
    revoked = f"{plural(preview['revoked'], 'item')} revoked"
    if preview["unanswered_revoked"]:
        revoked += f" ({preview['unanswered_revoked']} of them unanswered, by the no-response rule)"
    lines.append(revoked + ".")
    grants, eligibilities, people = (
        preview["grants_end"],
        preview["eligibilities_end"],
        preview["people_lose_eligibility"],
    )
    lines.append(f"{plural(grants, 'active grant')} {'ends' if grants == 1 else 'end'} now.")
    lines.append(
        f"{plural(eligibilities, 'eligibility', 'eligibilities')} {'ends' if eligibilities == 1 else 'end'}: "
        f"{plural(people, 'person', 'people')} {'loses' if people == 1 else 'lose'} eligibility."
    )
    kept = f"{plural(preview['kept'], 'item')} kept, for at most {campaign.keep_for.days} more days"
    if preview["kept_flagged"]:
        kept += f"; {plural(preview['kept_flagged'], 'unanswered item')} kept and flagged"
    lines.append(kept + ".")
    lines.append("The review cannot be reopened.")
    return lines


@require_GET
def campaign_export_view(request: PortalRequest, pk: int) -> HttpResponseBase:
    campaign = _campaign(request, pk)
    if not permissions.is_auditor(request.user):
        raise PermissionDenied("The review evidence is for auditors.")
    items = campaign.items.select_related(
        "role__system", "subject_user", "subject_group", "reviewer", "decided_by"
    ).order_by("pk")
    # As the evidence pack's review_items.csv says it: answered, or not by the due date (empty before it).
    past_due = campaign.closed_at is not None or clock.now() >= campaign.due_at
    ends = _eligibility_ends_moved(campaign)
    rows = (
        (
            i.pk,
            (i.subject_user.username if i.subject_user else f"group:{getattr(i.subject_group, 'name', '')}"),
            i.role.name,
            i.role.system.name,
            i.reviewer.username if i.reviewer else "",
            i.decision,
            i.comment,
            i.decided_at,
            i.applied_at,
            i.outcome,
            "grant" if i.grant_id else "eligibility",
            i.eligibility_id or "",
            i.grant_id or "",
            i.decided_by.username if i.decided_by and i.decision else "",
            "true" if i.decision else "false" if past_due else "",
            campaign.no_response if i.applied_at and not i.decision else "",
            *ends.get(i.pk, ("", "")),
        )
        for i in items.iterator(chunk_size=2000)
    )
    return exports.stream_csv(
        request,
        filename=exports.file_name(f"access-review-{campaign.pk}"),
        header=EVIDENCE_COLUMNS,
        rows=rows,
        report="access review",
        filters={"campaign": campaign.pk},
        row_count=items.count,
        parameters=(),
    )


def _eligibility_ends_moved(campaign: ReviewCampaign) -> dict[int, tuple[datetime | str, datetime | str]]:
    """Item id → the eligibility's end before and after the campaign's close moved it, as its review.applied
    event recorded them (all written at the close's instant: the index on type and time finds them)."""
    if campaign.closed_at is None:
        return {}
    moved = AccessEvent.objects.filter(
        event_type=AccessEvent.Type.REVIEW_APPLIED,
        occurred_at=campaign.closed_at,
        data__campaign_id=campaign.pk,
        data__has_key="eligibility_ends_after",
    ).values_list("data", flat=True)
    return {
        data["item_id"]: (
            datetime.fromisoformat(data["eligibility_ends_before"]) if data["eligibility_ends_before"] else "",
            datetime.fromisoformat(data["eligibility_ends_after"]),
        )
        for data in moved
    }
