"""Identity from the company's identity provider: signing in through it, and what its SCIM client does —
joiners (create), movers (group membership, names) and leavers (deactivate, delete).

Callers: the sign-in callback (views.sso, through identity.oidc) and the SCIM API (api.scim), which runs
each call inside ``events.acting_via`` so every event names the token. Every write is here, in one
transaction with its access events; row locks (link, account, grants) are taken before the first event
(docs/DECISIONS.md, "Ledger lock"). A leaver goes through ``services.users.user_deactivate`` and a
mover's lost access through ``services.grants`` and ``services.access_requests``, the same paths an
admin's actions take, so the target-side removal is queued in the same transaction.
"""

import logging
import re
import uuid
from dataclasses import dataclass, replace
from typing import Any

from django.contrib.auth.models import Group
from django.db import IntegrityError, transaction

from accessgov import clock, inputs, permissions
from accessgov.exceptions import AccessGovError, NotAuthorized, PolicyViolation
from accessgov.identity.scim import GroupChange, GroupValues, UserValues
from accessgov.models import (
    AccessEvent,
    ExternalIdentity,
    IdentityGroup,
    IdentityProvider,
    IdentityProviderMFA,
    User,
)
from accessgov.services import usernames
from accessgov.services import users as user_services
from accessgov.services.events import event_record, event_record_bulk

Type = AccessEvent.Type
logger = logging.getLogger("accessgov.security")


class SignInRefused(NotAuthorized):
    """The provider vouched for someone this portal will not sign in (no account, deactivated, …)."""


class NotFound(AccessGovError):
    """No such resource for this provider (SCIM 404): another provider's ids look exactly the same."""


class Conflict(AccessGovError):
    """The value is taken (SCIM 409 uniqueness)."""


class Immutable(AccessGovError):
    """The provider may not change this value (SCIM 400 ``mutability``): the subject and the e-mail address of an
    account its owner linked (or that was created at sign-in) are not the provider's to set."""


# --- Signing in ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignIn:
    """The outcome of a verified ID token: the account, and whether the provider's MFA stands in for
    the TOTP step (``mfa_device``, only when the provider accepts it and amr/acr prove it)."""

    user: User
    provider: IdentityProvider
    amr: list[str]
    acr: str
    mfa_device: IdentityProviderMFA | None
    created: bool = False
    linked: bool = False


def _claim_text(claims: dict, name: str, max_length: int = 255) -> str:
    value = claims.get(name)
    if not isinstance(value, str):
        return ""
    value = value.strip()
    return value if value and len(value) <= max_length and "\x00" not in value else ""


def mfa_proven(provider: IdentityProvider, amr: list[str], acr: str) -> bool:
    """The ID token's ``amr`` names a method the provider is set to count as MFA, or its ``acr`` is one
    of the levels set to count as MFA."""
    return bool(set(amr) & provider.amr_proving_mfa()) or (bool(acr) and acr in provider.acr_proving_mfa())


_NOT_USERNAME = re.compile(r"[^\w.@+-]")


def _free_username(claims: dict, provider: IdentityProvider) -> str:
    """A username from the provider's claim (NFKC, as Django stores them), numbered when taken; a name the rule for
    every account's name refuses (``usernames.username_problem``: mixing look-alike alphabets, or reading as a name
    that is taken, such as a Cyrillic "alice") is not used: the provider's name for its users is."""
    base = _NOT_USERNAME.sub("", inputs.normal_username(_claim_text(claims, provider.username_claim)))[:140]
    # Numbered under the lock the check below takes: two first sign-ins claiming "alice" at once give "alice" and
    # "alice-2", not the provider's generic name to the second (it would find the number it was given taken).
    usernames.lock_usernames()
    candidate = _numbered(base) if base else ""
    if not candidate or usernames.username_problem(candidate):
        candidate = _numbered(f"{provider.slug}-user")
    return candidate


