"""The populations of an evidence pack: what each CSV holds, row by row (the read side).

Each population is one class: its file, its columns (with what they mean: docs/EVIDENCE.md is written
from the same text), the columns that are control tests, how its rows are read for a period and a scope,
and each sampled item's trail. A row's first column is the item's stable id (a database id, or for
derived populations a "<kind>:<id>" text that stays the same in every pack).

Control-test columns hold ``true`` (the rule held), ``false`` (it broke: the item is also in the
exceptions register) or nothing (the rule does not apply to this item yet). A test's result is
"passed / total" over that column, so anyone can recount it from the file (the verifier does).

Rows are read with ``values_list`` in id order, in chunks, so 100,000 grants stream in constant memory.
To add a population: subclass Population, add it to POPULATIONS, and name its test columns in
``controls.CONTROLS``.
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar

from django.conf import settings
from django.core.exceptions import EmptyResultSet
from django.db import connection
from django.db.models import BooleanField, CharField, ExpressionWrapper, F, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Coalesce

from accessgov import inputs, otp
from accessgov.models import (
    AccessEvent,
    AccessRequest,
    ActivityFinding,
    ActivitySeal,
    ChangeRequest,
    Decision,
    DriftFinding,
    Grant,
    GrantActivity,
    ReviewCampaign,
    ReviewItem,
)
from accessgov.reports.access_history import LAG_BUCKETS, LAG_EXPRESSION
from accessgov.reports.base import decider_names, names, seconds, weekly_counts, whole_seconds

CHUNK = 5000
TRAIL_LIMIT = 200  # events per sampled item (a grant retried at a target for hours has many)
Type = AccessEvent.Type


def yes_no(value: bool | None) -> str:
    """A control-test cell: "true", "false", or "" when the rule does not apply."""
    if value is None:
        return ""
    return "true" if value else "false"


@dataclass
class Context:
    """What every population reads with: the period [start, end) in UTC, the scope (None: every
    system), the moment of the build (``as_of``: "has it happened yet?" questions use it) and the
    thresholds the tests apply."""

    start: datetime
    end: datetime
    as_of: datetime
    system_ids: list[int] | None
    removal_target: timedelta
    step_up_window: timedelta
    review_interval: timedelta = timedelta(days=183)

    def scoped(self, qs: QuerySet, system_field: str = "role__system_id") -> QuerySet:
        return qs if self.system_ids is None else qs.filter(**{f"{system_field}__in": self.system_ids})


@dataclass(frozen=True)
class Column:
    name: str
    meaning: str
    test: str = ""  # for a control-test column: the rule, as the control map states it


@dataclass
class Exception_:
    """One broken rule, for the exceptions register."""

    test_id: str
    population: str
    item_id: str
    system: str
    role: str
    user: str
    detail: str
    at: datetime | None


@dataclass
class Population:
    """Base: subclasses set ``name``, ``title``, ``description``, ``columns`` and implement ``rows``."""

    name: ClassVar[str]
    title: ClassVar[str]
    description: ClassVar[str]
    columns: ClassVar[list[Column]]
    exceptions: list[Exception_] = field(default_factory=list)

    @property
    def file(self) -> str:
        return f"populations/{self.name}.csv"

    @classmethod
    def header(cls) -> list[str]:
        return [c.name for c in cls.columns]

    @classmethod
    def test_columns(cls) -> list[Column]:
        return [c for c in cls.columns if c.test]

    def test_id(self, column: str) -> str:
        return f"{self.name}.{column}"

    def rows(self, ctx: Context, ids: list[str] | None = None) -> Iterator[list[Any]]:
        raise NotImplementedError

    def trails(self, ctx: Context, ids: list[str]) -> dict[str, list[dict]]:
        raise NotImplementedError

    def broke(self, column: str, item_id: Any, *, system="", role="", user="", detail="", at=None) -> None:
        self.exceptions.append(
            Exception_(self.test_id(column), self.name, str(item_id), system, role, user, detail, at)
        )


# --- Trails: the ledger events behind sampled items -------------------------------------------------


def event_dict(event: dict) -> dict:
    return {
        "sequence": event["sequence"],
        "occurred_at": event["occurred_at"].isoformat(),
        "event_type": event["event_type"],
        "actor": event["actor_label"],
        "reason": event["reason"],
        "data": event["data"],
        "hash": event["hash"],
    }


def _events(condition: Q) -> Iterator[dict]:
    fields = ("sequence", "occurred_at", "event_type", "actor_label", "reason", "data", "hash")
    fields_plus = (*fields, "grant_id", "access_request_id")
    yield from AccessEvent.objects.filter(condition).order_by("sequence").values(*fields_plus)


def trails_by_request(keys: dict[str, tuple[int | None, int | None]]) -> dict[str, list[dict]]:
    """Trails of items keyed by (grant id, request id): every event naming the grant or the request."""
    grant_ids = {g for g, _ in keys.values() if g}
    request_ids = {r for _, r in keys.values() if r}
    trails: dict[str, list[dict]] = {item: [] for item in keys}
    if not grant_ids and not request_ids:
        return trails
    for event in _events(Q(grant_id__in=grant_ids) | Q(access_request_id__in=request_ids)):
        for item, (grant_id, request_id) in keys.items():
            if (
                (grant_id and event["grant_id"] == grant_id)
                or (request_id and event["access_request_id"] == request_id)
            ) and len(trails[item]) < TRAIL_LIMIT:
                trails[item].append(event_dict(event))
    return trails


def trails_by_data_key(key: str, ids: list[str]) -> dict[str, list[dict]]:
    """Trails of items named in events' data (review items, changes, drift findings)."""
    trails: dict[str, list[dict]] = {item: [] for item in ids}
    numbers = [number for item in ids if (number := inputs.parse_id(item)) is not None]
    if not numbers:
        return trails
    for event in _events(Q(**{f"data__{key}__in": numbers})):
        item = str(event["data"].get(key))
        if item in trails and len(trails[item]) < TRAIL_LIMIT:
            trails[item].append(event_dict(event))
    return trails


def _ints(ids: list[str] | None) -> list[int] | None:
    return None if ids is None else [number for i in ids if (number := inputs.parse_id(str(i))) is not None]


# PostgreSQL inside the build's snapshot: the same SELECT the ORM compiles, run on a plain psycopg cursor
# whose timestamptz loader is psycopg's C one. Django's loader is a Python subclass (so the C parser is
# never used) and the ORM adds per-value converters: for 100,000 grants with five times each that was most
# of the time. The values are the same (aware datetimes in UTC); tests/services/test_evidence_pack.py compares
# every population's rows through both paths.
PG_FAST_ROWS = True


def _chunked(qs: QuerySet, *fields: str) -> Iterator[tuple]:
    rows = qs.values_list(*fields)
    if PG_FAST_ROWS and connection.vendor == "postgresql" and connection.in_atomic_block:
        return _pg_rows(rows, len(fields))
    return rows.iterator(chunk_size=CHUNK)


