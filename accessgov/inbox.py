"""The inbox (issue 18, item 7), read side: what needs the person now, and what happened to their access.

"Needs me" is derived live from the state that already says it (pending requests, open follow-ups, review
items, pending four-eyed changes, grants about to end), never copied. "What happened" is derived from the
access event ledger: events about requests the person made (every grant event carries its request, so
this covers grants too), minus what the person did themselves. Only read marks are stored
(``User.inbox_read_through`` and ``InboxReadMark``). See docs/DECISIONS.md, "The inbox".
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Count, Exists, IntegerField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.urls import reverse

from accessgov import dbsql, permissions, selectors
from accessgov.models import (
    AccessEvent,
    AccessRequest,
    ActivityFinding,
    BreakGlassFollowUp,
    ChangeRequest,
    Eligibility,
    Grant,
    InboxReadMark,
    ReviewCampaign,
    ReviewItem,
    Role,
    User,
)

Type = AccessEvent.Type

# The events that say what happened to a person's access, each with the line the inbox shows.
HAPPENED_TYPES = {
    Type.REQUEST_APPROVED: "was approved",
    Type.REQUEST_AUTO_APPROVED: "was approved automatically",
    Type.REQUEST_DENIED: "was denied",
    Type.REQUEST_LAPSED: "lapsed: nobody decided in time",
    Type.REQUEST_WITHDRAWN: "was withdrawn",
    # One approval of several (a deny, or the approval that decides, says it as the request's own event).
    Type.DECISION_APPROVE: "got an approval",
    Type.GRANT_ACTIVATED: "started",
    Type.GRANT_EXTENDED: "was extended",
    Type.GRANT_EXPIRED: "expired",
    Type.GRANT_REVOKED: "was revoked",
    Type.GRANT_RELEASED: "was released",
    Type.GRANT_TICKET_CLOSED: "ended: its ticket closed",
    Type.GRANT_INCIDENT_RESOLVED: "ended: its incident was resolved",
    Type.BREAK_GLASS_ACKNOWLEDGED: "was acknowledged",
}
HAPPENED_PAGE_SIZE = 50
# A grant ending within this long is in "needs me" (extend or release it): when its holder is reminded.
ENDING_SOON = timedelta(minutes=15)  # services.grants.EXPIRY_REMINDER_BEFORE
NEEDS_ME_LIMIT = 50
# The badge counts unread items up to this many ("100+" beyond): its statement runs on every page, and a
# person who never opens the inbox would otherwise pay for their whole history on each one (issue 22).
UNREAD_COUNTED_UP_TO = 100


def happened_events(user: User) -> QuerySet[AccessEvent]:
    """Events about ``user``'s own requests and grants. One join through the requester index to the
    events' request index. What the person did themselves (releasing a grant) is listed, but as read."""
    return (
        AccessEvent.objects.filter(access_request__requester=user, event_type__in=list(HAPPENED_TYPES))
        .exclude(event_type=Type.DECISION_APPROVE, access_request__role__approvals_required__lte=1)
        .select_related("access_request__role__system", "grant", "actor")
    )


def happened(
    user: User, *, before: int | None = None, events: QuerySet[AccessEvent] | None = None, unread_only: bool = False
) -> list[Any]:
    """The newest "what happened" items (of ``events``, default ``happened_events(user)``, narrowed by the
    inbox's search), each with ``is_read``, ``summary`` and ``target_url``; ``unread_only``: those not read."""
    events = (happened_events(user) if events is None else events).annotate(
        marked=Exists(InboxReadMark.objects.filter(user=user, event_id=OuterRef("pk")))
    )
    if unread_only:  # what ``decorate`` calls read, the other way round
        events = events.filter(marked=False, sequence__gt=user.inbox_read_through).exclude(actor=user)
    if before:
        events = events.filter(pk__lt=before)
    items = list(events.order_by("-pk")[:HAPPENED_PAGE_SIZE])
    for event in items:
        decorate(event, user)
    return items