def _numbered(base: str) -> str:
    candidate, n = base, 1
    while User.objects.filter(username__iexact=candidate).exists():
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def _jit_create(provider: IdentityProvider, claims: dict, subject: str, now) -> ExternalIdentity:
    email = _claim_text(claims, "email", 254)
    if claims.get("email_verified") is False:
        email = ""
    user = User(
        username=_free_username(claims, provider),
        email=email,
        first_name=_claim_text(claims, "given_name", 150),
        last_name=_claim_text(claims, "family_name", 150),
    )
    user.set_unusable_password()
    user.save()
    identity = ExternalIdentity.objects.create(
        provider=provider,
        user=user,
        subject=subject,
        user_name=_claim_text(claims, provider.username_claim),
        created_at=now,
        updated_at=now,
    )
    event_record(
        Type.IDENTITY_USER_CREATED,
        job=f"idp:{provider.slug}",
        reason=f"Created at first sign-in through {provider.name}",
        data={"idp": provider.slug, "user_id": user.pk, "username": user.username, "subject": subject, "via_sso": True},
    )
    return identity


def _link(provider: IdentityProvider, identity: ExternalIdentity | None, link_user: User, subject: str, now):
    if identity is not None and identity.user_id != link_user.pk:
        raise SignInRefused(f"This {provider.name} account is already linked to another AccessGov account.")
    mine = ExternalIdentity.objects.select_for_update(of=("self",)).filter(provider=provider, user=link_user).first()
    if mine is not None and mine.subject not in (None, subject):
        raise SignInRefused(f"Your AccessGov account is already linked to someone else at {provider.name}.")
    if mine is None:
        mine = ExternalIdentity.objects.create(
            provider=provider, user=link_user, subject=subject, created_at=now, updated_at=now
        )
    elif mine.subject is None:
        # From now on the link is its owner's: the provider's SCIM client can no longer re-point it (nor set the
        # e-mail address), even though it created the account (scim_user_update).
        mine.subject, mine.updated_at, mine.provisioned_by_scim = subject, now, False
        mine.save(update_fields=["subject", "updated_at", "provisioned_by_scim"])
    event_record(
        Type.IDENTITY_LINKED,
        actor=link_user,
        reason=f"Linked by its owner to their {provider.name} account",
        data={"idp": provider.slug, "subject": subject},
    )
    return mine


def sso_sign_in(
    provider: IdentityProvider, claims: dict, *, link_user: User | None = None, client_address: str | None = None
) -> SignIn:
    """The account for a verified ID token (``claims``): found by the provider's subject claim only,
    created just in time when the provider allows it, or — ``link_user``, a signed-in person who started
    a link flow — linked to that person. Records ``identity.signed_in`` with the amr/acr claims and
    which second factor stands. Raises SignInRefused."""
    subject = _claim_text(claims, provider.subject_claim)
    if not subject:
        raise SignInRefused(f"{provider.name}'s answer names nobody (no usable {provider.subject_claim} claim).")
    amr = (
        [a[:40] for a in claims.get("amr", []) if isinstance(a, str)][:10]
        if isinstance(claims.get("amr"), list)
        else []
    )
    acr = _claim_text(claims, "acr", 200)
    now = clock.now()
    created = False
    with transaction.atomic():
        identity = (
            ExternalIdentity.objects.select_for_update(of=("self",))
            .select_related("user")
            .filter(provider=provider, subject=subject)
            .first()
        )
        if link_user is not None:
            identity = _link(provider, identity, link_user, subject, now)
        elif identity is None:
            if not provider.jit_create_users:
                raise SignInRefused(
                    f"No AccessGov account belongs to you at {provider.name}. Ask your administrator to "
                    "provision you, or sign in with your password once and link your account."
                )
            identity, created = _jit_create(provider, claims, subject, now), True
        user = User.objects.select_for_update(no_key=True, of=("self",)).get(pk=identity.user_id)
        if not user.is_active:
            raise SignInRefused("Your AccessGov account is deactivated.")
        if user.is_service_account:
            raise SignInRefused("A service account never signs in.")
        identity.last_sign_in_at = now
        identity.save(update_fields=["last_sign_in_at"])
        device = None
        if provider.accept_idp_mfa and mfa_proven(provider, amr, acr):
            device, _ = IdentityProviderMFA.objects.get_or_create(
                user=user, provider=provider, defaults={"name": f"MFA at {provider.name}", "confirmed": True}
            )
        event_record(
            Type.IDENTITY_SIGNED_IN,
            actor=user,
            client_address=client_address,
            reason=f"Signed in through {provider.name}",
            data={
                "idp": provider.slug,
                "subject": subject,
                "amr": amr,
                "acr": acr,
                "second_factor": "idp-mfa" if device else "totp",
            },
        )
        return SignIn(user, provider, amr, acr, device, created=created, linked=link_user is not None)


