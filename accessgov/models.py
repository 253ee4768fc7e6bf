"""AccessGov data: people, the systems they need access to, and the roles on those systems."""

import hashlib
import json
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from json.encoder import c_make_encoder, encode_basestring
from operator import itemgetter
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone
from django.utils.crypto import salted_hmac

from accessgov import net


def compact_json_encoder(
    *, sort_keys: bool = False, default: Callable[[Any], Any] | None = None
) -> Callable[[Any], str]:
    """One reusable encoder giving exactly the text of ``json.dumps(value, sort_keys=sort_keys,
    separators=(",", ":"), ensure_ascii=False, default=default)``. ``json.dumps`` with options builds a
    JSONEncoder and a C encoder per call, which is half its cost for a small dict; the bulk ledger paths
    encode one or two per event."""
    encoder = json.JSONEncoder(sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False, default=default)
    if c_make_encoder is None:
        return encoder.encode
    # What JSONEncoder.iterencode builds for each call, built once (markers None: no circular check).
    c_encode = c_make_encoder(None, encoder.default, encode_basestring, None, ":", ",", sort_keys, False, True)

    def encode(value: Any) -> str:
        if isinstance(value, str):
            return encode_basestring(value)
        return "".join(c_encode(value, 0))

    return encode


def new_session_stamp() -> str:
    return secrets.token_hex(16)


class User(AbstractUser):
    """A person (or, later, a service account) who signs in with a password and a TOTP device.

    ``session_stamp`` is part of the session hash: changing it (a new OTP device, deactivation)
    ends every session of the user; ``update_session_auth_hash`` keeps the current one alive.
    """

    session_stamp = models.CharField(max_length=32, default=new_session_stamp, editable=False)
    is_service_account = models.BooleanField(
        default=False,
        editable=False,
        help_text="A machine identity: no password, no authenticator, never signs in to the portal; the only "
        "kind of account a service token may belong to. Made through a four-eyes change.",
    )
    created_by = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
        help_text="The admin who created the account (empty: created by the system or before this was kept).",
    )

    class Meta(AbstractUser.Meta):
        swappable = "AUTH_USER_MODEL"

    def _session_hash(self, secret: str | None = None) -> str:
        return salted_hmac(
            "accessgov.User.session", self.password + self.session_stamp, secret=secret, algorithm="sha256"
        ).hexdigest()

    def get_session_auth_hash(self) -> str:
        return self._session_hash()

    def get_session_auth_fallback_hash(self):  # type: ignore[override]
        for fallback in settings.SECRET_KEY_FALLBACKS:
            yield self._session_hash(secret=fallback)

    def rotate_session_stamp(self) -> None:
        """End every session of this user (the caller re-keeps its own with update_session_auth_hash)."""
        self.session_stamp = new_session_stamp()
        self.save(update_fields=["session_stamp"])


class ServiceAccount(User):
    """The service accounts among the users (admin: proposed through four-eyes, never edited)."""

    class Meta:
        proxy = True
        verbose_name = "service account"

    def __str__(self) -> str:
        return self.get_username()


