"""The read side: querysets for pages, with the joins they need. Every "who has access" read uses
``Grant.objects.active(now)``."""

from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Count, Exists, F, OuterRef, Prefetch, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce

from accessgov import dbsql, permissions
from accessgov.models import (
    AccessEvent,
    AccessRequest,
    BreakGlassFollowUp,
    Decision,
    DriftFinding,
    Grant,
    GrantActivity,
    OutboxItem,
    ReviewCampaign,
    System,
    User,
)
from accessgov.precompiled import Precompiled

# The requester's own reads on every home and "my access" page, precompiled (accessgov/precompiled.py): the
# querysets below are their one definition; the pages run ``.list``/``.count`` of the same reads.
MY_ACTIVE_GRANTS = Precompiled(
    "my_active_grants",
    lambda user_id, now: (
        Grant.objects.active(now).filter(user_id=user_id).select_related("role__system").order_by("expires_at")
    ),
    user_id=int,
    now=datetime,
)
MY_SCHEDULED_GRANTS = Precompiled(
    "my_scheduled_grants",
    lambda user_id, now: (
        Grant.objects.filter(user_id=user_id, status=Grant.Status.SCHEDULED, expires_at__gt=now)
        .select_related("role__system")
        .order_by("starts_at")
    ),
    user_id=int,
    now=datetime,
)
MY_PENDING_REQUESTS = Precompiled(
    "my_pending_requests",
    lambda user_id, now: (
        AccessRequest.objects.pending_at(now)  # one past its deadline has lapsed, swept or not
        .filter(requester_id=user_id)
        .select_related("role__system")
        .annotate(approvals=Count("decisions", filter=Q(decisions__outcome=Decision.Outcome.APPROVE)))
    ),
    user_id=int,
    now=datetime,
)
MY_RECENTLY_ENDED_GRANTS = Precompiled(
    "my_recently_ended_grants",
    lambda user_id: (
        Grant.objects.filter(user_id=user_id, status__in=[Grant.Status.EXPIRED, Grant.Status.REVOKED])
        .select_related("role__system")
        .order_by("-ended_at")[:10]
    ),
    user_id=int,
)


def my_active_grants(user: User, now: datetime) -> QuerySet[Grant]:
    return MY_ACTIVE_GRANTS.queryset(user_id=user.pk, now=now)


def my_scheduled_grants(user: User, now: datetime) -> QuerySet[Grant]:
    return MY_SCHEDULED_GRANTS.queryset(user_id=user.pk, now=now)


def my_pending_requests(user: User, now: datetime) -> QuerySet[AccessRequest]:
    return MY_PENDING_REQUESTS.queryset(user_id=user.pk, now=now)


def my_requests(user: User) -> QuerySet[AccessRequest]:
    return AccessRequest.objects.filter(requester=user).select_related("role__system", "grant")


def approver_queue(
    user: User, now: datetime, *, system_id: int | None = None, risk_tier: str | None = None
) -> QuerySet[AccessRequest]:
    """Pending requests ``user`` may decide now: never their own, never ones they already decided, never
    those of someone they are not independent of (``permissions.undecidable_requester_ids``: an admin who
    made their account lately, say — kept up to 30 s per process; each decision checks again), oldest first."""
    already = Decision.objects.filter(access_request=OuterRef("pk"), approver=user)
    # Approvals so far as a correlated count, not a join + GROUP BY over every selected column: the
    # grouped form took PostgreSQL ~10 ms to plan for a 1 ms query.
    approvals = (
        Decision.objects.filter(access_request=OuterRef("pk"), outcome=Decision.Outcome.APPROVE)
        .order_by()
        .values("access_request")
        .annotate(n=Count("pk"))
        .values("n")
    )
    qs = (
        AccessRequest.objects.pending_at(now)
        .filter(role_id__in=permissions.decidable_role_ids(user))
        .exclude(requester=user)
        .exclude(Exists(already))
        .select_related("role__system", "requester", "extends_grant")
        .annotate(approvals=Coalesce(Subquery(approvals), 0))
        .order_by("created_at", "pk")
    )
    not_independent = permissions.undecidable_requester_ids(user, now)
    if not_independent:
        qs = qs.exclude(requester_id__in=sorted(not_independent))
    if system_id:
        qs = qs.filter(role__system_id=system_id)
    if risk_tier:
        qs = qs.filter(role__risk_tier=risk_tier)
    return qs