def decorate(event: Any, user: User) -> Any:
    """``event`` (an AccessEvent) with ``is_read``, ``summary``, ``who`` and ``target_url`` set for the inbox."""
    marked = getattr(event, "marked", None)
    if marked is None:
        marked = InboxReadMark.objects.filter(user=user, event_id=event.pk).exists()
    event.is_read = bool(marked) or event.actor_id == user.pk or (event.sequence or 0) <= user.inbox_read_through
    access_request = event.access_request
    role = access_request.role
    if event.event_type == Type.BREAK_GLASS_ACKNOWLEDGED:
        subject = f"Your break-glass use of {role}"
    elif event.event_type.startswith("grant."):
        subject = f"Your access to {role}"
    elif access_request.kind == AccessRequest.Kind.EXTENSION:
        subject = f"Your request for more time on {role}"
    else:
        subject = f"Your request for {role}"
    event.summary = f"{subject} {HAPPENED_TYPES.get(event.event_type, 'changed')}"
    event.who = event.actor.get_username() if event.actor else "AccessGov"
    event.target_url = (
        reverse("grant_detail", args=[event.grant_id])
        if event.grant_id
        else reverse("request_detail", args=[access_request.pk])
    )
    return event


def happened_item(user: User, event_id: int) -> AccessEvent | None:
    """One "what happened" item of ``user`` (None when it is not theirs: another person's is a 404)."""
    event = happened_events(user).filter(pk=event_id).first()
    return decorate(event, user) if event is not None else None


def latest_happened_id(user: User, *, access_request_id: int | None = None, grant_id: int | None = None) -> int | None:
    """The newest inbox item about a request or grant (what a notification links to)."""
    events = happened_events(user)
    if access_request_id is not None:
        events = events.filter(access_request_id=access_request_id)
    if grant_id is not None:
        events = events.filter(grant_id=grant_id)
    return events.order_by("-pk").values_list("pk", flat=True).first()


# --- Needs me -----------------------------------------------------------------------------------


@dataclass
class NeedsMe:
    approvals: list[AccessRequest] = field(default_factory=list)
    follow_ups: list[BreakGlassFollowUp] = field(default_factory=list)
    reviews: list[Any] = field(default_factory=list)  # campaigns annotated with open_items
    changes: list[ChangeRequest] = field(default_factory=list)
    ending: list[Grant] = field(default_factory=list)
    findings: list = field(default_factory=list)
    removals: int = 0  # ended grants of others not yet removed at the target (owners, approvers, auditors)
    eligibility_ending: list = field(default_factory=list)  # on systems the person owns: renew or let go

    @property
    def count(self) -> int:
        return (
            len(self.approvals)
            + len(self.follow_ups)
            + sum(c.open_items for c in self.reviews)
            + len(self.changes)
            + len(self.ending)
            + len(self.findings)
            + self.removals
            + len(self.eligibility_ending)
        )


def _open_review_items(user: User) -> QuerySet[ReviewItem]:
    return ReviewItem.objects.filter(reviewer=user, decision="", campaign__status=ReviewCampaign.Status.OPEN)


def _open_follow_ups(user: User, now: datetime) -> QuerySet[BreakGlassFollowUp]:
    """Break-glass uses by others ``user`` sees that wait for acknowledgement and can have it now: one still in
    use is acknowledged once it has ended (``selectors.follow_up_in_use``), so it is not listed or counted before."""
    return (
        selectors.follow_ups_for(user)
        .filter(acknowledged_at__isnull=True)
        .filter(~selectors.follow_up_in_use(now))
        .exclude(grant__user=user)
        .order_by("due_at")
    )


def _open_findings(user: User) -> QuerySet:
    """Activity findings (issue 17) waiting for a second person's sign-off, about someone else."""
    return (
        permissions.visible_findings(user)
        .filter(status=ActivityFinding.Status.OPEN)
        .exclude(user=user)
        .order_by("raised_at", "pk")
    )


def _overdue_removals(user: User, now: datetime) -> QuerySet[Grant]:
    """Someone else's ended grants whose removal at the target is overdue (the home page's banner)."""
    return selectors.overdue_removals(permissions.visible_grants(user), now).exclude(user=user)


def _eligibility_ending(user: User, now: datetime) -> QuerySet:
    """Eligibility on systems ``user`` owns that ends within ELIGIBILITY_REMINDER_DAYS (when owners are
    reminded): renew it or let it go."""
    return Eligibility.objects.active(now).filter(
        role__system_id__in=_owned_system_ids(user),
        ends_at__lte=now + timedelta(days=settings.ELIGIBILITY_REMINDER_DAYS),
    )


