"""Four-eyes on policy: changes to a role's policy, auto-approval rules, eligibility granted by admins
and connector settings are proposed by one admin and applied only when another approves them.

Callers: the admin (save on the guarded models proposes instead of saving) and the change pages
(approve, reject, withdraw). With FOUR_EYES_POLICY_CHANGES off, a proposal is applied at once (still
recorded). Every step records an access event in its transaction. Nobody approves their own change,
and nobody approves a change that widens their own access. A change that only takes rights away
(narrowing) never waits: it is proposed and applied at once, recorded the same way, and marked
``payload["narrowing"] = True`` (and ``narrowing`` in its change.applied event) so that the evidence
pack can tell it from a widening change applied without a second admin.
"""

import json
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import Group, Permission
from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction
from guardian.shortcuts import assign_perm, get_group_perms, get_user_perms, remove_perm

from accessgov import clock, inputs, permissions, policies
from accessgov.exceptions import PolicyViolation, TransitionNotAllowed
from accessgov.models import (
    AccessEvent,
    AutoApprovalRule,
    ChangeRequest,
    Eligibility,
    EventWebhookSubscription,
    IdentityProvider,
    OidcTrustPolicy,
    OnCallProvider,
    Role,
    SlackWorkspace,
    System,
    TicketProvider,
    User,
)
from accessgov.services import notification_outbox, usernames
from accessgov.services import tokens as token_services
from accessgov.services import webhooks as webhook_services
from accessgov.services.events import event_record

Type = AccessEvent.Type
Kind = ChangeRequest.Kind
Status = ChangeRequest.Status
MODELS: dict[str, type[models.Model]] = {
    Kind.ROLE: Role,
    Kind.AUTO_APPROVAL_RULE: AutoApprovalRule,
    Kind.ELIGIBILITY: Eligibility,
    Kind.SYSTEM: System,
    Kind.IDENTITY_PROVIDER: IdentityProvider,
    # Integration settings (docs/INTEGRATIONS.md) are policy too.
    Kind.ONCALL_PROVIDER: OnCallProvider,
    Kind.TICKET_PROVIDER: TicketProvider,
    Kind.SLACK_WORKSPACE: SlackWorkspace,
    Kind.OIDC_TRUST_POLICY: OidcTrustPolicy,
    # Where every event may be streamed to (docs/WEBHOOKS.md): adding one, or sending more, waits too.
    Kind.EVENT_WEBHOOK: EventWebhookSubscription,
}
# Write-only fields: masked in the diff, never in payload or events, held in ``secret_payload`` until
# the decision (a connector's secret as it is; any other model's secrets as a JSON object by field).
SECRET_FIELDS = {
    "connector_secret",
    "client_secret",
    "api_key",
    "api_token",
    "webhook_secret",
    "bot_token",
    "signing_secret",
    "secret",  # an event webhook subscription's signing secret
}
MASK = "•••••• (secret)"
NARROWING = "narrowing"  # the payload key (and change.applied data key) of a change that only takes away


def _display(instance: models.Model, field: models.Field) -> str:
    if field.name in SECRET_FIELDS:
        return MASK if getattr(instance, field.attname) else ""
    if field.is_relation:
        related = getattr(instance, field.name, None)
        return str(related) if related is not None else ""
    if field.choices:
        return str(getattr(instance, f"get_{field.name}_display")())
    value = getattr(instance, field.attname)
    if isinstance(value, timedelta):
        return policies.format_duration(value)  # "4 h", as the portal writes durations (str() gave "4:00:00")
    return "" if value is None else str(value)


def _beneficiary(kind: str, instance: models.Model) -> User | None:
    if kind == Kind.ELIGIBILITY and instance.user_id:
        return instance.user
    return None


def _serialize(instance: models.Model, field: models.Field) -> str | None:
    if getattr(instance, field.attname) is None:
        return None
    return field.value_to_string(instance)


