"""Eligibility changes by system owners: add and end, each with an access event."""

from datetime import datetime, timedelta

from django.contrib.auth.models import Group
from django.db import transaction

from accessgov import clock, permissions, policies
from accessgov.exceptions import NotAuthorized, PolicyViolation, TransitionNotAllowed
from accessgov.models import AccessEvent, Eligibility, Role, User
from accessgov.services import notification_outbox
from accessgov.services.access_requests import access_request_withdraw_ineligible
from accessgov.services.events import event_record


def eligibility_add(
    actor: User,
    *,
    role: Role,
    user: User | None = None,
    group: Group | None = None,
    ends_at: datetime | None = None,
    reason: str,
    client_address: str | None = None,
) -> Eligibility:
    """An owner of the role's system lets a user or a group request the role (until ``ends_at``). For someone
    already eligible, a later end (or none) **renews** it: a new eligibility from now, and the current one
    ended with "Renewed until …" (both recorded; a review certifies the new one). An end that is not later is
    refused (TransitionNotAllowed)."""
    now = clock.now()
    if ends_at is not None and ends_at <= now:
        raise PolicyViolation("The end date must be in the future.")
    if user == actor or (group is not None and actor.groups.filter(pk=group.pk).exists()):
        raise NotAuthorized("Nobody makes themselves eligible: ask another owner or an admin.")
    with transaction.atomic():
        permissions.ensure_can_manage_eligibility(actor, role.system)
        current = (
            Eligibility.objects.select_for_update(no_key=True, of=("self",))
            .active(now)
            .filter(role=role, user=user, group=group)
            .order_by("-ends_at")
            .first()
        )
        if current is not None and not _later(ends_at, current.ends_at):
            until = f" until {current.ends_at:%Y-%m-%d}" if current.ends_at else " with no end"
            raise TransitionNotAllowed(
                f"{user or group} is already eligible for {role}{until}: to renew it, choose a later end date."
            )
        eligibility = Eligibility.objects.create(
            role=role,
            user=user,
            group=group,
            ends_at=ends_at,
            reason=reason,
            created_by=actor,
            starts_at=now,
            created_at=now,
        )
        event_record(
            AccessEvent.Type.ELIGIBILITY_ADDED,
            actor=actor,
            client_address=client_address,
            role=role,
            reason=reason,
            data={
                "eligibility_id": eligibility.pk,
                "user": user.username if user else None,
                "group": group.name if group else None,
                "ends_at": ends_at.isoformat() if ends_at else None,
                **({"renews": current.pk} if current is not None else {}),
            },
        )
        if current is not None:
            renewed = f"Renewed until {ends_at:%Y-%m-%d}" if ends_at else "Renewed with no end"
            _end(current, now, actor=actor, reason=renewed, client_address=client_address, renewed_by=eligibility.pk)
        return eligibility


def _end(
    eligibility: Eligibility,
    now: datetime,
    *,
    actor: User,
    reason: str,
    client_address: str | None,
    renewed_by: int | None = None,
) -> None:
    """End a locked eligibility now (after its start) and record it: the one way an eligibility ends early."""
    eligibility.ends_at = max(now, eligibility.starts_at + timedelta(microseconds=1))
    eligibility.save(update_fields=["ends_at"])
    event_record(
        AccessEvent.Type.ELIGIBILITY_ENDED,
        actor=actor,
        client_address=client_address,
        role=eligibility.role,
        reason=reason,
        data={"eligibility_id": eligibility.pk, **({"renewed_by": renewed_by} if renewed_by else {})},
    )


def _later(new_end: datetime | None, current_end: datetime | None) -> bool:
    """Whether an eligibility ending at ``new_end`` (None: never) outlasts one ending at ``current_end``."""
    if current_end is None:
        return False
    return new_end is None or new_end > current_end


def eligibility_end(actor: User, eligibility_id: int, *, reason: str, client_address: str | None = None) -> Eligibility:
    """End an eligibility now: no new requests from it, and pending requests that relied on it are
    withdrawn with the reason (active grants run to their own end)."""
    policies.ensure_reason_length(reason)
    now = clock.now()
    with transaction.atomic():
        eligibility = (
            Eligibility.objects.select_for_update(no_key=True, of=("self",))
            .select_related("role__system")
            .get(pk=eligibility_id)
        )
        permissions.ensure_can_manage_eligibility(actor, eligibility.role.system)
        if eligibility.ends_at is not None and eligibility.ends_at <= now:
            raise TransitionNotAllowed("This eligibility has already ended.")
        _end(eligibility, now, actor=actor, reason=reason, client_address=client_address)
        access_request_withdraw_ineligible(now, role_ids=[eligibility.role_id], job="eligibility-ended")
        return eligibility


def eligibility_remind_ending(now: datetime) -> int:
    """The sweep tells a system's owners once, ELIGIBILITY_REMINDER_DAYS before an eligibility ends, so
    they can renew it or let it go (bookkeeping only, not a state change). Past its end date an
    eligibility no longer allows new requests (Eligibility.objects.active)."""
    from django.conf import settings

    with transaction.atomic():  # claimed under skip-locked row locks: parallel sweeps remind once
        ids = list(
            Eligibility.objects.active(now)
            .filter(
                ends_at__lte=now + timedelta(days=settings.ELIGIBILITY_REMINDER_DAYS),
                end_reminded_at__isnull=True,
            )
            .select_for_update(skip_locked=True, no_key=True, of=("self",))
            .values_list("pk", flat=True)[:1000]
        )
        if ids:
            Eligibility.objects.filter(pk__in=ids).update(end_reminded_at=now)
            notification_outbox.notify_many("eligibility_ending", ids)
    return len(ids)