def _pg_rows(qs: QuerySet, width: int) -> Iterator[tuple]:
    import psycopg
    from psycopg.pq import Format

    try:
        sql, params = qs.query.sql_with_params()
    except EmptyResultSet:  # e.g. pk__in=[]: the ORM answers nothing without asking
        return
    timestamptz = psycopg.adapters.types["timestamptz"].oid
    connection.ensure_connection()
    with connection.connection.cursor() as cursor:
        cursor.adapters.register_loader(timestamptz, psycopg.adapters.get_loader(timestamptz, Format.TEXT))
        cursor.execute(sql, params)
        while batch := cursor.fetchmany(CHUNK):
            for row in batch:
                yield row[:width]


# --- 1. Grants ------------------------------------------------------------------------------------


class Grants(Population):
    name = "grants"
    title = "Grants"
    description = (
        "Every grant whose access overlapped the period (started before it ended, ended or runs until after "
        "it began), with who approved the request that produced it."
    )
    columns = [
        Column("grant_id", "The grant (stable id)."),
        Column("request_id", "The access request that produced it."),
        Column("user", "Who held the access."),
        Column("system", "The system."),
        Column("role", "The role."),
        Column("risk_tier", "The role's risk tier (today's policy)."),
        Column("kind", "access or break_glass."),
        Column("starts_at", "From (UTC)."),
        Column("expires_at", "Until, after any extension (UTC)."),
        Column("outcome", "scheduled, active, expired, revoked or released at the time of the build."),
        Column("ended_at", "When access ended (empty while current)."),
        Column("ended_by", "Who revoked or released it (empty for expiry)."),
        Column("extensions", "How many times it was extended."),
        Column("approvals_required", "Distinct approvals the role requires (today's policy)."),
        Column("approved_by", "The approvers of the request, comma-separated."),
        Column("auto_approved_by_rule", "The auto-approval rule, when no person approved."),
        Column("provisioned_at", "When access was applied at the target."),
        Column("removal_confirmed_at", "When removal at the target was confirmed."),
        Column("revocation_lag_seconds", "removal_confirmed_at minus ended_at."),
        Column(
            "approved_by_other",
            "Approved by at least one person other than the grantee (empty for auto-approval and break-glass).",
            test="Every grant approved by someone other than the grantee",
        ),
        Column(
            "approvals_met",
            "As many distinct approvers as the role requires (empty for auto-approval and break-glass).",
            test="Every grant had the number of distinct approvals its role requires",
        ),
    ]

    def queryset(self, ctx: Context) -> QuerySet:
        return ctx.scoped(
            Grant.objects.alias(effective_end=Coalesce("ended_at", "expires_at")).filter(
                starts_at__lt=ctx.end, effective_end__gt=ctx.start
            )
        )

    def rows(self, ctx: Context, ids: list[str] | None = None) -> Iterator[list[Any]]:
        qs = self.queryset(ctx) if ids is None else Grant.objects.filter(pk__in=_ints(ids))
        qs = qs.annotate(approved_by=decider_names("access_request_id", Decision.Outcome.APPROVE)).order_by("pk")
        fields = (
            "pk",
            "access_request_id",
            "user__username",
            "role__system__name",
            "role__name",
            "role__risk_tier",
            "is_break_glass",
            "starts_at",
            "expires_at",
            "status",
            "ended_at",
            "end_reason",
            "ended_by__username",
            "extension_count",
            "role__approvals_required",
            "approved_by",
            "access_request__auto_approved_by_rule",
            "provisioned_at",
            "removal_confirmed_at",
        )
        for (
            pk,
            request_id,
            user,
            system,
            role,
            tier,
            break_glass,
            starts_at,
            expires_at,
            status,
            ended_at,
            end_reason,
            ended_by,
            extensions,
            required,
            approved_by,
            rule,
            provisioned_at,
            confirmed_at,
        ) in _chunked(qs, *fields):
            approvers = names(approved_by)
            outcome, ended_at = Grant.state_of(
                status=status,
                end_reason=end_reason,
                ended_at=ended_at,
                starts_at=starts_at,
                expires_at=expires_at,
                now=ctx.as_of,
            )
            by_person = not break_glass and not rule
            other = (bool(approvers) and user not in approvers) if by_person else None
            met = (len(set(approvers) - {user}) >= max(1, required)) if by_person else None
            if other is False:
                self.broke("approved_by_other", pk, system=system, role=role, user=user, at=starts_at,
                           detail="No approval by another person recorded for this grant.")  # fmt: skip
            if met is False:
                self.broke("approvals_met", pk, system=system, role=role, user=user, at=starts_at,
                           detail=f"{len(approvers)} distinct approver(s), the role requires {max(1, required)}.")  # fmt: skip
            yield [
                pk,
                request_id,
                user,
                system,
                role,
                tier,
                "break_glass" if break_glass else "access",
                starts_at,
                expires_at,
                outcome,
                ended_at,
                ended_by or "",
                extensions,
                required,
                ",".join(approvers),
                rule,
                provisioned_at,
                confirmed_at,
                seconds(confirmed_at - ended_at) if confirmed_at and ended_at else None,
                yes_no(other),
                yes_no(met),
            ]

    def trails(self, ctx: Context, ids: list[str]) -> dict[str, list[dict]]:
        pairs = Grant.objects.filter(pk__in=_ints(ids)).values_list("pk", "access_request_id")
        return trails_by_request({str(pk): (pk, request_id) for pk, request_id in pairs})


# --- 2. Requests and their decisions ----------------------------------------------------------------


class Requests(Population):
    name = "requests"
    title = "Access requests"
    description = "Every access request submitted in the period (break-glass included), with its decisions."
    columns = [
        Column("request_id", "The request (stable id)."),
        Column("kind", "access, extension or break_glass."),
        Column("requester", "Who asked."),
        Column("system", "The system."),
        Column("role", "The role."),
        Column("created_at", "Submitted (UTC)."),
        Column("status", "pending, approved, denied, cancelled or lapsed."),
        Column("decided_at", "When it was approved, denied, cancelled or lapsed."),
        Column("requested_duration_seconds", "Duration asked for."),
        Column("approved_duration_seconds", "Duration granted."),
        Column("justification", "Why, as the requester wrote it."),
        Column("ticket", "The ticket reference."),
        Column("auto_approved_by_rule", "The auto-approval rule, when no person approved."),
        Column("approved_by", "Approvers, comma-separated."),
        Column("denied_by", "Who denied it."),
        Column(
            "decided_by_other",
            "Every person who decided it is someone other than the requester (empty: no person decided).",
            test="No request was decided by its own requester",
        ),
    ]

    def queryset(self, ctx: Context) -> QuerySet:
        return ctx.scoped(AccessRequest.objects.filter(created_at__gte=ctx.start, created_at__lt=ctx.end))

    def rows(self, ctx: Context, ids: list[str] | None = None) -> Iterator[list[Any]]:
        qs = self.queryset(ctx) if ids is None else AccessRequest.objects.filter(pk__in=_ints(ids))
        qs = qs.annotate(
            approved_by=decider_names("pk", Decision.Outcome.APPROVE),
            denied_by=decider_names("pk", Decision.Outcome.DENY),
        ).order_by("pk")
        fields = (
            "pk",
            "kind",
            "requester__username",
            "role__system__name",
            "role__name",
            "created_at",
            "status",
            "decided_at",
            "requested_duration",
            "approved_duration",
            "justification",
            "ticket",
            "auto_approved_by_rule",
            "approved_by",
            "denied_by",
        )
        for row in _chunked(qs, *fields):
            pk, kind, requester, system, role, created_at, status = row[:7]
            approvers, deniers = names(row[13]), names(row[14])
            deciders = set(approvers) | set(deniers)
            other = (requester not in deciders) if deciders else None
            if other is False:
                self.broke("decided_by_other", pk, system=system, role=role, user=requester, at=row[7],
                           detail="Decided by its own requester.")  # fmt: skip
            yield [
                pk,
                kind,
                requester,
                system,
                role,
                created_at,
                status,
                row[7],
                whole_seconds(row[8]),
                whole_seconds(row[9]),
                row[10],
                row[11],
                row[12],
                ",".join(approvers),
                ",".join(deniers),
                yes_no(other),
            ]

    def trails(self, ctx: Context, ids: list[str]) -> dict[str, list[dict]]:
        return trails_by_request({item: (None, int(item)) for item in ids})


