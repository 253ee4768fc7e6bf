"""AccessGov data: people, the systems they need access to, and the roles on those systems."""

import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils.crypto import salted_hmac


def new_session_stamp() -> str:
    return secrets.token_hex(16)


class User(AbstractUser):
    """A person (or, later, a service account) who signs in with a password and a TOTP device.

    ``session_stamp`` is part of the session hash: changing it (a new OTP device, deactivation)
    ends every session of the user; ``update_session_auth_hash`` keeps the current one alive.
    """

    session_stamp = models.CharField(max_length=32, default=new_session_stamp, editable=False)

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
    owners = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="owned_systems")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


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

    class Meta:
        ordering = ["system__name", "name"]
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
