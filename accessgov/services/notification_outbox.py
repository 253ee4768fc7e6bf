"""Notifications that survive a broker outage (reliability promise 10: nothing lost).

A service that tells people something — a request to decide, a decision, a grant ending — calls ``notify`` or
``notify_many`` inside its transaction: a ``QueuedNotification`` row commits with the change, and the task that
sends it is published after the commit, carrying the row's ``notification_id``. If the broker is down at that
moment (the publish is logged and dropped) or loses the message (a restart that keeps nothing), the row is still
open, and every sweep publishes the open rows again that are older than ``GRACE``. Sending is keyed by the
``notification_id`` (``notifications.dispatch`` records one ``NotificationDelivery`` per channel and recipient),
so publishing twice sends nothing twice. The ``notify`` task closes the row when it has finished
(``notification_done``); ``notify_many`` first writes one row per object (``notify_each``), then publishes one
``notify`` per object and closes its own row — each object's notification is then tracked like any other.
"""

import logging
from datetime import datetime, timedelta
from uuid import uuid4

from django.db import transaction
from django.db.models import Q

from accessgov import clock
from accessgov.models import QueuedNotification
from accessgov.services import after_commit

logger = logging.getLogger(__name__)

# A task published after the commit normally starts within milliseconds; a row still open after this was not
# delivered by the broker (or its task is still retrying: publishing again then sends nothing twice).
GRACE = timedelta(seconds=60)
LEASE = timedelta(minutes=5)  # one sweep's claim on a row it published again
RUNNING = timedelta(minutes=15)  # a running task's claim, renewed at each retry (its backoff: ≤ 10 min a step)
GIVE_UP = timedelta(days=2)  # as long as NotificationDelivery rows are kept: older, a resend could send twice
BATCH = 500


def notify(kind: str, object_id: int) -> None:
    """Queue notification ``kind`` about ``object_id`` in the current transaction; sent after it commits."""
    item = QueuedNotification.objects.create(notification_id=uuid4().hex, kind=kind, object_ids=[object_id])
    after_commit.enqueue("notify", kind, object_id, item.notification_id)


def notify_many(kind: str, object_ids: list[int]) -> None:
    """Queue notification ``kind`` about each of ``object_ids`` (a fan-out task sends one per object)."""
    item = QueuedNotification.objects.create(
        notification_id=uuid4().hex, kind=kind, object_ids=list(object_ids), many=True
    )
    after_commit.enqueue("notify_many", kind, item.object_ids, item.notification_id)


def notify_each(kind: str, object_ids: list[int], base: str) -> None:
    """The fan-out's own rows: one queued notification per object, ``<base>:<id>`` (the ids its ``notify``
    tasks carry), written before they are published, so that a broker losing any of them loses nothing.
    Idempotent: a retried fan-out finds its rows."""
    QueuedNotification.objects.bulk_create(
        [
            QueuedNotification(notification_id=f"{base}:{object_id}", kind=kind, object_ids=[object_id])
            for object_id in object_ids
        ],
        batch_size=5000,
        ignore_conflicts=True,
    )


def notification_running(notification_id: str) -> None:
    """The ``notify`` task runs (or retries) the queued notification: no sweep publishes it again for
    ``RUNNING`` — longer than the task's whole retry backoff — unless the task never comes back."""
    QueuedNotification.objects.filter(notification_id=notification_id, done_at__isnull=True).update(
        lease_until=clock.now() + RUNNING
    )


def notification_done(notification_id: str) -> None:
    """Close the queued notification ``notification_id`` (the tasks call this when they have finished)."""
    QueuedNotification.objects.filter(notification_id=notification_id, done_at__isnull=True).update(
        done_at=clock.now(), lease_until=None
    )


def notification_outbox_drain(now: datetime | None = None) -> int:
    """Publish again the queued notifications whose task never finished (every sweep; oldest first, leased so
    that two sweeps do not both publish one). Rows older than ``GIVE_UP`` are closed with a warning, and closed
    rows that old are deleted. Returns how many were published again; stops at the first publish that fails
    (the broker is still down: the leases run out and a later sweep tries again)."""
    now = now or clock.now()
    stale = QueuedNotification.objects.filter(done_at__isnull=True, created_at__lt=now - GIVE_UP)
    given_up = stale.update(done_at=now, lease_until=None)
    if given_up:
        logger.warning("gave up %d notification(s) not sent within %s", given_up, GIVE_UP)
    QueuedNotification.objects.filter(done_at__lt=now - GIVE_UP).delete()
    with transaction.atomic():
        claimed = list(
            QueuedNotification.objects.select_for_update(skip_locked=True)
            .filter(done_at__isnull=True, created_at__lt=now - GRACE)
            .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
            .order_by("pk")[:BATCH]
        )
        QueuedNotification.objects.filter(pk__in=[item.pk for item in claimed]).update(lease_until=now + LEASE)
    published = 0
    for item in claimed:
        QueuedNotification.objects.filter(pk=item.pk).update(attempts=item.attempts + 1)
        try:
            if item.many:
                after_commit.send("notify_many", item.kind, item.object_ids, item.notification_id)
            else:
                after_commit.send("notify", item.kind, item.object_ids[0], item.notification_id)
        except Exception as error:  # the broker is still away: a later sweep, after the lease
            logger.warning("publishing queued notification %s failed: %s", item.notification_id, error)
            break
        published += 1
    return published