def change_propose(
    actor: User,
    *,
    kind: str,
    instance: models.Model,
    fields: list[str],
    client_address: str | None = None,
) -> ChangeRequest:
    """Record ``instance``'s new values for ``fields`` (an unsaved new object, or an existing one with
    edited attributes) as a pending change. Nothing is applied until a second admin approves — unless
    FOUR_EYES_POLICY_CHANGES is off, in which case it is applied now. Raises NotAuthorized or
    PolicyViolation (invalid values)."""
    permissions.ensure_can_manage_changes(actor)
    model = MODELS[kind]
    try:
        instance.full_clean()
    except ValidationError as error:
        raise PolicyViolation("; ".join(error.messages)) from error
    current = model.objects.filter(pk=instance.pk).first() if instance.pk else None
    meta_fields = [model._meta.get_field(name) for name in fields]
    changes = {
        f.name: {
            "label": str(f.verbose_name),
            "old": _display(current, f) if current is not None else "",
            "new": _display(instance, f),
        }
        for f in meta_fields
    }
    payload = {f.attname: _serialize(instance, f) for f in meta_fields if f.name not in SECRET_FIELDS}
    if current is not None:
        payload = {
            "__old__": {f.attname: _serialize(current, f) for f in meta_fields if f.name not in SECRET_FIELDS},
            **payload,
        }
    if kind == Kind.SYSTEM:
        secret = next((getattr(instance, name) for name in SECRET_FIELDS if name in fields), "") or ""
    else:
        secrets = {name: getattr(instance, name) for name in SECRET_FIELDS if name in fields}
        secret = json.dumps(secrets) if secrets else ""
    narrowing = current is not None and kind in _NARROWS and _NARROWS[kind](current, instance, fields)
    if narrowing:
        payload[NARROWING] = True
    verb = "Change" if current is not None else "Create"
    summary = f"{verb} {model._meta.verbose_name} {instance}"[:300]
    with transaction.atomic():
        change = ChangeRequest.objects.create(
            kind=kind,
            target_id=instance.pk,
            summary=summary,
            changes=changes,
            payload=payload,
            secret_payload=secret,
            beneficiary=_beneficiary(kind, instance),
            proposed_by=actor,
        )
        event_record(
            Type.CHANGE_PROPOSED,
            actor=actor,
            client_address=client_address,
            role=instance if kind == Kind.ROLE and instance.pk else None,
            reason=summary,
            data={"change_id": change.pk, "kind": kind, "target_id": instance.pk, "changes": changes},
        )
        if instance.pk is not None:
            _withdraw_overtaken(change, actor=actor, client_address=client_address)
        if narrowing or not settings.FOUR_EYES_POLICY_CHANGES:
            return _apply(change, actor=actor, client_address=client_address, four_eyes=False)
        return change


def _patterns_covered(old: list[str], new: list[str]) -> bool:
    """Every pattern of ``new`` is one of ``old``, or inside one of ``old`` (``*``, or the family of an exact type)."""
    old_set = set(old)
    return "*" in old_set or all(p in old_set or f"{p.split('.', 1)[0]}.*" in old_set for p in new)


def _webhook_edit_narrows(current: EventWebhookSubscription, proposed: EventWebhookSubscription, fields) -> bool:
    """An edit of an event webhook subscription that only sends less, to the same place with the same secret:
    disabling it, fewer event types, one system instead of every system (and its name). A new URL or secret,
    more event types, another or every system, enabling it: wider, four-eyed."""
    for name in fields:
        if name == "is_active" and proposed.is_active:
            return False
        if name == "event_types" and not _patterns_covered(current.event_types or [], proposed.event_types or []):
            return False
        if name == "system" and (proposed.system_id is None or current.system_id not in (None, proposed.system_id)):
            return False
        if name not in ("is_active", "event_types", "system", "name"):
            return False
    return True


# Kinds whose edits may only take away: (current, proposed, fields) -> True when the edit is narrowing.
_NARROWS: dict[str, Callable[[models.Model, models.Model, list[str]], bool]] = {
    Kind.EVENT_WEBHOOK: _webhook_edit_narrows,  # type: ignore[dict-item]
}


def _webhook_problems(subscription: EventWebhookSubscription) -> list[str]:
    """Checked again when a subscription change is applied: the URL may have become internal (DNS) since."""
    return webhook_services.url_problems(subscription.url) + webhook_services.event_type_pattern_problems(
        list(subscription.event_types or [])
    )


# Checks a change of these kinds passes when it is applied, besides the model's own validation.
_APPLY_CHECKS: dict[str, Callable[[models.Model], list[str]]] = {
    Kind.EVENT_WEBHOOK: _webhook_problems,  # type: ignore[dict-item]
}


def change_record_narrowing(
    actor: User,
    *,
    kind: str,
    target_id: int | None,
    summary: str,
    changes: dict,
    payload: dict,
    take_away: Callable[[], models.Model],
    client_address: str | None = None,
) -> ChangeRequest:
    """Record a change that only takes rights away — applied at once (narrowing access never waits for a
    second admin), recorded exactly as a four-eyes change is: a ChangeRequest proposed and applied in one go,
    ``change.proposed`` then ``change.applied`` (``four_eyes`` false, ``narrowing`` true), with
    ``payload["narrowing"] = True`` so the evidence pack does not count it as an exception. ``take_away``
    does the removal, between the two events and inside this transaction (it runs in the caller's when there
    is one); it returns what it changed (its pk is the change's applied target; a deleted object keeps
    ``target_id``). The caller authorizes and locks; whatever ``take_away`` raises undoes the whole change.
    Callers: the admin's user and group forms (through services.users for groups and admin rights), group
    deletion, object permissions removed (``change_propose_permissions``), event webhooks disabled, narrowed
    or deleted."""
    with transaction.atomic():
        change = ChangeRequest.objects.create(
            kind=kind,
            target_id=target_id,
            summary=summary[:300],
            changes=changes,
            payload={**payload, NARROWING: True},
            beneficiary=None,  # nobody's access widens
            proposed_by=actor,
        )
        event_record(
            Type.CHANGE_PROPOSED,
            actor=actor,
            client_address=client_address,
            reason=change.summary,
            data={"change_id": change.pk, "kind": kind, "target_id": target_id, "changes": changes, NARROWING: True},
        )
        instance = take_away()
        return _applied(
            change, instance, actor=actor, client_address=client_address, four_eyes=False, target_id=target_id
        )