# --- SCIM: users ----------------------------------------------------------------------------------


def _scim_uuid(scim_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(scim_id))
    except ValueError as error:
        raise NotFound("No such resource.") from error


def _lock_identity(provider: IdentityProvider, scim_id: str) -> ExternalIdentity:
    identity = (
        ExternalIdentity.objects.select_for_update(of=("self",))
        .select_related("user")
        .filter(provider=provider, scim_id=_scim_uuid(scim_id))
        .first()
    )
    if identity is None:
        raise NotFound("No such user.")
    return identity


def _ensure_name_free(
    provider: IdentityProvider, user_name: str, identity: ExternalIdentity | None, *, renamed: bool = True
) -> None:
    """A joiner's or a rename's userName is nobody else's: not another of this provider's people (409), not another
    AccessGov account's username (409; ``renamed``: only when it changes other than in case), and not refused by
    the rule for every account's name (400, ``usernames.username_problem``: look-alike letters reading as a name
    that is taken, either way round). Raises Conflict, PolicyViolation."""
    others = ExternalIdentity.objects.filter(provider=provider)
    if identity is not None:
        others = others.exclude(pk=identity.pk)
    if others.filter(user_name__iexact=user_name).exists():
        raise Conflict(f"{user_name} is already provisioned.")
    if not renamed:
        return
    accounts = User.objects.filter(username__iexact=user_name)
    if identity is not None:
        accounts = accounts.exclude(pk=identity.user_id)
    if accounts.exists():
        raise Conflict(
            f"An AccessGov account named {user_name} exists and is not provisioned by {provider.name}; "
            "its owner can link it to their account there."
            if identity is None
            else f"{user_name} is another AccessGov account's name; this person cannot take it."
        )
    problem = usernames.username_problem(user_name, user_id=identity.user_id if identity is not None else None)
    if problem:
        raise PolicyViolation(f"userName is refused: {problem}.")


def _ensure_subject_free(
    provider: IdentityProvider, external_id: str | None, identity: ExternalIdentity | None
) -> None:
    others = ExternalIdentity.objects.filter(provider=provider)
    if identity is not None:
        others = others.exclude(pk=identity.pk)
    if external_id and others.filter(subject=external_id).exists():
        raise Conflict("That externalId belongs to another user.")


def scim_user_create(
    actor: User, provider: IdentityProvider, values: UserValues, *, client_address: str | None = None
) -> ExternalIdentity:
    """A joiner: a new account (no password: it signs in through the provider) linked to the provider
    by its SCIM id and, as the OIDC subject, its ``externalId``. An existing AccessGov account is never
    taken over by name (409): its owner links it from their security page. Raises NotAuthorized,
    Conflict."""
    permissions.ensure_can_provision(actor, provider)
    now = clock.now()
    with transaction.atomic():
        _ensure_name_free(provider, values.user_name, None)
        _ensure_subject_free(provider, values.external_id, None)
        user = User(
            username=values.user_name,
            email=values.email,
            first_name=values.given_name,
            last_name=values.family_name,
            is_active=values.active,
        )
        user.set_unusable_password()
        try:
            with transaction.atomic():
                user.save()
                identity = ExternalIdentity.objects.create(
                    provider=provider,
                    user=user,
                    subject=values.external_id,
                    user_name=values.user_name,
                    provisioned_by_scim=True,
                    deactivated_by_idp=not values.active,
                    created_at=now,
                    updated_at=now,
                )
        except IntegrityError as error:  # a concurrent create of the same name
            raise Conflict(f"{values.user_name} is already provisioned.") from error
        event_record(
            Type.IDENTITY_USER_CREATED,
            actor=actor,
            client_address=client_address,
            reason=f"Provisioned by {provider.name}",
            data={
                "idp": provider.slug,
                "user_id": user.pk,
                "username": user.username,
                "external_id": values.external_id,
                "active": values.active,
            },
        )
        return identity