class Decisions(Population):
    name = "decisions"
    title = "Decisions"
    description = "Every approval and denial recorded on the requests of the period (requests.csv)."
    columns = [
        Column("decision_id", "The decision (stable id)."),
        Column("request_id", "The request it decided."),
        Column("approver", "Who decided."),
        Column("requester", "Who had asked."),
        Column("system", "The system."),
        Column("role", "The role."),
        Column("outcome", "approve or deny."),
        Column("decided_at", "When (UTC)."),
        Column("comment", "The approver's comment."),
        Column("duration_seconds", "The duration this approver allowed, if shortened."),
        Column("step_up_at", "When the approver last entered an authenticator code (step-up roles)."),
        Column(
            "not_self",
            "The approver is not the requester.",
            test="Every decision was made by someone other than the requester",
        ),
    ]

    def rows(self, ctx: Context, ids: list[str] | None = None) -> Iterator[list[Any]]:
        if ids is None:
            requests = Requests().queryset(ctx)
            qs = Decision.objects.filter(access_request__in=requests.values("pk"))
        else:
            qs = Decision.objects.filter(pk__in=_ints(ids))
        fields = (
            "pk",
            "access_request_id",
            "approver__username",
            "requester__username",
            "access_request__role__system__name",
            "access_request__role__name",
            "outcome",
            "created_at",
            "comment",
            "duration",
            "step_up_at",
        )
        for row in _chunked(qs.order_by("pk"), *fields):
            not_self = row[2] != row[3]
            if not not_self:
                self.broke("not_self", row[0], system=row[4], role=row[5], user=row[3], at=row[7],
                           detail="The requester decided their own request.")  # fmt: skip
            yield [*row[:9], whole_seconds(row[9]), row[10], yes_no(not_self)]

    def trails(self, ctx: Context, ids: list[str]) -> dict[str, list[dict]]:
        pairs = Decision.objects.filter(pk__in=_ints(ids)).values_list("pk", "access_request_id")
        return trails_by_request({str(pk): (None, request_id) for pk, request_id in pairs})


class ApprovalsMfa(Population):
    name = "approvals_mfa"
    title = "Approvals with MFA evidence"
    description = (
        "Every approval recorded in the period on a role that needs a fresh authenticator code (step-up), and "
        "every break-glass activation in the period, with when the code was entered. Every portal session "
        "already needs a password and an authenticator code; this is the second, fresh one."
    )
    columns = [
        Column("id", "decision:<decision id> or break_glass:<grant id> (stable id)."),
        Column("kind", "approval or break_glass_activation."),
        Column("request_id", "The request."),
        Column("actor", "Who approved, or who activated break-glass."),
        Column("requester", "Who had asked."),
        Column("system", "The system."),
        Column("role", "The role."),
        Column("at", "When the approval or activation was recorded (UTC)."),
        Column("step_up_at", "When the authenticator code was entered."),
        Column("step_up_age_seconds", "at minus step_up_at."),
        Column(
            "fresh_mfa",
            "An authenticator code entered within the step-up window before the decision.",
            test="Every approval on a step-up role and every break-glass activation had a fresh authenticator code",
        ),
    ]

    def _fresh(self, ctx: Context, at: datetime, step_up_at: datetime | None) -> bool:
        return otp.step_up_fresh(step_up_at, at, window=ctx.step_up_window)

    def rows(self, ctx: Context, ids: list[str] | None = None) -> Iterator[list[Any]]:
        wanted = set(ids) if ids is not None else None
        approvals = Decision.objects.filter(
            outcome=Decision.Outcome.APPROVE, access_request__role__step_up_required=True
        )
        if wanted is None:
            approvals = ctx.scoped(approvals, "access_request__role__system_id")
            approvals = approvals.filter(created_at__gte=ctx.start, created_at__lt=ctx.end)
        else:
            approvals = approvals.filter(pk__in=[int(i.split(":")[1]) for i in wanted if i.startswith("decision:")])
        fields = (
            "pk",
            "access_request_id",
            "approver__username",
            "requester__username",
            "access_request__role__system__name",
            "access_request__role__name",
            "created_at",
            "step_up_at",
        )
        for pk, request_id, approver, requester, system, role, at, step_up_at in _chunked(
            approvals.order_by("pk"), *fields
        ):
            yield self._row(
                ctx, f"decision:{pk}", "approval", request_id, approver, requester, system, role, at, step_up_at
            )
        # Break-glass grants, with the step-up time their activation event recorded.
        activations = Grant.objects.filter(is_break_glass=True)
        if wanted is None:
            activations = ctx.scoped(activations).filter(starts_at__gte=ctx.start, starts_at__lt=ctx.end)
        else:
            activations = activations.filter(
                pk__in=[
                    n
                    for i in wanted
                    if i.startswith("break_glass:") and (n := inputs.parse_id(i.split(":")[1])) is not None
                ]
            )
        activation = AccessEvent.objects.filter(
            access_request_id=OuterRef("access_request_id"), event_type=Type.BREAK_GLASS_ACTIVATED
        ).annotate(step_up=KeyTextTransform("step_up_at", "data"))
        activations = activations.annotate(step_up=Subquery(activation.values("step_up")[:1]))
        fields = (
            "pk",
            "access_request_id",
            "user__username",
            "role__system__name",
            "role__name",
            "starts_at",
            "step_up",
        )
        for grant_id, request_id, actor, system, role, at, step_up in _chunked(activations.order_by("pk"), *fields):
            step_up_at = datetime.fromisoformat(step_up) if step_up else None
            yield self._row(
                ctx,
                f"break_glass:{grant_id}",
                "break_glass_activation",
                request_id,
                actor,
                actor,
                system,
                role,
                at,
                step_up_at,
            )

    def _row(self, ctx, item_id, kind, request_id, actor, requester, system, role, at, step_up_at) -> list[Any]:
        fresh = self._fresh(ctx, at, step_up_at)
        if not fresh:
            self.broke("fresh_mfa", item_id, system=system, role=role, user=actor, at=at,
                       detail="No authenticator code recorded within the step-up window.")  # fmt: skip
        age = seconds(at - step_up_at) if step_up_at else None
        return [item_id, kind, request_id, actor, requester, system, role, at, step_up_at, age, yes_no(fresh)]

    def trails(self, ctx: Context, ids: list[str]) -> dict[str, list[dict]]:
        keys: dict[str, tuple[int | None, int | None]] = {}
        decisions = dict(
            Decision.objects.filter(
                pk__in=[int(i.split(":")[1]) for i in ids if i.startswith("decision:")]
            ).values_list("pk", "access_request_id")
        )
        for item in ids:
            kind, _, number = item.partition(":")
            keys[item] = (None, decisions.get(int(number))) if kind == "decision" else (int(number), None)
        return trails_by_request(keys)


