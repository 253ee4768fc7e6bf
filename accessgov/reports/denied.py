"""Denied requests: who was refused what, by whom, and why."""

from datetime import datetime

from django.db.models import F, FilteredRelation, Q, QuerySet

from accessgov import permissions
from accessgov.models import AccessRequest, User
from accessgov.reports.base import (
    APPROVE,
    DENY,
    Report,
    ReportFilterSet,
    ReportForm,
    SortKey,
    decider_names,
    names,
    role_filter,
    sort_filter,
    system_filter,
    user_filter,
)

DENIED_COLUMNS = [
    "request_id",
    "kind",
    "requester",
    "system",
    "role",
    "created_at",
    "decided_at",
    "requested_duration_seconds",
    "justification",
    "ticket",
    "denied_by",
    "denial_comment",
    "approved_by",
]


def denied_base(user: User) -> QuerySet[AccessRequest]:
    """Denied requests ``user`` may see, with ``denial``: the request's one deny decision (a denial ends the
    request; the ``decision_one_denial`` constraint), joined where who denied or why is read. A subquery per row
    took the page 85 ms sorted or filtered by who denied, at 3,000 denials (issue 22's probe)."""
    return (
        permissions.visible_access_requests(user)
        .filter(status=AccessRequest.Status.DENIED)
        .alias(denial=FilteredRelation("decisions", condition=Q(decisions__outcome=DENY)))
    )


class DeniedFilter(ReportFilterSet):
    """Denied requests; the period is when they were denied."""

    sort_keys = {
        "id": SortKey("Request", F("pk"), "int"),
        "requester": SortKey("Requester", F("requester__username")),
        "system": SortKey("System", F("role__system__name")),
        "decided_at": SortKey("Denied", F("decided_at"), "datetime"),
        "denied_by": SortKey("Denied by", F("denial__approver__username"), nullable=True),
    }
    period_field = "decided_at"

    system = system_filter("role__system")
    role = role_filter()
    user = user_filter("requester__username", "Requester")
    approver = user_filter("denial__approver__username", "Denied by")
    sort = sort_filter(sort_keys)

    class Meta:
        model = AccessRequest
        form = ReportForm
        fields = ["since", "until", "system", "role", "user", "approver", "sort"]


def denied_rows(qs: QuerySet[AccessRequest]) -> QuerySet[AccessRequest]:
    return qs.select_related("requester", "role__system").annotate(
        denied_by=F("denial__approver__username"),
        denial_comment=F("denial__comment"),
        approved_by=decider_names("pk", APPROVE),
    )


def denied_csv_row(access_request: AccessRequest, now: datetime) -> list:
    """One row per denied request. The columns (DENIED_COLUMNS; stable names, times in UTC):

    request_id; kind: access or extension; requester, system, role
    created_at: submitted; decided_at: denied
    requested_duration_seconds; justification, ticket: as the requester wrote them
    denied_by: the approver who denied it; denial_comment: the reason they gave (the requester reads it)
    approved_by: approvals recorded before the denial (roles needing several), comma-separated
    """
    return [
        access_request.pk,
        access_request.kind,
        access_request.requester.username,
        access_request.role.system.name,
        access_request.role.name,
        access_request.created_at,
        access_request.decided_at,
        int(access_request.requested_duration.total_seconds()),  # whole seconds, as the API gives it
        access_request.justification,
        access_request.ticket,
        access_request.denied_by or "",  # type: ignore[attr-defined]  # annotated by denied_rows
        access_request.denial_comment or "",  # type: ignore[attr-defined]
        ",".join(names(access_request.approved_by)),  # type: ignore[attr-defined]
    ]


DENIED = Report(
    "denied_requests",
    "Denied requests",
    DeniedFilter,
    denied_base,
    denied_rows,
    DENIED_COLUMNS,
    denied_csv_row,
    page_fields=(
        *("kind", "justification", "ticket", "created_at", "decided_at"),
        *("requester__username", "role__name", "role__system__name"),
    ),
)