def identity_values(identity: ExternalIdentity) -> UserValues:
    """What the provider sees of a linked account (the starting point of a PATCH). A link its owner made has no
    provider userName until the provider sends one: it sees the account's username."""
    user = identity.user
    return UserValues(
        user_name=identity.scim_user_name,
        external_id=identity.subject,
        given_name=user.first_name,
        family_name=user.last_name,
        email=user.email,
        active=user.is_active,
    )


def _checked_update(
    provider: IdentityProvider, identity: ExternalIdentity, before: UserValues, values: UserValues
) -> UserValues:
    """``values`` with only what this provider may change. Compared with what it saw (``before``), so what a request
    does not change is never refused. Refused: a userName that is taken (Conflict) or reads as a taken name
    (PolicyViolation); an externalId another of its people has (Conflict); and, on a link made at sign-in — its owner
    linked their account, or it was created just in time (``provisioned_by_scim`` false) — any change of the
    externalId (the subject that signs in as the account) or of the e-mail address (on-call providers and account
    recovery go by it; for another person's it is a four-eyes change in the admin) (Immutable). A leaver
    (``active`` going false) is never refused: the refused changes are left out and the deactivation goes through."""
    leaving = before.active and not values.active
    linked_at_sign_in = not identity.provisioned_by_scim
    kept: dict[str, Any] = {}
    refusals: list[AccessGovError] = []
    if values.user_name != before.user_name:
        try:
            renamed = values.user_name.casefold() != before.user_name.casefold()
            _ensure_name_free(provider, values.user_name, identity, renamed=renamed)
        except (Conflict, PolicyViolation) as error:
            refusals.append(error)
            kept["user_name"] = before.user_name
    if values.external_id != before.external_id:
        if linked_at_sign_in:
            refusals.append(
                Immutable(
                    f"{identity.user.username}'s link to {provider.name} was made at sign-in: its externalId is the "
                    "subject proven there and cannot be changed by provisioning. Delete the user here to unlink it; "
                    "its owner links it again."
                )
            )
            kept["external_id"] = before.external_id
        else:
            try:
                _ensure_subject_free(provider, values.external_id, identity)
            except Conflict as error:
                refusals.append(error)
                kept["external_id"] = before.external_id
    if linked_at_sign_in and values.email != before.email:
        if values.email.casefold() != before.email.casefold():
            refusals.append(
                Immutable(
                    f"{identity.user.username}'s link to {provider.name} was made at sign-in: its e-mail address is "
                    "changed in AccessGov (a four-eyes change), not by provisioning."
                )
            )
        kept["email"] = before.email  # a change of case only is no change
    if refusals and not leaving:
        raise refusals[0]
    if refusals:
        logger.warning(
            "scim changes left out of a leaver idp=%s user=%s: %s",
            provider.slug,
            identity.user_id,
            " | ".join(str(r) for r in refusals),
        )
    return replace(values, **kept) if kept else values


