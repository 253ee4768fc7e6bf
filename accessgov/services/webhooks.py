"""Outbound event webhooks: a transactional outbox of access events for subscribed receivers.

Enqueue: ``services.webhook_outbox`` (called by services.events for every event it records, in the
transaction of the change) writes one WebhookDelivery per matching active subscription.

Deliver: claim due deliveries in a short transaction (``select_for_update(skip_locked=True)``, a lease,
``attempts + 1``), POST each outside any transaction (signed like the webhook connector: Standard
Webhooks headers, 5 s timeout, no redirects, the same address guard), then record the answer on the
row if this worker still holds its lease. A failure is retried after a backoff that doubles from
``BASE_BACKOFF`` up to EVENT_WEBHOOK_MAX_BACKOFF_SECONDS; after EVENT_WEBHOOK_MAX_ATTEMPTS the delivery
is marked failed and a ``webhook.failed`` access event is written. An admin can queue any delivery
again (``webhook_delivery_redeliver``, recorded as ``webhook.redelivered``).
"""

import json
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q

from accessgov import clock, net, permissions
from accessgov.connectors.base import ConnectorError
from accessgov.connectors.webhook import post_signed
from accessgov.exceptions import TransitionNotAllowed
from accessgov.models import AccessEvent, User, WebhookDelivery
from accessgov.services.events import event_record
from accessgov.services.webhook_outbox import (  # noqa: F401 - the enqueue half, re-exported for callers
    DELIVERABLE_TYPES,
    UNDELIVERED_PREFIX,
    _send_after_commit,
    event_type_matches,
    event_type_pattern_problems,
    webhook_deliveries_enqueue,
    webhook_deliveries_enqueue_refs,
)

logger = logging.getLogger("accessgov.webhooks")
Status = WebhookDelivery.Status
Type = AccessEvent.Type
BASE_BACKOFF = timedelta(seconds=10)
# A claimed batch is sent one delivery after the other, each bounded by the 5 s timeout: the lease
# outlasts a whole batch, so no other worker takes a delivery that is still being sent.
BATCH_SIZE = 10
LEASE = timedelta(seconds=120)


def url_problems(url: str) -> list[str]:
    """Why a subscription may not post to ``url`` (the outbound guard, accessgov.net: https, and a
    host that is not internal — both unless WEBHOOK_ALLOW_PRIVATE_TARGETS, for receivers on a
    development machine)."""
    return net.target_problems(url)


# --- Deliver (no transaction open while talking to a receiver) ----------------------------------


def webhook_payload(event: AccessEvent) -> dict[str, Any]:
    """The JSON body for ``event``: what happened, to which request/grant/role/system, by whom, and
    the event's data. No secrets, no client address and no free-text reason (justifications and
    comments stay in the portal, where visibility rules apply)."""
    role = event.role
    return {
        "type": event.event_type,
        "event_id": event.pk,
        "sequence": event.sequence,
        "occurred_at": event.occurred_at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "actor": event.actor_label,
        "access_request_id": event.access_request_id,
        "grant_id": event.grant_id,
        "role_id": event.role_id,
        "role": role.name if role else None,
        "system_id": role.system_id if role else None,
        "system": role.system.slug if role else None,
        "data": event.data,
    }


