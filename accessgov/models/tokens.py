"""API tokens (personal and service)."""

from django.conf import settings
from django.db import models
from django.utils import timezone

from accessgov.models.catalog import Role


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
        verbose_name = "API token"
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
