"""Account lifecycle: deactivating a person ends every way they hold or could use access, at once; a
person leaving a group ends what depended on that group (a mover).

Callers: the admin (the user form's "active" box and groups, the deactivate/reactivate actions) and SCIM
provisioning (services.identity: the identity provider deactivates a leaver, moves people out of its
groups). Both go through the same services here, so an admin's removal and the provider's end the same
grants the same way. Each change
records an access event in its transaction; grants are revoked through the lifecycle service (so the
target-side removal goes through the outbox) and pending requests are withdrawn set-based. Rights taken
away in the admin (admin flags, model permissions, groups, a whole group deleted) are recorded as changes
applied at once (services.changes.change_record_narrowing); accounts made in the admin or by
``createsuperuser`` are recorded as user.created.
"""

from collections.abc import Sequence

from django.contrib.auth.models import Group, Permission
from django.db import transaction
from guardian.models import GroupObjectPermission

from accessgov import clock, permissions, recovery
from accessgov.exceptions import NotAuthorized, PolicyViolation, TransitionNotAllowed
from accessgov.models import (
    AccessEvent,
    AutoApprovalRule,
    ChangeRequest,
    Eligibility,
    ExternalIdentity,
    Grant,
    IdentityGroup,
    IdentityProvider,
    User,
)
from accessgov.services import access_requests as request_services
from accessgov.services import changes as change_services
from accessgov.services import grants as grant_services
from accessgov.services import tokens as token_services
from accessgov.services import usernames
from accessgov.services.events import event_record

Type = AccessEvent.Type


def _ensure_can_manage_users(actor: User, user_id: int, idp: IdentityProvider | None) -> None:
    if idp is not None:
        # The identity provider's SCIM client, for an account linked to that provider only.
        permissions.ensure_can_provision(actor, idp)
        if not ExternalIdentity.objects.filter(provider=idp, user_id=user_id).exists():
            raise NotAuthorized(f"{idp.name} does not manage this account.")
        return
    permissions.ensure_can_manage_users(actor)


def user_password_change(user: User, new_password: str | None, *, client_address: str | None = None) -> User:
    """The person changes their own password (the security page checked the old one, both it and the admin's
    form the password rules), or removes it (None: the admin's form offers it; they sign in through their
    identity provider then). The session hash changes with it, so every other session of theirs ends. One
    user.password_set event by the person."""
    with transaction.atomic():
        user = _lock_user(user.pk)
        user.set_password(new_password)
        user.save(update_fields=["password"])
        reason = "Changed by the person" if new_password is not None else "Removed by the person"
        event_record(Type.USER_PASSWORD_SET, actor=user, client_address=client_address, reason=reason)
    return user


def user_password_set_by_job(user_id: int, new_password: str, *, job: str) -> User:
    """Someone with the server's rights sets a password from its shell (``manage.py changepassword``; the
    command checked the password rules). No person acts: the event names the job and, in its data, whose
    password it is. Only the password is saved on the locked row (a deactivation made meanwhile stays)."""
    with transaction.atomic():
        user = _lock_user(user_id)
        user.set_password(new_password)
        user.save(update_fields=["password"])
        event_record(
            Type.USER_PASSWORD_SET,
            job=job,
            reason=f"Set with {job}",
            data={"user_id": user.pk, "username": user.get_username()},
        )
    return user


def user_password_set_from_link(user_id: int, new_password: str, *, client_address: str | None = None) -> User:
    """The person chooses a password through the one-time link of an approved account recovery
    (``accessgov.recovery``; the view checked the link and the password rules). Checked again on the locked
    row: a second use of the link, or an account changed since, is refused."""
    with transaction.atomic():
        user = _lock_user(user_id)
        if not recovery.awaits_password(user):
            raise TransitionNotAllowed(
                "This link was used already, or the account changed since it was sent: ask an administrator for a new one."
            )
        user.set_password(new_password)
        user.save(update_fields=["password"])
        event_record(
            Type.USER_PASSWORD_SET,
            actor=user,
            client_address=client_address,
            reason="Chosen through an account recovery link",
        )
    return user


