"""The read side of activity evidence: what pages, the approver queue, reviews, the right-sizing report and
exports show. Every read goes through ``permissions`` (who sees which grant, finding, system) and statement
text only reaches auditors and the system's owners (``permissions.can_read_statement_text``)."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import median

from django.conf import settings
from django.db.models import Count, Max, Q, QuerySet

from accessgov import permissions
from accessgov.activity.config import system_settings
from accessgov.models import (
    AccessRequest,
    ActivityFinding,
    ActivityRecord,
    ActivitySeal,
    Eligibility,
    Grant,
    GrantActivity,
    Role,
    System,
    User,
)
from accessgov.precompiled import Precompiled

STATEMENTS_SHOWN = 500
SESSIONS_SHOWN = 200
DIGEST_SHOWN = 200


def why_no_activity(grant: Grant) -> str:
    """Why a grant shows no activity, in a sentence (empty when capture is on)."""
    system = grant.role.system
    capture = system_settings(system)
    if grant.status == Grant.Status.SCHEDULED:
        return "This grant has not started yet."
    if system.connector == System.Connector.POSTGRES:
        if not capture.captures_at_target and not capture.log_file:
            return (
                f"Activity capture is off for {system.name}: an admin can turn on sessions, the statement digest or "
                "the statement log in its connector settings (docs/ACTIVITY.md)."
            )
        return ""
    return (
        f"{system.name} uses the {system.get_connector_display().split(' (')[0].lower()} connector, which cannot watch "
        "sessions itself; the target's own tooling can report them to POST /api/v1/activity/ (docs/ACTIVITY.md)."
    )


@dataclass
class GrantActivityView:
    record: GrantActivity | None
    levels: list[str]
    sessions: list[ActivityRecord]
    digest: list[ActivityRecord]
    statements: list[ActivityRecord]
    statement_total: int
    findings: list[ActivityFinding]
    seals: list[ActivitySeal]
    can_read_text: bool
    why_none: str

    @property
    def any(self) -> bool:
        return bool(self.sessions or self.digest or self.statements or self.findings)


_LIST_COLUMNS = (
    "pk",
    "kind",
    "source",
    "principal",
    "occurred_at",
    "ended_at",
    "state",
    "session_key",
    "client_address",
    "application",
    "database",
    "command",
    "statement_class",
    "object_name",
    "calls",
    "rows",
    "findings",
    "seal_id",
)


def grant_activity(grant: Grant, viewer: User) -> GrantActivityView:
    """A grant's activity for its page, in a fixed number of queries; the statement column is loaded only
    for viewers who may read it."""
    can_read_text = permissions.can_read_statement_text(viewer, grant.role.system)
    columns = (*_LIST_COLUMNS, "statement") if can_read_text else _LIST_COLUMNS
    records = ActivityRecord.objects.filter(grant=grant).only(*columns)
    statements = records.filter(kind=ActivityRecord.Kind.STATEMENT)
    return GrantActivityView(
        record=GrantActivity.objects.filter(pk=grant.pk).first(),
        levels=system_settings(grant.role.system).levels,
        sessions=list(records.filter(kind=ActivityRecord.Kind.SESSION).order_by("occurred_at", "pk")[:SESSIONS_SHOWN]),
        digest=list(records.filter(kind=ActivityRecord.Kind.DIGEST).order_by("-calls", "pk")[:DIGEST_SHOWN]),
        statements=list(statements.order_by("occurred_at", "pk")[:STATEMENTS_SHOWN]),
        statement_total=statements.count(),
        findings=list(
            grant.activity_findings.select_related("signed_off_by", "system", "role__system", "user").order_by(
                "raised_at", "pk"
            )
        ),
        seals=list(grant.activity_seals.order_by("pk")),
        can_read_text=can_read_text,
        why_none=why_no_activity(grant),
    )


def visible_findings(viewer: User) -> QuerySet[ActivityFinding]:
    return permissions.visible_findings(viewer).select_related(
        "system", "role__system", "grant", "user", "signed_off_by"
    )


def open_findings(viewer: User) -> QuerySet[ActivityFinding]:
    return visible_findings(viewer).filter(status=ActivityFinding.Status.OPEN).order_by("raised_at", "pk")


def live_sessions(viewer: User, now: datetime) -> list[ActivityRecord]:
    """Sessions the sampler saw in its last few runs and not seen ending: who is connected to production
    right now, under which grant (or none). Limited to what ``viewer`` may see."""
    recent = now - timedelta(seconds=max(settings.ACTIVITY_SAMPLE_SECONDS, 1) * 3 + 5)
    sessions = ActivityRecord.objects.filter(
        kind=ActivityRecord.Kind.SESSION, source=ActivityRecord.Source.SAMPLER, ended_at__gte=recent, seal__isnull=True
    ).exclude(state="ended")  # the predicate of the activity_open_sessions index
    visible = permissions.visible_grants(viewer).values("pk")
    systems = permissions.visible_activity_systems(viewer)
    no_grant = Q(grant__isnull=True) if systems is None else Q(grant__isnull=True, system_id__in=systems)
    return list(
        sessions.filter(Q(grant_id__in=visible) | no_grant)
        .select_related("grant__user", "grant__role__system", "system")
        .only(
            *[c for c in _LIST_COLUMNS if c != "pk"],
            "system__name",
            "grant__user__username",
            "grant__role__name",
            "grant__role__system__name",
            "grant__expires_at",
        )
        .order_by("-occurred_at")[:200]
    )


# --- The approver queue: "last time they had this role they ran …" ------------------------------------


def last_use_hints(access_requests: list[AccessRequest]) -> dict[int, dict]:
    """For each request, the requester's previous grant of the same role and what they did under it (from
    its activity totals and its most frequent commands), in two queries for the whole page."""
    pairs = {(r.requester_id, r.role_id) for r in access_requests}
    if not pairs:
        return {}
    latest: dict[tuple[int, int], Grant] = {}
    users, roles = sorted({user for user, _ in pairs}), sorted({role for _, role in pairs})
    for grant in ENDED_GRANTS_WITH_ACTIVITY.list(user_ids=users, role_ids=roles):
        latest.setdefault((grant.user_id, grant.role_id), grant)
    top: dict[int, list[str]] = {}
    grant_ids = [g.pk for g in latest.values()]
    if grant_ids:
        for grant_id, command, n in COMMAND_COUNTS.list(grant_ids=grant_ids):
            commands = top.setdefault(grant_id, [])
            if len(commands) < 3:
                commands.append(f"{command} x{n}")
    hints = {}
    for access_request in access_requests:
        grant = latest.get((access_request.requester_id, access_request.role_id))
        if grant is None:
            continue
        record = getattr(grant, "activity", None)
        hints[access_request.pk] = {"grant": grant, "record": record, "top_commands": top.get(grant.pk, [])}
    return hints


# ``last_use_hints``' two reads (every approver queue page), precompiled (issue 22): the ended grants of
# these people and roles, latest first, with their activity totals; and the statements' commands by grant,
# most frequent first.
ENDED_GRANTS_WITH_ACTIVITY = Precompiled(
    "ended_grants_with_activity",
    lambda user_ids, role_ids: (
        Grant.objects.filter(user_id__anyof=user_ids, role_id__anyof=role_ids, ended_at__isnull=False)
        .select_related("activity")
        .only(
            *("pk", "user_id", "role_id", "starts_at", "ended_at"),
            *("activity__statement_count", "activity__session_count", "activity__read_count"),
            *("activity__write_count", "activity__ddl_count", "activity__privilege_count"),
            *("activity__digest_calls", "activity__finding_count", "activity__last_activity_at"),
        )
        .order_by("-ended_at")
    ),
    user_ids=list,
    role_ids=list,
)
COMMAND_COUNTS = Precompiled(
    "command_counts",
    lambda grant_ids: (
        ActivityRecord.objects.filter(grant_id__anyof=grant_ids, kind=ActivityRecord.Kind.STATEMENT)
        .exclude(command="")
        .values_list("grant_id", "command")
        .annotate(n=Count("pk"))
        .order_by("grant_id", "-n", "command")
    ),
    grant_ids=list,
)


# --- Right-sizing ------------------------------------------------------------------------------------


@dataclass
class RoleUse:
    role: Role
    grants: int  # ended in the window, with activity capture
    unused: int
    median_used_fraction: float | None
    longest_use: timedelta | None
    suggested_max: timedelta | None
    findings: int

    @property
    def unused_share(self) -> float:
        return self.unused / self.grants if self.grants else 0.0


def _round_up(duration: timedelta, step: timedelta = timedelta(minutes=15)) -> timedelta:
    steps = -(-duration // step)
    return max(step, steps * step)


def right_sizing(viewer: User, now: datetime, *, days: int = 90) -> dict:
    """Roles whose grants go unused or use a fraction of their duration, from the grants that ended in the
    last ``days`` with activity data; and eligibility nobody used for ``days``. Only roles ``viewer``
    oversees (all for auditors and admins). A suggested maximum is the longest real use rounded up to 15
    minutes, offered when it is under half of today's maximum."""
    since = now - timedelta(days=days)
    role_ids = permissions.right_sizing_role_ids(viewer)
    grants = GrantActivity.objects.filter(grant__ended_at__gte=since, grant__ended_at__lte=now)
    if role_ids is not None:
        grants = grants.filter(grant__role_id__in=role_ids)
    uses: dict[int, list[tuple[bool, float, timedelta]]] = {}
    for role_id, used_sessions, used_statements, digest_calls, starts_at, ended_at, last in grants.values_list(
        "grant__role_id",
        "session_count",
        "statement_count",
        "digest_calls",
        "grant__starts_at",
        "grant__ended_at",
        "last_activity_at",
    ):
        span = ended_at - starts_at
        used = bool(used_sessions or used_statements or digest_calls)
        use = (min(last, ended_at) - starts_at) if last else (span if used else timedelta(0))
        fraction = max(0.0, min(1.0, use / span)) if span > timedelta(0) else 0.0
        uses.setdefault(role_id, []).append((used, fraction, use))
    findings = dict(
        ActivityFinding.objects.filter(role_id__in=list(uses), raised_at__gte=since)
        .values_list("role_id")
        .annotate(n=Count("pk"))
    )
    roles = {r.pk: r for r in Role.objects.filter(pk__in=list(uses)).select_related("system")}
    rows = []
    for role_id, entries in uses.items():
        role = roles[role_id]
        used = [e for e in entries if e[0]]
        longest = max((e[2] for e in used), default=None)
        suggested = None
        if longest is not None and longest * 2 < role.max_duration:
            suggested = _round_up(longest)
            if suggested >= role.max_duration:
                suggested = None
        rows.append(
            RoleUse(
                role=role,
                grants=len(entries),
                unused=len(entries) - len(used),
                median_used_fraction=median(e[1] for e in used) if used else None,
                longest_use=longest,
                suggested_max=suggested,
                findings=findings.get(role_id, 0),
            )
        )
    rows.sort(key=lambda r: (-r.unused_share, r.median_used_fraction or 0, str(r.role)))
    return {"roles": rows, "idle_eligibility": idle_eligibility(viewer, now, days=days), "days": days}