def _owned_system_ids(user: User) -> list[int]:
    return permissions.scope(user).owned_system_ids if user.is_active else []


def _oversees(user: User) -> bool:
    return permissions.is_auditor(user) or bool(permissions.overseen_role_ids(user))


def needs_me(user: User, now: datetime, *, active_grants: list[Grant] | None = None) -> NeedsMe:
    """Everything waiting for ``user``, each list checked with the same predicate the action uses (a
    follow-up the person may not acknowledge, a change they may not approve, is not theirs to do).
    ``active_grants``: the person's ``selectors.my_active_grants`` when the caller has them already (the
    home page): their grants ending soon are taken from it instead of a second query.
    A list the navigation badge (one query, same request, the same rules) counts none of is not read."""
    result = NeedsMe()
    counted = _counted(user, now)
    if permissions.decidable_role_ids(user):
        result.approvals = list(selectors.approver_queue(user, now)[:NEEDS_ME_LIMIT])
    # The badge counts the lists below for those they concern (overseers, owners, reviewers), else 0.
    if counted["follow_ups"]:
        result.follow_ups = [
            f
            # Only what the list shows and the predicate reads: each join more cost PostgreSQL ~1 ms of planning.
            for f in _open_follow_ups(user, now)
            .select_related(None)
            .select_related("grant__user", "grant__role__system")[:NEEDS_ME_LIMIT]
            if permissions.can_acknowledge_break_glass(user, f.grant)
        ]
    result.removals = counted["removals"]
    if counted["findings"]:
        result.findings = [
            f
            for f in _open_findings(user).select_related("system", "role__system", "user", "grant")[:NEEDS_ME_LIMIT]
            if permissions.can_sign_off_finding(user, f)
        ]
    if counted["reviews"]:
        result.reviews = list(
            ReviewCampaign.objects.filter(pk__in=_open_review_items(user).values("campaign_id"))
            .annotate(
                open_items=Subquery(
                    _open_review_items(user)
                    .filter(campaign=OuterRef("pk"))
                    .order_by()
                    .values("campaign")
                    .annotate(n=Count("pk"))
                    .values("n")[:1],
                    output_field=IntegerField(),
                )
            )
            .order_by("due_at")
        )
    if user.is_staff:
        pending = ChangeRequest.objects.filter(status=ChangeRequest.Status.PENDING).exclude(proposed_by=user)
        result.changes = [
            c
            for c in pending.select_related("proposed_by").order_by("proposed_at")[:NEEDS_ME_LIMIT]
            if permissions.change_approval_problem(user, c) is None
        ]
    if counted["eligibility_ending"]:
        result.eligibility_ending = list(
            _eligibility_ending(user, now)
            .select_related("role__system", "user", "group")
            .order_by("ends_at")[:NEEDS_ME_LIMIT]
        )
    if active_grants is None:
        result.ending = list(
            selectors.my_active_grants(user, now).filter(expires_at__lte=now + ENDING_SOON)[:NEEDS_ME_LIMIT]
        )
    else:  # ordered by expires_at, as the query is
        result.ending = [g for g in active_grants if g.expires_at <= now + ENDING_SOON][:NEEDS_ME_LIMIT]
    return result


BADGE_PARTS = ("reviews", "ending", "unread", "follow_ups", "findings", "removals", "eligibility_ending")


def badge_counts(user: User, now: datetime, *, queue_size: int, pending_changes: int) -> dict[str, Any]:
    """The navigation badge: what needs ``user`` and how many "what happened" items are unread. The
    approval queue and pending changes are counted by the navigation already; the rest is ONE query
    (scalar subqueries on indexed columns): open review items, open break-glass follow-ups whose use has
    ended and activity findings on what the person oversees (only for auditors and overseers), grants of
    theirs ending soon, and unread items after their read mark (up to UNREAD_COUNTED_UP_TO). On PostgreSQL that query
    is one fixed statement (``badge_counts_postgresql``): building its ORM twin (``badge_counts_portable``)
    cost 4-6 ms of Python on every page, five times what PostgreSQL takes to answer it (docs/PERFORMANCE.md)."""
    result = dict(_counted(user, now))
    result["needs_me"] = (
        queue_size
        + pending_changes
        + sum(
            result[name] for name in ("reviews", "ending", "follow_ups", "findings", "removals", "eligibility_ending")
        )
    )
    result["total"] = result["needs_me"] + result["unread"]
    return result | _badge_labels(result)


