"""Grants (the access an approved request produced), their break-glass follow-ups, the provisioning
outbox and drift found at targets."""

from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from accessgov.models.catalog import Role, System
from accessgov.models.requests import AccessRequest


class GrantQuerySet(models.QuerySet):
    def active(self, now):
        """Grants that give access at ``now``: state active AND not yet expired. Every "does X have
        access?" question goes through this, so access ends at expires_at even if no worker ran."""
        return self.filter(status=Grant.Status.ACTIVE, starts_at__lte=now, expires_at__gt=now)

    def current(self):
        """Grants not yet ended in stored state (scheduled or active), whatever the clock says."""
        return self.filter(status__in=[Grant.Status.SCHEDULED, Grant.Status.ACTIVE])

    def with_status_at(self, status: str, now):
        """Grants whose status at ``now`` (``Grant.status_at``) is ``status`` — the rule the lists, their CSV
        and the API filter by: the stored status ages (the sweeper may be late), the clock does not."""
        unswept = models.Q(ended_at__isnull=True, expires_at__lte=now)
        if status == Grant.Status.EXPIRED:
            return self.filter(models.Q(status=Grant.Status.EXPIRED) | unswept)
        if status == Grant.Status.ACTIVE:
            return self.active(now)
        if status == Grant.Status.SCHEDULED:
            waiting = models.Q(status=Grant.Status.SCHEDULED) | models.Q(status=Grant.Status.ACTIVE, starts_at__gt=now)
            return self.filter(waiting).exclude(unswept)
        return self.filter(status=status)


