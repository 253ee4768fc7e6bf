"""What access can be asked for: systems, their roles, auto-approval rules, and who is eligible."""

from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from accessgov import inputs, net


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


# The shortest access anyone may ask for (policies.validate_duration); a role's durations are at least this.
MIN_REQUEST_DURATION = timedelta(minutes=5)

# A role's durations: at least a minute, at most what anything in the portal is asked for
# (inputs.MAX_DURATION, 366 days); beyond it date arithmetic such as "now + the maximum" overflows.
DURATION_BOUNDS = [
    MinValueValidator(timedelta(minutes=1), message="At least 1 minute."),
    MaxValueValidator(inputs.MAX_DURATION, message="At most 366 days."),
]


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
    default_duration = models.DurationField(default=timedelta(hours=1), validators=DURATION_BOUNDS)
    max_duration = models.DurationField(default=timedelta(hours=4), validators=DURATION_BOUNDS)
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
    pending_timeout = models.DurationField(
        default=timedelta(hours=24),
        validators=DURATION_BOUNDS,
        help_text="A request nobody decides within this long lapses.",
    )
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
        # Lists sorted by role name (the grants list): walked in name order, each role's grants by their key,
        # instead of every grant joined and sorted (50-70 ms over 100k grants, issue 22's probe).
        indexes = [models.Index(fields=["name"], name="role_name")]
        constraints = [
            models.UniqueConstraint(fields=["system", "name"], name="role_unique_name_per_system"),
            models.CheckConstraint(
                condition=models.Q(default_duration__gt=timedelta(0)), name="role_default_duration_positive"
            ),
            models.CheckConstraint(
                condition=models.Q(default_duration__lte=models.F("max_duration")),
                name="role_default_within_max",
                violation_error_message="The default duration cannot be longer than the maximum duration.",
            ),
            models.CheckConstraint(condition=models.Q(approvals_required__lte=5), name="role_approvals_at_most_5"),
        ]

    def __str__(self) -> str:
        return Role.label(self.system.name, self.name)

    @staticmethod
    def label(system_name: str, role_name: str) -> str:
        """How a role is named to people: its system's name and its own (for reads of plain values too)."""
        return f"{system_name} · {role_name}"

    def clean(self) -> None:
        """A role people can request: its default and maximum durations are at least the shortest duration a
        request may have (MIN_REQUEST_DURATION) — below it, the request form refused even the role's default."""
        short = MIN_REQUEST_DURATION
        problems = {
            name: f"At least {int(short.total_seconds() // 60)} minutes: no request may be shorter."
            for name in ("default_duration", "max_duration")
            if getattr(self, name) is not None and getattr(self, name) < short
        }
        if problems:
            raise ValidationError(problems)

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
        verbose_name = "auto-approval rule"
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