def change_is_narrowing(change: ChangeRequest) -> bool:
    """Whether ``change`` only took rights away (applied at once by design). Changes of who approves or owns
    recorded before the flag existed say it by adding nothing."""
    payload = change.payload if isinstance(change.payload, dict) else {}
    return payload.get(NARROWING) is True or (change.kind == Kind.OBJECT_PERMISSION and payload.get("add") == [])


def change_narrow_group_permissions(
    actor: User, *, group: Group, remove_permissions: list[Permission], client_address: str | None = None
) -> ChangeRequest | None:
    """Model permissions taken from a group in the admin (every member loses them): applied at once and recorded
    (``change_record_narrowing``). Nobody changes the permissions of a group they are in. Returns None when
    nothing is removed. Raises NotAuthorized."""
    permissions.ensure_can_manage_changes(actor)
    if not remove_permissions:
        return None
    permissions.ensure_can_change_rights(actor, group=group)
    names = _names(remove_permissions)

    def take_away() -> Group:
        locked = Group.objects.select_for_update(of=("self",)).get(pk=group.pk)
        locked.permissions.remove(*remove_permissions)
        return locked

    return change_record_narrowing(
        actor,
        kind=Kind.GROUP_PERMISSIONS,
        target_id=group.pk,
        summary=f"Permissions of group {group.name} taken away: {names}",
        changes={"permissions": {"label": "Permissions removed", "old": names, "new": ""}},
        payload={
            "group_id": group.pk,
            "add_permissions": [],
            "remove_permissions": sorted(p.pk for p in remove_permissions),
        },
        take_away=take_away,
        client_address=client_address,
    )


def change_delete_event_webhook(
    actor: User, subscription_id: int, *, client_address: str | None = None
) -> ChangeRequest:
    """Delete an event webhook subscription: it sends nothing from now on, so it needs no second admin; recorded
    (``change_record_narrowing``) with what it was — name, URL, system, event types, never its secret. Its
    delivery log goes with it (the events themselves stay in the ledger). Locks the subscription. Raises
    NotAuthorized, or TransitionNotAllowed when it is already gone."""
    permissions.ensure_can_manage_changes(actor)
    with transaction.atomic():
        subscription = (
            EventWebhookSubscription.objects.select_for_update(of=("self",)).filter(pk=subscription_id).first()
        )
        if subscription is None:
            raise TransitionNotAllowed("This event webhook subscription no longer exists.")
        what = {
            "name": subscription.name,
            "url": subscription.url,
            "system_id": subscription.system_id,
            "event_types": list(subscription.event_types or []),
            "is_active": subscription.is_active,
            "deliveries": subscription.deliveries.count(),
        }
        changes = {
            "url": {"label": "URL", "old": subscription.url, "new": "(deleted)"},
            "event_types": {"label": "Event types", "old": ", ".join(what["event_types"]), "new": "(deleted)"},
            "system": {"label": "System", "old": str(subscription.system or "All systems"), "new": "(deleted)"},
        }

        def take_away() -> EventWebhookSubscription:
            subscription.delete()
            return subscription

        return change_record_narrowing(
            actor,
            kind=Kind.EVENT_WEBHOOK,
            target_id=subscription_id,
            summary=f"Delete event webhook subscription {subscription.name}",
            changes=changes,
            payload={"deleted": True, "subscription": what},
            take_away=take_away,
            client_address=client_address,
        )


def _withdraw_overtaken(change: ChangeRequest, *, actor: User, client_address: str | None) -> None:
    """Older pending changes of the same object whose every field the new ``change`` sets again are overtaken:
    withdrawn, each with an event naming the change that overtook it. Approving one would apply a value its
    proposer (or another admin) has since replaced, and leave the newer one refused as stale. An older change
    that also sets other fields stays: withdrawing it would drop those. An account's reset is overtaken the same
    way by a newer reset of the same person that resets at least the same things (password, authenticator)."""
    older = ChangeRequest.objects.select_for_update(no_key=True, of=("self",)).filter(
        kind=change.kind, target_id=change.target_id, status=Status.PENDING, pk__lt=change.pk
    )
    for previous in older.order_by("pk"):
        if not _fields_set(previous) <= _fields_set(change):
            continue
        reason = f"Overtaken by change #{change.pk}, which sets the same fields again."
        previous.status, previous.decided_by, previous.decided_at = Status.WITHDRAWN, actor, clock.now()
        previous.comment, previous.secret_payload = reason, ""
        previous.save(update_fields=["status", "decided_by", "decided_at", "comment", "secret_payload"])
        event_record(
            Type.CHANGE_REJECTED,
            actor=actor,
            client_address=client_address,
            reason=reason,
            data={
                "change_id": previous.pk,
                "kind": previous.kind,
                "status": previous.status,
                "overtaken_by": change.pk,
            },
        )


