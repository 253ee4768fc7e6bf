"""Outbound event webhooks (subscriptions, deliveries) and notification deliveries."""

from django.conf import settings
from django.db import models
from django.utils import timezone

from accessgov.models.catalog import System
from accessgov.models.events import AccessEvent


class EventWebhookSubscription(models.Model):
    """An outbound event webhook: access events whose type matches ``event_types`` (for one system, or
    for every system when ``system`` is empty) are POSTed, signed with ``secret``, to ``url``.

    Configuration (edited in the admin). ``secret`` is write-only: never rendered, never in the audit
    log. Deliveries are written by services.webhooks in the transaction of the event they carry.
    """

    name = models.CharField(max_length=100)
    system = models.ForeignKey(
        System,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="event_webhooks",
        help_text="Only events of this system's roles; empty means every event, whatever the system.",
    )
    url = models.URLField(max_length=500, help_text="https:// address of your receiver.")
    event_types = models.JSONField(
        default=list, help_text='Patterns such as "request.*", "grant.expired" or "*" (every event type).'
    )
    secret = models.TextField(help_text="Signing secret. Never shown back, never logged.")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name", "pk"]
        indexes = [models.Index(fields=["is_active", "system"], name="event_webhook_active_system")]

    def __str__(self) -> str:
        return self.name


class WebhookDelivery(models.Model):
    """One access event to send to one subscription (a transactional outbox row): written with the
    event, drained by a task and by every sweep, retried with backoff until delivered or given up.
    Written only by services.webhooks."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed (gave up)"

    subscription = models.ForeignKey(EventWebhookSubscription, on_delete=models.CASCADE, related_name="deliveries")
    # No database-level foreign key: the ledger table stays unreferenced, so its TRUNCATE guard and the
    # retention purge work unchanged (purge_audit deletes the deliveries of the events it purges).
    event = models.ForeignKey(AccessEvent, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(default=timezone.now)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    lease_until = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    redelivery_count = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name_plural = "webhook deliveries"
        ordering = ["-pk"]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="webhook_delivery_due")]
        constraints = [
            models.UniqueConstraint(fields=["subscription", "event"], name="webhook_delivery_one_per_event"),
        ]

    def __str__(self) -> str:
        return f"Event #{self.event_id} → webhook #{self.subscription_id}"

    @property
    def message_id(self) -> str:
        """The ``webhook-id`` header: the same for every attempt and redelivery, so receivers can de-duplicate."""
        return f"event-{self.event_id}-{self.subscription_id}"


class NotificationDelivery(models.Model):
    """One channel of one notification: the email to one person, or the post to a system's Slack
    webhook. ``notifications.dispatch`` writes a row per channel the first time a notification is
    sent, keyed by the notification's id (the notify task's id: the same on every retry and every
    redelivery of its message), then sends each pending row under a short lease and records the
    outcome. A failing channel is retried alone; a delivery that succeeded is never sent again."""

    class Channel(models.TextChoices):
        EMAIL = "email", "Email"
        SLACK = "slack", "Slack"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed (given up)"

    key = models.CharField(max_length=200, unique=True, help_text="notification id : channel : recipient")
    notification_id = models.CharField(max_length=150, db_index=True)
    kind = models.CharField(max_length=50)
    object_id = models.BigIntegerField()
    channel = models.CharField(max_length=10, choices=Channel.choices)
    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    system = models.ForeignKey(System, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    address = models.EmailField(
        blank=True, help_text="Sent here instead of the recipient's current address (their former one, say)."
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    lease_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    def __str__(self) -> str:
        return self.key


class QueuedNotification(models.Model):
    """A notification to send, written in the transaction of the change it tells of
    (``services.notification_outbox``): the task that sends it is published after the commit, and a broker
    that was down then, or lost the message, does not lose the notification — the sweep publishes it again,
    under the same ``notification_id``, so a person gets each email once (``NotificationDelivery``'s keys).
    ``done_at`` is set when the sending finished (sent, nothing to send, or given up)."""

    notification_id = models.CharField(max_length=150, unique=True)
    kind = models.CharField(max_length=50)
    object_ids = models.JSONField(default=list, help_text="One id for a notification; several for a fan-out.")
    many = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
    lease_until = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["created_at"], name="queued_notification_open", condition=models.Q(done_at__isnull=True)
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.object_ids[:3]}"
