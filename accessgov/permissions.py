"""The one place that answers "may this user …?" (django-guardian object permissions + policy).

Object rights: ``approve_role`` on a Role, ``approve_system`` / ``own_system`` on a System, for users
or groups. Portal-wide rights: ``accessgov.audit_access`` (auditors). Predicates return bool; guards
(``ensure_*``) raise NotAuthorized/PolicyViolation with a message for the person. Permission changes
take effect on the next check: guardian builds a fresh checker per ``has_perm`` call.
"""

from django.contrib.auth.models import Group
from django.db.models import IntegerField, Q, QuerySet
from django.db.models.functions import Cast
from guardian.models import GroupObjectPermission, UserObjectPermission
from guardian.shortcuts import get_objects_for_user, get_users_with_perms

from accessgov.exceptions import NotAuthorized, PolicyViolation
from accessgov.models import AccessRequest, Eligibility, Grant, Role, System, User

AUDIT_PERM = "accessgov.audit_access"


def start_request_memo(user: User) -> None:
    """Called by the OTP middleware for each verified request: within that one request, the role-id
    lists below are computed once (the navigation, the page and its selectors all ask). Outside a
    request (services, tasks, the shell) nothing is memoized, so every check reads fresh."""
    user._permission_memo = {}


def _memoized(user: User, key: str, compute):
    memo = getattr(user, "_permission_memo", None)
    if memo is None:
        return compute()
    if key not in memo:
        memo[key] = compute()
    return memo[key]


def is_auditor(user: User) -> bool:
    return user.is_active and user.has_perm(AUDIT_PERM)


# --- Requesting ---------------------------------------------------------------------------------


def eligible_roles(user: User, now) -> QuerySet[Role]:
    """Roles ``user`` may request at ``now`` through an eligibility of their own or of a group."""
    eligibilities = Eligibility.objects.active(now).filter(Q(user=user) | Q(group__in=user.groups.all()))
    return Role.objects.filter(pk__in=eligibilities.values("role_id")).select_related("system")


def can_request_role(user: User, role: Role, now) -> bool:
    return user.is_active and eligible_roles(user, now).filter(pk=role.pk).exists()


def ensure_can_request_role(user: User, role: Role, now) -> None:
    if not can_request_role(user, role, now):
        raise PolicyViolation(f"You are not eligible to request {role}.")


# --- Deciding -----------------------------------------------------------------------------------


def _approves_role(user: User, role: Role) -> bool:
    return user.has_perm("accessgov.approve_role", role) or user.has_perm("accessgov.approve_system", role.system)


def can_approve_for_role(user: User, role: Role) -> bool:
    return user.is_active and _approves_role(user, role)


def can_decide_access_request(user: User, access_request: AccessRequest) -> bool:
    """An active approver of the role who is not the requester and has not decided it yet."""
    return (
        user.is_active
        and user.pk != access_request.requester_id
        and access_request.is_pending
        and _approves_role(user, access_request.role)
        and not access_request.decisions.filter(approver=user).exists()
    )


def ensure_can_decide_access_request(user: User, access_request: AccessRequest) -> None:
    if user.pk == access_request.requester_id:
        raise NotAuthorized("You cannot decide your own request.")
    if not user.is_active or not _approves_role(user, access_request.role):
        raise NotAuthorized(f"You are not an approver for {access_request.role}.")
    if access_request.decisions.filter(approver=user).exists():
        raise NotAuthorized("You have already decided this request; another approver must decide next.")


def _object_ids(user: User, codename: str) -> Q:
    """Object ids on which ``user`` holds ``codename``, directly or through a group, as a condition
    over guardian's two tables (object_pk is text there, hence the cast)."""
    direct = UserObjectPermission.objects.filter(user=user, permission__codename=codename)
    via_group = GroupObjectPermission.objects.filter(
        group__in=user.groups.through.objects.filter(user=user).values("group_id"), permission__codename=codename
    )
    as_id = Cast("object_pk", IntegerField())
    return direct.annotate(object_id=as_id).values("object_id"), via_group.annotate(object_id=as_id).values("object_id")


def decidable_role_ids(user: User) -> list[int]:
    """Ids of the roles whose requests ``user`` may decide (approve_role on the role, or
    approve_system on its system), in one query (once per request; permission changes apply on the
    next request)."""
    if not user.is_active:
        return []
    return _memoized(user, "decidable", lambda: _decidable_role_ids(user))


def _decidable_role_ids(user: User) -> list[int]:
    role_direct, role_group = _object_ids(user, "approve_role")
    system_direct, system_group = _object_ids(user, "approve_system")
    return list(
        Role.objects.filter(
            Q(pk__in=role_direct)
            | Q(pk__in=role_group)
            | Q(system_id__in=system_direct)
            | Q(system_id__in=system_group)
        )
        .order_by()
        .values_list("pk", flat=True)
    )


