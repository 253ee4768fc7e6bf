"""Recording access events: one row per state change, written in the caller's transaction."""

from typing import Any

from django.db import transaction

from accessgov.models import AccessEvent, AccessRequest, Grant, Role, User

Type = AccessEvent.Type


def actor_label(actor: User | None, job: str | None = None) -> str:
    if actor is not None:
        return actor.get_username()
    return f"system:{job or 'unknown'}"


def event_record(
    event_type: str,
    *,
    actor: User | None = None,
    job: str | None = None,
    client_address: str | None = None,
    access_request: AccessRequest | None = None,
    grant: Grant | None = None,
    role: Role | None = None,
    reason: str = "",
    data: dict[str, Any] | None = None,
) -> AccessEvent:
    """Append one event. Must run inside the transaction of the change it records."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("Access events are written inside the transaction of the change they record.")
    if role is None:
        role = (access_request.role if access_request else None) or (grant.role if grant else None)
    return AccessEvent.objects.create(
        event_type=event_type,
        actor=actor,
        actor_label=actor_label(actor, job),
        client_address=client_address,
        access_request=access_request,
        grant=grant,
        role=role,
        reason=reason,
        data=data or {},
    )


def event_record_bulk(rows: list[AccessEvent]) -> None:
    """Append many events at once (set-based sweeps)."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("Access events are written inside the transaction of the change they record.")
    AccessEvent.objects.bulk_create(rows, batch_size=1000)
