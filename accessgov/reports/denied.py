"""Denied requests: who was refused what, by whom, and why."""

from datetime import datetime

import django_filters
from django.db.models import (
    Exists,
    F,
    OuterRef,
    QuerySet,
    Subquery,
)

from accessgov import permissions
from accessgov.models import AccessRequest, Decision, User
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
    return permissions.visible_access_requests(user).filter(status=AccessRequest.Status.DENIED)


def _denial(field: str) -> Subquery:
    return Subquery(
        Decision.objects.filter(access_request_id=OuterRef("pk"), outcome=DENY).order_by("created_at").values(field)[:1]
    )


class DeniedFilter(ReportFilterSet):
    """Denied requests; the period is when they were denied."""

    sort_keys = {
        "id": SortKey("Request", F("pk"), "int"),
        "requester": SortKey("Requester", F("requester__username")),
        "system": SortKey("System", F("role__system__name")),
        "decided_at": SortKey("Denied", F("decided_at"), "datetime"),
        "denied_by": SortKey("Denied by", _denial("approver__username"), nullable=True),
    }
    period_field = "decided_at"

    system = system_filter("role__system")
    role = role_filter()
    user = user_filter("requester__username", "Requester")
    approver = django_filters.CharFilter(method="filter_approver", label="Denied by")
    sort = sort_filter(sort_keys)

    class Meta:
        model = AccessRequest
        form = ReportForm
        fields = ["since", "until", "system", "role", "user", "approver", "sort"]

    def filter_approver(self, queryset, name, value):
        denial = Decision.objects.filter(access_request=OuterRef("pk"), outcome=DENY, approver__username__iexact=value)
        return queryset.filter(Exists(denial))


def denied_rows(qs: QuerySet[AccessRequest]) -> QuerySet[AccessRequest]:
    return qs.select_related("requester", "role__system").annotate(
        denied_by=_denial("approver__username"),
        denial_comment=_denial("comment"),
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