class System(models.Model):
    """A production target (database, cluster, cloud account, admin tool) that access is granted to."""

    class Environment(models.TextChoices):
        PRODUCTION = "production", "Production"
        STAGING = "staging", "Staging"
        SANDBOX = "sandbox", "Sandbox"

    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=100, unique=True)
    environment = models.CharField(max_length=20, choices=Environment.choices, default=Environment.PRODUCTION)
    description = models.TextField(blank=True)

    class Connector(models.TextChoices):
        MANUAL = "manual", "Manual (a person applies and removes access)"
        WEBHOOK = "webhook", "Webhook (signed POST to your automation)"
        POSTGRES = "postgres", "PostgreSQL (role membership)"

    slack_webhook_url = models.URLField(
        blank=True, help_text="Optional Slack-compatible incoming webhook for this system's notifications."
    )
    connector = models.CharField(max_length=20, choices=Connector.choices, default=Connector.MANUAL)
    connector_config = models.JSONField(default=dict, blank=True, help_text="Non-secret connector settings.")
    connector_secret = models.TextField(
        blank=True, help_text="Password or signing secret. Never shown back, never logged."
    )
    reconcile_remove_drift = models.BooleanField(
        default=False, help_text="When reconciliation finds access without an active grant, remove it."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        permissions = [
            ("own_system", "Owns the system: manages eligibility and reviews access"),
            ("approve_system", "May approve requests for every role of the system"),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        """A new or changed Slack webhook URL passes the outbound guard (accessgov.net): https, and no
        internal address unless WEBHOOK_ALLOW_PRIVATE_TARGETS. Run by the admin form and by both steps
        of a four-eyes change; the notifications worker checks it again when it posts."""

        url = self.slack_webhook_url
        stored = (
            System.objects.filter(pk=self.pk).values_list("slack_webhook_url", flat=True).first() if self.pk else None
        )
        if url and url != stored and (problems := net.target_problems(url)):
            raise ValidationError({"slack_webhook_url": " ".join(problems)})


class Role(models.Model):
    """A level of access on a system, with its risk tier and the policy that governs requests for it."""

    class RiskTier(models.TextChoices):
        LOW = "low", "Low"
        MEDIUM = "medium", "Medium"
        HIGH = "high", "High"
        CRITICAL = "critical", "Critical"

    system = models.ForeignKey(System, on_delete=models.PROTECT, related_name="roles")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    risk_tier = models.CharField(max_length=10, choices=RiskTier.choices, default=RiskTier.MEDIUM)
    default_duration = models.DurationField(default=timedelta(hours=1))
    max_duration = models.DurationField(default=timedelta(hours=4))
    approvals_required = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(0), MaxValueValidator(5)]
    )
    ticket_required = models.BooleanField(default=False)
    ticket_pattern = models.CharField(
        max_length=200, blank=True, help_text="Regular expression a ticket reference must match."
    )
    step_up_required = models.BooleanField(
        default=False, help_text="Approvers must enter a TOTP code within the last minutes to decide."
    )
    break_glass_allowed = models.BooleanField(default=False)
    pending_timeout = models.DurationField(default=timedelta(hours=24))
    target_name = models.CharField(
        max_length=200,
        blank=True,
        help_text="What the connector grants at the target, e.g. the managed PostgreSQL role (default: the role name).",
    )
    # A real ticket (docs/INTEGRATIONS.md): it must exist and be open at request time, optionally in
    # these projects / of these types / assigned to the requester; ticket-bound grants end when it closes.
    ticket_provider = models.ForeignKey(
        "accessgov.TicketProvider",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="roles",
        help_text="Check tickets against this provider (empty: the pattern alone).",
    )
    ticket_projects = models.CharField(
        max_length=200,
        blank=True,
        help_text="Comma-separated project keys the ticket must be in (GitHub: owner/repo; empty: any).",
    )
    ticket_issue_types = models.CharField(
        max_length=200,
        blank=True,
        help_text="Comma-separated issue types allowed (GitHub: labels, one of them must be on the issue; empty: any).",
    )
    ticket_assigned_to_requester = models.BooleanField(
        default=False,
        help_text="The ticket must be assigned to the requester (Jira: matched by email; GitHub: an "
        "assignee's login equals the AccessGov username).",
    )
    ticket_bound = models.BooleanField(default=False, help_text="The grant ends when its ticket closes.")

    class AccessLevel(models.TextChoices):
        UNDECLARED = "", "Not declared"
        READ_ONLY = "read_only", "Read-only (reads data)"
        READ_WRITE = "read_write", "Read-write (reads and changes data, not the schema)"
        ADMIN = "admin", "Admin (schema and privileges)"

    access_level = models.CharField(
        max_length=12,
        choices=AccessLevel.choices,
        blank=True,
        default="",
        help_text="What the role is for: activity beyond it (writes under read-only, DDL or privilege changes "
        "under read-only or read-write) is a finding someone must sign off (docs/ACTIVITY.md).",
    )

    class Meta:
        ordering = ["system__name", "name"]
        permissions = [("approve_role", "May approve requests for this role")]
        constraints = [
            models.UniqueConstraint(fields=["system", "name"], name="role_unique_name_per_system"),
            models.CheckConstraint(
                condition=models.Q(default_duration__gt=timedelta(0)), name="role_default_duration_positive"
            ),
            models.CheckConstraint(
                condition=models.Q(default_duration__lte=models.F("max_duration")),
                name="role_default_within_max",
            ),
            models.CheckConstraint(condition=models.Q(approvals_required__lte=5), name="role_approvals_at_most_5"),
        ]

    def __str__(self) -> str:
        return f"{self.system.name} · {self.name}"

    @property
    def target(self) -> str:
        return self.target_name or self.name


