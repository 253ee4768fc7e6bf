"""Access reviews: campaigns with progress, the reviewer's work list (keep/revoke, bulk keep with a
confirmation step), closing by an auditor, and the evidence CSV."""

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accessgov import exports, permissions
from accessgov.exceptions import AccessGovError
from accessgov.models import ReviewCampaign, ReviewItem
from accessgov.services import reviews as services
from accessgov.views.common import refused

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
]


def _visible_campaigns(user):
    campaigns = ReviewCampaign.objects.annotate(
        total=Count("items"),
        answered=Count("items", filter=~Q(items__decision="")),
        mine=Count("items", filter=Q(items__reviewer=user)),
        mine_open=Count("items", filter=Q(items__reviewer=user, items__decision="")),
    )
    if permissions.is_auditor(user):
        return campaigns
    # A subquery, not a join: a join on items here would multiply the counts above.
    return campaigns.filter(pk__in=ReviewItem.objects.filter(reviewer=user).values("campaign_id"))


@require_GET
def campaign_list_view(request: HttpRequest) -> HttpResponse:
    campaigns = list(_visible_campaigns(request.user).order_by("-created_at")[:100])
    for c in campaigns:
        c.percent = round(100 * c.answered / c.total) if c.total else 100
        c.bar = c.percent // 10 * 10
    return render(
        request,
        "accessgov/reviews/list.html",
        {"campaigns": campaigns, "is_auditor": permissions.is_auditor(request.user)},
    )


def _campaign(request: HttpRequest, pk: int) -> ReviewCampaign:
    campaign = _visible_campaigns(request.user).filter(pk=pk).first()
    if campaign is None:
        raise Http404("No such review.")
    return campaign


@require_GET
def campaign_detail_view(request: HttpRequest, pk: int) -> HttpResponse:
    campaign = _campaign(request, pk)
    auditor = permissions.is_auditor(request.user)
    items = campaign.items.select_related("role__system", "subject_user", "subject_group", "reviewer", "decided_by")
    mine = items.filter(reviewer=request.user)
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
        "all_items": items if auditor else None,
        "per_reviewer": [
            {**row, "bar": (round(100 * row["answered"] / row["total"]) if row["total"] else 100) // 10 * 10}
            for row in per_reviewer
        ],
        "is_auditor": auditor,
        "open": campaign.status == ReviewCampaign.Status.OPEN,
    }
    return render(request, "accessgov/reviews/detail.html", context)


@require_POST
def item_decide_view(request: HttpRequest, pk: int) -> HttpResponse:
    item = get_object_or_404(ReviewItem, pk=pk)
    _campaign(request, item.campaign_id)
    back = reverse("review_detail", args=[item.campaign_id])
    try:
        services.review_item_decide(
            request.user,
            pk,
            decision=request.POST.get("decision", ""),
            comment=request.POST.get("comment", ""),
            client_address=request.client_address,
        )
    except AccessGovError as error:
        return refused(request, error, back)
    messages.success(request, "Decision recorded.")
    return redirect(back)


@require_http_methods(["POST"])
def bulk_keep_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Keep the selected items: the first POST asks for confirmation, the second (confirm=yes) applies."""
    campaign = _campaign(request, pk)
    ids = [int(i) for i in request.POST.getlist("items") if i.isdigit()]
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


@require_POST
def campaign_close_view(request: HttpRequest, pk: int) -> HttpResponse:
    _campaign(request, pk)
    if not permissions.is_auditor(request.user):
        raise PermissionDenied("Only auditors close access reviews.")
    try:
        services.review_campaign_close(request.user, pk, client_address=request.client_address)
    except AccessGovError as error:
        return refused(request, error, reverse("review_detail", args=[pk]))
    messages.success(request, "Review closed; its decisions were applied.")
    return redirect("review_detail", pk=pk)


@require_GET
def campaign_export_view(request: HttpRequest, pk: int) -> HttpResponse:
    campaign = _campaign(request, pk)
    if not permissions.is_auditor(request.user):
        raise PermissionDenied("The review evidence is for auditors.")
    items = campaign.items.select_related("role__system", "subject_user", "subject_group", "reviewer").order_by("pk")
    rows = (
        (
            i.pk,
            (i.subject_user.username if i.subject_user else f"group:{i.subject_group.name}"),
            i.role.name,
            i.role.system.name,
            i.reviewer.username if i.reviewer else "",
            i.decision,
            i.comment,
            i.decided_at,
            i.applied_at,
            i.outcome,
        )
        for i in items.iterator(chunk_size=2000)
    )
    return exports.stream_csv(
        request,
        filename=f"access-review-{campaign.pk}.csv",
        header=EVIDENCE_COLUMNS,
        rows=rows,
        report="access review",
        filters={"campaign": campaign.pk},
        row_count=items.count,
    )