def change_propose_permissions(
    actor: User,
    *,
    obj: System | Role,
    user: User | None = None,
    group: Group | None = None,
    perms: set[str],
    client_address: str | None = None,
) -> ChangeRequest | None:
    """Object permissions on a system or role (who approves, who owns) for a user or a group, set to
    exactly ``perms``. Adding any permission waits for a second admin; a change that only removes is
    applied at once (narrowing access should never wait), recorded the same way. Nobody changes their
    own permissions or those of a group they are in. Returns None when nothing changes."""
    permissions.ensure_can_manage_changes(actor)
    holder = user or group
    permissions.ensure_can_change_rights(actor, user=user, group=group)
    current = set(get_user_perms(user, obj) if user is not None else get_group_perms(group, obj))
    add, remove = sorted(perms - current), sorted(current - perms)
    if not add and not remove:
        return None
    changes = {p: {"label": p.replace("_", " "), "old": "yes", "new": "no"} for p in remove}
    changes |= {p: {"label": p.replace("_", " "), "old": "no", "new": "yes"} for p in add}
    summary = f"Permissions of {'group ' if group else ''}{holder} on {obj}"[:300]
    with transaction.atomic():
        change = ChangeRequest.objects.create(
            kind=Kind.OBJECT_PERMISSION,
            target_id=obj.pk,
            summary=summary,
            changes=changes,
            payload={
                "model": obj._meta.model_name,
                "user_id": user.pk if user else None,
                "group_id": group.pk if group else None,
                "add": add,
                "remove": remove,
                **({NARROWING: True} if not add else {}),
            },
            beneficiary=user if add else None,
            proposed_by=actor,
        )
        event_record(
            Type.CHANGE_PROPOSED,
            actor=actor,
            client_address=client_address,
            role=obj if isinstance(obj, Role) else None,
            reason=summary,
            data={
                "change_id": change.pk,
                "kind": change.kind,
                "target_id": obj.pk,
                "changes": changes,
                **({NARROWING: True} if not add else {}),
            },
        )
        if not add or not settings.FOUR_EYES_POLICY_CHANGES:
            return _apply(change, actor=actor, client_address=client_address, four_eyes=False)
        return change


def _apply_permissions(change: ChangeRequest) -> models.Model:
    payload = change.payload
    model = {"system": System, "role": Role}[payload["model"]]
    obj = model.objects.filter(pk=change.target_id).first()
    if obj is None:
        raise TransitionNotAllowed("What this change edits no longer exists.")
    holder = (
        User.objects.get(pk=payload["user_id"]) if payload["user_id"] else Group.objects.get(pk=payload["group_id"])
    )
    for perm in payload["remove"]:
        remove_perm(perm, holder, obj)
    for perm in payload["add"]:
        assign_perm(perm, holder, obj)
    return obj


def _lock(change_id: int) -> ChangeRequest:
    change = ChangeRequest.objects.select_for_update(no_key=True, of=("self",)).get(pk=change_id)
    if change.status != Status.PENDING:
        raise TransitionNotAllowed(f"This change is already {change.get_status_display().lower()}.")
    return change


def _apply(change: ChangeRequest, *, actor: User, client_address: str | None, four_eyes: bool) -> ChangeRequest:
    if change.kind in _APPLIERS:
        instance = _APPLIERS[change.kind](change)
        return _applied(change, instance, actor=actor, client_address=client_address, four_eyes=four_eyes)
    model = MODELS[change.kind]
    payload = dict(change.payload)
    old = payload.pop("__old__", None)
    payload.pop(NARROWING, None)
    if change.target_id is not None:
        instance = model.objects.select_for_update(no_key=True, of=("self",)).filter(pk=change.target_id).first()
        if instance is None:
            raise TransitionNotAllowed("What this change edits no longer exists.")
        by_attname = {f.attname: f for f in model._meta.concrete_fields}
        if old is not None and any(_serialize(instance, by_attname[a]) != v for a, v in old.items()):
            raise TransitionNotAllowed(
                "What this change edits was changed since it was proposed, so it would undo that: reject it, and "
                "propose it again if it is still wanted."
            )
    else:
        instance = model()
        if change.kind == Kind.ELIGIBILITY:
            instance.created_by = change.proposed_by
    by_attname = {f.attname: f for f in model._meta.concrete_fields}
    for attname, value in payload.items():
        setattr(instance, attname, None if value is None else by_attname[attname].to_python(value))
    if change.secret_payload and change.kind == Kind.SYSTEM:
        instance.connector_secret = change.secret_payload
    elif change.secret_payload:
        for name, value in json.loads(change.secret_payload).items():
            if name in SECRET_FIELDS:
                setattr(instance, name, value)
    # Taking away is never refused (disabling a subscription whose URL now resolves inside must work).
    check = _APPLY_CHECKS.get(change.kind) if not change_is_narrowing(change) else None
    problems = check(instance) if check is not None else []
    if problems:
        raise PolicyViolation("The change cannot be applied: " + "; ".join(problems))
    try:
        instance.full_clean()
        with transaction.atomic():
            instance.save()
    except (ValidationError, IntegrityError) as error:
        messages = error.messages if isinstance(error, ValidationError) else [str(error)]
        raise PolicyViolation("The change cannot be applied: " + "; ".join(messages)) from error
    return _applied(change, instance, actor=actor, client_address=client_address, four_eyes=four_eyes)