@dataclass(frozen=True)
class IdleEligibility:
    """An eligibility in force that nobody used, as the right-sizing page shows it."""

    pk: int
    username: str  # its holder
    role: str  # ``Role.label``
    starts_at: datetime
    last_grant_at: datetime | None  # the holder's last grant of the role, if any


def idle_eligibility(viewer: User, now: datetime, *, days: int = 90) -> list[IdleEligibility]:
    """Personal eligibility in force for at least ``days`` whose holder had no grant of the role with any
    activity in that time (never requested, or requested and did nothing): the first 500 candidates by system,
    role and holder. Read as plain values: 500 eligibilities with their roles, systems and users as model
    instances were most of the report's 50-100 ms at scale (issue 22's probe)."""
    since = now - timedelta(days=days)
    role_ids = permissions.right_sizing_role_ids(viewer)
    candidates = (
        Eligibility.objects.active(now)
        .filter(user__isnull=False, starts_at__lte=since)
        .order_by("role__system__name", "role__name", "user__username")
    )
    if role_ids is not None:
        candidates = candidates.filter(role_id__in=role_ids)
    rows = list(
        candidates.values_list(
            *("pk", "user_id", "role_id", "starts_at", "user__username", "role__system__name", "role__name")
        )[:500]
    )
    # The people and roles as one bound list each (500 placeholders per ``__in`` cost psycopg ≈ 6 ms to bind).
    user_ids, role_ids_seen = sorted({row[1] for row in rows}), sorted({row[2] for row in rows})
    used = set(
        Grant.objects.filter(starts_at__gte=since, user_id__anyof=user_ids, role_id__anyof=role_ids_seen)
        .filter(Q(activity__session_count__gt=0) | Q(activity__statement_count__gt=0) | Q(activity__digest_calls__gt=0))
        .values_list("user_id", "role_id")
    )
    last_grant = {
        (u, r): at
        for u, r, at in Grant.objects.filter(user_id__anyof=user_ids, role_id__anyof=role_ids_seen)
        .values_list("user_id", "role_id")
        .annotate(at=Max("starts_at"))
    }
    return [
        IdleEligibility(pk, username, Role.label(system_name, role_name), starts_at, last_grant.get((user_id, role_id)))
        for pk, user_id, role_id, starts_at, username, system_name, role_name in rows
        if (user_id, role_id) not in used
    ]