def _lock_user(user_id: int) -> User:
    return User.objects.select_for_update(no_key=True, of=("self",)).get(pk=user_id)


def user_create(actor: User, user: User, *, client_address: str | None = None) -> User:
    """An admin makes an account in the admin's add form (``user``: unsaved, its username and password set by
    the form). It remembers who made it (the four-eyes independence check counts accounts an admin made
    recently) and records one user.created event naming the admin. Rights come later, four-eyed. Raises
    NotAuthorized for anyone who may not add accounts, PolicyViolation for a name the rule for every account's name
    refuses (``usernames.ensure_username_allowed``: look-alikes, another account's name in another case)."""
    if not (actor.is_active and actor.is_staff and actor.has_perm("accessgov.add_user")):
        raise NotAuthorized("Only portal admins with the right to add users make accounts.")
    with transaction.atomic():
        usernames.ensure_username_allowed(user.get_username())
        user.created_by = actor
        user.save()
        _record_created(user, actor=actor, client_address=client_address, reason="Created in the admin")
    return user


def user_record_created(user: User, *, job: str, reason: str) -> AccessEvent:
    """Record an account made from the server's shell (``manage.py createsuperuser``): no person acts — whoever
    runs the command has the server's rights — so the event names ``job``. Runs in the caller's transaction
    (the command's, which also made the account)."""
    with transaction.atomic():
        return _record_created(user, job=job, reason=reason)


def _record_created(
    user: User, *, actor: User | None = None, job: str | None = None, client_address: str | None = None, reason: str
) -> AccessEvent:
    return event_record(
        Type.USER_CREATED,
        actor=actor,
        job=job,
        client_address=client_address,
        reason=reason,
        data={
            "user_id": user.pk,
            "username": user.get_username(),
            "is_staff": user.is_staff,
            "is_superuser": user.is_superuser,
        },
    )