def decidable_roles(user: User) -> QuerySet[Role]:
    """Roles whose requests ``user`` may decide (directly or through the role's system)."""
    return Role.objects.filter(pk__in=decidable_role_ids(user))


def approvers_for_role(role: Role) -> set[User]:
    """Active users who may approve requests for ``role`` (for notifications)."""
    users = set(get_users_with_perms(role, only_with_perms_in=["approve_role"], with_group_users=True))
    users |= set(get_users_with_perms(role.system, only_with_perms_in=["approve_system"], with_group_users=True))
    return {u for u in users if u.is_active}


def owners_of_system(system: System) -> set[User]:
    users = get_users_with_perms(system, only_with_perms_in=["own_system"], with_group_users=True)
    return {u for u in users if u.is_active}


def auditors() -> set[User]:
    groups = Group.objects.filter(permissions__codename="audit_access")
    users = User.objects.filter(
        Q(is_active=True) & (Q(groups__in=groups) | Q(user_permissions__codename="audit_access") | Q(is_superuser=True))
    ).distinct()
    return set(users)


# --- Seeing -------------------------------------------------------------------------------------


def can_view_access_request(user: User, access_request: AccessRequest) -> bool:
    return (
        access_request.requester_id == user.pk
        or is_auditor(user)
        or _approves_role(user, access_request.role)
        or user.has_perm("accessgov.own_system", access_request.role.system)
    )


def overseen_role_ids(user: User) -> list[int]:
    """Ids of the roles whose requests and grants ``user`` sees without being their holder: roles they
    may decide and every role of a system they own. Read once as a list (one query), so list pages
    filter with ``role_id IN (…)`` on an index instead of re-running the permission subqueries per row."""

    def compute() -> list[int]:
        owned_direct, owned_group = _object_ids(user, "own_system")
        owned = Role.objects.filter(Q(system_id__in=owned_direct) | Q(system_id__in=owned_group))
        return sorted(set(decidable_role_ids(user)) | set(owned.order_by().values_list("pk", flat=True)))

    return _memoized(user, "overseen", compute)


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


def _owned_systems(user: User) -> QuerySet[System]:
    return get_objects_for_user(user, "accessgov.own_system", klass=System, accept_global_perms=False)


def visible_roles(user: User, now) -> QuerySet[Role]:
    """Roles in ``user``'s catalogue: those they may request or decide, and every role of a system they
    own; all roles for auditors."""
    if is_auditor(user):
        return Role.objects.all()
    return Role.objects.filter(
        Q(pk__in=eligible_roles(user, now).values("pk"))
        | Q(pk__in=decidable_roles(user).values("pk"))
        | Q(system__in=_owned_systems(user).values("pk"))
    )


def visible_systems(user: User, now) -> QuerySet[System]:
    """Systems with at least one role in ``user``'s catalogue, and systems they own."""
    if is_auditor(user):
        return System.objects.all()
    return System.objects.filter(
        Q(pk__in=visible_roles(user, now).values("system_id")) | Q(pk__in=_owned_systems(user).values("pk"))
    )


def visible_eligibilities(user: User, now) -> QuerySet[Eligibility]:
    """Eligibility in force at ``now`` that concerns ``user`` (theirs or their groups'), and all of it
    on systems they own; all of it for auditors."""
    qs = Eligibility.objects.active(now)
    if is_auditor(user):
        return qs
    return qs.filter(
        Q(user=user) | Q(group__in=user.groups.all()) | Q(role__system__in=_owned_systems(user).values("pk"))
    )


# --- Ending grants ------------------------------------------------------------------------------


def can_revoke_grant(user: User, grant: Grant) -> bool:
    """Approvers of the role and owners of its system may revoke someone else's grant."""
    return user.is_active and (
        _approves_role(user, grant.role) or user.has_perm("accessgov.own_system", grant.role.system)
    )


def ensure_can_revoke_grant(user: User, grant: Grant) -> None:
    if not can_revoke_grant(user, grant):
        raise NotAuthorized("You may not revoke this grant.")


def ensure_can_release_grant(user: User, grant: Grant) -> None:
    if grant.user_id != user.pk:
        raise NotAuthorized("Only the person who holds a grant can release it.")


# --- Break-glass follow-ups and eligibility -----------------------------------------------------


def can_acknowledge_break_glass(user: User, grant: Grant) -> bool:
    return (
        user.is_active
        and user.pk != grant.user_id
        and (
            is_auditor(user)
            or _approves_role(user, grant.role)
            or user.has_perm("accessgov.own_system", grant.role.system)
        )
    )


def ensure_can_acknowledge_break_glass(user: User, grant: Grant) -> None:
    if user.pk == grant.user_id:
        raise NotAuthorized("Someone other than the person who used break-glass must acknowledge it.")
    if not can_acknowledge_break_glass(user, grant):
        raise NotAuthorized("You may not acknowledge this break-glass follow-up.")


def can_manage_eligibility(user: User, system: System) -> bool:
    return user.is_active and user.has_perm("accessgov.own_system", system)


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