# --- 3. Removals ------------------------------------------------------------------------------------


class Removals(Population):
    name = "removals"
    title = "Removals"
    description = (
        "Every grant whose access ended in the period (expiry by the clock included, even before the sweep "
        "recorded it), with when access was applied, when removal was requested, done and confirmed, and the lag."
    )
    columns = [
        Column("grant_id", "The grant (stable id)."),
        Column("user", "Who held the access."),
        Column("system", "The system."),
        Column("role", "The role."),
        Column("ended_at", "When access ended: expires_at for expiry, else the revoke or release time (UTC)."),
        Column("end_reason", "expired, revoked or released."),
        Column("provisioning_state", "The target-side state at the build."),
        Column("applied_at", "When access was applied at the target."),
        Column("removal_requested_at", "When removal was queued."),
        Column("removed_at", "When the target acknowledged the removal."),
        Column("removal_confirmed_at", "When the removal was read back and confirmed."),
        Column("lag_seconds", "removal_confirmed_at minus ended_at."),
        Column(
            "confirmed_within_target",
            "Removal confirmed within the target time (empty: never applied, or the target time has not passed).",
            test="Every removal of access confirmed at the target within the target time",
        ),
    ]

    def queryset(self, ctx: Context) -> QuerySet:
        ended = Q(ended_at__gte=ctx.start, ended_at__lt=ctx.end)
        clock = Q(ended_at__isnull=True, expires_at__gte=ctx.start, expires_at__lt=min(ctx.end, ctx.as_of))
        return ctx.scoped(Grant.objects.filter(ended | clock))

    def rows(self, ctx: Context, ids: list[str] | None = None) -> Iterator[list[Any]]:
        qs = self.queryset(ctx) if ids is None else Grant.objects.filter(pk__in=_ints(ids))
        fields = (
            "pk",
            "user__username",
            "role__system__name",
            "role__name",
            "ended_at",
            "expires_at",
            "end_reason",
            "provisioning_state",
            "provisioned_at",
            "removal_requested_at",
            "removed_at",
            "removal_confirmed_at",
        )
        target = ctx.removal_target
        for row in _chunked(qs.order_by("pk"), *fields):
            pk, user, system, role, ended_at, expires_at, reason, state, applied, requested, removed, confirmed = row
            if ended_at is None:
                ended_at, reason = expires_at, Grant.EndReason.EXPIRED
            lag = confirmed - ended_at if confirmed else None
            if state == Grant.Provisioning.NOT_APPLIED or (
                applied is None and state in ("", Grant.Provisioning.PENDING)
            ):
                within = None  # nothing was ever applied at the target: nothing to remove
            elif lag is not None:
                within = lag <= target
            elif removed is not None and state == Grant.Provisioning.REMOVED:
                within = removed - ended_at <= target  # webhook targets: the acknowledgement is the confirmation
            else:
                within = False if ctx.as_of - ended_at > target else None
            if within is False:
                detail = f"Removal not confirmed within {seconds(target):.0f} s (lag: " + (
                    f"{seconds(lag)} s)." if lag is not None else "not confirmed)."
                )
                if applied is None:  # e.g. a manual system's apply task still open when the grant ended
                    detail += (" Nobody confirmed applying this access either: its removal task checks that it "
                               "was never given, and is still open.")  # fmt: skip
                self.broke("confirmed_within_target", pk, system=system, role=role, user=user, at=ended_at,
                           detail=detail)  # fmt: skip
            yield [pk, user, system, role, ended_at, reason, state, applied, requested, removed, confirmed,
                   seconds(lag), yes_no(within)]  # fmt: skip

    def trails(self, ctx: Context, ids: list[str]) -> dict[str, list[dict]]:
        return Grants().trails(ctx, ids)


# --- 4. Break-glass -----------------------------------------------------------------------------------


class BreakGlass(Population):
    name = "break_glass"
    title = "Break-glass uses and follow-up sign-offs"
    description = (
        "Every break-glass activation in the period, with its follow-up, who signed it off, and whether that "
        "was after the use had ended."
    )
    columns = [
        Column("grant_id", "The break-glass grant (stable id)."),
        Column("request_id", "Its request."),
        Column("user", "Who used break-glass."),
        Column("system", "The system."),
        Column("role", "The role."),
        Column("activated_at", "When (UTC)."),
        Column("expires_at", "Until."),
        Column("ended_at", "When access ended."),
        Column("justification", "The emergency, as written at activation."),
        Column("follow_up_due_at", "When the follow-up was due (24 h)."),
        Column("acknowledged_by", "Who signed it off."),
        Column("acknowledged_at", "When."),
        Column("acknowledgement_comment", "What they checked."),
        Column(
            "acknowledged_by_other",
            "Signed off by someone other than the user (empty while open).",
            test="Every break-glass use was signed off by someone other than its user",
        ),
        Column(
            "acknowledged_in_time",
            "Signed off before the follow-up was due (false: late, or still open past due).",
            test="Every break-glass follow-up was signed off by its due time",
        ),
        Column(
            "acknowledged_after_use",
            "Signed off once the access had ended (false: acknowledged while in use, which is refused now but "
            "older data holds; empty while open).",
            test="Every break-glass use was signed off only after it had ended",
        ),
    ]

    def rows(self, ctx: Context, ids: list[str] | None = None) -> Iterator[list[Any]]:
        if ids is None:
            qs = ctx.scoped(Grant.objects.filter(is_break_glass=True, starts_at__gte=ctx.start, starts_at__lt=ctx.end))
        else:
            qs = Grant.objects.filter(is_break_glass=True, pk__in=_ints(ids))
        fields = (
            "pk",
            "access_request_id",
            "user__username",
            "role__system__name",
            "role__name",
            "starts_at",
            "expires_at",
            "ended_at",
            "access_request__justification",
            "follow_up__due_at",
            "follow_up__acknowledged_by__username",
            "follow_up__acknowledged_at",
            "follow_up__comment",
        )
        for row in _chunked(qs.order_by("pk"), *fields):
            pk, _, user, system, role, _starts_at, expires_at, ended_at = row[:8]
            due_at, by, at = row[9], row[10], row[11]
            other = (by != user) if by else None
            if at is not None and due_at is not None:
                in_time = at <= due_at
            else:
                in_time = False if due_at is not None and ctx.as_of >= due_at else None
            # Access ends at its expiry, swept or not, or earlier when released or revoked (``Grant.is_active_at``).
            end = min(ended_at, expires_at) if ended_at else expires_at
            after_use = None if at is None else at >= end
            if other is False:
                self.broke("acknowledged_by_other", pk, system=system, role=role, user=user, at=at,
                           detail="Signed off by the break-glass user themselves.")  # fmt: skip
            if in_time is False:
                self.broke("acknowledged_in_time", pk, system=system, role=role, user=user, at=due_at,
                           detail="Follow-up signed off late." if at else "Follow-up not signed off, past due.")  # fmt: skip
            if after_use is False:
                ended = f"the access ended {end:%Y-%m-%d %H:%M:%S} UTC" if end <= ctx.as_of else "still in use"
                self.broke("acknowledged_after_use", pk, system=system, role=role, user=user, at=at,
                           detail=f"Acknowledged while in use: signed off {at:%Y-%m-%d %H:%M:%S} UTC, {ended}.")  # fmt: skip
            yield [*row[:10], by or "", at, row[12] or "", yes_no(other), yes_no(in_time), yes_no(after_use)]

    def trails(self, ctx: Context, ids: list[str]) -> dict[str, list[dict]]:
        return Grants().trails(ctx, ids)