def approver_queue_size(user: User, now: datetime, role_ids: list[int]) -> int:
    """How many requests wait for ``user`` (the navigation badge): the queue's conditions, counted
    without its joins and annotations. It runs on every page an approver opens, so it is one plain
    statement: building it with the ORM (an ``Exists`` over ``OuterRef``) took longer than answering it."""
    if not role_ids:
        return 0
    ops = connection.ops
    requests, decisions = ops.quote_name(AccessRequest._meta.db_table), ops.quote_name(Decision._meta.db_table)
    sql = (
        f"SELECT COUNT(*) FROM {requests} ar WHERE ar.status = %s AND ar.lapses_at > %s "  # noqa: S608 - fixed SQL; values are bound params
        f"AND {dbsql.any_of_sql('ar.role_id')} AND ar.requester_id <> %s "
        f"AND NOT EXISTS (SELECT 1 FROM {decisions} d WHERE d.access_request_id = ar.id AND d.approver_id = %s)"
    )
    status, at = AccessRequest.Status.PENDING.value, ops.adapt_datetimefield_value(now)
    params = [status, at, dbsql.int_array_param(role_ids), user.pk, user.pk]
    with dbsql.prepared_cursor() as cursor:  # the same statement for every approver: prepared
        cursor.execute(sql, params)
        return cursor.fetchone()[0]


def requester_context(access_request: AccessRequest, now: datetime) -> dict:
    """What an approver sees beside a request: the requester's current access and recent history."""
    requester = access_request.requester
    recent = (
        AccessRequest.objects.filter(requester=requester, created_at__gte=now - timedelta(days=90))
        .exclude(pk=access_request.pk)
        .select_related("role__system")
        .order_by("-created_at")
    )
    return {
        "active_grants": list(Grant.objects.active(now).filter(user=requester).select_related("role__system")),
        "recent_requests": list(recent[:5]),
        "denials_90d": recent.filter(status=AccessRequest.Status.DENIED).count(),
        "requests_90d": recent.count() + 1,
    }


def requester_contexts(access_requests: list[AccessRequest], now: datetime) -> dict[int, dict]:
    """``requester_context`` for a whole page of requests (the approver queue) in two queries, keyed by
    request id: the requesters' active grants, and their request and denial counts over 90 days
    (without ``recent_requests``, which the queue does not show)."""
    if not access_requests:
        return {}
    requester_ids = sorted({r.requester_id for r in access_requests})
    since = now - timedelta(days=90)
    grants: dict[int, list[Grant]] = {pk: [] for pk in requester_ids}
    for grant in REQUESTERS_ACTIVE_GRANTS.list(user_ids=requester_ids, now=now):
        grants[grant.user_id].append(grant)
    counts = {
        requester_id: (total, denied)
        for requester_id, total, denied in REQUESTERS_REQUEST_COUNTS.list(user_ids=requester_ids, since=since)
    }
    contexts = {}
    for access_request in access_requests:
        total, denied = counts.get(access_request.requester_id, (0, 0))
        inside = access_request.created_at >= since  # the request itself is not part of its history
        contexts[access_request.pk] = {
            "active_grants": grants[access_request.requester_id],
            "denials_90d": denied - int(inside and access_request.status == AccessRequest.Status.DENIED),
            "requests_90d": total - int(inside) + 1,
        }
    return contexts


# ``requester_contexts``' two reads (every approver queue page), precompiled (issue 22). Of each active grant
# only what the cards show (its role's name): not whole roles and systems (their connector settings
# included) for every requester on the page.
REQUESTERS_ACTIVE_GRANTS = Precompiled(
    "requesters_active_grants",
    lambda user_ids, now: (
        Grant.objects.active(now)
        .filter(user_id__anyof=user_ids)
        .select_related("role__system")
        .only("user", "role__name", "role__system__name")
    ),
    user_ids=list,
    now=datetime,
)
REQUESTERS_REQUEST_COUNTS = Precompiled(
    "requesters_request_counts",
    lambda user_ids, since: (
        AccessRequest.objects.filter(requester_id__anyof=user_ids, created_at__gte=since)
        .order_by()
        .values_list("requester_id")
        .annotate(total=Count("pk"), denied=Count("pk", filter=Q(status=AccessRequest.Status.DENIED)))
    ),
    user_ids=list,
    since=datetime,
)


