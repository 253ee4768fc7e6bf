"""The append-only, hash-chained access events and the checkpoints retention purges leave (the chain
itself: ``accessgov/ledger``)."""

from django.conf import settings
from django.db import models
from django.utils import timezone

from accessgov.ledger import hashing
from accessgov.models.catalog import Role
from accessgov.models.grants import Grant
from accessgov.models.requests import AccessRequest


class AccessEvent(models.Model):
    """The append-only business ledger: who did what to which request/grant, when, from where, why.

    Written only by services.events (one row per state change, in the same transaction). Rows are
    never updated or deleted through the ORM.
    """

    class Type(models.TextChoices):
        REQUEST_SUBMITTED = "request.submitted", "Request submitted"
        REQUEST_APPROVED = "request.approved", "Request approved"
        REQUEST_AUTO_APPROVED = "request.auto_approved", "Request auto-approved"
        REQUEST_DENIED = "request.denied", "Request denied"
        REQUEST_CANCELLED = "request.cancelled", "Request cancelled"
        REQUEST_LAPSED = "request.lapsed", "Request lapsed"
        REQUEST_WITHDRAWN = "request.withdrawn", "Request withdrawn (requester no longer eligible)"
        DECISION_APPROVE = "decision.approve", "Approval recorded"
        DECISION_DENY = "decision.deny", "Denial recorded"
        GRANT_SCHEDULED = "grant.scheduled", "Grant scheduled"
        GRANT_ACTIVATED = "grant.activated", "Grant activated"
        GRANT_EXTENDED = "grant.extended", "Grant extended"
        GRANT_EXPIRED = "grant.expired", "Grant expired"
        GRANT_REVOKED = "grant.revoked", "Grant revoked"
        GRANT_RELEASED = "grant.released", "Grant released"
        BREAK_GLASS_ACTIVATED = "break_glass.activated", "Break-glass activated"
        BREAK_GLASS_ACKNOWLEDGED = "break_glass.acknowledged", "Break-glass follow-up acknowledged"
        PROVISIONING_APPLIED = "provisioning.applied", "Access applied at the target"
        PROVISIONING_REMOVED = "provisioning.removed", "Access removed at the target and confirmed"
        PROVISIONING_FAILED = "provisioning.failed", "Provisioning failing (retrying)"
        PROVISIONING_SKIPPED = "provisioning.skipped", "Provisioning skipped (grant already ended)"
        DRIFT_DETECTED = "drift.detected", "Access without a grant detected at the target"
        DRIFT_REMOVED = "drift.removed", "Access without a grant removed at the target"
        EXPORT_CREATED = "export.created", "Evidence exported"
        AUDIT_VERIFIED = "audit.verified", "Audit chain verified"
        AUDIT_PURGED = "audit.purged", "Events older than the retention period purged"
        REVIEW_OPENED = "review.opened", "Access review campaign opened"
        REVIEW_DECIDED = "review.decided", "Review item decided"
        REVIEW_REASSIGNED = "review.reassigned", "Review item reassigned"
        REVIEW_CLOSED = "review.closed", "Access review campaign closed"
        REVIEW_APPLIED = "review.applied", "Review outcome applied"
        ELIGIBILITY_ADDED = "eligibility.added", "Eligibility added"
        ELIGIBILITY_ENDED = "eligibility.ended", "Eligibility ended"
        USER_DEACTIVATED = "user.deactivated", "Account deactivated (sessions ended, access revoked)"
        USER_REACTIVATED = "user.reactivated", "Account reactivated (nothing restored)"
        USER_PASSWORD_SET = "user.password_set", "Password set"
        USER_CREATED = "user.created", "Account created"
        CHANGE_PROPOSED = "change.proposed", "Policy change proposed (four-eyes)"
        CHANGE_APPLIED = "change.applied", "Policy change applied"
        CHANGE_REJECTED = "change.rejected", "Policy change rejected"
        WEBHOOK_REDELIVERED = "webhook.redelivered", "Event webhook delivery queued again"
        WEBHOOK_FAILED = "webhook.failed", "Event webhook delivery given up"
        IDENTITY_SIGNED_IN = "identity.signed_in", "Signed in through the identity provider"
        IDENTITY_USER_CREATED = "identity.user_created", "Account created from the identity provider"
        IDENTITY_USER_UPDATED = "identity.user_updated", "Account details updated by the identity provider"
        IDENTITY_LINKED = "identity.linked", "Account linked to an identity provider"
        IDENTITY_UNLINKED = "identity.unlinked", "Account unlinked from its identity provider"
        IDENTITY_GROUP_CHANGED = "identity.group_changed", "Group created, renamed or removed by the identity provider"
        IDENTITY_GROUP_JOINED = "identity.group_joined", "Added to a group by the identity provider"
        IDENTITY_GROUP_LEFT = "identity.group_left", "Removed from a group by the identity provider"
        GRANT_TICKET_CLOSED = "grant.ticket_closed", "Grant ended: its ticket closed"
        GRANT_INCIDENT_RESOLVED = "grant.incident_resolved", "Grant ended: its incident was resolved"
        SLACK_LINKED = "slack.linked", "Slack user linked to an account"
        SLACK_UNLINKED = "slack.unlinked", "Slack user unlinked from an account"
        TOKEN_OIDC_EXCHANGED = "token.oidc_exchanged", "CI identity token exchanged for an API token"
        TOKEN_CREATED = "token.created", "API token created"
        TOKEN_REVOKED = "token.revoked", "API token revoked"
        EVIDENCE_REQUESTED = "evidence.requested", "Evidence pack requested"
        EVIDENCE_BUILT = "evidence.built", "Evidence pack built and signed"
        EVIDENCE_FAILED = "evidence.failed", "Evidence pack could not be built"
        EVIDENCE_DOWNLOADED = "evidence.downloaded", "Evidence pack downloaded"
        EVIDENCE_DELIVERED = "evidence.delivered", "Evidence pack delivered"
        EVIDENCE_DELIVERY_FAILED = "evidence.delivery_failed", "Evidence pack delivery failed (retrying)"
        ACTIVITY_FINDING = "activity.finding", "Activity finding raised (needs a second person's sign-off)"
        ACTIVITY_SIGNED_OFF = "activity.signed_off", "Activity finding signed off"
        ACTIVITY_SEALED = "activity.sealed", "Activity sealed into the ledger"
        ACTIVITY_PURGED = "activity.purged", "Activity older than the retention period purged"

    occurred_at = models.DateTimeField(default=timezone.now, db_index=True)
    event_type = models.CharField(max_length=40, choices=Type.choices)
    # The references are checked by PostgreSQL once per statement, set-based, instead of by a deferred
    # foreign-key trigger per row at commit (migration 0030: same guarantees, see docs/DECISIONS.md).
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_constraint=False,
        db_index=False,  # indexed where set (``event_actor``): automation's events add nothing to it
    )
    actor_label = models.CharField(max_length=100, help_text="The username, or system:<job> for automation.")
    client_address = models.GenericIPAddressField(null=True, blank=True)
    reason = models.TextField(blank=True)
    access_request = models.ForeignKey(
        AccessRequest, null=True, blank=True, on_delete=models.PROTECT, related_name="events", db_constraint=False
    )
    grant = models.ForeignKey(
        Grant, null=True, blank=True, on_delete=models.PROTECT, related_name="events", db_constraint=False
    )
    role = models.ForeignKey(
        Role, null=True, blank=True, on_delete=models.PROTECT, related_name="+", db_constraint=False
    )
    data = models.JSONField(default=dict, blank=True)
    # Tamper evidence: position in the chain, the previous event's hash, and this event's hash over its
    # content and prev_hash. Set by services.events under the ledger lock; see verify_audit.
    sequence = models.PositiveBigIntegerField(unique=True, null=True, editable=False)
    prev_hash = models.CharField(max_length=64, blank=True, editable=False)
    hash = models.CharField(max_length=64, blank=True, editable=False)

    class Meta:
        ordering = ["occurred_at", "pk"]
        indexes = [
            models.Index(fields=["event_type", "occurred_at"], name="event_type_time"),
            models.Index(fields=["actor_label", "sequence"], name="event_actor_sequence"),
            models.Index(fields=["actor"], name="event_actor", condition=models.Q(actor__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"{self.occurred_at:%Y-%m-%d %H:%M:%S} {self.event_type} by {self.actor_label}"

    def save(self, *args, **kwargs):
        if self.pk is not None and not kwargs.get("force_insert"):
            raise ValueError("Access events are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("Access events are append-only.")

    # What the hash covers and how it is computed: accessgov/ledger/hashing.py (the one hashing function).
    HASHED_FIELDS = hashing.HASHED_FIELDS

    def content(self) -> dict:
        return hashing.event_content(self)

    def compute_hash(self, prev_hash: str) -> str:
        return hashing.hash_content(self.content(), prev_hash)


class LedgerCheckpoint(models.Model):
    """Where the verified chain starts after a retention purge: the last purged event's sequence and
    hash. verify_audit starts from the newest checkpoint, so purging old events keeps the rest provable."""

    sequence = models.PositiveBigIntegerField(unique=True)
    hash = models.CharField(max_length=64)
    purged_count = models.PositiveIntegerField()
    purged_before = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-sequence"]

    def __str__(self) -> str:
        return f"checkpoint #{self.sequence}"