def scim_user_update(
    actor: User,
    provider: IdentityProvider,
    scim_id: str,
    values: UserValues | None = None,
    *,
    patch=None,
    client_address: str | None = None,
) -> ExternalIdentity:
    """A PUT (``values``) or a PATCH (``patch(current) -> values``) of a provider's user. Names and e-mail change the
    account; the AccessGov username never changes (targets know people by it). What the provider may not change is
    refused (``_checked_update``): on a link made at sign-in, the externalId and the e-mail address. ``active:
    false`` is a leaver — never refused: ``user_deactivate`` in this transaction (sessions, grants with their
    removal at the target, requests, tokens). ``active: true`` reactivates only an account this provider deactivated
    (an admin's deactivation stands). Records ``identity.user_updated`` with exactly what changed. Locks the link.
    Raises NotAuthorized, NotFound, Conflict, Immutable, PolicyViolation (also from ``patch``)."""
    permissions.ensure_can_provision(actor, provider)
    now = clock.now()
    with transaction.atomic():
        identity = _lock_identity(provider, scim_id)
        before = identity_values(identity)
        if patch is not None:
            values = patch(before)
        if values is None:
            raise PolicyViolation("Nothing to update.")
        values = _checked_update(provider, identity, before, values)
        user = identity.user
        changed = {}
        for name, attr in (("email", "email"), ("given_name", "first_name"), ("family_name", "last_name")):
            if getattr(values, name) != getattr(user, attr):
                changed[attr] = {"old": getattr(user, attr), "new": getattr(values, name)}
                setattr(user, attr, getattr(values, name))
        if changed:
            user.save(update_fields=list(changed))
        identity_fields = []
        if values.user_name != before.user_name:
            changed["user_name"] = {"old": before.user_name, "new": values.user_name}
            identity.user_name = values.user_name
            identity_fields.append("user_name")
        if values.external_id != before.external_id:
            changed["external_id"] = {"old": before.external_id, "new": values.external_id}
            identity.subject = values.external_id
            identity_fields.append("subject")
        if changed:
            identity.updated_at = now
            identity.save(update_fields=[*identity_fields, "updated_at"])
            event_record(
                Type.IDENTITY_USER_UPDATED,
                actor=actor,
                client_address=client_address,
                reason=f"Updated by {provider.name}",
                data={"idp": provider.slug, "user_id": user.pk, "username": user.username, "changes": changed},
            )
        if before.active and not values.active:
            user_services.user_deactivate(
                actor,
                user.pk,
                reason=f"Deactivated by {provider.name} (SCIM)",
                client_address=client_address,
                idp=provider,
            )
            identity.deactivated_by_idp = True
            identity.save(update_fields=["deactivated_by_idp"])
        elif not before.active and values.active:
            if identity.deactivated_by_idp:
                user_services.user_reactivate(
                    actor,
                    user.pk,
                    reason=f"Reactivated by {provider.name} (SCIM)",
                    client_address=client_address,
                    idp=provider,
                )
                identity.deactivated_by_idp = False
                identity.save(update_fields=["deactivated_by_idp"])
            else:
                logger.warning(
                    "scim reactivation ignored idp=%s user=%s: deactivated in AccessGov, not by the provider",
                    provider.slug,
                    user.pk,
                )
        identity.user.refresh_from_db()
        return identity


def scim_user_delete(
    actor: User, provider: IdentityProvider, scim_id: str, *, client_address: str | None = None
) -> None:
    """The provider deletes a user: the account is deactivated (when still active), leaves the
    provider's groups and is unlinked; it is kept, inactive, for the evidence. Raises NotFound."""
    permissions.ensure_can_provision(actor, provider)
    with transaction.atomic():
        identity = _lock_identity(provider, scim_id)
        user = identity.user
        if user.is_active:
            user_services.user_deactivate(
                actor, user.pk, reason=f"Deleted at {provider.name} (SCIM)", client_address=client_address, idp=provider
            )
        groups = list(IdentityGroup.objects.filter(provider=provider, group__user=user).select_related("group"))
        for identity_group in groups:
            _leave(actor, provider, identity_group, [user], client_address=client_address)
        event_record(
            Type.IDENTITY_UNLINKED,
            actor=actor,
            client_address=client_address,
            reason=f"Deleted at {provider.name} (SCIM); the account is kept, inactive",
            data={"idp": provider.slug, "user_id": user.pk, "username": user.username, "subject": identity.subject},
        )
        identity.delete()


# --- SCIM: groups and the movers they make --------------------------------------------------------