def _applied(
    change: ChangeRequest,
    instance: models.Model,
    *,
    actor: User,
    client_address: str | None,
    four_eyes: bool,
    target_id: int | None = None,
) -> ChangeRequest:
    target_id = instance.pk if instance.pk is not None else target_id  # a deleted object keeps its old id
    change.status, change.decided_by, change.decided_at = Status.APPLIED, (actor if four_eyes else None), clock.now()
    change.secret_payload, change.applied_target_id = "", target_id
    change.save(update_fields=["status", "decided_by", "decided_at", "secret_payload", "applied_target_id"])
    data = {
        "change_id": change.pk,
        "kind": change.kind,
        "target_id": target_id,
        "proposed_by": change.proposed_by.get_username(),
        "four_eyes": four_eyes,
        "changes": change.changes,
    }
    if change_is_narrowing(change):
        data[NARROWING] = True
    event_record(
        Type.CHANGE_APPLIED,
        actor=actor,
        client_address=client_address,
        role=instance if isinstance(instance, Role) and instance.pk is not None else None,
        reason=change.summary,
        data=data,
    )
    return change


def _propose(
    actor: User,
    *,
    kind: str,
    summary: str,
    changes: dict,
    payload: dict,
    beneficiary: User | None,
    target_id: int | None,
    client_address: str | None,
    secret_payload: str = "",
) -> ChangeRequest:
    """Record a pending change of an account kind (rights, group permissions, service accounts and their
    tokens, account recovery) with its event; applied at once when FOUR_EYES_POLICY_CHANGES is off."""
    change = ChangeRequest.objects.create(
        kind=kind,
        target_id=target_id,
        summary=summary[:300],
        changes=changes,
        payload=payload,
        secret_payload=secret_payload,
        beneficiary=beneficiary,
        proposed_by=actor,
    )
    event_record(
        Type.CHANGE_PROPOSED,
        actor=actor,
        client_address=client_address,
        reason=change.summary,
        data={"change_id": change.pk, "kind": kind, "target_id": target_id, "changes": changes},
    )
    if kind == Kind.ACCOUNT_RECOVERY:
        _withdraw_overtaken(change, actor=actor, client_address=client_address)
    if not settings.FOUR_EYES_POLICY_CHANGES:
        return _apply(change, actor=actor, client_address=client_address, four_eyes=False)
    return change


def _names(objects) -> str:
    return ", ".join(sorted(str(o) for o in objects))


def change_propose_user_rights(
    actor: User,
    *,
    user: User,
    make_staff: bool = False,
    make_superuser: bool = False,
    add_groups: list[Group] | None = None,
    add_permissions: list[Permission] | None = None,
    client_address: str | None = None,
) -> ChangeRequest | None:
    """Widening an account's rights — staff, superuser, a group, a model permission — waits for a second
    admin (narrowing never waits: services.users.user_rights_narrow applies and records it at once). Nobody widens their own account; service
    accounts are never admins. Returns None when nothing widens."""
    permissions.ensure_can_manage_changes(actor)
    add_groups, add_permissions = list(add_groups or []), list(add_permissions or [])
    if not (make_staff or make_superuser or add_groups or add_permissions):
        return None
    permissions.ensure_can_change_rights(actor, user=user)
    if user.is_service_account and (make_staff or make_superuser):
        raise PolicyViolation("A service account is never a portal admin.")
    changes = {}
    if make_staff:
        changes["is_staff"] = {"label": "Staff (portal admin)", "old": "no", "new": "yes"}
    if make_superuser:
        changes["is_superuser"] = {"label": "Superuser (every permission)", "old": "no", "new": "yes"}
    if add_groups:
        changes["groups"] = {"label": "Groups added", "old": "", "new": _names(add_groups)}
    if add_permissions:
        changes["user_permissions"] = {"label": "Permissions added", "old": "", "new": _names(add_permissions)}
    with transaction.atomic():
        return _propose(
            actor,
            kind=Kind.USER_RIGHTS,
            summary=f"Rights of {user.get_username()}: " + ", ".join(c["label"].lower() for c in changes.values()),
            changes=changes,
            payload={
                "user_id": user.pk,
                "is_staff": make_staff,
                "is_superuser": make_superuser,
                "add_groups": sorted(g.pk for g in add_groups),
                "add_permissions": sorted(p.pk for p in add_permissions),
            },
            beneficiary=user,
            target_id=user.pk,
            client_address=client_address,
        )


def _apply_user_rights(change: ChangeRequest) -> User:
    payload = change.payload
    user = User.objects.select_for_update(no_key=True, of=("self",)).filter(pk=payload["user_id"]).first()
    if user is None:
        raise TransitionNotAllowed("The account this change is about no longer exists.")
    if user.is_service_account and (payload["is_staff"] or payload["is_superuser"]):
        raise PolicyViolation("A service account is never a portal admin.")
    fields = [name for name in ("is_staff", "is_superuser") if payload[name] and not getattr(user, name)]
    for name in fields:
        setattr(user, name, True)
    if fields:
        user.save(update_fields=fields)
    user.groups.add(*Group.objects.filter(pk__in=payload["add_groups"]))
    user.user_permissions.add(*Permission.objects.filter(pk__in=payload["add_permissions"]))
    return user