def user_deactivate(
    actor: User,
    user_id: int,
    *,
    reason: str,
    client_address: str | None = None,
    idp: IdentityProvider | None = None,
) -> dict[str, int]:
    """Deactivate an account: sign-in refused and every session ended (the session stamp changes), every
    current grant revoked (removal at the target queued), every pending request withdrawn from the
    approvers' queues, every API token revoked (each through ``api_token_revoke``, with its token.revoked
    event; the user.deactivated event names them too). One user.deactivated event, plus the tokens',
    grants' and requests' own events. ``actor`` is an admin, or — with ``idp`` — that identity provider's SCIM
    service account (a leaver; the event names the provider). Locks the account, then its current
    grants, before the first event. Raises NotAuthorized or TransitionNotAllowed (already inactive)."""
    _ensure_can_manage_users(actor, user_id, idp)
    reason = reason.strip() or "Account deactivated"
    with transaction.atomic():
        user = _lock_user(user_id)
        if not user.is_active:
            raise TransitionNotAllowed(f"{user.get_username()} is already inactive.")
        grants = list(
            Grant.objects.current()
            .filter(user=user)
            .select_for_update(no_key=True, of=("self",))
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        user.is_active = False
        user.save(update_fields=["is_active"])
        user.rotate_session_stamp()
        tokens = token_services.api_token_revoke_all(
            actor, user, reason=f"Account deactivated: {reason}", client_address=client_address
        )
        data = {"user_id": user.pk, "username": user.get_username(), "api_tokens_revoked": tokens}
        if idp is not None:
            data["idp"] = idp.slug
        event_record(Type.USER_DEACTIVATED, actor=actor, client_address=client_address, reason=reason, data=data)
        for grant_id in grants:
            grant_services.grant_revoke_by_system(grant_id, reason=f"Account deactivated: {reason}", job="deactivation")
        withdrawn = request_services.access_request_withdraw_all(user, actor=actor, reason=reason)
        return {"grants_revoked": len(grants), "requests_withdrawn": withdrawn, "tokens_revoked": len(tokens)}


def user_reactivate(
    actor: User,
    user_id: int,
    *,
    reason: str,
    client_address: str | None = None,
    idp: IdentityProvider | None = None,
) -> User:
    """Let a deactivated person sign in again. Restores nothing: no grant, request or token comes back.
    ``actor`` is an admin, or — with ``idp`` — that identity provider's SCIM service account."""
    _ensure_can_manage_users(actor, user_id, idp)
    with transaction.atomic():
        user = _lock_user(user_id)
        if user.is_active:
            raise TransitionNotAllowed(f"{user.get_username()} is already active.")
        user.is_active = True
        user.save(update_fields=["is_active"])
        event_record(
            Type.USER_REACTIVATED,
            actor=actor,
            client_address=client_address,
            reason=reason.strip() or "Account reactivated",
            data={"user_id": user.pk, "username": user.get_username(), **({"idp": idp.slug} if idp else {})},
        )
        return user


def user_set_notification_preferences(user: User, preferences: dict[str, dict[str, bool]]) -> None:
    """A person chooses, per notification category, whether they are emailed and mentioned in Slack
    (issue 18). Their own setting, not access state: no access event (django-auditlog records the change)."""
    user.notification_preferences = preferences
    user.save(update_fields=["notification_preferences"])


def user_set_time_zone(user: User, time_zone: str) -> None:
    """A person's own time zone (an IANA name the form has checked against zoneinfo; empty: UTC)."""
    user.time_zone = time_zone
    user.save(update_fields=["time_zone"])


def user_groups_leave(
    actor: User,
    users: Sequence[User],
    groups: Sequence[Group],
    *,
    by: str,
    job: str,
    client_address: str | None = None,
    idp: IdentityProvider | None = None,
) -> list[tuple[int, int]]:
    """People leave groups (a mover): every membership of ``users`` in ``groups`` is removed, and the
    eligibility that came only from those groups ends with it — each current grant of theirs whose role
    no other eligibility (their own, another group's) still covers is revoked (removal at the target
    queued; the event names ``actor``, the groups and ``by``, e.g. "by Okta" or "in the admin"), and
    pending requests for those roles that are no longer eligible are withdrawn.

    The one mover path: the admin's user form and SCIM group changes (services.identity) both call it.
    ``actor`` is a portal admin allowed to change users, or — with ``idp`` — that provider's SCIM service
    account, for that provider's groups only. Runs in the caller's transaction when there is one; locks
    the affected current grants before the first event. Without ``idp`` (an admin), each person's removal is
    also recorded as a change applied at once (``user_rights_narrow``: change.proposed and change.applied,
    narrowing), whether or not a grant depended on the group; the provider's removals are recorded by
    services.identity (identity.group_left). Returns the (user id, group id) memberships removed. Raises
    NotAuthorized."""
    if idp is not None:
        permissions.ensure_can_provision(actor, idp)
        managed = set(IdentityGroup.objects.filter(provider=idp).values_list("group_id", flat=True))
        if any(group.pk not in managed for group in groups):
            raise NotAuthorized(f"{idp.name} does not manage this group.")
        return _groups_leave(actor, users, groups, by=by, job=job, client_address=client_address, idp=idp)
    permissions.ensure_can_manage_users(actor)
    left: list[tuple[int, int]] = []
    with transaction.atomic():
        for user in users:
            change = user_rights_narrow(
                actor, user, remove_groups=groups, by=by, job=job, client_address=client_address
            )
            if change is not None:
                left += [(user.pk, group_id) for group_id in change.payload["remove_groups"]]
    return sorted(left)


def user_rights_narrow(
    actor: User,
    user: User,
    *,
    remove_staff: bool = False,
    remove_superuser: bool = False,
    remove_groups: Sequence[Group] = (),
    remove_permissions: Sequence[Permission] = (),
    by: str = "in the admin",
    job: str = "admin",
    client_address: str | None = None,
) -> ChangeRequest | None:
    """Take rights away from an account (the admin's user form): staff, superuser, model permissions, groups.
    Never waits for a second admin; recorded as one change applied at once (``change_record_narrowing``:
    change.proposed, the grants' own events, change.applied, marked narrowing), in one transaction. Leaving a
    group is a mover (``user_groups_leave``'s semantics: grants that only the group made them eligible for are
    revoked, pending requests withdrawn; ``by`` and ``job`` go into those events). Only what the account
    holds is taken (and recorded); None when that is nothing. Locks the account, then its affected grants.
    Raises NotAuthorized (not an admin who may change users; your own account)."""
    permissions.ensure_can_manage_users(actor)
    with transaction.atomic():
        locked = _lock_user(user.pk)
        flags = [
            name
            for name, remove in (("is_staff", remove_staff), ("is_superuser", remove_superuser))
            if remove and getattr(locked, name)
        ]
        groups = list(locked.groups.filter(pk__in=[g.pk for g in remove_groups]).order_by("pk"))
        perms = list(locked.user_permissions.filter(pk__in=[p.pk for p in remove_permissions]).order_by("pk"))
        if not (flags or groups or perms):
            return None  # e.g. an admin saving their own name: nothing of their rights changes
        permissions.ensure_can_change_rights(actor, user=locked)
        labels = {"is_staff": "Staff (portal admin)", "is_superuser": "Superuser (every permission)"}
        changes = {name: {"label": labels[name], "old": "yes", "new": "no"} for name in flags}
        if groups:
            changes["groups"] = {"label": "Groups removed", "old": _names(groups), "new": ""}
        if perms:
            changes["user_permissions"] = {"label": "Permissions removed", "old": _names(perms), "new": ""}

        def take_away() -> User:
            for name in flags:
                setattr(locked, name, False)
            if flags:
                locked.save(update_fields=flags)
            locked.user_permissions.remove(*perms)
            if groups:
                _groups_leave(actor, [locked], groups, by=by, job=job, client_address=client_address)
            return locked

        return change_services.change_record_narrowing(
            actor,
            kind=ChangeRequest.Kind.USER_RIGHTS,
            target_id=locked.pk,
            summary=f"Rights of {locked.get_username()} taken away: "
            + ", ".join(c["label"].lower() for c in changes.values()),
            changes=changes,
            payload={
                "user_id": locked.pk,
                "is_staff": False,
                "is_superuser": False,
                "add_groups": [],
                "add_permissions": [],
                "remove_staff": "is_staff" in flags,
                "remove_superuser": "is_superuser" in flags,
                "remove_groups": [g.pk for g in groups],
                "remove_permissions": [p.pk for p in perms],
            },
            take_away=take_away,
            client_address=client_address,
        )


def group_delete_problem(actor: User, group: Group) -> str | None:
    """Why ``actor`` may not delete ``group`` (``group_delete``'s refusals, which the admin also shows on its
    confirmation page before anything is deleted), or None."""
    problem = permissions.rights_change_problem(actor, group=group)
    if problem:
        return problem
    if IdentityGroup.objects.filter(group=group).exists():
        return f"{group.name} is managed by an identity provider: it deletes it through SCIM."
    if Eligibility.objects.filter(group=group).exists():
        return (
            f"Eligibility names {group.name}: deleting the group would erase that record. End the eligibility "
            "(its record stays) and remove the members instead."
        )
    if AutoApprovalRule.objects.filter(requester_group=group).exists():
        return f"An auto-approval rule names {group.name}: change or remove the rule first (four-eyes)."
    return None


def group_delete(actor: User, group_id: int, *, client_address: str | None = None) -> ChangeRequest:
    """Delete a group (the admin): every member leaves it first, as a mover (``user_groups_leave``'s semantics),
    so they lose what it gave — its model and object permissions go with it — and the deletion is recorded as
    one change applied at once (``change_record_narrowing``, kind group_deletion: the members, the permissions
    it held). Refused while eligibility or an auto-approval rule names the group (deleting would erase that
    record, or policy, with it: end or change those first, or empty the group and keep it), and for a group
    an identity provider manages (it deletes its groups through SCIM). Nobody deletes a group they are in.
    Locks the group. Raises NotAuthorized, PolicyViolation, TransitionNotAllowed (already gone)."""
    permissions.ensure_can_manage_users(actor)
    with transaction.atomic():
        group = Group.objects.select_for_update(of=("self",)).filter(pk=group_id).first()
        if group is None:
            raise TransitionNotAllowed("This group no longer exists.")
        permissions.ensure_can_change_rights(actor, group=group)
        problem = group_delete_problem(actor, group)
        if problem:
            raise PolicyViolation(problem)
        members = list(group.user_set.order_by("pk"))
        perms = list(group.permissions.order_by("pk"))
        object_perms = sorted(
            f"{codename} on {model} #{object_pk}"
            for codename, model, object_pk in GroupObjectPermission.objects.filter(group=group).values_list(
                "permission__codename", "content_type__model", "object_pk"
            )
        )
        changes = {
            "members": {"label": "Members (each left the group)", "old": _names(members), "new": ""},
            "permissions": {"label": "Permissions removed", "old": _names(perms), "new": ""},
            "object_permissions": {"label": "Object permissions removed", "old": ", ".join(object_perms), "new": ""},
        }
        name = group.name

        def take_away() -> Group:
            if members:
                _groups_leave(
                    actor,
                    members,
                    [group],
                    by=f"in the admin by {actor.get_username()} (group deleted)",
                    job="admin",
                    client_address=client_address,
                )
            group.delete()  # its model and object permissions go with it (cascade)
            return group

        return change_services.change_record_narrowing(
            actor,
            kind=ChangeRequest.Kind.GROUP_DELETION,
            target_id=group_id,
            summary=f"Delete group {name}",
            changes=changes,
            payload={
                "group_id": group_id,
                "name": name,
                "members": [u.pk for u in members],
                "remove_permissions": [p.pk for p in perms],
                "object_permissions": object_perms,
            },
            take_away=take_away,
            client_address=client_address,
        )


def _names(objects) -> str:
    return ", ".join(sorted(str(o) for o in objects))


def _groups_leave(
    actor: User,
    users: Sequence[User],
    groups: Sequence[Group],
    *,
    by: str,
    job: str,
    client_address: str | None,
    idp: IdentityProvider | None = None,
) -> list[tuple[int, int]]:
    """The mover itself (authorized by the caller): memberships removed, grants that depended only on them
    revoked, pending requests no longer eligible withdrawn."""
    membership = User.groups.through
    with transaction.atomic():
        now = clock.now()
        leaving = sorted(
            membership.objects.filter(
                user_id__in=[u.pk for u in users], group_id__in=[g.pk for g in groups]
            ).values_list("user_id", "group_id")
        )
        if not leaving:
            return []
        left_groups = {group_id for _, group_id in leaving}
        by_role: dict[int, set[str]] = {}
        for role_id, group_name in Eligibility.objects.filter(group_id__in=left_groups).values_list(
            "role_id", "group__name"
        ):
            by_role.setdefault(role_id, set()).add(group_name)
        grants = list(
            Grant.objects.current()
            .filter(user_id__in={user_id for user_id, _ in leaving}, role_id__in=by_role)
            .select_for_update(no_key=True, of=("self",))
            .select_related("role", "user")
            .order_by("pk")
        )
        pairs = set(leaving)
        for group in groups:
            gone = [u for u in users if (u.pk, group.pk) in pairs]
            if gone:
                group.user_set.remove(*gone)
        for grant in grants:
            if permissions.eligibility_problem(grant.user, grant.role, now):
                names = sorted(by_role[grant.role_id])
                grant_services.grant_revoke_by_system(
                    grant.pk,
                    reason=f"No longer eligible: removed from {', '.join(names)} {by}",
                    job=job,
                    actor=actor,
                    client_address=client_address,
                    data={"groups_left": names, **({"idp": idp.slug} if idp else {})},
                )
        if by_role:
            request_services.access_request_withdraw_ineligible(now, role_ids=sorted(by_role), job=job)
        return leaving
