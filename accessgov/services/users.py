"""Account lifecycle: deactivating a person ends every way they hold or could use access, at once; a
person leaving a group ends what depended on that group (a mover).

Callers: the admin (the user form's "active" box and groups, the deactivate/reactivate actions) and SCIM
provisioning (services.identity: the identity provider deactivates a leaver, moves people out of its
groups). Both go through the same services here, so an admin's removal and the provider's end the same
grants the same way. Each change
records an access event in its transaction; grants are revoked through the lifecycle service (so the
target-side removal goes through the outbox) and pending requests are withdrawn set-based.
"""

from collections.abc import Sequence

from django.contrib.auth.models import Group
from django.db import transaction

from accessgov import clock, permissions, recovery
from accessgov.exceptions import NotAuthorized, TransitionNotAllowed
from accessgov.models import (
    AccessEvent,
    Eligibility,
    ExternalIdentity,
    Grant,
    IdentityGroup,
    IdentityProvider,
    User,
)
from accessgov.services import access_requests as request_services
from accessgov.services import grants as grant_services
from accessgov.services import tokens as token_services
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


def user_password_change(user: User, new_password: str) -> User:
    """The person changes their own password (the view checked the old one and the password rules).
    The session hash changes with it, so every other session of theirs ends."""
    with transaction.atomic():
        user = _lock_user(user.pk)
        user.set_password(new_password)
        user.save(update_fields=["password"])
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
    approvers' queues, every API token revoked (each through ``api_token_revoke``; the user.deactivated
    event names them: a token has no event of its own). One user.deactivated event, plus the grants' and
    requests' own events. ``actor`` is an admin, or — with ``idp`` — that identity provider's SCIM
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
        tokens = token_services.api_token_revoke_all(actor, user)
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
    the affected current grants before the first event. Returns the (user id, group id) memberships
    removed. Raises NotAuthorized."""
    if idp is not None:
        permissions.ensure_can_provision(actor, idp)
        managed = set(IdentityGroup.objects.filter(provider=idp).values_list("group_id", flat=True))
        if any(group.pk not in managed for group in groups):
            raise NotAuthorized(f"{idp.name} does not manage this group.")
    else:
        permissions.ensure_can_manage_users(actor)
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