def change_propose_group_permissions(
    actor: User, *, group: Group, add_permissions: list[Permission], client_address: str | None = None
) -> ChangeRequest | None:
    """Model permissions added to a group (every member gains them) wait for a second admin; removals
    never wait (``change_narrow_group_permissions``). Nobody changes the permissions of a group they are in."""
    permissions.ensure_can_manage_changes(actor)
    if not add_permissions:
        return None
    permissions.ensure_can_change_rights(actor, group=group)
    changes = {"permissions": {"label": "Permissions added", "old": "", "new": _names(add_permissions)}}
    with transaction.atomic():
        return _propose(
            actor,
            kind=Kind.GROUP_PERMISSIONS,
            summary=f"Permissions of group {group.name}: {_names(add_permissions)}",
            changes=changes,
            payload={"group_id": group.pk, "add_permissions": sorted(p.pk for p in add_permissions)},
            beneficiary=None,
            target_id=group.pk,
            client_address=client_address,
        )


def _apply_group_permissions(change: ChangeRequest) -> Group:
    group = Group.objects.filter(pk=change.payload["group_id"]).first()
    if group is None:
        raise TransitionNotAllowed("The group this change is about no longer exists.")
    group.permissions.add(*Permission.objects.filter(pk__in=change.payload["add_permissions"]))
    return group


def change_propose_service_account(
    actor: User, *, username: str, description: str = "", client_address: str | None = None
) -> ChangeRequest:
    """A new service account (a machine identity: no password, no authenticator, never signs in) waits
    for a second admin. Raises PolicyViolation for a bad or taken username, or one the rule for every account's
    name refuses (``usernames.ensure_username_allowed``: look-alikes), checked again when applied."""
    permissions.ensure_can_manage_changes(actor)
    username = inputs.normal_username(username.strip())
    try:
        User.username_validator(username)
    except ValidationError as error:
        raise PolicyViolation("; ".join(error.messages)) from error
    if not username or len(username) > 150:
        raise PolicyViolation("Give the service account a username of at most 150 characters.")
    description = description.strip()[:150]
    changes = {
        "username": {"label": "Username", "old": "", "new": username},
        "first_name": {"label": "What it is", "old": "", "new": description},
    }
    with transaction.atomic():
        usernames.ensure_username_allowed(username)
        return _propose(
            actor,
            kind=Kind.SERVICE_ACCOUNT,
            summary=f"New service account {username}",
            changes=changes,
            payload={"username": username, "first_name": description},
            beneficiary=None,
            target_id=None,
            client_address=client_address,
        )


def _apply_service_account(change: ChangeRequest) -> User:
    username = change.payload["username"]
    usernames.ensure_username_allowed(username)
    user = User(
        username=username,
        first_name=change.payload["first_name"],
        is_service_account=True,
        created_by=change.proposed_by,
    )
    user.set_unusable_password()
    user.save()
    return user


def change_propose_service_token(
    actor: User,
    *,
    user: User,
    name: str,
    expires_at,
    scopes: list[str],
    roles: list[Role] | None = None,
    client_address: str | None = None,
) -> tuple[ChangeRequest, str]:
    """A token for a service account waits for a second admin; its secret is returned now, to the
    proposer only, once (only its hash is kept), and works from the moment the change is approved.
    Raises PolicyViolation (not a pure service account, bad scope or expiry)."""
    permissions.ensure_can_manage_changes(actor)
    draft = token_services.service_token_draft(
        user=user, name=name, expires_at=expires_at, scopes=scopes, role_ids=[r.pk for r in roles or []]
    )
    changes = {
        "user": {"label": "Service account", "old": "", "new": user.get_username()},
        "name": {"label": "Name", "old": "", "new": draft.payload["name"]},
        "scopes": {"label": "Scopes", "old": "", "new": ", ".join(draft.payload["scopes"])},
        "roles": {"label": "Roles", "old": "", "new": _names(roles or []) or "every role it may use"},
        "expires_at": {"label": "Expires", "old": "", "new": draft.payload["expires_at"]},
    }
    with transaction.atomic():
        change = _propose(
            actor,
            kind=Kind.SERVICE_TOKEN,
            summary=f"Service token {draft.payload['name']} for {user.get_username()}",
            changes=changes,
            payload=draft.payload,
            beneficiary=user,
            target_id=None,
            client_address=client_address,
        )
    return change, draft.secret


def _apply_service_token(change: ChangeRequest):
    return token_services.service_token_create_from(change.payload, created_by=change.proposed_by)


def _fields_set(change: ChangeRequest) -> set[str]:
    """What a change sets: an object's fields, or what an account's reset resets."""
    if change.kind == Kind.ACCOUNT_RECOVERY:
        return set(change.changes)
    return set(change.payload) - {"__old__", NARROWING}