# --- 5. Access reviews --------------------------------------------------------------------------------


class ReviewItems(Population):
    name = "review_items"
    title = "Access review campaigns and items"
    description = (
        "Every item of every access review campaign open at some time in the period: the subject, the reviewer, "
        "the decision and its reason, what was applied, and the eligibility end the close moved."
    )
    columns = [
        Column("item_id", "The review item (stable id)."),
        Column("campaign_id", "The campaign."),
        Column("campaign", "Its name."),
        Column("campaign_status", "open or closed."),
        Column("campaign_opened_at", "When the campaign opened (UTC)."),
        Column("due_at", "Reviewers' deadline."),
        Column("closed_at", "When it closed."),
        Column("subject", "Whose access (a username, or group:<name>)."),
        Column("item_kind", "eligibility or grant."),
        Column("eligibility_id", "The eligibility reviewed."),
        Column("grant_id", "The long-running grant reviewed."),
        Column("system", "The system."),
        Column("role", "The role."),
        Column("reviewer", "Who was asked."),
        Column("decision", "keep or revoke (empty: no answer)."),
        Column("decided_by", "Who answered."),
        Column("decided_at", "When."),
        Column("reason", "The reviewer's comment (required to revoke)."),
        Column("outcome", "kept, revoked or kept_flagged, once applied."),
        Column("applied_at", "When the outcome was applied."),
        Column(
            "eligibility_ends_before",
            "The eligibility's end before the close moved it (empty: the close did not move it, or it had no end "
            "when eligibility_ends_after is set).",
        ),
        Column(
            "eligibility_ends_after",
            "The end the close gave it: a revoke ends it, a keep brings it down to the campaign's keep period "
            "(empty: the close did not move it). From the item's review.applied event.",
        ),
        Column(
            "answered",
            "A reviewer answered (false: the campaign passed its due date without an answer).",
            test="Every review item was answered by its due date",
        ),
        Column(
            "reviewer_not_subject",
            "The person who answered is not the subject.",
            test="No one reviewed their own access",
        ),
    ]

    def rows(self, ctx: Context, ids: list[str] | None = None) -> Iterator[list[Any]]:
        if ids is None:
            campaigns = ReviewCampaign.objects.filter(created_at__lt=ctx.end).filter(
                Q(closed_at__isnull=True) | Q(closed_at__gte=ctx.start)
            )
            qs = ctx.scoped(ReviewItem.objects.filter(campaign__in=campaigns.values("pk")))
        else:
            qs = ReviewItem.objects.filter(pk__in=_ints(ids))
            campaigns = ReviewCampaign.objects.filter(pk__in=qs.values("campaign_id"))
        moved = eligibility_ends_moved(campaigns)
        qs = qs.annotate(
            subject=Coalesce(
                "subject_user__username",
                Concat_("group:", "subject_group__name"),
                output_field=CharField(),
            )
        )
        fields = (
            "pk",
            "campaign_id",
            "campaign__name",
            "campaign__status",
            "campaign__created_at",
            "campaign__due_at",
            "campaign__closed_at",
            "subject",
            "eligibility_id",
            "grant_id",
            "role__system__name",
            "role__name",
            "reviewer__username",
            "decision",
            "decided_by__username",
            "decided_at",
            "comment",
            "outcome",
            "applied_at",
            "subject_user__username",
        )
        for row in _chunked(qs.order_by("pk"), *fields):
            pk, due_at, subject, decision, decided_by = row[0], row[5], row[7], row[13], row[14]
            answered = True if decision else False if row[6] is not None or ctx.as_of >= due_at else None
            not_subject = (decided_by != row[19]) if decided_by else None
            if answered is False:
                self.broke("answered", pk, system=row[10], role=row[11], user=subject or "", at=due_at,
                           detail=f"No answer by the due date (campaign {row[2]}).")  # fmt: skip
            if not_subject is False:
                self.broke("reviewer_not_subject", pk, system=row[10], role=row[11], user=subject or "",
                           at=row[15], detail="Answered by its own subject.")  # fmt: skip
            ends_before, ends_after = moved.get(pk, (None, None))
            yield [
                *row[:8],
                "eligibility" if row[8] else "grant",
                row[8],
                row[9],
                row[10],
                row[11],
                row[12] or "",
                decision,
                decided_by or "",
                row[15],
                row[16],
                row[17],
                row[18],
                ends_before,
                ends_after,
                yes_no(answered),
                yes_no(not_subject),
            ]

    def trails(self, ctx: Context, ids: list[str]) -> dict[str, list[dict]]:
        return trails_by_data_key("item_id", ids)


def eligibility_ends_moved(campaigns: QuerySet) -> dict[int, tuple[datetime | None, datetime]]:
    """Review item id → the eligibility's end before and after the close of ``campaigns`` moved it, as the
    item's review.applied event recorded them (``services.reviews``: ``eligibility_ends_before`` null for an
    eligibility that had no end); items whose end the close did not move are not in it. The events are written
    at the close's instant, so the index on type and time finds them: one read per pack, not one per item."""
    closes = dict(campaigns.filter(closed_at__isnull=False).order_by().values_list("pk", "closed_at"))
    if not closes:
        return {}
    moved: dict[int, tuple[datetime | None, datetime]] = {}
    for data in AccessEvent.objects.filter(
        event_type=Type.REVIEW_APPLIED, occurred_at__in=set(closes.values()), data__has_key="eligibility_ends_after"
    ).values_list("data", flat=True):
        if data.get("campaign_id") in closes:
            before = data.get("eligibility_ends_before")
            moved[data["item_id"]] = (
                datetime.fromisoformat(before) if before else None,
                datetime.fromisoformat(data["eligibility_ends_after"]),
            )
    return moved


def Concat_(prefix: str, field_name: str):
    from django.db.models.functions import Concat

    return Concat(Value(prefix), F(field_name), output_field=CharField())


# --- 6. Policy changes (four-eyes) --------------------------------------------------------------------


