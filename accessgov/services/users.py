"""Account lifecycle: deactivating a person ends every way they hold or could use access, at once.

Callers: the admin (the user form's "active" box and the deactivate/reactivate actions) and SCIM
provisioning (services.identity: the identity provider deactivates a leaver). Each change
records an access event in its transaction; grants are revoked through the lifecycle service (so the
target-side removal goes through the outbox) and pending requests are withdrawn set-based.
"""

from django.db import transaction

from accessgov import permissions
from accessgov.exceptions import NotAuthorized, TransitionNotAllowed
from accessgov.models import AccessEvent, ExternalIdentity, Grant, IdentityProvider, User
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
    if not (actor.is_active and actor.is_staff and actor.has_perm("accessgov.change_user")):
        raise NotAuthorized("Only portal admins with the right to change users manage accounts.")


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
    approvers' queues, every API token revoked. One user.deactivated event, plus the grants' and
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
        data = {"user_id": user.pk, "username": user.get_username()}
        if idp is not None:
            data["idp"] = idp.slug
        event_record(Type.USER_DEACTIVATED, actor=actor, client_address=client_address, reason=reason, data=data)
        for grant_id in grants:
            grant_services.grant_revoke_by_system(grant_id, reason=f"Account deactivated: {reason}", job="deactivation")
        withdrawn = request_services.access_request_withdraw_all(user, actor=actor, reason=reason)
        tokens = token_services.api_token_revoke_all(actor, user)
        return {"grants_revoked": len(grants), "requests_withdrawn": withdrawn, "tokens_revoked": tokens}


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