def change_propose_account_recovery(
    actor: User,
    *,
    user: User,
    password_hash: str | None = None,
    send_link: bool = False,
    remove_authenticators: bool = False,
    client_address: str | None = None,
) -> ChangeRequest:
    """Set another person's password (``password_hash``, made by ``make_password``; an unusable one
    disables password sign-in) or, better, email them a one-time link to choose one themselves
    (``send_link``: their current password stops working and nobody else ever knows the new one), and/or
    remove their authenticator and backup codes, so that they enrol a new one at their next sign-in.
    Either is what a takeover of the account needs (a password the admin knows, and a second factor the
    admin holds or enrols), so it waits for a second admin who is not the person; when applied, every
    session of the person ends. The link goes to the address shown to the approver: if the person's
    address changes meanwhile, approving is refused. Service accounts have neither. Your own account
    you change on your security page."""
    permissions.ensure_can_manage_changes(actor)
    if user.is_service_account:
        raise PolicyViolation("A service account has no password and no authenticator: it signs in with tokens only.")
    if user.pk == actor.pk:
        raise PolicyViolation("Change your own password or authenticator on your security page.")
    if password_hash is None and not send_link and not remove_authenticators:
        raise PolicyViolation("Say what to reset: the password, the authenticator, or both.")
    if send_link and password_hash is not None:
        raise PolicyViolation("Either set a password or send a link to choose one, not both.")
    if send_link and not user.email:
        raise PolicyViolation(
            f"{user.get_username()} has no email address for the link: add their address first, or set a password."
        )
    changes = {}
    if send_link:
        set_by_me = permissions.email_set_by(user, actor)
        if set_by_me is not None:
            raise PolicyViolation(
                f"You set {user.get_username()}'s email address on {set_by_me:%Y-%m-%d}: a link there would go where you "
                f"chose. Another admin must send it (or wait until {settings.FOUR_EYES_INDEPENDENCE_DAYS} days have passed)."
            )
        destination = f"a one-time link to choose a new one, sent to {user.email}; the current one stops working"
        recent = permissions.recent_email_change(user)
        if recent is not None:  # the approver must see it: the address is where the account goes
            by = recent[1].get_username() if recent[1] is not None else "the system"
            destination += f". This address was set on {recent[0]:%Y-%m-%d %H:%M} UTC by {by}"
        changes["password"] = {"label": "Password", "old": "", "new": destination}
    if password_hash is not None:
        usable = not password_hash.startswith("!")  # django.contrib.auth.hashers.UNUSABLE_PASSWORD_PREFIX
        new = "set by an admin (not shown)" if usable else "disabled (no password sign-in)"
        changes["password"] = {"label": "Password", "old": "", "new": new}
    if remove_authenticators:
        changes["authenticators"] = {
            "label": "Authenticator and backup codes",
            "old": "",
            "new": "removed: a new one is enrolled at the next sign-in",
        }
    with transaction.atomic():
        return _propose(
            actor,
            kind=Kind.ACCOUNT_RECOVERY,
            summary=f"Reset of {user.get_username()}'s account: "
            + ", ".join(c["label"].lower() for c in changes.values()),
            changes=changes,
            payload={
                "user_id": user.pk,
                "password": password_hash is not None,
                "link_to": user.email if send_link else "",
                "authenticators": remove_authenticators,
            },
            beneficiary=user,
            target_id=user.pk,
            client_address=client_address,
            secret_payload=password_hash or "",
        )


def _apply_account_recovery(change: ChangeRequest) -> User:
    from django_otp.plugins.otp_static.models import StaticDevice
    from django_otp.plugins.otp_totp.models import TOTPDevice

    payload = change.payload
    user = User.objects.select_for_update(no_key=True, of=("self",)).filter(pk=payload["user_id"]).first()
    if user is None or user.is_service_account:
        raise TransitionNotAllowed("The account this change is about no longer exists.")
    if payload["password"]:
        if not change.secret_payload:
            raise TransitionNotAllowed("The proposed password is gone; propose it again.")
        user.password = change.secret_payload
        user.save(update_fields=["password"])
    if payload.get("link_to"):
        if user.email != payload["link_to"] or not user.is_active:
            raise TransitionNotAllowed(
                f"{user.get_username()}'s email address changed (or the account was deactivated) since this was "
                "proposed: the link would not reach the address shown. Propose it again."
            )
        user.set_unusable_password()
        user.save(update_fields=["password"])
    if payload["authenticators"]:
        # Another reset of this person's authenticator was applied after this one was proposed: this one's purpose
        # is served, and applying it now would remove the authenticator they enrolled since. (A new authenticator
        # alone does not refuse it: whoever holds the session could re-enrol to keep out every reset.)
        later = ChangeRequest.objects.filter(
            kind=Kind.ACCOUNT_RECOVERY,
            target_id=user.pk,
            status=Status.APPLIED,
            decided_at__gt=change.proposed_at,
            payload__authenticators=True,
        ).exclude(pk=change.pk)
        if later.exists():
            raise TransitionNotAllowed(
                f"{user.get_username()}'s authenticator was already reset by change #{later.first().pk} after this "
                "one was proposed; they may have enrolled a new one since. Propose it again if it is still needed."
            )
        TOTPDevice.objects.filter(user=user).delete()
        StaticDevice.objects.filter(user=user).delete()
    user.rotate_session_stamp()  # every session of the person ends at its next request
    # And every API token of theirs: one minted by whoever held the account before must not outlive the recovery.
    token_services.api_token_revoke_all(
        change.proposed_by, user, reason=f"Account recovery (change #{change.pk}): every token of the account ends"
    )
    notification_outbox.notify("account_recovered", change.pk)
    return user