def request_timeline(access_request: AccessRequest) -> QuerySet[AccessEvent]:
    grant_ids = list(Grant.objects.filter(access_request=access_request).values_list("pk", flat=True))
    if access_request.extends_grant_id:
        grant_ids.append(access_request.extends_grant_id)
    return (
        AccessEvent.objects.filter(Q(access_request=access_request) | Q(grant_id__in=grant_ids, access_request=None))
        .select_related("actor")
        .order_by("occurred_at", "pk")
    )


def grant_timeline(grant: Grant) -> QuerySet[AccessEvent]:
    return AccessEvent.objects.filter(grant=grant).select_related("actor").order_by("occurred_at", "pk")


def grant_end_reason(grant: Grant) -> str:
    """Why ``grant`` ended, in the words of its end event (empty while it runs, or when none was given)."""
    if grant.ended_at is None:
        return ""
    return (
        AccessEvent.objects.filter(grant=grant, event_type__in=GRANT_END_EVENTS)
        .exclude(reason="")
        .order_by("-pk")
        .values_list("reason", flat=True)
        .first()
        or ""
    )


GRANT_END_EVENTS = [
    AccessEvent.Type.GRANT_REVOKED,
    AccessEvent.Type.GRANT_EXPIRED,
    AccessEvent.Type.GRANT_RELEASED,
    AccessEvent.Type.GRANT_TICKET_CLOSED,
    AccessEvent.Type.GRANT_INCIDENT_RESOLVED,
]


def campaign_list(user: User) -> QuerySet[ReviewCampaign]:
    """Review campaigns ``user`` may see (``permissions.visible_campaigns``) with their progress counts."""
    return permissions.visible_campaigns(user).annotate(
        total=Count("items"),
        answered=Count("items", filter=~Q(items__decision="")),
        mine=Count("items", filter=Q(items__reviewer=user)),
        mine_open=Count("items", filter=Q(items__reviewer=user, items__decision="")),
    )


def grant_list(user: User) -> QuerySet[Grant]:
    """The grants list: ``permissions.visible_grants`` with what its rows show."""
    return permissions.visible_grants(user).select_related("role__system", "user")


def overdue_removals(grants: QuerySet[Grant], now: datetime) -> QuerySet[Grant]:
    """Of ``grants``, those whose removal was asked more than PROVISIONING_REMOVAL_ALERT_MINUTES ago and
    is not confirmed yet."""
    threshold = now - timedelta(minutes=settings.PROVISIONING_REMOVAL_ALERT_MINUTES)
    return grants.filter(removal_requested_at__lte=threshold, removal_confirmed_at__isnull=True)


def provisioning_tasks(user: User) -> QuerySet[OutboxItem]:
    """Open outbox items (apply/remove at a target) of the grants ``user`` sees, oldest first: the
    provisioning page's list (filtered, sorted and paged by ``filters.ProvisioningFilter``)."""
    grants = permissions.visible_grants(user)
    return (
        OutboxItem.objects.filter(done_at__isnull=True, grant__in=grants.values("pk"))
        .select_related("grant__user", "grant__role__system")
        .order_by("pk")
    )