class Grant(models.Model):
    """The access an approved request produced. Written only by services.grants."""

    class Status(models.TextChoices):
        SCHEDULED = "scheduled", "Scheduled"
        ACTIVE = "active", "Active"
        EXPIRED = "expired", "Expired"
        REVOKED = "revoked", "Revoked"

    class EndReason(models.TextChoices):
        EXPIRED = "expired", "Expired"
        REVOKED = "revoked", "Revoked"
        RELEASED = "released", "Released early by the grantee"
        TICKET_CLOSED = "ticket_closed", "Its ticket closed"
        INCIDENT_RESOLVED = "incident_resolved", "Its incident was resolved"

    access_request = models.OneToOneField(AccessRequest, on_delete=models.PROTECT, related_name="grant")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="grants", db_index=False
    )  # grant_user_status (user, status) serves every lookup by user
    role = models.ForeignKey(Role, on_delete=models.PROTECT, related_name="grants")
    status = models.CharField(max_length=10, choices=Status.choices)
    is_break_glass = models.BooleanField(default=False)
    starts_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now)
    activated_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=20, choices=EndReason.choices, blank=True)
    ended_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+", db_index=False
    )  # grant_ended_by: only the grants a person ended
    extension_count = models.PositiveIntegerField(default=0)
    expiry_reminder_sent_at = models.DateTimeField(null=True, blank=True)

    class Provisioning(models.TextChoices):
        PENDING = "pending", "Applying"
        APPLIED = "applied", "Applied"
        REMOVAL_PENDING = "removal_pending", "Removal pending"
        REMOVED = "removed", "Removed"
        CONFIRMED = "confirmed", "Removed and confirmed"
        FAILED = "failed", "Failing (retrying)"
        NOT_APPLIED = "not_applied", "Never applied"

    provisioning_state = models.CharField(max_length=20, choices=Provisioning.choices, blank=True)
    provisioning_error = models.TextField(blank=True)
    provisioned_at = models.DateTimeField(null=True, blank=True)
    removal_requested_at = models.DateTimeField(null=True, blank=True)
    removed_at = models.DateTimeField(null=True, blank=True)
    removal_confirmed_at = models.DateTimeField(null=True, blank=True)
    removal_alerted_at = models.DateTimeField(null=True, blank=True)

    objects = GrantQuerySet.as_manager()

    class Meta:
        ordering = ["-starts_at", "-pk"]
        # Each index is written again for every grant a sweep ends (a status change is never a HOT
        # update), so only indexes some query needs, and partial where the rows they serve are few.
        indexes = [
            # Expiry sweep, timers, reminders and every "active at now" question; only active grants
            # (any other status filter is served by grant_status_starts, which also orders it).
            models.Index(fields=["expires_at"], condition=models.Q(status="active"), name="grant_active_expires"),
            models.Index(fields=["status", "starts_at"], name="grant_status_starts"),
            models.Index(fields=["user", "status"], name="grant_user_status"),
            models.Index(fields=["-starts_at", "-id"], name="grant_starts_desc"),
            # Lookups by who ended a grant (e.g. deleting a user): NULL for all but revocations by a person.
            models.Index(fields=["ended_by"], condition=models.Q(ended_by__isnull=False), name="grant_ended_by"),
            # The break-glass report, newest first: a few hundred rows among 100k grants.
            models.Index(fields=["-id"], condition=models.Q(is_break_glass=True), name="grant_break_glass"),
            # Removals not confirmed yet (the inbox badge, home banner and monitoring's overdue count on
            # every page): a handful of rows in steady state, a seq scan of every grant without it.
            models.Index(
                fields=["removal_requested_at"],
                condition=models.Q(removal_confirmed_at__isnull=True, removal_requested_at__isnull=False),
                name="grant_removal_pending",
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(expires_at__gt=models.F("starts_at")), name="grant_expires_after_start"
            ),
            models.UniqueConstraint(
                fields=["user", "role"],
                condition=models.Q(status__in=["scheduled", "active"]),
                name="grant_one_current_per_user_role",
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=["scheduled", "active"], ended_at__isnull=True)
                | models.Q(status__in=["expired", "revoked"], ended_at__isnull=False),
                name="grant_ended_iff_final",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} → {self.role} until {self.expires_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"

    # What a grant is at an instant, as every reader must see it (page, report, CSV, API, monitoring):
    # the stored status ages (the sweeper may be late), the clock does not. A grant in force or waiting
    # is its Status; one that ended is its EndReason — expired as soon as ``expires_at`` passes, swept
    # or not. ``GrantQuerySet.active(now)`` is the same rule as a query.
    STATE_LABELS = {
        "scheduled": "Scheduled",
        "active": "Active",
        "expired": "Expired",
        "revoked": "Revoked",
        "released": "Released",
        "ticket_closed": "Ticket closed",
        "incident_resolved": "Incident resolved",
    }

    @classmethod
    def state_of(
        cls, *, status: str, end_reason: str, ended_at, starts_at, expires_at, now
    ) -> tuple[str, datetime | None]:
        """``(state, ended_at)`` at ``now`` from a grant's stored values (for callers reading value rows,
        e.g. evidence populations); ``ended_at`` is ``expires_at`` for an expiry not yet swept."""
        if ended_at is not None:
            return end_reason or status, ended_at
        if expires_at <= now:
            return cls.EndReason.EXPIRED.value, expires_at
        if status == cls.Status.ACTIVE and now < starts_at:
            return cls.Status.SCHEDULED.value, None
        return status, None

    def _state_and_end(self, now) -> tuple[str, datetime | None]:
        return self.state_of(
            status=self.status,
            end_reason=self.end_reason,
            ended_at=self.ended_at,
            starts_at=self.starts_at,
            expires_at=self.expires_at,
            now=now,
        )

    def state_at(self, now) -> str:
        """The grant's state at ``now``: scheduled, active, or how it ended (expired, revoked, released,
        ticket_closed, incident_resolved)."""
        return self._state_and_end(now)[0]

    def ended_at_as_of(self, now) -> datetime | None:
        """When the grant ended, as seen at ``now`` (its ``expires_at`` once past, even if not swept)."""
        return self._state_and_end(now)[1]

    def status_at(self, now) -> str:
        """The ``Status`` at ``now``: expired once ``expires_at`` passed, swept or not; scheduled until it starts."""
        state = self.state_at(now)
        if state in (self.Status.SCHEDULED, self.Status.ACTIVE):
            return state
        return self.status if self.ended_at is not None else self.Status.EXPIRED

    def end_reason_at(self, now) -> str:
        """Why it ended, as seen at ``now`` ("expired" for an expiry not yet swept; "" while it has not ended)."""
        state = self.state_at(now)
        return "" if state in (self.Status.SCHEDULED, self.Status.ACTIVE) else state

    def end_description(self) -> str:
        """How it ended, in words: a scheduled grant given back before its start was cancelled, not released early
        (the same boundary as ``grant_release``'s event reason: before ``starts_at``)."""
        if self.end_reason == self.EndReason.RELEASED and self.ended_at is not None and self.ended_at < self.starts_at:
            return "Cancelled by the grantee before it started"
        return self.get_end_reason_display()

    def is_active_at(self, now) -> bool:
        """Gives access at ``now`` (state active and ``starts_at <= now < expires_at``)."""
        return self.state_at(now) == self.Status.ACTIVE

    @property
    def revocation_lag(self) -> timedelta | None:
        """removal_confirmed_at minus the moment access should have ended (expires_at, or the revoke time)."""
        if self.removal_confirmed_at is None or self.ended_at is None:
            return None
        return self.removal_confirmed_at - self.ended_at


class BreakGlassFollowUp(models.Model):
    """The review a break-glass activation owes: another person must acknowledge it within 24 h."""

    grant = models.OneToOneField(Grant, on_delete=models.PROTECT, related_name="follow_up")
    due_at = models.DateTimeField()
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    comment = models.TextField(blank=True)
    last_reminded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "break-glass follow-up"
        ordering = ["due_at"]

    def __str__(self) -> str:
        return f"Follow-up for break-glass grant #{self.grant_id}"

    @property
    def is_open(self) -> bool:
        return self.acknowledged_at is None


class OutboxItem(models.Model):
    """Work at a target that must survive a broker outage: written in the transaction of the state
    change, drained by a task and by every sweep; processing is idempotent (one item, one effect)."""

    class Action(models.TextChoices):
        APPLY = "apply", "Apply access"
        REMOVE = "remove", "Remove access"

    # Checked set-based per statement like the ledger's references (migration 0030), not per row at commit.
    # Not indexed on its own: the unique key below leads with it and serves every lookup by grant.
    grant = models.ForeignKey(
        Grant, on_delete=models.PROTECT, related_name="outbox_items", db_constraint=False, db_index=False
    )
    action = models.CharField(max_length=10, choices=Action.choices)
    # The item is the grant's ``number``-th of its action; (grant, action, number) is unique and is what
    # makes it idempotent (``idempotency_key`` spells it out for targets, events and logs).
    number = models.PositiveIntegerField()
    created_at = models.DateTimeField(default=timezone.now)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    lease_until = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    done_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=20, blank=True)
    # Set only when a person marks a manual item done: indexed where set (a sweep's rows add nothing to it).
    done_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+", db_index=False
    )

    class Meta:
        verbose_name = "provisioning outbox item"
        ordering = ["pk"]
        indexes = [
            models.Index(fields=["done_at", "next_attempt_at"], name="outbox_due"),
            models.Index(fields=["done_by"], name="outbox_done_by", condition=models.Q(done_by__isnull=False)),
        ]
        constraints = [
            models.UniqueConstraint(fields=["grant", "action", "number"], name="outbox_grant_action_number_unique")
        ]

    def __str__(self) -> str:
        return f"{self.get_action_display()} for grant #{self.grant_id}"

    @property
    def idempotency_key(self) -> str:
        """``grant-<id>-<action>-<n>`` (the one rule): sent to targets as the operation id (a redelivered item
        is recognised), named in events and logs."""
        return f"grant-{self.grant_id}-{self.action}-{self.number}"


class DriftFinding(models.Model):
    """Access found at a target without an active grant behind it (reconciliation)."""

    system = models.ForeignKey(System, on_delete=models.CASCADE, related_name="drift_findings")
    role = models.ForeignKey(Role, on_delete=models.CASCADE, related_name="drift_findings")
    principal = models.CharField(max_length=200)
    detected_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)
    removed_by_accessgov = models.BooleanField(default=False)

    class Meta:
        ordering = ["-detected_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["role", "principal"],
                condition=models.Q(resolved_at__isnull=True),
                name="drift_one_open_per_principal",
            )
        ]

    def __str__(self) -> str:
        return f"{self.principal} holds {self.role} without a grant"