def change_propose_user_identity(
    actor: User,
    *,
    user: User,
    username: str | None = None,
    email: str | None = None,
    client_address: str | None = None,
) -> ChangeRequest | None:
    """Change another person's username or email address (``None``: unchanged). Providers know people by them
    (PagerDuty and Jira by address, GitHub by username) and a recovery link goes to the address, so one admin
    re-pointing someone's address at a mailbox they read is a step towards their account: it waits for a second
    admin who is not the person, and when applied both addresses are told. Nobody changes their own here (the
    identity provider, through SCIM, keeps them in step without this). Returns None when nothing changes.
    Raises PolicyViolation (own account, a username taken) or NotAuthorized."""
    permissions.ensure_can_manage_changes(actor)
    if user.pk == actor.pk:
        raise PolicyViolation(
            "Nobody changes their own username or email address here: providers (PagerDuty, Jira, GitHub) know "
            "people by them. Ask another admin."
        )
    changes, payload = {}, {"user_id": user.pk, "old": {}, "new": {}}
    username = inputs.normal_username(username) if username is not None else None
    for name, label, value in (("username", "Username", username), ("email", "Email address", email)):
        if value is None or value == getattr(user, name):
            continue
        try:
            value = User._meta.get_field(name).clean(value, user)
        except ValidationError as error:
            raise PolicyViolation(f"{label}: {' '.join(error.messages)}") from error
        changes[name] = {"label": label, "old": getattr(user, name), "new": value or "(none)"}
        payload["old"][name], payload["new"][name] = getattr(user, name), value
    if not changes:
        return None
    with transaction.atomic():
        if "username" in payload["new"]:
            usernames.ensure_username_allowed(payload["new"]["username"], user_id=user.pk)
        return _propose(
            actor,
            kind=Kind.USER_IDENTITY,
            summary=f"{' and '.join(c['label'] for c in changes.values())} of {user.get_username()}",
            changes=changes,
            payload=payload,
            beneficiary=user,
            target_id=user.pk,
            client_address=client_address,
        )


def _apply_user_identity(change: ChangeRequest) -> User:
    payload = change.payload
    if username := payload["new"].get("username"):
        # The username lock before the account's row, in the order SCIM takes them (a rename there writes the row
        # after its name check): the other order deadlocks with a provider's rename of the same person.
        usernames.ensure_username_allowed(username, user_id=payload["user_id"])
    user = User.objects.select_for_update(no_key=True, of=("self",)).filter(pk=payload["user_id"]).first()
    if user is None:
        raise TransitionNotAllowed("The account this change is about no longer exists.")
    if any(getattr(user, name) != old for name, old in payload["old"].items()):
        raise TransitionNotAllowed(
            f"{user.get_username()}'s username or email address changed since this was proposed, so it would undo "
            "that: reject it, and propose it again if it is still wanted."
        )
    for name, value in payload["new"].items():
        setattr(user, name, value)
    user.save(update_fields=list(payload["new"]))
    notification_outbox.notify("identity_changed", change.pk)
    return user


_APPLIERS = {
    Kind.OBJECT_PERMISSION: _apply_permissions,
    Kind.USER_RIGHTS: _apply_user_rights,
    Kind.GROUP_PERMISSIONS: _apply_group_permissions,
    Kind.SERVICE_ACCOUNT: _apply_service_account,
    Kind.SERVICE_TOKEN: _apply_service_token,
    Kind.ACCOUNT_RECOVERY: _apply_account_recovery,
    Kind.USER_IDENTITY: _apply_user_identity,
}


def change_approve(actor: User, change_id: int, *, client_address: str | None = None) -> ChangeRequest:
    """A second admin approves and applies a pending change (re-validated against the current state).
    Locks the change and its target. Raises NotAuthorized (``permissions.change_approval_problem``: the
    proposer, the person whose access it widens, an account the proposer recently made or empowered),
    TransitionNotAllowed (decided, or the target changed since) or PolicyViolation."""
    permissions.ensure_can_manage_changes(actor)
    with transaction.atomic():
        change = _lock(change_id)
        permissions.ensure_can_approve_change(actor, change)
        return _apply(change, actor=actor, client_address=client_address, four_eyes=True)


def change_reject(actor: User, change_id: int, *, comment: str, client_address: str | None = None) -> ChangeRequest:
    """Another admin rejects a pending change (a reason is required), or its proposer withdraws it."""
    permissions.ensure_can_manage_changes(actor)
    policies.ensure_reason_length(comment.strip(), "The comment")
    with transaction.atomic():
        change = _lock(change_id)
        withdrawing = change.proposed_by_id == actor.pk
        if not withdrawing and not comment.strip():
            raise PolicyViolation("Say why the change is rejected.")
        change.status = Status.WITHDRAWN if withdrawing else Status.REJECTED
        change.decided_by, change.decided_at = actor, clock.now()
        change.comment, change.secret_payload = comment.strip(), ""
        change.save(update_fields=["status", "decided_by", "decided_at", "comment", "secret_payload"])
        event_record(
            Type.CHANGE_REJECTED,
            actor=actor,
            client_address=client_address,
            reason=comment.strip() or "Withdrawn by the proposer",
            data={"change_id": change.pk, "kind": change.kind, "status": change.status},
        )
        return change