def _group_name(provider: IdentityProvider, display_name: str) -> str:
    return f"{provider.slug}: {display_name}"[:150]


def _lock_group(provider: IdentityProvider, scim_id: str) -> IdentityGroup:
    identity_group = (
        IdentityGroup.objects.select_for_update(of=("self",))
        .select_related("group")
        .filter(provider=provider, scim_id=_scim_uuid(scim_id))
        .first()
    )
    if identity_group is None:
        raise NotFound("No such group.")
    return identity_group


def _members(provider: IdentityProvider, scim_ids: set[str]) -> list[User]:
    """The accounts behind member ids; an id that is not one of this provider's users is refused (the
    same answer whether it does not exist or belongs to another provider)."""
    wanted = set()
    for scim_id in scim_ids:
        try:
            wanted.add(uuid.UUID(scim_id))
        except ValueError as error:
            raise PolicyViolation(f"No such user: {scim_id[:40]}.") from error
    found = dict(
        ExternalIdentity.objects.filter(provider=provider, scim_id__in=wanted).values_list("scim_id", "user_id")
    )
    missing = wanted - set(found)
    if missing:
        raise PolicyViolation(f"No such user: {sorted(str(m) for m in missing)[0]}.")
    return list(User.objects.filter(pk__in=found.values()).order_by("pk"))


def _membership_events(event_type, actor, provider, identity_group, users, *, client_address, now) -> None:
    event_record_bulk(
        [
            AccessEvent(
                event_type=event_type,
                actor=actor,
                actor_label=actor.get_username(),
                client_address=client_address,
                occurred_at=now,
                reason=f"{'Added to' if event_type == Type.IDENTITY_GROUP_JOINED else 'Removed from'} "
                f"{identity_group.group.name} by {provider.name}",
                data={
                    "idp": provider.slug,
                    "group_id": identity_group.group_id,
                    "group": identity_group.group.name,
                    "user_id": user.pk,
                    "username": user.username,
                },
            )
            for user in users
        ]
    )


def _join(actor, provider, identity_group: IdentityGroup, users: list[User], *, client_address) -> None:
    current = set(identity_group.group.user_set.values_list("pk", flat=True))
    joining = [u for u in users if u.pk not in current]
    if not joining:
        return
    identity_group.group.user_set.add(*joining)
    _membership_events(
        Type.IDENTITY_GROUP_JOINED,
        actor,
        provider,
        identity_group,
        joining,
        client_address=client_address,
        now=clock.now(),
    )


def _leave(actor, provider, identity_group: IdentityGroup, users: list[User], *, client_address) -> None:
    """A mover: people leave a group. What depended on it ends through ``users.user_groups_leave`` (the
    same service the admin's user form calls): grants whose role no other eligibility covers are revoked
    with removal at the target, pending requests withdrawn. One group-left event per person."""
    current = set(identity_group.group.user_set.values_list("pk", flat=True))
    leaving = [u for u in users if u.pk in current]
    if not leaving:
        return
    now = clock.now()
    user_services.user_groups_leave(
        actor,
        leaving,
        [identity_group.group],
        by=f"by {provider.name}",
        job=f"idp:{provider.slug}",
        client_address=client_address,
        idp=provider,
    )
    _membership_events(
        Type.IDENTITY_GROUP_LEFT, actor, provider, identity_group, leaving, client_address=client_address, now=now
    )


def _group_event(actor, provider, identity_group: IdentityGroup, action: str, client_address, **extra) -> None:
    event_record(
        Type.IDENTITY_GROUP_CHANGED,
        actor=actor,
        client_address=client_address,
        reason=f"Group {identity_group.group.name} {action} by {provider.name}",
        data={"idp": provider.slug, "group_id": identity_group.group_id, "action": action, **extra},
    )


def _ensure_group_name_free(provider, display_name: str, identity_group: IdentityGroup | None) -> None:
    taken = IdentityGroup.objects.filter(provider=provider, display_name__iexact=display_name)
    groups = Group.objects.filter(name=_group_name(provider, display_name))
    if identity_group is not None:
        taken = taken.exclude(pk=identity_group.pk)
        groups = groups.exclude(pk=identity_group.group_id)
    if taken.exists() or groups.exists():
        raise Conflict(f"A group named {display_name} exists.")


