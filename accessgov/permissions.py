"""The one place that answers "may this user …?" (django-guardian object permissions + policy).

Object rights: ``approve_role`` on a Role, ``approve_system`` / ``own_system`` on a System, for users
or groups. Portal-wide rights: ``accessgov.audit_access`` (auditors). Predicates return bool; guards
(``ensure_*``) raise NotAuthorized/PolicyViolation with a message for the person. Permission changes
take effect on the next check: guardian builds a fresh checker per ``has_perm`` call.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import connection
from django.db.models import Q, QuerySet
from django.http import Http404
from guardian.models import GroupObjectPermission, UserObjectPermission
from guardian.shortcuts import get_groups_with_perms, get_users_with_perms

from accessgov import clock, dbsql
from accessgov.exceptions import NotAuthorized, PolicyViolation
from accessgov.models import (
    AccessRequest,
    ActivityFinding,
    ApiToken,
    ChangeRequest,
    Eligibility,
    Grant,
    IdentityProvider,
    ReviewCampaign,
    ReviewItem,
    Role,
    System,
    User,
)
from accessgov.precompiled import Precompiled

AUDIT_PERM = "accessgov.audit_access"


def start_request_memo(user: User) -> None:
    """Called by the OTP middleware for each verified request: within that one request, the role-id
    lists below are computed once (the navigation, the page and its selectors all ask). Outside a
    request (services, tasks, the shell) nothing is memoized, so every check reads fresh."""
    user._permission_memo = {}  # type: ignore[attr-defined]  # a per-request attribute of this instance


def memoized(user: User, key: str, compute):
    """``compute()`` once per request for ``user`` (the memo the middleware gives each request's user);
    outside a request, every time."""
    memo = getattr(user, "_permission_memo", None)
    if memo is None:
        return compute()
    if key not in memo:
        memo[key] = compute()
    return memo[key]


def is_auditor(user: User) -> bool:
    if getattr(user, "_permission_memo", None) is not None:
        scope(user)  # within a request: primes has_perm's cache with the one scope query
    return user.is_active and user.has_perm(AUDIT_PERM)


# --- Requesting ---------------------------------------------------------------------------------


def _eligibilities_in_force(user: User, now) -> QuerySet[Eligibility]:
    return _eligibilities_in_force_of(user.pk, scope(user).group_ids, now)


def _eligibilities_in_force_of(user_id: int, group_ids: list[int], now) -> QuerySet[Eligibility]:
    # The user's group ids as a list (from ``scope``): an OR with a subquery defeated the two indexes.
    # One array parameter (``anyof``): the same statement with or without groups, hence precompilable.
    return Eligibility.objects.active(now).filter(Q(user_id=user_id) | Q(group_id__anyof=group_ids))


# The catalogue's two reads (``visible_role_ids``, ``visible_system_ids``), asked on every list page's
# filter form: precompiled (issue 22).
ELIGIBLE_ROLE_IDS = Precompiled(
    "eligible_role_ids",
    lambda user_id, group_ids, now: (
        _eligibilities_in_force_of(user_id, group_ids, now).order_by().values_list("role_id")
    ),
    user_id=int,
    group_ids=list,
    now=datetime,
)
ROLE_SYSTEM_IDS = Precompiled(
    "role_system_ids",
    lambda role_ids: Role.objects.filter(pk__anyof=role_ids).order_by().values_list("system_id"),
    role_ids=list,
)


def eligible_roles(user: User, now) -> QuerySet[Role]:
    """Roles ``user`` may request at ``now`` through an eligibility of their own or of a group."""
    return Role.objects.filter(pk__in=_eligibilities_in_force(user, now).values("role_id")).select_related("system")


# ``eligible_roles`` of someone in no group, break-glass roles only (precompiled: every home page asks it).
OWN_BREAK_GLASS_ROLES = Precompiled(
    "own_break_glass_roles",
    lambda user_id, now: Role.objects.filter(
        pk__in=Eligibility.objects.active(now).filter(user_id=user_id).values("role_id"), break_glass_allowed=True
    ),
    user_id=int,
    now=datetime,
)


def may_break_glass(user: User, now: datetime) -> bool:
    """Whether a break-glass role is among ``eligible_roles(user, now)`` (its button on the home page)."""
    if not scope(user).group_ids:
        return OWN_BREAK_GLASS_ROLES.exists(user_id=user.pk, now=now)
    return eligible_roles(user, now).filter(break_glass_allowed=True).exists()


def can_request_role(user: User, role: Role, now) -> bool:
    return user.is_active and eligible_roles(user, now).filter(pk=role.pk).exists()


def ensure_can_request_role(user: User, role: Role, now) -> None:
    if not can_request_role(user, role, now):
        raise PolicyViolation(f"You are not eligible to request {role}.")


# The eligibility rows in force for one (user, role), their end dates: asked by every request, approval,
# activation and extension, locked when a decision relies on them (precompiled, no ordering joins: issue 22).
def _ends_of(user_id: int, group_ids: list[int], role_id: int, now) -> QuerySet[Eligibility, tuple[datetime | None]]:
    return _eligibilities_in_force_of(user_id, group_ids, now).filter(role_id=role_id).order_by().values_list("ends_at")


ELIGIBILITY_ENDS = Precompiled("eligibility_ends", _ends_of, user_id=int, group_ids=list, role_id=int, now=datetime)
ELIGIBILITY_ENDS_LOCKED = Precompiled(
    "eligibility_ends_locked",
    lambda **values: _ends_of(**values).select_for_update(no_key=True, of=("self",)),
    user_id=int,
    group_ids=list,
    role_id=int,
    now=datetime,
)
# A user's groups (outside a request, where ``scope`` is not memoized and would read every right).
USER_GROUP_IDS = Precompiled(
    "user_group_ids",
    lambda user_id: User.groups.through.objects.filter(user_id=user_id).order_by().values_list("group_id"),
    user_id=int,
)


def _group_ids(user: User) -> list[int]:
    """``user``'s group ids: the request's scope when it is the viewer's, else one read."""
    if getattr(user, "_permission_memo", None) is not None:
        return scope(user).group_ids
    return [group_id for (group_id,) in USER_GROUP_IDS.list(user_id=user.pk)]


def _eligibility_ends(user: User, role: Role, now, *, lock: bool = False) -> list[datetime | None]:
    read = ELIGIBILITY_ENDS_LOCKED if lock else ELIGIBILITY_ENDS
    return [ends_at for (ends_at,) in read.list(user_id=user.pk, group_ids=_group_ids(user), role_id=role.pk, now=now)]


def eligibility_problem(user: User, role: Role, now, *, lock: bool = False) -> str | None:
    """Why ``user`` may not hold ``role`` at ``now`` (their account is inactive, or no eligibility of
    theirs or of a group of theirs is in force), or None when they may. Eligibility is a standing
    condition: approval, activation and extension ask again. With ``lock`` (inside the caller's
    transaction) the eligibility rows in force stay locked until commit, so ending one waits for the
    decision that relied on it and then withdraws what it must."""
    if not user.is_active:
        return f"{user.get_username()}'s account is deactivated."
    ends = _eligibility_ends(user, role, now, lock=lock)
    if lock:
        # The lock may have waited for a transaction that ended one of them: judge at the time it was got.
        now = max(now, clock.now())
    if not any(ends_at is None or ends_at > now for ends_at in ends):
        return f"{user.get_username()} is no longer eligible for {role}."
    return None


def eligibility_ends_at(user: User, role: Role, now):
    """When ``user``'s eligibility for ``role`` ends at the latest (None: one of them has no end date)."""
    ends = _eligibility_ends(user, role, now)
    if not ends or None in ends:
        return None
    return max(cast(list[datetime], ends))


# --- Deciding -----------------------------------------------------------------------------------


def _approves_role(user: User, role: Role) -> bool:
    """Named an approver of ``role`` (approve_role on it, or approve_system on its system, directly or through a
    group). A superuser holds every permission in Django's sense, but approves only where named, like everyone:
    the queue, the request page's "who can decide" and the notifications all read the named approvers, and a
    superuser deciding where none of them showed it was a Decide panel on a request "nobody" could decide."""
    if user.is_superuser:
        return role.pk in _scope(user).decidable_role_ids
    return user.has_perm("accessgov.approve_role", role) or user.has_perm("accessgov.approve_system", role.system)


def owns_system(user: User, system: System) -> bool:
    """``own_system`` on the system, directly or through a group: the one "owns this system"."""
    return user.is_active and user.has_perm("accessgov.own_system", system)


def _oversees_role(user: User, role: Role) -> bool:
    """An approver of the role or an owner of its system: sees and acts on other people's access to it."""
    return user.is_active and (_approves_role(user, role) or owns_system(user, role.system))


def can_approve_for_role(user: User, role: Role) -> bool:
    return user.is_active and _approves_role(user, role)


def can_decide_access_request(user: User, access_request: AccessRequest, now=None) -> bool:
    """An active approver of the role who is not the requester and has not decided it yet, while the
    request is pending and has not lapsed at ``now``."""
    return (
        user.is_active
        and user.pk != access_request.requester_id
        and access_request.is_pending_at(now or clock.now())
        and _approves_role(user, access_request.role)
        and not access_request.decisions.filter(approver=user).exists()
        and independence_problem(user, access_request.requester) is None
    )


def ensure_can_decide_access_request(user: User, access_request: AccessRequest) -> None:
    if user.pk == access_request.requester_id:
        raise NotAuthorized("You cannot decide your own request.")
    if not user.is_active or not _approves_role(user, access_request.role):
        raise NotAuthorized(f"You are not an approver for {access_request.role}.")
    if access_request.decisions.filter(approver=user).exists():
        raise NotAuthorized("You have already decided this request; another approver must decide next.")
    problem = independence_problem(user, access_request.requester)
    if problem:
        raise NotAuthorized(f"{problem} Another approver must decide this request.")


def can_cancel_access_request(user: User, access_request: AccessRequest) -> bool:
    """Only the requester withdraws their own request, while it is pending and before it lapses (a cancel after
    its deadline records the lapse instead: ``access_request_cancel``)."""
    return access_request.requester_id == user.pk and access_request.is_pending_at(clock.now())


def ensure_can_cancel_access_request(user: User, access_request: AccessRequest) -> None:
    if access_request.requester_id != user.pk:
        raise NotAuthorized("Only the requester can cancel a request.")


# --- Independence of the second pair of eyes -----------------------------------------------------

# Changes that give an account rights: made by the principal (proposed, or approved), they make the
# account the principal's creature for a while.
_EMPOWERING_KINDS = ("user_rights", "object_permission", "group_permissions", "service_account", "account_recovery")


def independence_problem(candidate: User, principal: User, now=None) -> str | None:
    """Why ``candidate`` cannot be the second person for something of ``principal``'s (approving their
    access request or policy change, acknowledging their break-glass, confirming their provisioning), or
    None (``dependencies``: the rules)."""
    if candidate.pk == principal.pk:
        return "Nobody is their own second pair of eyes."
    return dependencies(candidate, now).get(principal.pk)


def dependencies(candidate: User, now=None) -> dict[int, str]:
    """The accounts ``candidate`` is not independent of, each with why: within the last
    FOUR_EYES_INDEPENDENCE_DAYS, the one that created the candidate's account, and those who proposed or approved
    a change that made it staff or superuser, added it to a group, gave it object or model permissions
    (directly or through a group it is in), or reset its password or authenticator; and, for as long as it
    lives, whoever proposed an API token of the candidate's account (its secret was shown to them: they can
    act as that account). A single admin cannot make the second admin they need (docs/DECISIONS.md, "Sybil
    admin"). Three small reads; the queue uses it to leave out requests the candidate may not decide."""
    now = now or clock.now()
    since = now - timedelta(days=settings.FOUR_EYES_INDEPENDENCE_DAYS)
    days = settings.FOUR_EYES_INDEPENDENCE_DAYS
    found: dict[int, str] = {}
    if candidate.created_by_id and candidate.date_joined > since:
        maker = User.objects.filter(pk=candidate.created_by_id).values_list("username", flat=True).first()
        found[candidate.created_by_id] = f"{maker} created your account less than {days} days ago."
    tokens = ApiToken.objects.filter(user=candidate, revoked_at__isnull=True, expires_at__gt=now)
    for holder_id, holder in tokens.exclude(created_by=None).values_list("created_by_id", "created_by__username"):
        found.setdefault(holder_id, f"{holder} holds an API token of your account: they can act as you.")
    about_candidate = Q(beneficiary=candidate) | Q(
        kind__in=["object_permission", "group_permissions"],
        payload__group_id__in=scope(candidate).group_ids,  # read once per request (the scope's memo)
    )
    empowering = (
        ChangeRequest.objects.filter(
            about_candidate, status="applied", kind__in=_EMPOWERING_KINDS, decided_at__gt=since
        )
        .exclude(kind="object_permission", payload__add=[])
        .exclude(payload__has_key="narrowing", payload__narrowing=True)  # took rights away (services.changes)
        .values_list("proposed_by_id", "proposed_by__username", "decided_by_id", "decided_by__username")
    )
    for proposer_id, proposer, decider_id, decider in empowering:
        for pk, name in ((proposer_id, proposer), (decider_id, decider)):
            if pk is not None:
                found.setdefault(pk, f"{name} gave your account rights or reset its sign-in less than {days} days ago.")
    found.pop(candidate.pk, None)
    return found


# The queue leaves out requests its viewer may not decide (``undecidable_requester_ids``). The three reads
# cost ≈ 3 ms of ORM work, on every queue and home page of an approver; what they find changes rarely (an
# account created, a token or rights given, in the last 30 days), and every decision checks independence
# again on the locked rows — so each process keeps the answer for a short while.
_DEPENDENCY_TTL_SECONDS = 30.0
_dependency_ids: dict[int, tuple[float, frozenset[int]]] = {}


def undecidable_requester_ids(candidate: User, now=None) -> frozenset[int]:
    """Ids of the people whose requests ``candidate`` may not decide for want of independence
    (``dependencies``), as of at most ``_DEPENDENCY_TTL_SECONDS`` ago in this process."""
    import time

    clock = time.monotonic()
    kept = _dependency_ids.get(candidate.pk)
    if kept is not None and kept[0] > clock:
        return kept[1]
    if len(_dependency_ids) > 10_000:
        _dependency_ids.clear()
    ids = frozenset(dependencies(candidate, now))
    _dependency_ids[candidate.pk] = (clock + _DEPENDENCY_TTL_SECONDS, ids)
    return ids


def can_manage_changes(user: User) -> bool:
    """Portal admins (staff) see, propose and decide policy changes."""
    return user.is_active and user.is_staff


def ensure_can_manage_changes(user: User) -> None:
    if not can_manage_changes(user):
        raise NotAuthorized("Only portal admins change policy.")


def can_manage_users(user: User) -> bool:
    """Portal admins with Django's change_user right deactivate and reactivate accounts."""
    return user.is_active and user.is_staff and user.has_perm("accessgov.change_user")


def ensure_can_manage_users(user: User) -> None:
    if not can_manage_users(user):
        raise NotAuthorized("Only portal admins with the right to change users manage accounts.")


def rights_change_problem(actor: User, *, user: User | None = None, group: Group | None = None) -> str | None:
    """Why ``actor`` may not change the rights of ``user`` or ``group`` at all (widening or narrowing), or
    None: nobody changes their own groups, permissions or admin rights, nor the permissions of a group
    they are in. The admin's forms and the change services both ask this."""
    if user is not None and user.pk == actor.pk:
        return "Nobody changes their own groups, permissions or admin rights: ask another admin."
    if group is not None and group.pk is not None and actor.groups.filter(pk=group.pk).exists():
        return "Nobody changes the permissions of a group they belong to: ask another admin."
    return None


def ensure_can_change_rights(actor: User, *, user: User | None = None, group: Group | None = None) -> None:
    problem = rights_change_problem(actor, user=user, group=group)
    if problem:
        raise NotAuthorized(problem)


def change_approval_problem(user: User, change: ChangeRequest) -> str | None:
    """Why ``user`` may not approve the pending policy ``change``, or None: only another active admin,
    never its proposer, never the person (or a member of the group) whose access it widens, never an
    account the proposer recently created or empowered (``independence_problem``)."""
    if not can_manage_changes(user):
        return "Only portal admins change policy."
    if change.status != ChangeRequest.Status.PENDING:
        return f"This change is already {change.get_status_display().lower()}."
    if change.proposed_by_id == user.pk:
        return "Nobody approves their own policy change: another admin must."
    if change.beneficiary_id == user.pk:
        if change.kind == ChangeRequest.Kind.ACCOUNT_RECOVERY:
            return "This resets your own account: another admin must approve it."
        if change.kind == ChangeRequest.Kind.USER_IDENTITY:
            return "This changes your own username or email address: another admin must approve it."
        return "This change widens your own access: another admin must approve it."
    payload = change.payload if isinstance(change.payload, dict) else {}
    if change.kind == ChangeRequest.Kind.ACCOUNT_RECOVERY and payload.get("link_to") and change.beneficiary:
        when = email_set_by(change.beneficiary, user)
        if when is not None:
            return (
                f"You set this person's email address on {when:%Y-%m-%d}: the link would go where you chose. "
                "Another admin must approve it."
            )
    group_id = change.payload.get("group_id") if isinstance(change.payload, dict) else None
    if group_id and user.groups.filter(pk=group_id).exists():
        return "This change widens the access of a group you are in: another admin must approve it."
    return independence_problem(user, change.proposed_by)


def recent_email_change(user: User, now: datetime | None = None) -> tuple[datetime, User | None] | None:
    """When ``user``'s email address was last changed within FOUR_EYES_INDEPENDENCE_DAYS, and by whom (the
    field-level change log: an admin's edit, the identity provider's update), or None. An account recovery by
    link goes to that address, so whoever set it lately is not independent of the recovery."""
    from auditlog.models import LogEntry

    since = (now or clock.now()) - timedelta(days=settings.FOUR_EYES_INDEPENDENCE_DAYS)
    entries = LogEntry.objects.get_for_object(user).filter(timestamp__gte=since).select_related("actor")
    for entry in entries.order_by("-pk"):  # the latest written (timestamps can tie)
        if "email" in (entry.changes_dict or {}):
            return entry.timestamp, entry.actor
    return None


def email_set_by(user: User, candidate: User, now: datetime | None = None) -> datetime | None:
    """When ``candidate`` set ``user``'s email address within FOUR_EYES_INDEPENDENCE_DAYS, or None: by their own
    edit, or as the proposer or approver of the change that set it."""
    changed = recent_email_change(user, now)
    if changed is None:
        return None
    if changed[1] is not None and changed[1].pk == candidate.pk:
        return changed[0]
    since = (now or clock.now()) - timedelta(days=settings.FOUR_EYES_INDEPENDENCE_DAYS)
    decided = ChangeRequest.objects.filter(
        Q(proposed_by=candidate) | Q(decided_by=candidate),
        kind=ChangeRequest.Kind.USER_IDENTITY,
        status=ChangeRequest.Status.APPLIED,
        target_id=user.pk,
        decided_at__gte=since,
    ).order_by("-decided_at")
    return next((c.decided_at for c in decided if "email" in (c.changes or {})), None)


def ensure_can_approve_change(user: User, change: ChangeRequest) -> None:
    problem = change_approval_problem(user, change)
    if problem:
        raise NotAuthorized(problem)


@dataclass(frozen=True)
class Scope:
    """What one user may see and decide, read in one round trip (``_scope``)."""

    group_ids: list[int]
    group_names: frozenset[str]
    decidable_role_ids: list[int]  # approve_role on the role, or approve_system on its system
    owned_system_ids: list[int]  # own_system, directly or through a group
    owned_role_ids: list[int]  # every role of an owned system


# Object permissions come from guardian's two generic tables (object_pk is text there, hence the cast);
# codenames are unique per model in this app. Portal-wide permissions (user's and groups') come along so
# ``has_perm`` needs no query of its own within the request.
_SCOPE_SQL = """
WITH ug AS (SELECT group_id FROM {user_groups} WHERE user_id = %(user)s),
op AS (
    SELECT p.codename AS codename, CAST(o.object_pk AS integer) AS object_id
    FROM {user_object_perms} o JOIN {perms} p ON p.id = o.permission_id
    WHERE o.user_id = %(user)s AND p.codename IN ('approve_role', 'approve_system', 'own_system')
    UNION
    SELECT p.codename, CAST(o.object_pk AS integer)
    FROM {group_object_perms} o JOIN {perms} p ON p.id = o.permission_id
    WHERE o.group_id IN (SELECT group_id FROM ug) AND p.codename IN ('approve_role', 'approve_system', 'own_system')
)
SELECT 'group', g.id, g.name FROM {groups} g WHERE g.id IN (SELECT group_id FROM ug)
UNION ALL
SELECT 'perm', CAST(NULL AS integer), ct.app_label || '.' || p.codename
FROM {perms} p JOIN {content_types} ct ON ct.id = p.content_type_id
WHERE p.id IN (SELECT permission_id FROM {user_perms} WHERE user_id = %(user)s)
   OR p.id IN (SELECT permission_id FROM {group_perms} WHERE group_id IN (SELECT group_id FROM ug))
UNION ALL
SELECT 'decide', r.id, NULL FROM {roles} r
WHERE r.id IN (SELECT object_id FROM op WHERE codename = 'approve_role')
   OR r.system_id IN (SELECT object_id FROM op WHERE codename = 'approve_system')
UNION ALL
SELECT 'owns', object_id, NULL FROM op WHERE codename = 'own_system'
UNION ALL
SELECT 'owned_role', r.id, NULL FROM {roles} r WHERE r.system_id IN (SELECT object_id FROM op WHERE codename = 'own_system')
"""


def _scope(user: User) -> Scope:
    """One query for the viewer's groups, portal-wide permissions (primed into Django's per-user cache,
    which ``has_perm`` reads) and object rights. Called once per verified request through the memo,
    and on every call outside one."""
    from django.contrib.auth.models import Permission
    from django.contrib.contenttypes.models import ContentType

    tables = {
        "user_groups": User.groups.through._meta.db_table,
        "user_perms": User.user_permissions.through._meta.db_table,
        "groups": Group._meta.db_table,
        "group_perms": Group.permissions.through._meta.db_table,
        "perms": Permission._meta.db_table,
        "content_types": ContentType._meta.db_table,
        "user_object_perms": UserObjectPermission._meta.db_table,
        "group_object_perms": GroupObjectPermission._meta.db_table,
        "roles": Role._meta.db_table,
    }
    rows: dict[str, list] = {"group": [], "perm": [], "decide": [], "owns": [], "owned_role": []}
    with dbsql.prepared_cursor() as cursor:
        cursor.execute(
            _SCOPE_SQL.format(**{k: connection.ops.quote_name(v) for k, v in tables.items()}), {"user": user.pk}
        )
        for kind, number, text in cursor.fetchall():
            rows[kind].append((number, text) if kind == "group" else text if number is None else number)
    if not user.is_superuser:  # superusers have every permission without the cache
        user._perm_cache = set(rows["perm"])  # type: ignore[attr-defined]  # ModelBackend.get_all_permissions reads this
    return Scope(
        group_ids=sorted(pk for pk, _ in rows["group"]),
        group_names=frozenset(name for _, name in rows["group"]),
        decidable_role_ids=sorted(rows["decide"]),
        owned_system_ids=sorted(rows["owns"]),
        owned_role_ids=sorted(rows["owned_role"]),
    )


def scope(user: User) -> Scope:
    """The viewer's ``Scope``, once per verified request (permission changes apply on the next request)."""
    return memoized(user, "scope", lambda: _scope(user))


def decidable_role_ids(user: User) -> list[int]:
    """Ids of the roles whose requests ``user`` may decide (approve_role on the role, or
    approve_system on its system)."""
    if not user.is_active:
        return []
    return scope(user).decidable_role_ids


def decidable_roles(user: User) -> QuerySet[Role]:
    """Roles whose requests ``user`` may decide (directly or through the role's system)."""
    return Role.objects.filter(pk__in=decidable_role_ids(user))


def approvers_for_role(role: Role) -> set[User]:
    """Active users who may approve requests for ``role`` (for notifications)."""
    users = set(get_users_with_perms(role, only_with_perms_in=["approve_role"], with_group_users=True))
    users |= set(get_users_with_perms(role.system, only_with_perms_in=["approve_system"], with_group_users=True))
    return {u for u in users if u.is_active}


DECIDERS_SHOWN = 20


@dataclass(frozen=True)
class Deciders:
    """Who may still decide a request, as the request page shows it."""

    users: list[User]  # by username, at most DECIDERS_SHOWN
    more: int  # further approvers of the role not listed (not checked for independence)
    groups: list[Group]  # groups whose members approve the role (directly or through its system)


def deciders_of_access_request(access_request: AccessRequest) -> Deciders:
    """The people who may decide ``access_request`` now: the approvers of its role (``approve_role`` on
    the role or ``approve_system`` on its system, for them or a group of theirs) for whom
    ``can_decide_access_request`` holds (not the requester, not already decided, independent of the
    requester, before the lapse); and the groups that carry the approve rights. Nobody once it is no
    longer pending. Called by the request page: a few queries plus that check for each person listed
    (at most DECIDERS_SHOWN; ``more`` counts the other approvers, unchecked)."""
    if not access_request.is_pending:
        return Deciders(users=[], more=0, groups=[])
    role = access_request.role
    decided = set(access_request.decisions.values_list("approver_id", flat=True))
    candidates = sorted(
        (u for u in approvers_for_role(role) if u.pk != access_request.requester_id and u.pk not in decided),
        key=lambda u: u.get_username().casefold(),
    )
    now = clock.now()
    shown = [u for u in candidates[:DECIDERS_SHOWN] if can_decide_access_request(u, access_request, now)]
    # Without attach_perms guardian returns a queryset of groups (its annotation says "Group | dict").
    groups = set(cast("QuerySet[Group]", get_groups_with_perms(role, only_with_perms_in=["approve_role"])))
    groups |= set(cast("QuerySet[Group]", get_groups_with_perms(role.system, only_with_perms_in=["approve_system"])))
    return Deciders(
        users=shown,
        more=max(len(candidates) - DECIDERS_SHOWN, 0),
        groups=sorted(groups, key=lambda g: g.name.casefold()),
    )


def owners_of_system(system: System) -> set[User]:
    users = get_users_with_perms(system, only_with_perms_in=["own_system"], with_group_users=True)
    return {u for u in users if isinstance(u, User) and u.is_active}


def admins_to_ask() -> list[User]:
    """Who a person eligible for nothing asks (the empty request form and systems list name them): the active
    portal admins who are people, by name."""
    return list(User.objects.filter(is_active=True, is_staff=True, is_service_account=False).order_by("username")[:10])


def auditors() -> set[User]:
    groups = Group.objects.filter(permissions__codename="audit_access")
    users = User.objects.filter(
        Q(is_active=True) & (Q(groups__in=groups) | Q(user_permissions__codename="audit_access") | Q(is_superuser=True))
    ).distinct()
    return set(users)


# --- Seeing -------------------------------------------------------------------------------------


def can_view_access_request(user: User, access_request: AccessRequest) -> bool:
    """The requester, auditors, and approvers of the role / owners of its system (``visible_access_requests``)."""
    return access_request.requester_id == user.pk or is_auditor(user) or _oversees_role(user, access_request.role)


def can_view_grant(user: User, grant: Grant) -> bool:
    """The same rule as the grant's request: its holder, auditors, approvers and owners (``visible_grants``)."""
    return grant.user_id == user.pk or is_auditor(user) or _oversees_role(user, grant.role)


def get_visible_access_request_or_404(user: User, pk: int, queryset: QuerySet[AccessRequest] | None = None):
    """The request ``pk`` if ``user`` may see it; otherwise 404, the same as a request that does not
    exist (no existence oracle). Pages and the API fetch through this."""
    queryset = AccessRequest.objects.select_related("role__system", "requester") if queryset is None else queryset
    access_request = queryset.filter(pk=pk).first()
    if access_request is None or not can_view_access_request(user, access_request):
        raise Http404("No such request.")
    return access_request


def get_visible_grant_or_404(user: User, pk: int, queryset: QuerySet[Grant] | None = None) -> Grant:
    """The grant ``pk`` if ``user`` may see it; otherwise 404 (as if it did not exist)."""
    queryset = Grant.objects.select_related("role__system", "user") if queryset is None else queryset
    grant = queryset.filter(pk=pk).first()
    if grant is None or not can_view_grant(user, grant):
        raise Http404("No such grant.")
    return grant


def visible_campaigns(user: User) -> QuerySet[ReviewCampaign]:
    """Access reviews ``user`` may see: every one for auditors, otherwise those with an item for them to
    review (a subquery, not a join, so counts over items stay right)."""
    if is_auditor(user):
        return ReviewCampaign.objects.all()
    return ReviewCampaign.objects.filter(pk__in=ReviewItem.objects.filter(reviewer=user).values("campaign_id"))


def overseen_system_ids(user: User) -> list[int] | None:
    """Systems whose provisioning and drift ``user`` follows: systems they own or approve a role of;
    None for auditors (every system)."""
    if is_auditor(user):
        return None
    user_scope = scope(user)
    role_systems = Role.objects.filter(pk__in=user_scope.decidable_role_ids).values_list("system_id", flat=True)
    return sorted(set(user_scope.owned_system_ids) | set(role_systems))


def overseen_role_ids(user: User) -> list[int]:
    """Ids of the roles whose requests and grants ``user`` sees without being their holder: roles they
    may decide and every role of a system they own. A list (from ``scope``), so list pages filter with
    ``role_id IN (…)`` on an index instead of re-running the permission subqueries per row."""
    user_scope = scope(user)
    return sorted(set(user_scope.decidable_role_ids) | set(user_scope.owned_role_ids))


def visible_access_requests(user: User) -> QuerySet[AccessRequest]:
    """Requests ``user`` may see: their own, those they may decide, those on systems they own; all for auditors."""
    qs = AccessRequest.objects.all()
    if is_auditor(user):
        return qs
    return qs.filter(Q(requester=user) | Q(role_id__in=overseen_role_ids(user)))


def visible_grants(user: User) -> QuerySet[Grant]:
    """Grants ``user`` may see: the same rule as their requests (a grant's holder is its requester)."""
    if is_auditor(user):
        return Grant.objects.all()
    return Grant.objects.filter(Q(user=user) | Q(role_id__in=overseen_role_ids(user)))


def owns_any_system(user: User) -> bool:
    return user.is_active and bool(scope(user).owned_system_ids)


def sees_grant_list(user: User) -> bool:
    """The grants list is for those who see other people's grants: approvers, owners and auditors."""
    return user.is_active and (bool(decidable_role_ids(user)) or is_auditor(user) or owns_any_system(user))


def visible_role_ids(user: User, now) -> set[int] | None:
    """Ids of the roles in ``user``'s catalogue (None: every role, for auditors): those they may request
    (an eligibility of theirs or their groups' in force), those they may decide, and every role of a
    system they own. The one rule ``visible_roles`` and ``visible_systems`` are made of: the decided and
    owned ids come from ``scope``, so only the eligibility is read (building the rule as nested ORM
    subqueries cost the filter forms 4-6 ms per list page, issue 22)."""
    if is_auditor(user):
        return None

    def compute() -> set[int]:
        user_scope = scope(user)
        # Unordered: the models' default orderings joined role and system only to sort a set.
        eligible = {
            role_id for (role_id,) in ELIGIBLE_ROLE_IDS.list(user_id=user.pk, group_ids=user_scope.group_ids, now=now)
        }
        return eligible | set(decidable_role_ids(user)) | set(user_scope.owned_role_ids)

    return memoized(user, "visible_role_ids", compute)


def visible_system_ids(user: User, now) -> set[int] | None:
    """Ids of the systems with at least one role in ``user``'s catalogue, and of those they own (None:
    every system, for auditors)."""
    role_ids = visible_role_ids(user, now)
    if role_ids is None:
        return None
    role_systems = (
        {system_id for (system_id,) in ROLE_SYSTEM_IDS.list(role_ids=sorted(role_ids))} if role_ids else set()
    )
    return role_systems | set(scope(user).owned_system_ids)


def visible_roles(user: User, now) -> QuerySet[Role]:
    """Roles in ``user``'s catalogue (``visible_role_ids``); all roles for auditors."""
    role_ids = visible_role_ids(user, now)
    return Role.objects.all() if role_ids is None else Role.objects.filter(pk__in=sorted(role_ids))


def visible_systems(user: User, now) -> QuerySet[System]:
    """Systems with at least one role in ``user``'s catalogue, and systems they own (``visible_system_ids``)."""
    system_ids = visible_system_ids(user, now)
    return System.objects.all() if system_ids is None else System.objects.filter(pk__in=sorted(system_ids))


def visible_eligibilities(user: User, now) -> QuerySet[Eligibility]:
    """Eligibility in force at ``now`` that concerns ``user`` (theirs or their groups'), and all of it
    on systems they own; all of it for auditors."""
    qs = Eligibility.objects.active(now)
    if is_auditor(user):
        return qs
    return qs.filter(
        Q(user=user) | Q(group_id__in=scope(user).group_ids) | Q(role__system_id__in=scope(user).owned_system_ids)
    )


# --- Ending grants ------------------------------------------------------------------------------


def can_revoke_grant(user: User, grant: Grant) -> bool:
    """Approvers of the role and owners of its system may revoke someone else's grant (their own they
    release)."""
    return user.is_active and user.pk != grant.user_id and (_oversees_role(user, grant.role))


def ensure_can_revoke_grant(user: User, grant: Grant) -> None:
    if user.pk == grant.user_id:
        raise NotAuthorized("Release your own access instead of revoking it.")
    if not can_revoke_grant(user, grant):
        raise NotAuthorized("You may not revoke this grant.")


def can_release_grant(user: User, grant: Grant) -> bool:
    """Only the holder releases (or asks to extend) their own grant."""
    return user.is_active and grant.user_id == user.pk


def ensure_can_release_grant(user: User, grant: Grant) -> None:
    if not can_release_grant(user, grant):
        raise NotAuthorized("Only the person who holds a grant can release it.")


def ensure_can_extend_grant(user: User, grant: Grant) -> None:
    if not can_release_grant(user, grant):
        raise NotAuthorized("Only the person who holds a grant can ask to extend it.")


# --- Break-glass follow-ups and eligibility -----------------------------------------------------


def can_acknowledge_break_glass(user: User, grant: Grant) -> bool:
    return (
        user.is_active
        and user.pk != grant.user_id
        and (is_auditor(user) or _oversees_role(user, grant.role))
        and independence_problem(user, grant.user) is None
    )


def ensure_can_acknowledge_break_glass(user: User, grant: Grant) -> None:
    if user.pk == grant.user_id:
        raise NotAuthorized("Someone other than the person who used break-glass must acknowledge it.")
    problem = independence_problem(user, grant.user)
    if problem:
        raise NotAuthorized(f"{problem} Someone independent must acknowledge this break-glass use.")
    if not can_acknowledge_break_glass(user, grant):
        raise NotAuthorized("You may not acknowledge this break-glass follow-up.")


def can_complete_manual_task(user: User, grant: Grant) -> bool:
    """Owners and approvers of a manual system confirm that access was applied or removed there, for
    someone else's grant only: nobody confirms a task about their own access."""
    return (
        user.is_active
        and user.pk != grant.user_id
        and grant.role.system.connector == System.Connector.MANUAL
        and (_oversees_role(user, grant.role))
    )


def ensure_can_complete_manual_task(user: User, grant: Grant) -> None:
    if user.pk == grant.user_id:
        raise NotAuthorized(
            "Nobody confirms a provisioning task about their own access: ask another owner or approver."
        )
    if not can_complete_manual_task(user, grant):
        raise NotAuthorized("Only owners and approvers of the system complete its provisioning tasks.")
    # The confirmation is evidence that access was given or taken away: an account the grantee made or
    # empowered lately would be the grantee attesting their own access (QUALITY.md promise 3).
    problem = independence_problem(user, grant.user)
    if problem:
        raise NotAuthorized(f"You cannot confirm a task about {grant.user.get_username()}'s access: {problem}")


def can_manage_eligibility(user: User, system: System) -> bool:
    return owns_system(user, system)


def ensure_can_manage_eligibility(user: User, system: System) -> None:
    if not can_manage_eligibility(user, system):
        raise NotAuthorized(f"Only owners of {system} manage who may request its roles.")


# --- Event webhooks -----------------------------------------------------------------------------


def can_redeliver_webhook(user: User) -> bool:
    """Portal admins (staff) allowed to change webhook deliveries; superusers are."""
    return user.is_active and user.is_staff and user.has_perm("accessgov.change_webhookdelivery")


def ensure_can_redeliver_webhook(user: User) -> None:
    if not can_redeliver_webhook(user):
        raise NotAuthorized("Only portal admins queue webhook deliveries again.")


# --- Identity providers: password sign-in and SCIM provisioning ---------------------------------


def can_sign_in_with_password(user: User) -> bool:
    """Whether ``user`` may use the password form: never a service account; everyone else unless
    PASSWORD_SIGN_IN is "break-glass", which keeps it for the accounts in BREAK_GLASS_USERNAMES (the way
    in when the identity provider is down); everybody else signs in through an identity provider."""
    if user.is_service_account:
        return False
    if settings.PASSWORD_SIGN_IN == "everyone":  # noqa: S105 (a policy name, not a password)
        return True
    return user.get_username() in settings.BREAK_GLASS_USERNAMES


def scim_provider_for_token(token: ApiToken | None) -> IdentityProvider | None:
    """The identity provider whose SCIM client holds ``token`` (an API token already authenticated), or
    None: only a service token with the scim:provision scope, of the service account a provider with
    SCIM switched on names as its SCIM client."""
    if token is None or token.kind != ApiToken.Kind.SERVICE or not token.allows(ApiToken.Scope.SCIM_PROVISION):
        return None
    return IdentityProvider.objects.filter(scim_service_account_id=token.user_id, scim_enabled=True).first()


def ensure_can_provision(actor: User, provider: IdentityProvider) -> None:
    """Only the provider's own SCIM service account, while SCIM is on, changes what the provider manages."""
    if not (
        actor.is_active
        and actor.is_service_account
        and provider.scim_enabled
        and provider.scim_service_account_id == actor.pk
    ):
        raise NotAuthorized(f"Only {provider.name}'s SCIM client provisions through it.")


# --- Evidence packs -------------------------------------------------------------------------------------


def can_build_evidence_pack(user: User) -> bool:
    """Auditors (``audit_access``, active): they build packs, see every pack and download them. A pack holds
    what any auditor may already read and export, so packs are shared among auditors, not per person."""
    return is_auditor(user)


def ensure_can_build_evidence_pack(user: User) -> None:
    if not can_build_evidence_pack(user):
        raise NotAuthorized("Evidence packs are for auditors.")


# --- Activity evidence (issue 17) ---------------------------------------------------------------


def can_read_statement_text(user: User, system: System) -> bool:
    """Statement text may hold personal data: auditors and the system's owners read it. Everyone else who
    sees a grant (its holder, approvers) sees sessions, commands, classes and counts, not the text."""
    return user.is_active and (is_auditor(user) or owns_system(user, system))


def visible_findings(user: User):
    """Activity findings ``user`` may see: those on grants they may see (their own, roles they approve,
    systems they own), activity without a grant on systems they own; all of them for auditors."""

    qs = ActivityFinding.objects.all()
    if is_auditor(user):
        return qs
    user_scope = scope(user)
    return qs.filter(
        Q(grant__user=user)
        | Q(role_id__in=overseen_role_ids(user))
        | Q(grant__isnull=True, system_id__in=user_scope.owned_system_ids)
    )


def visible_activity_systems(user: User) -> list[int] | None:
    """Systems whose activity without a grant ``user`` sees (None: every system, for auditors)."""
    if is_auditor(user):
        return None
    return scope(user).owned_system_ids


def can_sign_off_finding(user: User, finding) -> bool:
    """Like a break-glass follow-up: anyone but the person whose activity it was, independent of them, who
    audits, approves the role or owns the system."""
    if not user.is_active or user.pk == finding.user_id:
        return False
    allowed = (
        is_auditor(user)
        or (finding.role is not None and _approves_role(user, finding.role))
        or owns_system(user, finding.system)
    )
    return allowed and (finding.user is None or independence_problem(user, finding.user) is None)


def ensure_can_sign_off_finding(user: User, finding) -> None:
    if user.pk == finding.user_id:
        raise NotAuthorized("Someone other than the person whose activity it was must sign this finding off.")
    if finding.user is not None:
        problem = independence_problem(user, finding.user)
        if problem:
            raise NotAuthorized(f"{problem} Someone independent must sign this finding off.")
    if not can_sign_off_finding(user, finding):
        raise NotAuthorized("Only auditors, approvers of the role and owners of the system sign findings off.")


def right_sizing_role_ids(user: User) -> list[int] | None:
    """Roles in ``user``'s right-sizing report (None: every role, for auditors and portal admins)."""
    if is_auditor(user) or (user.is_active and user.is_staff):
        return None
    return overseen_role_ids(user)


def can_propose_right_sizing(user: User) -> bool:
    """Proposals change policy: portal admins propose, another admin approves (four-eyes)."""
    return user.is_active and user.is_staff


def ensure_can_propose_right_sizing(user: User) -> None:
    if not can_propose_right_sizing(user):
        raise NotAuthorized("Only portal admins propose policy changes; another admin approves them.")


def activity_report_problem(user: User, token_role_ids: list[int], system: System) -> str | None:
    """Why ``user`` (through a token limited to ``token_role_ids``, empty: not limited) may not report
    activity for ``system``, or None. Only service accounts report activity: a person's report about
    their own work would not be evidence."""
    if not user.is_active or not user.is_service_account:
        return "Activity is reported by service accounts (a log shipper, the target's tooling), not by people."
    if token_role_ids and not Role.objects.filter(pk__in=token_role_ids, system=system).exists():
        return f"This token is limited to roles of other systems than {system.slug}."
    return None