# --- Export ------------------------------------------------------------------------------------------

EXPORT_HEADER = [
    "id",
    "system",
    "grant",
    "kind",
    "source",
    "principal",
    "occurred_at",
    "ended_at",
    "state",
    "session",
    "client_address",
    "application",
    "database",
    "command",
    "class",
    "object",
    "calls",
    "rows",
    "findings",
    "seal",
    "statement",
]


def activity_for_export(viewer: User, *, grant_id: int | None, system_id: int | None, since, until) -> QuerySet:
    """Activity rows ``viewer`` may see, for the CSV export (the same rule as the pages)."""
    visible = permissions.visible_grants(viewer).values("pk")
    systems = permissions.visible_activity_systems(viewer)
    no_grant = Q(grant__isnull=True) if systems is None else Q(grant__isnull=True, system_id__in=systems)
    rows = ActivityRecord.objects.filter(Q(grant_id__in=visible) | no_grant)
    if grant_id is not None:
        rows = rows.filter(grant_id=grant_id)
    if system_id is not None:
        rows = rows.filter(system_id=system_id)
    if since is not None:
        rows = rows.filter(occurred_at__gte=since)
    if until is not None:
        rows = rows.filter(occurred_at__lt=until)
    return rows.order_by("pk")


def export_rows(viewer: User, rows: QuerySet):
    """Rows for ``exports.csv_rows``: statement text only for systems whose text ``viewer`` may read."""
    readable: dict[int, bool] = {}
    slugs = dict(System.objects.values_list("pk", "slug"))
    for values in rows.values_list(
        "pk",
        "system_id",
        "grant_id",
        "kind",
        "source",
        "principal",
        "occurred_at",
        "ended_at",
        "state",
        "session_key",
        "client_address",
        "application",
        "database",
        "command",
        "statement_class",
        "object_name",
        "calls",
        "rows",
        "findings",
        "seal_id",
        "statement",
    ).iterator(chunk_size=2000):
        system_id = values[1]
        if system_id not in readable:
            system = System(pk=system_id)
            readable[system_id] = permissions.can_read_statement_text(viewer, system)
        yield (values[0], slugs.get(system_id, system_id), *values[2:20], values[20] if readable[system_id] else "")
