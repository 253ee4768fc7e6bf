"""Celery tasks: thin, idempotent wrappers that take ids and call services."""

import time
from uuid import uuid4

from celery import shared_task

from accessgov import clock, notifications
from accessgov.services import notification_outbox
from accessgov.services.activity import activity_capture_run
from accessgov.services.evidence import evidence_pack_build, evidence_pack_schedule_due
from accessgov.services.grants import grant_activate_due, grant_expire_due
from accessgov.services.integrations import integrations_sweep as sweep_integrations
from accessgov.services.integrations import slack_request_sync
from accessgov.services.provisioning import outbox_drain
from accessgov.services.reconciliation import reconcile_all
from accessgov.services.reviews import review_campaign_quarterly
from accessgov.services.sweep import sweep_run_recorded
from accessgov.services.webhooks import webhook_deliveries_send

RETRY = {"autoretry_for": (Exception,), "retry_backoff": True, "retry_backoff_max": 600, "max_retries": 8}


@shared_task(ignore_result=False)
def ping() -> str:
    """Round-trip check used by the worker tests and by operators: returns "pong"."""
    return "pong"


@shared_task
def heartbeat() -> float:
    """Beat's pulse: proves beat → broker → worker is flowing (logged by the worker)."""
    return time.time()


# expire_grant and activate_grant are no longer sent: the scheduler (accessgov/scheduler.py) expires and
# activates from the database. They stay registered for the eta messages an earlier version left in
# Redis (a worker must not reject them as unknown); each runs the same set-based, idempotent pass.


@shared_task(**RETRY)
def expire_grant(grant_id: int) -> int:
    """An eta timer queued by an earlier version, at a grant's expires_at: expires that grant if it is
    still due (a no-op if it was extended or has ended) and removes the access (the drain is idempotent
    and leased). Every other due grant is the scheduler's."""
    expired = grant_expire_due(clock.now(), grant_ids=[grant_id], job="expiry-timer")
    if expired:
        outbox_drain()
    return expired


@shared_task(**RETRY)
def activate_grant(grant_id: int) -> int:
    """An eta timer queued by an earlier version, at a scheduled grant's start: activates it if still
    scheduled."""
    return grant_activate_due(clock.now(), grant_ids=[grant_id], job="start-timer")


@shared_task
def sweep() -> dict[str, int]:
    """The periodic safety net (beat, every 30 s): lapse, activate, expire, remind."""
    return sweep_run_recorded()


@shared_task(bind=True, **RETRY)
def notify(self, kind: str, object_id: int, notification_id: str | None = None) -> int:
    """Send notification ``kind`` about ``object_id``: each channel (an email per person, the Slack
    post) is recorded and sent on its own, keyed by this task's id, so a retry — on a failed channel,
    with backoff — or a redelivered message sends only what was not sent yet. Returns emails and posts
    sent by this run. After the last retry, what is still failing is marked given up."""
    last_attempt = self.request.retries >= self.max_retries
    notification_id = notification_id or self.request.id or uuid4().hex
    notification_outbox.notification_running(notification_id)
    result = notifications.dispatch(kind, object_id, notification_id=notification_id, last_attempt=last_attempt)
    if result.pending and not last_attempt:
        raise notifications.DeliveryPending("; ".join(result.errors) or "being sent by another run")
    notification_outbox.notification_done(notification_id)
    return result.sent


@shared_task(bind=True, **RETRY)
def notify_many(self, kind: str, object_ids: list[int], notification_id: str | None = None) -> None:
    """One notify per object, each with an id derived from the queued notification's (or this task's):
    publishing them again (a retry after a broker error, a sweep's catch-up) duplicates no delivery."""
    base = notification_id or self.request.id or uuid4().hex
    notification_outbox.notify_each(kind, object_ids, base)  # each one queued: a lost one is published again
    for object_id in object_ids:
        notify.delay(kind, object_id, notification_id=f"{base}:{object_id}")
    notification_outbox.notification_done(base)


@shared_task(acks_late=True)
def drain_outbox() -> int:
    """Apply/remove access at targets for due outbox items (idempotent; also run by every sweep)."""
    return outbox_drain()


@shared_task(acks_late=True)
def deliver_event_webhooks(delivery_ids: list[int]) -> int:
    """Send these event webhook deliveries (scheduled after the commit that wrote them). Idempotent:
    delivered, leased or not-yet-due ones are skipped; failures are retried by the sweep's drain."""
    return webhook_deliveries_send(delivery_ids)


@shared_task
def capture_activity() -> dict[str, int]:
    """Beat, every ACTIVITY_SAMPLE_SECONDS: sample sessions at PostgreSQL targets and read their server logs
    (each system leased by one run at a time; sealing is the sweep's)."""
    return activity_capture_run(clock.now()).as_dict()


@shared_task
def reconcile() -> dict[str, int]:
    """Compare every target that can list its members with the active grants; flag drift."""
    return reconcile_all(clock.now())


@shared_task
def quarterly_review() -> int | None:
    """Beat, first day of each quarter: open the quarter's access review over every system."""
    campaign = review_campaign_quarterly(clock.now())
    return campaign.pk if campaign else None


@shared_task(**RETRY)
def slack_sync(access_request_id: int) -> str:
    """Post or update the request's Slack approval message (idempotent; retried while Slack is down)."""
    return slack_request_sync(access_request_id)


@shared_task
def integrations_sweep() -> dict[str, int]:
    """Beat (INTEGRATIONS_SWEEP_SECONDS): end grants whose ticket closed or incident resolved."""
    return sweep_integrations(clock.now())


@shared_task(acks_late=True)
def build_evidence_pack(pack_id: int) -> str | None:
    """Build a queued evidence pack (on the notifications queue: slow, never in the way of an expiry).
    Idempotent: a pack already built, failed or being built is left alone."""
    pack = evidence_pack_build(pack_id)
    return pack.status if pack else None


@shared_task
def evidence_packs_scheduled() -> list[int]:
    """Beat, daily: queue the scheduled packs that are due (EVIDENCE_SCHEDULE) and retry failed deliveries."""
    return evidence_pack_schedule_due(clock.now())