def webhook_body(event: AccessEvent) -> bytes:
    return json.dumps(webhook_payload(event), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _backoff(attempts: int) -> timedelta:
    seconds = BASE_BACKOFF.total_seconds() * 2 ** max(attempts - 1, 0)
    return timedelta(seconds=min(seconds, settings.EVENT_WEBHOOK_MAX_BACKOFF_SECONDS))


def retry_schedule() -> list[timedelta]:
    """The waits between attempts with the current settings (documented in docs/WEBHOOKS.md)."""
    return [_backoff(attempt) for attempt in range(1, settings.EVENT_WEBHOOK_MAX_ATTEMPTS)]


def _claim(
    now: datetime, *, ids: list[int] | None = None, skip_subscriptions: set[int] | None = None, limit: int = BATCH_SIZE
) -> list[WebhookDelivery]:
    """Lease up to ``limit`` due deliveries of active subscriptions in one short transaction and count
    the attempt. Concurrent drains skip each other's locked rows and never take a leased row."""
    with transaction.atomic():
        qs = WebhookDelivery.objects.filter(
            Q(lease_until__isnull=True) | Q(lease_until__lte=now),
            status=Status.PENDING,
            next_attempt_at__lte=now,
            subscription__is_active=True,
        )
        if ids is not None:
            qs = qs.filter(pk__in=ids)
        if skip_subscriptions:
            qs = qs.exclude(subscription_id__in=skip_subscriptions)
        claimed = list(
            qs.select_for_update(skip_locked=True, no_key=True, of=("self",))
            .order_by("pk")
            .values_list("pk", flat=True)[:limit]
        )
        if not claimed:
            return []
        lease_until = now + LEASE
        WebhookDelivery.objects.filter(pk__in=claimed).update(
            lease_until=lease_until, attempts=F("attempts") + 1, last_attempt_at=now
        )
        return list(
            WebhookDelivery.objects.filter(pk__in=claimed)
            .select_related("subscription", "event__role__system")
            .order_by("pk")
        )


def _send(delivery: WebhookDelivery) -> tuple[int | None, str]:
    """POST one leased delivery; returns (HTTP status or None, error text or "")."""
    subscription = delivery.subscription
    try:  # post_signed runs the outbound guard itself, on the addresses it then connects to
        status = post_signed(subscription.url, subscription.secret, delivery.message_id, webhook_body(delivery.event))
    except ConnectorError as exc:
        return None, str(exc)
    except Exception as exc:  # a bug must not lose the delivery: it is retried like any failure
        logger.exception("webhook delivery %s crashed", delivery.pk)
        return None, f"Unexpected error: {exc.__class__.__name__}"
    return status, "" if 200 <= status < 300 else f"The receiver answered {status}."


def _record(delivery: WebhookDelivery, status_code: int | None, error: str) -> str:
    """Write the outcome of one attempt, only if this worker still holds the lease."""
    finished = clock.now()
    mine = WebhookDelivery.objects.filter(pk=delivery.pk, status=Status.PENDING, lease_until=delivery.lease_until)
    if not error:
        updated = mine.update(
            status=Status.DELIVERED,
            delivered_at=finished,
            lease_until=None,
            last_status_code=status_code,
            last_error="",
        )
        return "delivered" if updated else "lost lease"
    if delivery.attempts < settings.EVENT_WEBHOOK_MAX_ATTEMPTS:
        updated = mine.update(
            next_attempt_at=finished + _backoff(delivery.attempts),
            lease_until=None,
            last_status_code=status_code,
            last_error=error[:2000],
        )
        return "retrying" if updated else "lost lease"
    with transaction.atomic():
        if not mine.update(
            status=Status.FAILED, lease_until=None, last_status_code=status_code, last_error=error[:2000]
        ):
            return "lost lease"
        event = delivery.event
        event_record(
            Type.WEBHOOK_FAILED,
            job="webhooks",
            reason=error[:2000],
            data={
                "delivery_id": delivery.pk,
                "subscription_id": delivery.subscription_id,
                "subscription": delivery.subscription.name,
                "event_id": event.pk,
                "event_type": event.event_type,
                "attempts": delivery.attempts,
                "last_status_code": status_code,
            },
        )
    return "failed"


def _release(delivery: WebhookDelivery) -> None:
    """Give a claimed delivery back without counting an attempt (its receiver is down right now)."""
    WebhookDelivery.objects.filter(pk=delivery.pk, lease_until=delivery.lease_until).update(
        lease_until=None, attempts=F("attempts") - 1
    )


def _deliver(batch: list[WebhookDelivery], unreachable: set[int]) -> int:
    """Send a claimed batch; once a subscription's receiver cannot be reached, its other deliveries
    in this run are released untried (a dead receiver costs one timeout per run, not one per event)."""
    delivered = 0
    for delivery in batch:
        if delivery.subscription_id in unreachable:
            _release(delivery)
            continue
        status_code, error = _send(delivery)
        if error and status_code is None:
            unreachable.add(delivery.subscription_id)
        delivered += _record(delivery, status_code, error) == "delivered"
    return delivered


def webhook_deliveries_send(delivery_ids: list[int]) -> int:
    """Send these deliveries now if they are due, not leased and still pending (the task after the
    commit that wrote them). Idempotent: a second run finds them delivered or leased and does nothing.
    Returns how many were delivered."""
    batch = _claim(clock.now(), ids=delivery_ids, limit=len(delivery_ids))
    return _deliver(batch, set()) if batch else 0


def webhook_deliveries_drain(
    now: datetime | None = None, *, batch_size: int = BATCH_SIZE, budget_seconds: float = 10.0
) -> int:
    """Send every due delivery, oldest first, in leased batches, within a time budget (every sweep
    runs this; it is also the catch-up after a broker outage). Returns how many were delivered."""
    started = time.monotonic()
    delivered = 0
    unreachable: set[int] = set()
    while time.monotonic() - started < budget_seconds:
        batch = _claim(now or clock.now(), skip_subscriptions=unreachable, limit=batch_size)
        if not batch:
            break
        delivered += _deliver(batch, unreachable)
    return delivered


# --- Redelivery (admin) -------------------------------------------------------------------------


def webhook_delivery_redeliver(actor: User, delivery_id: int, *, client_address: str | None = None) -> WebhookDelivery:
    """Queue a delivery again, now, with a fresh set of attempts (portal admins; the admin action).

    Locks the delivery; raises NotAuthorized for anyone but a portal admin allowed to change
    deliveries, TransitionNotAllowed while it is being sent or when its subscription is inactive.
    Records ``webhook.redelivered`` and schedules the sending after the commit. The receiver sees the
    same ``webhook-id`` as before, so it can tell a redelivery from a new event."""
    with transaction.atomic():
        delivery = (
            WebhookDelivery.objects.select_for_update(no_key=True, of=("self",))
            .select_related("subscription", "event")
            .get(pk=delivery_id)
        )
        permissions.ensure_can_redeliver_webhook(actor)
        now = clock.now()
        if delivery.lease_until is not None and delivery.lease_until > now:
            raise TransitionNotAllowed("This delivery is being sent right now.")
        if not delivery.subscription.is_active:
            raise TransitionNotAllowed("The subscription is inactive; activate it first.")
        previous = {"status": delivery.status, "attempts": delivery.attempts}
        delivery.status = Status.PENDING
        delivery.attempts = 0
        delivery.next_attempt_at = now
        delivery.lease_until = None
        delivery.redelivery_count += 1
        delivery.save(update_fields=["status", "attempts", "next_attempt_at", "lease_until", "redelivery_count"])
        event_record(
            Type.WEBHOOK_REDELIVERED,
            actor=actor,
            client_address=client_address,
            data={
                "delivery_id": delivery.pk,
                "subscription_id": delivery.subscription_id,
                "subscription": delivery.subscription.name,
                "event_id": delivery.event_id,
                "event_type": delivery.event.event_type,
                "previous_status": previous["status"],
                "previous_attempts": previous["attempts"],
            },
        )
        _send_after_commit([delivery.pk])
    return delivery