def provisioning_dashboard(user: User, now: datetime, items: list[OutboxItem] | None = None) -> dict:
    """What ``user`` follows at the targets: open outbox items of grants they see (``items``, one page of
    ``provisioning_tasks``; the first 200 when not given; manual ones they may complete flagged), overdue
    removals, and open drift on systems they oversee."""
    grants = permissions.visible_grants(user)
    if items is None:
        items = list(provisioning_tasks(user)[:200])
    overdue_before = now - timedelta(minutes=settings.PROVISIONING_REMOVAL_ALERT_MINUTES)
    independent: dict[int, bool] = {}  # per grantee on the page: may ``user`` attest their access?

    def can_complete(grant: Grant) -> bool:
        if not permissions.can_complete_manual_task(user, grant):
            return False
        if grant.user_id not in independent:
            independent[grant.user_id] = permissions.independence_problem(user, grant.user, now) is None
        return independent[grant.user_id]

    rows = [
        {
            "item": item,
            "manual": item.grant.role.system.connector == System.Connector.MANUAL,
            "can_complete": can_complete(item.grant),
            "overdue": item.action == OutboxItem.Action.REMOVE
            and item.grant.removal_requested_at is not None
            and item.grant.removal_requested_at < overdue_before,
        }
        for item in items
    ]
    system_ids = permissions.overseen_system_ids(user)
    drift = DriftFinding.objects.filter(resolved_at__isnull=True)
    if system_ids is not None:
        drift = drift.filter(system_id__in=system_ids)
    return {
        "rows": rows,
        "overdue": overdue_removals(grants, now).select_related("user", "role__system")[:100],
        "drift": drift.select_related("role__system")[:200],
        "now": now,
    }


def follow_ups_for(user: User) -> QuerySet[BreakGlassFollowUp]:
    grants = permissions.visible_grants(user).filter(is_break_glass=True)
    return BreakGlassFollowUp.objects.filter(grant__in=grants.values("pk")).select_related(
        "grant__user", "grant__role__system", "grant__access_request", "acknowledged_by"
    )


FOLLOW_UPS_SHOWN = 200


def follow_ups_page(user: User) -> list[BreakGlassFollowUp]:
    """The follow-ups page: the open ones first, the one due first at the top (what is left to do), then the
    acknowledged ones, the latest first; at most FOLLOW_UPS_SHOWN (the break-glass report has every one). Ordered
    so on every database: ``order_by("acknowledged_at", "due_at")`` listed the open ones last on PostgreSQL (NULLs
    sort last there) and the oldest acknowledgements first, so once 200 were acknowledged a new use to review was
    not on the page at all. The page's ids first, then their rows (``FOLLOW_UP_ROWS``): in one statement the
    visibility's subquery and the six joins took PostgreSQL longer to plan than to run."""
    ids = list(
        follow_ups_for(user)
        .order_by(F("acknowledged_at").desc(nulls_first=True), "due_at", "pk")
        .values_list("pk", flat=True)[:FOLLOW_UPS_SHOWN]
    )
    loaded = {follow_up.pk: follow_up for follow_up in FOLLOW_UP_ROWS.list(ids=ids)} if ids else {}
    return [loaded[pk] for pk in ids if pk in loaded]


# The follow-ups page's rows by id, with what it shows and decides with (the grant's state, who may acknowledge
# it); precompiled: planned once per connection.
FOLLOW_UP_ROWS = Precompiled(
    "follow_up_rows",
    lambda ids: (
        BreakGlassFollowUp.objects.filter(pk__anyof=ids)
        .select_related("grant__user", "grant__role__system", "grant__access_request", "acknowledged_by")
        .only(
            *("grant_id", "due_at", "acknowledged_at", "acknowledged_by__username", "comment"),
            *("grant__user_id", "grant__role_id", "grant__status", "grant__starts_at", "grant__expires_at"),
            *("grant__ended_at", "grant__end_reason", "grant__access_request__justification", "grant__user__username"),
            *("grant__role__name", "grant__role__system_id", "grant__role__system__name"),
        )
    ),
    ids=list,
)


def follow_up_in_use(now: datetime) -> Exists:
    """A follow-up whose break-glass grant still gives access at ``now`` (``Grant.objects.active``): the use is
    acknowledged once it has ended (``services.grants.break_glass_acknowledge`` refuses before), so until then it
    is nobody's to do — not in the inbox, its badge, nor the overdue counts (the follow-ups page says "In use")."""
    return Exists(Grant.objects.active(now).filter(pk=OuterRef("grant_id")))


def overdue_follow_ups(user: User, now: datetime) -> QuerySet[BreakGlassFollowUp]:
    """Open follow-ups past their due time that can be acknowledged now (not while the grant is in use)."""
    return follow_ups_for(user).filter(acknowledged_at__isnull=True, due_at__lte=now).filter(~follow_up_in_use(now))