def scim_group_create(
    actor: User, provider: IdentityProvider, values: GroupValues, *, client_address: str | None = None
) -> IdentityGroup:
    """A new group (``<slug>: <name>``) with its members. It grants nothing until eligibility or rights
    are given to it in AccessGov (four-eyes). Raises NotAuthorized, Conflict, PolicyViolation."""
    permissions.ensure_can_provision(actor, provider)
    with transaction.atomic():
        _ensure_group_name_free(provider, values.display_name, None)
        members = _members(provider, set(values.members or ()))
        try:
            with transaction.atomic():
                group = Group.objects.create(name=_group_name(provider, values.display_name))
                identity_group = IdentityGroup.objects.create(
                    provider=provider,
                    group=group,
                    external_id=values.external_id or "",
                    display_name=values.display_name,
                )
        except IntegrityError as error:
            raise Conflict(f"A group named {values.display_name} exists.") from error
        _group_event(actor, provider, identity_group, "created", client_address, name=group.name)
        _join(actor, provider, identity_group, members, client_address=client_address)
        return identity_group


def scim_group_update(
    actor: User,
    provider: IdentityProvider,
    scim_id: str,
    change: GroupChange,
    *,
    client_address: str | None = None,
) -> IdentityGroup:
    """A PUT or PATCH of a group: rename, externalId, members added, removed or replaced. People who
    leave are movers (``_leave``). Raises NotAuthorized, NotFound, Conflict, PolicyViolation."""
    permissions.ensure_can_provision(actor, provider)
    with transaction.atomic():
        identity_group = _lock_group(provider, scim_id)
        if change.display_name is not None and change.display_name != identity_group.display_name:
            _ensure_group_name_free(provider, change.display_name, identity_group)
            old = identity_group.group.name
            identity_group.display_name = change.display_name
            identity_group.group.name = _group_name(provider, change.display_name)
            identity_group.group.save(update_fields=["name"])
            identity_group.updated_at = clock.now()
            identity_group.save(update_fields=["display_name", "updated_at"])
            _group_event(
                actor, provider, identity_group, "renamed", client_address, old=old, new=identity_group.group.name
            )
        if change.external_id_given and (change.external_id or "") != identity_group.external_id:
            identity_group.external_id = change.external_id or ""
            identity_group.save(update_fields=["external_id"])
        current = set(identity_group.group.user_set.values_list("pk", flat=True))
        if change.replace_members is not None:
            wanted = {u.pk: u for u in _members(provider, change.replace_members)}
            leaving = list(User.objects.filter(pk__in=current - set(wanted)).order_by("pk"))
            joining = [u for pk, u in wanted.items() if pk not in current]
        else:
            joining = _members(provider, change.add) if change.add else []
            leaving = _members(provider, change.remove) if change.remove else []
        if leaving:
            _leave(actor, provider, identity_group, leaving, client_address=client_address)
        if joining:
            _join(actor, provider, identity_group, joining, client_address=client_address)
        return identity_group


def scim_group_delete(
    actor: User, provider: IdentityProvider, scim_id: str, *, client_address: str | None = None
) -> None:
    """The provider deletes a group: every member leaves (movers), and the AccessGov group is kept —
    renamed, with no members — so the eligibility and history that name it stay readable."""
    permissions.ensure_can_provision(actor, provider)
    with transaction.atomic():
        identity_group = _lock_group(provider, scim_id)
        members = list(identity_group.group.user_set.order_by("pk"))
        _leave(actor, provider, identity_group, members, client_address=client_address)
        group = identity_group.group
        old = group.name
        group.name = f"{old[:120]} (removed {identity_group.scim_id.hex[:8]})"
        group.save(update_fields=["name"])
        _group_event(actor, provider, identity_group, "removed", client_address, old=old, new=group.name)
        identity_group.delete()