def _badge_labels(counts: dict[str, int]) -> dict[str, str]:
    """What the badge shows: its total ("99+" past 99, as for any count badge) and, to screen readers, the
    unread count ("100+" once it reached UNREAD_COUNTED_UP_TO, where counting stops)."""
    unread = counts["unread"]
    return {
        "total_label": "99+" if counts["total"] > 99 else str(counts["total"]),
        "unread_label": f"{unread}+" if unread >= UNREAD_COUNTED_UP_TO else str(unread),
    }


def _counted(user: User, now: datetime) -> dict[str, int]:
    """The badge's one query, once per request (``needs_me`` asks it first: an empty part spares the page that
    part's list query; the navigation then reuses it)."""

    def count() -> dict[str, int]:
        counter = badge_counts_postgresql if dbsql.is_postgresql() else badge_counts_portable
        return counter(user, now)

    return permissions.memoized(user, "badge_counts", count)


def badge_counts_portable(user: User, now: datetime) -> dict[str, int]:
    """The badge's counts through the ORM: the rules as ``needs_me`` and ``happened`` state them."""
    unread = (
        happened_events(user)
        .filter(sequence__gt=user.inbox_read_through)
        .exclude(actor=user)
        .exclude(Exists(InboxReadMark.objects.filter(user=user, event_id=OuterRef("pk"))))
    )
    counts = {
        "reviews": _open_review_items(user),
        "ending": Grant.objects.active(now).filter(user=user, expires_at__lte=now + ENDING_SOON),
        "unread": unread,
    }
    if _oversees(user):
        counts["follow_ups"] = _open_follow_ups(user, now)
        counts["findings"] = _open_findings(user)
        counts["removals"] = _overdue_removals(user, now)
    if _owned_system_ids(user):
        counts["eligibility_ending"] = _eligibility_ending(user, now)

    def count_of(qs):
        return Coalesce(
            Subquery(
                qs.order_by().annotate(_one=Value(1)).values("_one").annotate(n=Count("pk")).values("n")[:1],
                output_field=IntegerField(),
            ),
            0,
        )

    row: dict[str, Any] = dict(
        User.objects.filter(pk=user.pk).values(**{name: count_of(qs) for name, qs in counts.items()}).first() or {}
    )
    counted = {name: row.get(name, 0) for name in BADGE_PARTS}
    counted["unread"] = min(counted["unread"], UNREAD_COUNTED_UP_TO)
    return counted