# ``overdue_follow_ups`` of anyone but an auditor: those of their own break-glass grants and of the roles
# they oversee (``permissions.visible_grants``' rule, with the overseen roles as one list). Precompiled:
# every home page and approver queue asks it.
OVERDUE_FOLLOW_UPS_SEEN = Precompiled(
    "overdue_follow_ups_seen",
    lambda user_id, role_ids, now: BreakGlassFollowUp.objects.filter(
        grant__in=Grant.objects.filter(Q(user_id=user_id) | Q(role_id__anyof=role_ids), is_break_glass=True).values(
            "pk"
        ),
        acknowledged_at__isnull=True,
        due_at__lte=now,
    ).filter(~follow_up_in_use(now)),
    user_id=int,
    role_ids=list,
    now=datetime,
)


def overdue_follow_up_count(user: User, now: datetime) -> int:
    """``overdue_follow_ups(user, now).count()``, by the precompiled read for everyone but auditors."""
    if permissions.is_auditor(user):
        return overdue_follow_ups(user, now).count()
    return OVERDUE_FOLLOW_UPS_SEEN.count(user_id=user.pk, role_ids=permissions.overseen_role_ids(user), now=now)


def _grant_count(grants) -> Subquery:
    return Subquery(grants.order_by().values("role").annotate(n=Count("pk")).values("n")[:1])


def _latest_activity(**grant_filter):
    return (
        GrantActivity.objects.filter(
            last_activity_at__isnull=False, **{f"grant__{k}": v for k, v in grant_filter.items()}
        )
        .order_by("-last_activity_at")
        .values("last_activity_at")[:1]
    )


def review_items_with_helpers(items: QuerySet, now: datetime) -> QuerySet:
    """Review items with what a reviewer needs beside each one, in a constant number of queries: the
    subject's last grant of the role (when the access was last used), how many grants in the last 90
    days, and the subject's groups (or the group's size and its active members)."""
    since = now - timedelta(days=90)
    by_user = Grant.objects.filter(user=OuterRef("subject_user"), role=OuterRef("role"))
    by_group = Grant.objects.filter(user__groups=OuterRef("subject_group"), role=OuterRef("role"))
    latest = by_user.order_by("-starts_at")
    latest_in_group = by_group.order_by("-starts_at")
    return (
        items.select_related("role__system", "subject_user", "subject_group", "reviewer", "decided_by", "grant")
        .prefetch_related(
            "subject_user__groups",
            # A group's members, so that the reviewer sees who keeps or loses the access (one query per page).
            Prefetch(
                "subject_group__user_set",
                queryset=User.objects.filter(is_active=True).only("username").order_by("username"),
                to_attr="active_members",
            ),
        )
        .annotate(
            last_grant_id=Coalesce(Subquery(latest.values("pk")[:1]), Subquery(latest_in_group.values("pk")[:1])),
            last_used_at=Coalesce(
                Subquery(latest.values("starts_at")[:1]), Subquery(latest_in_group.values("starts_at")[:1])
            ),
            grants_90d=Coalesce(
                _grant_count(by_user.filter(starts_at__gte=since)),
                _grant_count(by_group.filter(starts_at__gte=since)),
                0,
            ),
            # Real last use (issue 17): the latest activity captured under the subject's grants of the role,
            # and whether any of those grants had activity capture at all ("never used" vs "not captured").
            last_activity_at=Coalesce(
                Subquery(_latest_activity(user=OuterRef("subject_user"), role=OuterRef("role"))),
                Subquery(_latest_activity(user__groups=OuterRef("subject_group"), role=OuterRef("role"))),
            ),
            activity_captured=Exists(
                GrantActivity.objects.filter(grant__user=OuterRef("subject_user"), grant__role=OuterRef("role"))
            )
            | Exists(
                GrantActivity.objects.filter(
                    grant__user__groups=OuterRef("subject_group"), grant__role=OuterRef("role")
                )
            ),
            group_size=Subquery(
                User.groups.through.objects.filter(group=OuterRef("subject_group"))
                .order_by()
                .values("group")
                .annotate(n=Count("pk"))
                .values("n")[:1]  # type: ignore[misc]  # django-stubs cannot see the annotation on the through model
            ),
        )
    )