class PolicyChanges(Population):
    name = "policy_changes"
    title = "Policy changes (four-eyes)"
    description = (
        "Every policy change proposed or decided in the period (role policy, auto-approval rules, eligibility "
        "made in the admin, connector settings, who approves or owns, account rights, service accounts and "
        "their tokens, event webhooks, groups), with the proposer and the second approver. A change that only "
        "takes rights away (narrowing: removed permissions or groups, an admin flag unticked, a group deleted, a "
        "webhook disabled or deleted) is applied at once by design: its second_approver is empty, not an "
        "exception. Changes are not per system: every pack lists all of them."
    )
    columns = [
        Column("change_id", "The change (stable id)."),
        Column("kind", "What kind of policy it changes."),
        Column("summary", "What it changes."),
        Column("proposed_by", "Who proposed it."),
        Column("proposed_at", "When (UTC)."),
        Column("status", "pending, applied, rejected or withdrawn."),
        Column(
            "decided_by",
            "The second admin who approved or rejected it (empty: applied without four-eyes — narrowing, or "
            "four-eyes off).",
        ),
        Column("decided_at", "When."),
        Column("comment", "The rejection reason."),
        Column("beneficiary", "The account whose access the change widens, if any."),
        Column(
            "second_approver",
            "Applied only after a second admin, not the proposer, approved it (empty: not applied, or a change "
            "that only takes rights away, applied at once by design).",
            test="Every applied policy change that widens access was approved by a second person",
        ),
    ]

    def rows(self, ctx: Context, ids: list[str] | None = None) -> Iterator[list[Any]]:
        if ids is None:
            qs = ChangeRequest.objects.filter(
                Q(proposed_at__gte=ctx.start, proposed_at__lt=ctx.end)
                | Q(decided_at__gte=ctx.start, decided_at__lt=ctx.end)
            )
        else:
            qs = ChangeRequest.objects.filter(pk__in=_ints(ids))
        fields = (
            "pk",
            "kind",
            "summary",
            "proposed_by__username",
            "proposed_at",
            "status",
            "decided_by__username",
            "decided_at",
            "comment",
            "beneficiary__username",
            "narrowing",
        )
        # Narrowing: services.changes marks it (payload "narrowing"); who-approves-or-owns removals recorded
        # before the mark say it by adding nothing.
        qs = qs.annotate(
            narrowing=ExpressionWrapper(
                Q(payload__narrowing=True) | Q(kind=ChangeRequest.Kind.OBJECT_PERMISSION, payload__add=[]),
                output_field=BooleanField(),
            )
        )
        for row in _chunked(qs.order_by("pk"), *fields):
            applied = row[5] == ChangeRequest.Status.APPLIED and not row[10]
            second = (bool(row[6]) and row[6] != row[3]) if applied else None
            if second is False:
                self.broke("second_approver", row[0], user=row[3], at=row[7],
                           detail="Applied without a second admin's approval.")  # fmt: skip
            yield [*row[:6], row[6] or "", row[7], row[8], row[9] or "", yes_no(second)]

    def trails(self, ctx: Context, ids: list[str]) -> dict[str, list[dict]]:
        return trails_by_data_key("change_id", ids)


# --- 7. Deactivations ---------------------------------------------------------------------------------


class Deactivations(Population):
    name = "deactivations"
    title = "Deactivations and the grants they ended"
    description = (
        "Every account deactivated in the period (the ledger's user.deactivated events), the grants the "
        "deactivation revoked, and whether access was removed at the targets. Accounts are not per system: "
        "every pack lists all of them."
    )
    columns = [
        Column("event_sequence", "The deactivation's ledger sequence number (stable id)."),
        Column("user", "The account deactivated."),
        Column("deactivated_at", "When (UTC)."),
        Column("deactivated_by", "The admin who did it."),
        Column("reason", "Why."),
        Column("grants_ended", "The grants it revoked, space-separated."),
        Column("grants_removed", "How many of them were removed at the target (acknowledged or confirmed)."),
        Column(
            "all_access_removed",
            "Every grant it ended that had been applied was removed at the target.",
            test="Every deactivated account's access was removed at the targets",
        ),
    ]

    def rows(self, ctx: Context, ids: list[str] | None = None) -> Iterator[list[Any]]:
        events = AccessEvent.objects.filter(event_type=Type.USER_DEACTIVATED)
        if ids is None:
            events = events.filter(occurred_at__gte=ctx.start, occurred_at__lt=ctx.end)
        else:
            events = events.filter(sequence__in=_ints(ids))
        for sequence, at, actor, reason, data in events.order_by("sequence").values_list(
            "sequence", "occurred_at", "actor_label", "reason", "data"
        ):
            grants = self.grants_ended(sequence, data.get("user_id"))
            applied = [g for g in grants if g[1] is not None]
            removed = sum(1 for g in applied if g[2] is not None)
            ok = removed == len(applied)
            if not ok:
                self.broke("all_access_removed", sequence, user=data.get("username", ""), at=at,
                           detail=f"{len(applied) - removed} grant(s) not removed at the target.")  # fmt: skip
            ended = " ".join(str(g[0]) for g in grants)
            yield [sequence, data.get("username", ""), at, actor, reason, ended, removed, yes_no(ok)]

    @staticmethod
    def grants_ended(sequence: int, user_id: int | None) -> list[tuple]:
        """The grants this deactivation revoked: revocations by ``system:deactivation`` of the user's grants
        recorded after it and before the account's next deactivation or reactivation (the deactivation
        writes them in its own transaction, under the ledger lock, so they follow it)."""
        later = (
            AccessEvent.objects.filter(
                event_type__in=[Type.USER_DEACTIVATED, Type.USER_REACTIVATED],
                sequence__gt=sequence,
                data__user_id=user_id,
            )
            .order_by("sequence")
            .values_list("sequence", flat=True)
            .first()
        )
        revoked = AccessEvent.objects.filter(
            event_type=Type.GRANT_REVOKED,
            actor_label="system:deactivation",
            sequence__gt=sequence,
            grant__user_id=user_id,
        )
        if later is not None:
            revoked = revoked.filter(sequence__lt=later)
        grant_ids = list(revoked.values_list("grant_id", flat=True))
        return list(
            Grant.objects.filter(pk__in=grant_ids)
            .annotate(removed=Coalesce("removal_confirmed_at", "removed_at"))
            .order_by("pk")
            .values_list("pk", "provisioned_at", "removed")
        )

    def trails(self, ctx: Context, ids: list[str]) -> dict[str, list[dict]]:
        trails: dict[str, list[dict]] = {}
        for sequence, data in AccessEvent.objects.filter(
            event_type=Type.USER_DEACTIVATED, sequence__in=_ints(ids)
        ).values_list("sequence", "data"):
            grant_ids = [g[0] for g in self.grants_ended(sequence, data.get("user_id"))]
            events = _events(Q(sequence=sequence) | Q(grant_id__in=grant_ids, sequence__gte=sequence))
            trails[str(sequence)] = [event_dict(e) for _, e in zip(range(TRAIL_LIMIT), events, strict=False)]
        return trails


# --- 8. Drift -------------------------------------------------------------------------------------------