class AutoApprovalRule(models.Model):
    """A rule under which a request for the role is approved without a person.

    Every condition that is set must hold (requester in the group; request made inside the UTC time
    window; role no riskier than ``max_risk_tier``); a request is auto-approved when any rule matches.
    """

    role = models.ForeignKey(Role, on_delete=models.CASCADE, related_name="auto_approval_rules")
    name = models.CharField(max_length=100)
    requester_group = models.ForeignKey(
        "auth.Group", null=True, blank=True, on_delete=models.CASCADE, help_text="e.g. the on-call group"
    )
    window_start = models.TimeField(null=True, blank=True, help_text="UTC")
    window_end = models.TimeField(null=True, blank=True, help_text="UTC; may be earlier than the start (overnight)")
    max_risk_tier = models.CharField(max_length=10, choices=Role.RiskTier.choices, blank=True)
    # Incident-aware conditions (docs/INTEGRATIONS.md), checked against the on-call provider at request
    # time; a provider that cannot answer makes the rule not match (the request goes to people).
    oncall_provider = models.ForeignKey(
        "accessgov.OnCallProvider", null=True, blank=True, on_delete=models.PROTECT, related_name="rules"
    )
    oncall_escalation_policy = models.CharField(
        max_length=50, blank=True, help_text="The requester is on call now for this escalation policy id…"
    )
    oncall_max_level = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)], help_text="…at this escalation level or lower."
    )
    incident_service = models.CharField(
        max_length=50, blank=True, help_text="The requester is assigned to an open incident of this service id…"
    )
    incident_min_priority = models.CharField(
        max_length=10, blank=True, help_text="…of at least this priority (P1 is the highest; empty: any)."
    )

    class Meta:
        ordering = ["role", "name"]
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(window_start__isnull=True) & models.Q(window_end__isnull=True))
                | (models.Q(window_start__isnull=False) & models.Q(window_end__isnull=False)),
                name="autorule_window_both_or_neither",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.role}: {self.name}"


class EligibilityQuerySet(models.QuerySet):
    def active(self, now):
        """Eligibility in force at ``now`` (started, and not past its end date)."""
        return self.filter(models.Q(starts_at__lte=now), models.Q(ends_at__isnull=True) | models.Q(ends_at__gt=now))


class Eligibility(models.Model):
    """Who (a user, or every member of a group) may request a role, until its end date."""

    role = models.ForeignKey(Role, on_delete=models.CASCADE, related_name="eligibilities")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="eligibilities"
    )
    group = models.ForeignKey(
        "auth.Group", null=True, blank=True, on_delete=models.CASCADE, related_name="eligibilities"
    )
    starts_at = models.DateTimeField(default=timezone.now)
    ends_at = models.DateTimeField(null=True, blank=True)
    reason = models.CharField(max_length=300, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    # Bookkeeping: owners were told this end date is near (cleared when a review moves the end date).
    end_reminded_at = models.DateTimeField(null=True, blank=True)

    objects = EligibilityQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "eligibilities"
        ordering = ["role", "pk"]
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(user__isnull=False) & models.Q(group__isnull=True))
                | (models.Q(user__isnull=True) & models.Q(group__isnull=False)),
                name="eligibility_user_xor_group",
            ),
            models.CheckConstraint(
                condition=models.Q(ends_at__isnull=True) | models.Q(ends_at__gt=models.F("starts_at")),
                name="eligibility_ends_after_start",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user or self.group} → {self.role}"


