"""Four-eyes changes to policy and permissions."""

from django.conf import settings
from django.db import models
from django.utils import timezone


class ChangeRequest(models.Model):
    """A proposed change to policy — a role's policy, an auto-approval rule, an eligibility granted in the
    admin, a system's connector settings — applied only when a second admin approves it (four-eyes).
    A change that only takes rights away is applied at once and recorded the same way, with
    ``payload["narrowing"]`` true (services.changes.change_record_narrowing). Written only by
    services.changes. ``changes`` is what people see (secrets masked); ``payload`` is what gets applied;
    ``secret_payload`` holds a new connector secret until the decision, then is wiped."""

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
        ACCOUNT_RECOVERY = "account_recovery", "Password or authenticator reset of a person"
        USER_IDENTITY = "user_identity", "Username or email address of a person"
        EVENT_WEBHOOK = "event_webhook", "Event webhook subscription"
        GROUP_DELETION = "group_deletion", "Group deleted (its members lose what it gave)"

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