class DriftFindings(Population):
    name = "drift_findings"
    title = "Drift findings"
    description = (
        "Every finding of access at a target without a grant behind it that was open at some time in the "
        "period, and how it was closed."
    )
    columns = [
        Column("finding_id", "The finding (stable id)."),
        Column("system", "The system."),
        Column("role", "The role."),
        Column("principal", "Who held the access at the target."),
        Column("detected_at", "First seen (UTC)."),
        Column("last_seen_at", "Last seen."),
        Column("resolved_at", "When it was closed."),
        Column("how_closed", "removed_by_accessgov, gone_at_target (removed by someone) or open."),
        Column("closed", "The finding was closed.", test="Every drift finding was closed"),
    ]

    def rows(self, ctx: Context, ids: list[str] | None = None) -> Iterator[list[Any]]:
        if ids is None:
            qs = DriftFinding.objects.filter(detected_at__lt=ctx.end).filter(
                Q(resolved_at__isnull=True) | Q(resolved_at__gte=ctx.start)
            )
            qs = ctx.scoped(qs, "system_id")
        else:
            qs = DriftFinding.objects.filter(pk__in=_ints(ids))
        fields = ("pk", "system__name", "role__name", "principal", "detected_at", "last_seen_at", "resolved_at",
                  "removed_by_accessgov")  # fmt: skip
        for row in _chunked(qs.order_by("pk"), *fields):
            resolved_at, by_us = row[6], row[7]
            how = "open" if resolved_at is None else ("removed_by_accessgov" if by_us else "gone_at_target")
            if resolved_at is None:
                self.broke("closed", row[0], system=row[1], role=row[2], user=row[3], at=row[4],
                           detail="Access without a grant still present at the target.")  # fmt: skip
            yield [*row[:7], how, yes_no(resolved_at is not None)]

    def trails(self, ctx: Context, ids: list[str]) -> dict[str, list[dict]]:
        return trails_by_data_key("finding_id", ids)


# --- 9. Activity: what was done with each grant (issue 17) --------------------------------------------


class Activity(Population):
    name = "activity"
    title = "Activity per grant"
    description = (
        "Every grant of the Grants population with what was done with it at the target: sessions, "
        "statements by class, the statement digest, the findings it raised and their sign-off, and the seals "
        "that put its activity into the ledger (ids, ledger sequence numbers and SHA-256 hashes, so each can be "
        "tied to its activity.sealed event in ledger/events.jsonl). Empty counts: no activity was captured."
    )
    columns = [
        Column("grant_id", "The grant (stable id; the same as in grants.csv)."),
        Column("user", "Who held the access."),
        Column("system", "The system."),
        Column("role", "The role."),
        Column("starts_at", "From (UTC)."),
        Column("ended_at", "When access ended (empty while current)."),
        Column("capture_levels", "Capture levels in force when the grant was applied (sessions, digest, pgaudit)."),
        Column("sessions", "Sessions seen or reported."),
        Column("statements", "Statements seen or reported."),
        Column("reads", "Statements that read."),
        Column("writes", "Statements that wrote (DML)."),
        Column("ddl", "Schema changes (DDL)."),
        Column("privilege", "Privilege and role changes."),
        Column("other", "Other statements (session, configuration, unclassified)."),
        Column("digest_calls", "Calls in the statement digest (pg_stat_statements) between apply and removal."),
        Column("first_activity_at", "First activity seen (UTC)."),
        Column("last_activity_at", "Last activity seen (UTC)."),
        Column("findings", "Activity findings raised for this grant (activity_findings.csv)."),
        Column("findings_open", "Of them, not signed off at the time of the build."),
        Column("findings_signed_off_by", "Who signed its findings off, comma-separated."),
        Column("sealed_at", "When its activity was sealed into the ledger."),
        Column("seal_ids", "Its seals (the first, then supplements for late activity), space-separated."),
        Column("seal_sequences", "The ledger sequence numbers of the seals' activity.sealed events."),
        Column("seal_hashes", "SHA-256 over each seal's rows, as in its activity.sealed event."),
        Column("sealed_rows", "Activity rows the seals cover."),
        Column(
            "sealed",
            "Activity captured for a grant whose removal is done was sealed into the ledger (empty: no activity "
            "captured, or the grant has not ended and been removed yet).",
            test="Every ended grant's captured activity was sealed into the ledger",
        ),
    ]

    def rows(self, ctx: Context, ids: list[str] | None = None) -> Iterator[list[Any]]:
        qs = Grants().queryset(ctx) if ids is None else Grant.objects.filter(pk__in=_ints(ids))
        fields = (
            "pk",
            "user__username",
            "role__system__name",
            "role__name",
            "starts_at",
            "expires_at",
            "ended_at",
            "removed_at",
            "provisioning_state",
        )
        seal_delay = timedelta(seconds=settings.ACTIVITY_SEAL_DELAY_SECONDS)
        batch: list[tuple] = []
        for row in _chunked(qs.order_by("pk"), *fields):
            batch.append(row)
            if len(batch) >= CHUNK:
                yield from self._rows_of(ctx, batch, seal_delay)
                batch = []
        if batch:
            yield from self._rows_of(ctx, batch, seal_delay)

    def _rows_of(self, ctx: Context, batch: list[tuple], seal_delay: timedelta) -> Iterator[list[Any]]:
        grant_ids = [row[0] for row in batch]
        totals = {
            values[0]: values
            for values in GrantActivity.objects.filter(pk__in=grant_ids).values_list(
                "pk", "levels", "session_count", "statement_count", "read_count", "write_count", "ddl_count",
                "privilege_count", "other_count", "digest_calls", "first_activity_at", "last_activity_at",
                "sealed_at",
            )
        }  # fmt: skip
        seals: dict[int, list[tuple]] = {}
        for grant_id, *seal in (
            ActivitySeal.objects.filter(grant_id__in=grant_ids, sealed_at__lt=ctx.as_of)
            .order_by("pk")
            .values_list("grant_id", "pk", "event__sequence", "content_hash", "row_count")
        ):
            seals.setdefault(grant_id, []).append(tuple(seal))
        findings: dict[int, list[tuple]] = {}
        for grant_id, status, signer in (
            ActivityFinding.objects.filter(grant_id__in=grant_ids, raised_at__lt=ctx.as_of)
            .order_by("pk")
            .values_list("grant_id", "status", "signed_off_by__username")
        ):
            findings.setdefault(grant_id, []).append((status, signer))
        for pk, user, system, role, starts_at, expires_at, ended_at, removed_at, provisioning in batch:
            total = totals.get(pk)
            ended = ended_at or (expires_at if expires_at <= ctx.as_of else None)
            own_seals, own_findings = seals.get(pk, []), findings.get(pk, [])
            captured = bool(total and (total[2] or total[3] or total[9])) or bool(own_seals)
            removal_done_at = removed_at if removed_at else (ended if provisioning in ("", "not_applied") else None)
            due = captured and removal_done_at is not None and removal_done_at + seal_delay <= ctx.as_of
            sealed = bool(total and total[12]) or bool(own_seals)
            test = sealed if due else None
            if test is False:
                self.broke("sealed", pk, system=system, role=role, user=user, at=ended,
                           detail="Captured activity not sealed into the ledger after the grant's removal.")  # fmt: skip
            signers = sorted({signer for _, signer in own_findings if signer})
            yield [
                pk,
                user,
                system,
                role,
                starts_at,
                ended,
                " ".join(total[1] or []) if total else "",
                *(list(total[2:10]) if total else [None] * 8),
                total[10] if total else None,
                total[11] if total else None,
                len(own_findings),
                sum(1 for status, _ in own_findings if status == ActivityFinding.Status.OPEN),
                ",".join(signers),
                total[12] if total else None,
                " ".join(str(seal[0]) for seal in own_seals),
                " ".join(str(seal[1]) for seal in own_seals if seal[1] is not None),
                " ".join(seal[2] for seal in own_seals),
                sum(seal[3] for seal in own_seals) if own_seals else None,
                yes_no(test),
            ]

    def trails(self, ctx: Context, ids: list[str]) -> dict[str, list[dict]]:
        pairs = Grant.objects.filter(pk__in=_ints(ids)).values_list("pk", "access_request_id")
        return trails_by_request({str(pk): (pk, request_id) for pk, request_id in pairs})