class AccessRequest(models.Model):
    """A request for a role for a duration. Written only by services.access_requests."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        APPROVED = "approved", "Approved"
        DENIED = "denied", "Denied"
        CANCELLED = "cancelled", "Cancelled"
        LAPSED = "lapsed", "Lapsed"

    class Kind(models.TextChoices):
        ACCESS = "access", "Access"
        EXTENSION = "extension", "Extension"
        BREAK_GLASS = "break_glass", "Break-glass"

    requester = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="access_requests")
    role = models.ForeignKey(Role, on_delete=models.PROTECT, related_name="access_requests")
    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.ACCESS)
    extends_grant = models.ForeignKey(
        "Grant", null=True, blank=True, on_delete=models.PROTECT, related_name="extension_requests"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    requested_duration = models.DurationField()
    approved_duration = models.DurationField(null=True, blank=True)
    starts_at = models.DateTimeField(null=True, blank=True, help_text="Scheduled start; empty means now.")
    justification = models.TextField()
    ticket = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    lapses_at = models.DateTimeField()
    decided_at = models.DateTimeField(null=True, blank=True)
    auto_approved_by_rule = models.CharField(max_length=100, blank=True)
    reminder_sent_at = models.DateTimeField(null=True, blank=True)
    # What the ticket provider said at submission (shown to approvers) and what binds the grant's end.
    ticket_title = models.CharField(max_length=300, blank=True)
    ticket_url = models.URLField(max_length=500, blank=True)
    ticket_provider = models.ForeignKey(
        "accessgov.TicketProvider", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    ticket_bound = models.BooleanField(default=False)
    incident_provider = models.ForeignKey(
        "accessgov.OnCallProvider", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    incident_id = models.CharField(max_length=50, blank=True, help_text="The grant ends when this incident resolves.")
    # Why automatic approval did or did not happen (a provider's answer, an outage), shown to people.
    auto_approval_note = models.TextField(blank=True)
    auto_approval_evidence = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        permissions = [("audit_access", "May see every request, grant and event (auditor)")]
        indexes = [
            models.Index(fields=["status", "lapses_at"], name="request_status_lapses"),
            models.Index(fields=["requester", "-created_at"], name="request_requester_recent"),
            models.Index(fields=["role", "status"], name="request_role_status"),
            models.Index(fields=["status", "decided_at"], name="request_status_decided"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(requested_duration__gt=timedelta(0)), name="request_duration_positive"
            ),
            models.CheckConstraint(
                condition=models.Q(approved_duration__isnull=True)
                | models.Q(approved_duration__lte=models.F("requested_duration")),
                name="request_approved_not_longer_than_requested",
            ),
            models.CheckConstraint(
                condition=models.Q(kind="extension", extends_grant__isnull=False)
                | (~models.Q(kind="extension") & models.Q(extends_grant__isnull=True)),
                name="request_extension_names_its_grant",
            ),
            models.UniqueConstraint(
                fields=["requester", "role"],
                condition=models.Q(status="pending"),
                name="request_one_pending_per_requester_role",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.requester} → {self.role} ({self.get_status_display()})"

    @property
    def is_pending(self) -> bool:
        return self.status == self.Status.PENDING


class Decision(models.Model):
    """One approver's approve/deny on a request. ``requester`` is copied so that the database itself
    refuses a self-decision; (request, approver) is unique so N approvals mean N distinct people."""

    class Outcome(models.TextChoices):
        APPROVE = "approve", "Approve"
        DENY = "deny", "Deny"

    access_request = models.ForeignKey(AccessRequest, on_delete=models.PROTECT, related_name="decisions")
    approver = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="decisions")
    requester = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    outcome = models.CharField(max_length=8, choices=Outcome.choices)
    comment = models.TextField(blank=True)
    duration = models.DurationField(null=True, blank=True, help_text="Approved duration, if shortened.")
    step_up_at = models.DateTimeField(null=True, blank=True, help_text="When the approver last entered a TOTP code.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["access_request", "approver"], name="decision_one_per_approver"),
            models.CheckConstraint(
                condition=~models.Q(approver=models.F("requester")), name="decision_not_by_requester"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.approver} {self.outcome} #{self.access_request_id}"


class GrantQuerySet(models.QuerySet):
    def active(self, now):
        """Grants that give access at ``now``: state active AND not yet expired. Every "does X have
        access?" question goes through this, so access ends at expires_at even if no worker ran."""
        return self.filter(status=Grant.Status.ACTIVE, starts_at__lte=now, expires_at__gt=now)

    def current(self):
        """Grants not yet ended in stored state (scheduled or active), whatever the clock says."""
        return self.filter(status__in=[Grant.Status.SCHEDULED, Grant.Status.ACTIVE])


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
        return f"{self.user} → {self.role} until {self.expires_at:%Y-%m-%d %H:%M}"

    def is_active_at(self, now) -> bool:
        return self.status == self.Status.ACTIVE and self.starts_at <= now < self.expires_at

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
    grant = models.ForeignKey(Grant, on_delete=models.PROTECT, related_name="outbox_items", db_constraint=False)
    action = models.CharField(max_length=10, choices=Action.choices)
    idempotency_key = models.CharField(max_length=100, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    lease_until = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    done_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=20, blank=True)
    done_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["pk"]
        indexes = [models.Index(fields=["done_at", "next_attempt_at"], name="outbox_due")]

    def __str__(self) -> str:
        return f"{self.get_action_display()} for grant #{self.grant_id}"


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