def _table(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def badge_counts_postgresql(user: User, now: datetime) -> dict[str, int]:
    """``badge_counts_portable`` as one PostgreSQL statement (id lists bound as arrays: its text depends only
    on whether the viewer oversees anyone and owns a system). ``tests/views/test_inbox.py`` compares the two
    for every persona."""
    auditor = permissions.is_auditor(user)
    oversees = _oversees(user)
    owned = _owned_system_ids(user)
    overseen = permissions.overseen_role_ids(user)
    grant, event, request = _table(Grant), _table(AccessEvent), _table(AccessRequest)
    # visible_grants(user) for a grant aliased g: everything for auditors, else theirs or an overseen role.
    visible = "(%(auditor)s OR g.user_id = %(user)s OR g.role_id = ANY(%(overseen)s))"
    parts = [
        f"""(SELECT COUNT(*) FROM {_table(ReviewItem)} ri JOIN {_table(ReviewCampaign)} rc ON rc.id = ri.campaign_id
  WHERE ri.reviewer_id = %(user)s AND ri.decision = '' AND rc.status = %(campaign_open)s)""",  # noqa: S608 - table names from _meta, values bound
        f"""(SELECT COUNT(*) FROM {grant} g
  WHERE g.user_id = %(user)s AND g.status = %(active)s AND g.starts_at <= %(now)s AND g.expires_at > %(now)s
    AND g.expires_at <= %(ending_by)s)""",  # noqa: S608 - table names from _meta, values bound
        f"""(SELECT COUNT(*) FROM (SELECT 1 FROM {event} e JOIN {request} r ON r.id = e.access_request_id
  WHERE r.requester_id = %(user)s AND e.event_type = ANY(%(happened)s) AND e.sequence > %(read_through)s
    AND (e.actor_id IS NULL OR e.actor_id <> %(user)s)
    AND (e.event_type <> %(one_approval)s
         OR EXISTS (SELECT 1 FROM {_table(Role)} ro WHERE ro.id = r.role_id AND ro.approvals_required > 1))
    AND NOT EXISTS (SELECT 1 FROM {_table(InboxReadMark)} m WHERE m.user_id = %(user)s AND m.event_id = e.id)
  LIMIT %(unread_up_to)s) AS unread)""",  # noqa: S608 - table names from _meta, values bound
    ]
    # The parts about other people's access only for those who oversee some (the statement a requester's
    # pages run is the first three: PostgreSQL plans less), eligibility ending only for owners.
    if oversees:
        parts += [
            f"""(SELECT COUNT(*) FROM {_table(BreakGlassFollowUp)} f JOIN {grant} g ON g.id = f.grant_id
   WHERE f.acknowledged_at IS NULL AND g.is_break_glass AND g.user_id <> %(user)s AND {visible}
     AND NOT (g.status = %(active)s AND g.starts_at <= %(now)s AND g.expires_at > %(now)s))""",  # noqa: S608 - table names from _meta, values bound
            f"""(SELECT COUNT(*) FROM {_table(ActivityFinding)} a LEFT JOIN {grant} g ON g.id = a.grant_id
   WHERE a.status = %(finding_open)s AND (a.user_id IS NULL OR a.user_id <> %(user)s)
     AND (%(auditor)s OR g.user_id = %(user)s OR a.role_id = ANY(%(overseen)s)
          OR (a.grant_id IS NULL AND a.system_id = ANY(%(owned)s))))""",  # noqa: S608 - table names from _meta, values bound
            f"""(SELECT COUNT(*) FROM {grant} g
   WHERE g.removal_requested_at <= %(removal_overdue)s AND g.removal_confirmed_at IS NULL
     AND g.user_id <> %(user)s AND {visible})""",  # noqa: S608 - table names from _meta, values bound
        ]
    else:
        parts += ["0", "0", "0"]
    if owned:
        parts.append(
            f"""(SELECT COUNT(*) FROM {_table(Eligibility)} el JOIN {_table(Role)} ro ON ro.id = el.role_id
  WHERE ro.system_id = ANY(%(owned)s) AND el.starts_at <= %(now)s AND (el.ends_at IS NULL OR el.ends_at > %(now)s)
    AND el.ends_at <= %(eligibility_by)s)"""  # noqa: S608 - table names from _meta, values bound
        )
    else:
        parts.append("0")
    sql = "SELECT " + ",\n ".join(parts)
    params: dict[str, Any] = {
        "user": user.pk,
        "auditor": auditor,
        "overseen": overseen,
        "owned": owned,
        "now": now,
        "ending_by": now + ENDING_SOON,
        "removal_overdue": now - timedelta(minutes=settings.PROVISIONING_REMOVAL_ALERT_MINUTES),
        "eligibility_by": now + timedelta(days=settings.ELIGIBILITY_REMINDER_DAYS),
        "read_through": user.inbox_read_through,
        "unread_up_to": UNREAD_COUNTED_UP_TO,
        "happened": [str(t) for t in HAPPENED_TYPES],
        "one_approval": str(Type.DECISION_APPROVE),
        "active": Grant.Status.ACTIVE,
        "campaign_open": ReviewCampaign.Status.OPEN,
        "finding_open": ActivityFinding.Status.OPEN,
    }
    # Prepared (server-bound; one statement text per variant): 0.95 -> 0.46 ms on average over 150 users of the
    # scale dataset, slower for none (docs/PERFORMANCE.md; an earlier measurement had found its generic plan slower).
    with dbsql.prepared_cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return {name: value or 0 for name, value in zip(BADGE_PARTS, row, strict=True)}


def inbox_url(anchor: str = "") -> str:
    """The inbox (optionally at one item of "needs me"), absolute, for notifications."""
    return settings.PORTAL_URL.rstrip("/") + reverse("inbox") + (f"#{anchor}" if anchor else "")


def item_url(event_id: int | None, fallback_anchor: str = "") -> str:
    if event_id is None:
        return inbox_url(fallback_anchor)
    return settings.PORTAL_URL.rstrip("/") + reverse("inbox_item", args=[event_id])