class ActivityFindings(Population):
    name = "activity_findings"
    title = "Activity findings"
    description = (
        "Every activity finding (activity beyond what was granted: without a grant, after its end, writes "
        "under read-only, DDL or privilege changes, an unexpected address, writes the reason did not mention) "
        "raised before the period's end and open at some time in it, and who signed it off. An unsigned "
        "finding is an exception."
    )
    columns = [
        Column("finding_id", "The finding (stable id)."),
        Column("system", "The system."),
        Column("role", "The role (empty: activity without a grant)."),
        Column("grant_id", "The grant the activity was attributed to (empty: none)."),
        Column("user", "The person whose login it was, when known."),
        Column("principal", "The login role at the target."),
        Column("kind", "no_grant, after_end, write_read_only, ddl, privilege, address or reason."),
        Column("first_seen_at", "First activity of this kind (UTC)."),
        Column("last_seen_at", "Last activity of this kind (UTC)."),
        Column("count", "How many rows raised it."),
        Column("example_command", "One command that raised it (no statement text)."),
        Column("detail", "Why, in a sentence."),
        Column("raised_at", "When it was raised."),
        Column("status", "open or signed_off at the time of the build."),
        Column("signed_off_by", "Who signed it off."),
        Column("signed_off_at", "When."),
        Column("comment", "What the signer checked."),
        Column(
            "signed_off",
            "A second person signed it off (false: still open at the time of the build).",
            test="Every activity finding was signed off by a second person",
        ),
        Column(
            "signed_off_by_other",
            "The signer is not the person whose activity it was (empty: not signed off).",
            test="No activity finding was signed off by its subject",
        ),
    ]

    def rows(self, ctx: Context, ids: list[str] | None = None) -> Iterator[list[Any]]:
        if ids is None:
            qs = ActivityFinding.objects.filter(raised_at__lt=min(ctx.end, ctx.as_of)).filter(
                Q(status=ActivityFinding.Status.OPEN) | Q(signed_off_at__gte=ctx.start)
            )
            qs = ctx.scoped(qs, "system_id")
        else:
            qs = ActivityFinding.objects.filter(pk__in=_ints(ids))
        fields = ("pk", "system__name", "role__name", "grant_id", "user__username", "principal", "kind",
                  "first_seen_at", "last_seen_at", "count", "example_command", "detail", "raised_at", "status",
                  "signed_off_by__username", "signed_off_at", "comment")  # fmt: skip
        for row in _chunked(qs.order_by("pk"), *fields):
            pk, system, role, _grant_id, user, principal = row[:6]
            signer = row[14]
            signed = row[13] == ActivityFinding.Status.SIGNED_OFF
            other = (signer != user) if signed and signer else None
            if not signed:
                self.broke("signed_off", pk, system=system, role=role or "", user=user or principal, at=row[12],
                           detail=f"Activity finding ({row[6]}) not signed off by a second person.")  # fmt: skip
            if other is False:
                self.broke("signed_off_by_other", pk, system=system, role=role or "", user=user or principal,
                           at=row[15], detail="Signed off by the person whose activity it was.")  # fmt: skip
            yield [*row[:4], user or "", *row[5:14], signer or "", row[15], row[16], yes_no(signed), yes_no(other)]

    def trails(self, ctx: Context, ids: list[str]) -> dict[str, list[dict]]:
        return trails_by_data_key("finding_id", ids)


# --- The register of broken rules ---------------------------------------------------------------------


EXCEPTION_COLUMNS = [
    Column("exception_id", "<test id>:<item id> (stable id)."),
    Column("test_id", "The control test that broke (controls/control_map.json)."),
    Column("population", "The population file the item is in."),
    Column("item_id", "The item's id in that file."),
    Column("system", "The system."),
    Column("role", "The role."),
    Column("user", "Whose access, or who acted."),
    Column("detail", "What broke."),
    Column("at", "When (UTC)."),
]


def exception_row(exception: Exception_) -> list[Any]:
    return [
        f"{exception.test_id}:{exception.item_id}",
        exception.test_id,
        exception.population,
        exception.item_id,
        exception.system,
        exception.role,
        exception.user,
        exception.detail,
        exception.at,
    ]


POPULATIONS: list[type[Population]] = [
    Grants,
    Requests,
    Decisions,
    ApprovalsMfa,
    Removals,
    BreakGlass,
    ReviewItems,
    PolicyChanges,
    Deactivations,
    DriftFindings,
    Activity,
    ActivityFindings,
]


def recent_review_campaigns(ctx: Context) -> Iterable[tuple[int, str, datetime]]:
    """Campaigns closed within ``review_interval`` before the period's end (PCI DSS 7.2.4: every six months)."""
    return (
        ReviewCampaign.objects.filter(closed_at__gte=ctx.end - ctx.review_interval, closed_at__lt=ctx.end)
        .order_by("closed_at")
        .values_list("pk", "name", "closed_at")
    )


def grants_per_week(ctx: Context) -> dict:
    """{week (Monday): count} of grants started in the period, for the summary's chart."""
    qs = ctx.scoped(Grant.objects.filter(starts_at__gte=ctx.start, starts_at__lt=ctx.end))
    return {week: sum(per.values()) for week, per in weekly_counts(qs, "starts_at").items()}


def lag_buckets(ctx: Context) -> list[tuple[str, int]]:
    """Confirmed removals of the period by lag bucket (the reports' buckets), for the summary's chart."""
    from django.db.models import Count

    qs = Removals().queryset(ctx).alias(lag=LAG_EXPRESSION)
    aggregates = {}
    for index, (_label, low, high) in enumerate(LAG_BUCKETS):
        condition = Q(lag__isnull=False)
        if low is not None:
            condition &= Q(lag__gte=low)
        if high is not None:
            condition &= Q(lag__lt=high)
        aggregates[f"b{index}"] = Count("pk", filter=condition)
    counts = qs.aggregate(**aggregates)
    return [(label, counts[f"b{i}"]) for i, (label, _low, _high) in enumerate(LAG_BUCKETS)]