# The ledger's canonical JSON: the text of json.dumps(content, sort_keys=True, separators=(",", ":"),
# ensure_ascii=False, default=str). Every existing ledger was hashed over it: it never changes.
_canonical_json = compact_json_encoder(sort_keys=True, default=str)


@lru_cache(maxsize=16)
def _utc_isoformat(value: datetime) -> str:
    """An event time in canonical form (cached: the events of one bulk write share theirs; equal instants
    have the same text whatever their time zone)."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


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
        ]

    def __str__(self) -> str:
        return f"{self.occurred_at:%Y-%m-%d %H:%M:%S} {self.event_type} by {self.actor_label}"

    def save(self, *args, **kwargs):
        if self.pk is not None and not kwargs.get("force_insert"):
            raise ValueError("Access events are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("Access events are append-only.")

    HASHED_FIELDS = (
        "sequence",
        "occurred_at",
        "event_type",
        "actor_id",
        "actor_label",
        "client_address",
        "reason",
        "access_request_id",
        "grant_id",
        "role_id",
        "data",
    )

    _hashed_values = itemgetter(*HASHED_FIELDS)

    @classmethod
    def canonical_content(cls, values: dict) -> dict:
        """What the hash covers, from field values (a saved row, an instance, or a bulk writer's plain
        dict keyed by field name): every field, in a canonical form that survives the database."""
        content = dict(zip(cls.HASHED_FIELDS, cls._hashed_values(values), strict=True))
        content["occurred_at"] = _utc_isoformat(content["occurred_at"])
        return content

    @staticmethod
    def hash_content(content: dict, prev_hash: str) -> str:
        """The ledger's one hashing function: sha256 over prev_hash and the canonical JSON of ``content``."""
        return AccessEvent.hash_canonical(_canonical_json(content), prev_hash)

    @staticmethod
    def canonical_text(content: dict) -> str:
        return _canonical_json(content)

    @staticmethod
    def hash_canonical(text: str, prev_hash: str) -> str:
        """hash_content for a caller that also needs the canonical text (the evidence pack writes it)."""
        return hashlib.sha256(f"{prev_hash}|{text}".encode()).hexdigest()

    def content(self) -> dict:
        return self.canonical_content({name: getattr(self, name) for name in self.HASHED_FIELDS})

    def compute_hash(self, prev_hash: str) -> str:
        return self.hash_content(self.content(), prev_hash)


class JobRun(models.Model):
    """The last run of a periodic job (for /metrics and the dashboards): one row per job name."""

    name = models.CharField(max_length=50, unique=True)
    finished_at = models.DateTimeField()
    duration_seconds = models.FloatField()
    result = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return f"{self.name} at {self.finished_at:%Y-%m-%d %H:%M:%S}"


class SchedulerLease(models.Model):
    """Which scheduler process runs the expiry scheduler now (accessgov/scheduler.py): one row per
    scheduler name. The holder renews ``expires_at`` on every round; a standby takes the row over once
    it has lapsed (the holder died or hung) or was released (the holder stopped). Written only by
    services.scheduler. Exclusivity is for efficiency, not correctness: every transition it runs is
    set-based and skip-locked, and every outbox item leased, so two holders at once do nothing twice."""

    name = models.CharField(max_length=50, unique=True)
    holder = models.CharField(max_length=200, blank=True)
    acquired_at = models.DateTimeField(null=True, blank=True)
    renewed_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name}: {self.holder or 'nobody'}"


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


class ReviewCampaign(models.Model):
    """A periodic certification of access in scope (eligibilities, and grants active for too long).
    Written only by services.reviews; immutable once closed."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        CLOSED = "closed", "Closed"

    class NoResponse(models.TextChoices):
        REVOKE = "revoke", "Revoke what nobody confirmed"
        KEEP_AND_FLAG = "keep_and_flag", "Keep it, and flag it in the evidence"

    name = models.CharField(max_length=200)
    # The period a scheduled campaign covers ("2026-Q4"); empty for campaigns opened by hand. The
    # database allows one campaign per period, so two beats (or a retried task) cannot open it twice.
    period = models.CharField(max_length=20, blank=True, default="")
    systems = models.ManyToManyField(System, related_name="review_campaigns")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    no_response = models.CharField(max_length=20, choices=NoResponse.choices, default=NoResponse.REVOKE)
    keep_for = models.DurationField(default=timedelta(days=100), help_text="New end date of kept eligibility.")
    long_grant_threshold = models.DurationField(default=timedelta(days=7))
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    due_at = models.DateTimeField(help_text="Reviewers' deadline.")
    grace = models.DurationField(
        default=timedelta(days=2), help_text="Overdue period after the due date before the campaign closes itself."
    )
    start_reminded_at = models.DateTimeField(null=True, blank=True)
    half_reminded_at = models.DateTimeField(null=True, blank=True)
    overdue_reminded_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    closed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(due_at__gt=models.F("created_at")), name="campaign_due_after_start"
            ),
            models.UniqueConstraint(fields=["period"], condition=~models.Q(period=""), name="campaign_one_per_period"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def closes_at(self):
        """When the sweep closes the campaign if no auditor has: the due date plus the grace period."""
        return self.due_at + self.grace

    def is_overdue_at(self, now) -> bool:
        return self.status == self.Status.OPEN and now >= self.due_at


class ReviewItem(models.Model):
    """One thing to certify: an eligibility, or a grant active longer than the threshold."""

    class Decision(models.TextChoices):
        KEEP = "keep", "Keep"
        REVOKE = "revoke", "Revoke"

    campaign = models.ForeignKey(ReviewCampaign, on_delete=models.PROTECT, related_name="items")
    eligibility = models.ForeignKey(Eligibility, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    grant = models.ForeignKey(Grant, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    role = models.ForeignKey(Role, on_delete=models.PROTECT, related_name="+")
    subject_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    subject_group = models.ForeignKey("auth.Group", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="review_items"
    )
    decision = models.CharField(max_length=10, choices=Decision.choices, blank=True)
    comment = models.TextField(blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    applied_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=20, blank=True, help_text="kept, revoked, or kept_flagged")

    class Meta:
        ordering = ["campaign", "role", "pk"]
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(eligibility__isnull=False) & models.Q(grant__isnull=True))
                | (models.Q(eligibility__isnull=True) & models.Q(grant__isnull=False)),
                name="review_item_eligibility_xor_grant",
            ),
            models.CheckConstraint(
                condition=~models.Q(decided_by=models.F("subject_user")), name="review_item_not_decided_by_subject"
            ),
            models.CheckConstraint(
                condition=~models.Q(decision="revoke") | ~models.Q(comment=""), name="review_revoke_needs_comment"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.subject_user or self.subject_group} on {self.role}"


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
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    lease_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    def __str__(self) -> str:
        return self.key


class ApiToken(models.Model):
    """A bearer credential for the REST API. Only the sha256 of the secret is stored; the secret is
    shown once, when made. Personal tokens are made by their user in the portal (after OTP); service
    tokens are made by admins for a service account and may be limited to some roles. Either kind acts
    with its user's rights, narrowed to its ``scopes`` (and ``roles``, when any are set).
    Written only by services.tokens (``last_used_*`` is bookkeeping, updated at most once a minute)."""

    class Kind(models.TextChoices):
        PERSONAL = "personal", "Personal"
        SERVICE = "service", "Service account"

    class Scope(models.TextChoices):
        REQUESTS_READ = "requests:read", "Read own requests"
        REQUESTS_CREATE = "requests:create", "Request access"
        REQUESTS_CANCEL = "requests:cancel", "Cancel own pending requests"
        GRANTS_READ = "grants:read", "Read grants"
        GRANTS_RELEASE = "grants:release", "Release own grants"
        DECISIONS_READ = "decisions:read", "Read the approval queue"
        DECISIONS_DECIDE = "decisions:decide", "Approve or deny requests"
        CATALOG_READ = "catalog:read", "Read systems, roles and eligibility"
        EVENTS_READ = "events:read", "Read access events (auditors)"
        SCIM_PROVISION = "scim:provision", "Provision users and groups over SCIM (identity provider only)"
        EVIDENCE_READ = "evidence:read", "Read and download evidence packs (auditors)"
        EVIDENCE_BUILD = "evidence:build", "Build evidence packs (auditors)"
        ACTIVITY_WRITE = "activity:write", "Report activity (service accounts: log shippers, target tooling)"

    SECRET_PREFIX = "agv_"  # noqa: S105 (the public prefix of every secret, not a secret)

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.PERSONAL)
    name = models.CharField(max_length=100, help_text="What the token is for, e.g. the pipeline that uses it.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    display_prefix = models.CharField(max_length=16, editable=False, help_text="The secret's first characters.")
    scopes = models.JSONField(default=list, blank=True, help_text="Allowed actions, e.g. requests:create.")
    roles = models.ManyToManyField(
        Role, blank=True, related_name="+", help_text="Only these roles; empty means every role the user may use."
    )
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    expires_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_used_address = models.GenericIPAddressField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(expires_at__gt=models.F("created_at")), name="api_token_expires_after_creation"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.display_prefix}…)"

    def is_usable_at(self, now) -> bool:
        return self.revoked_at is None and now < self.expires_at

    def allows(self, scope: str) -> bool:
        return scope in self.scopes


class ChangeRequest(models.Model):
    """A proposed change to policy — a role's policy, an auto-approval rule, an eligibility granted in the
    admin, a system's connector settings — applied only when a second admin approves it (four-eyes).
    Written only by services.changes. ``changes`` is what people see (secrets masked); ``payload`` is
    what gets applied; ``secret_payload`` holds a new connector secret until the decision, then is wiped."""

    class Kind(models.TextChoices):
        ROLE = "role", "Role policy"
        AUTO_APPROVAL_RULE = "auto_approval_rule", "Auto-approval rule"
        ELIGIBILITY = "eligibility", "Eligibility"
        SYSTEM = "system", "Connector settings"
        OBJECT_PERMISSION = "object_permission", "Who approves or owns"
        USER_RIGHTS = "user_rights", "Admin rights, groups and permissions of an account"
        GROUP_PERMISSIONS = "group_permissions", "Permissions of a group"
        SERVICE_ACCOUNT = "service_account", "New service account"
        SERVICE_TOKEN = "service_token", "New service-account token"
        IDENTITY_PROVIDER = "identity_provider", "Identity provider (sign-in and SCIM)"
        ONCALL_PROVIDER = "oncall_provider", "On-call provider"
        TICKET_PROVIDER = "ticket_provider", "Ticket provider"
        SLACK_WORKSPACE = "slack_workspace", "Slack workspace"
        OIDC_TRUST_POLICY = "oidc_trust_policy", "OIDC trust policy"

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting for a second admin"
        APPLIED = "applied", "Approved and applied"
        REJECTED = "rejected", "Rejected"
        WITHDRAWN = "withdrawn", "Withdrawn"

    kind = models.CharField(max_length=20, choices=Kind.choices)
    target_id = models.PositiveBigIntegerField(null=True, blank=True, help_text="Empty: the change creates it.")
    summary = models.CharField(max_length=300)
    changes = models.JSONField(default=dict)
    payload = models.JSONField(default=dict)
    secret_payload = models.TextField(blank=True)
    beneficiary = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    proposed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    proposed_at = models.DateTimeField(default=timezone.now)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    comment = models.TextField(blank=True)
    applied_target_id = models.PositiveBigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-proposed_at"]
        constraints = [
            # Four eyes: whoever approves or rejects is not who proposed (withdrawal is the proposer's).
            models.CheckConstraint(
                condition=models.Q(decided_by__isnull=True)
                | models.Q(status="withdrawn")
                | ~models.Q(decided_by=models.F("proposed_by")),
                name="change_not_decided_by_proposer",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.summary}"


class EvidencePack(models.Model):
    """One signed evidence bundle for a period and a scope (docs/EVIDENCE.md): populations, control map,
    auditor sample, summary, ledger extract and a signed manifest, in one ZIP file under EVIDENCE_DIR.
    Written only by services.evidence; ``progress``/``step`` are bookkeeping written while it builds."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        BUILDING = "building", "Building"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    class Schedule(models.TextChoices):
        MONTHLY = "monthly", "Monthly"
        QUARTERLY = "quarterly", "Quarterly"

    since = models.DateField(help_text="First day of the period (UTC).")
    until = models.DateField(help_text="Last day of the period (UTC, inclusive).")
    systems = models.ManyToManyField(System, blank=True, related_name="+", help_text="Empty: every system.")
    schedule = models.CharField(max_length=10, choices=Schedule.choices, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0)
    step = models.CharField(max_length=200, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    sample_seed = models.CharField(max_length=40, blank=True)
    file_name = models.CharField(max_length=200, blank=True)
    file_size = models.PositiveBigIntegerField(null=True, blank=True)
    file_sha256 = models.CharField(max_length=64, blank=True)
    manifest_sha256 = models.CharField(max_length=64, blank=True)
    key_fingerprint = models.CharField(max_length=100, blank=True)
    ledger_head_sequence = models.PositiveBigIntegerField(null=True, blank=True)
    ledger_head_hash = models.CharField(max_length=64, blank=True)
    summary = models.JSONField(default=dict, blank=True, help_text="Row counts, control results, ledger proof.")
    error = models.TextField(blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    delivered_to = models.CharField(max_length=500, blank=True)
    delivery_error = models.TextField(blank=True)
    delivery_claimed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.CheckConstraint(condition=models.Q(until__gte=models.F("since")), name="evidence_period_ordered"),
            # Two beats, or a retried task, never make the same scheduled pack twice.
            models.UniqueConstraint(
                fields=["schedule", "since", "until"],
                condition=~models.Q(schedule=""),
                name="evidence_one_per_schedule",
            ),
        ]

    def __str__(self) -> str:
        return f"Evidence pack #{self.pk} {self.since}..{self.until}"

    @property
    def in_progress(self) -> bool:
        return self.status in (self.Status.QUEUED, self.Status.BUILDING)


# Identity from the company's IdP (issue 20): models of this app kept in their own module.
from accessgov.identity.models import (  # noqa: E402, F401 (re-exported)
    ExternalIdentity,
    IdentityGroup,
    IdentityProvider,
    IdentityProviderMFA,
)

# Integration settings and bookkeeping (docs/INTEGRATIONS.md) live in their own module.
from accessgov.integrations.models import (  # noqa: E402
    MAX_OIDC_TOKEN_LIFETIME,
    OidcTokenUse,
    OidcTrustPolicy,
    OnCallProvider,
    SlackLinkCode,
    SlackMessage,
    SlackRequestSeen,
    SlackUserLink,
    SlackWorkspace,
    TicketProvider,
)

__all_integrations__ = (
    MAX_OIDC_TOKEN_LIFETIME,
    OidcTokenUse,
    OidcTrustPolicy,
    OnCallProvider,
    SlackLinkCode,
    SlackMessage,
    SlackRequestSeen,
    SlackUserLink,
    SlackWorkspace,
    TicketProvider,
)

# Activity evidence (issue 17) lives in its own module; importing it here registers its models with the app
# and lets callers import them from accessgov.models like every other model.
from accessgov.models_activity import (  # noqa: E402, F401
    ActivityCaptureState,
    ActivityFinding,
    ActivityIngestBatch,
    ActivityRecord,
    ActivitySeal,
    GrantActivity,
)
