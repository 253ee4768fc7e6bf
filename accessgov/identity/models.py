"""Identity providers, the link between an AccessGov account and a person at an identity provider, the
groups an identity provider manages, and the session "device" that stands for the IdP's proven MFA.

Imported by ``accessgov.models`` (the app's models module), so these are models of the accessgov app.
Written only by ``accessgov.services.identity`` and ``accessgov.services.changes`` (settings are
four-eyed).
"""

import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone
from django_otp.models import Device, DeviceManager

CLAIM_NAME = RegexValidator(r"^[A-Za-z0-9_.:-]{1,100}$", "A claim name: letters, digits and _ . : - only.")


class IdentityProvider(models.Model):
    """A company identity provider (Okta, Entra ID, Google Workspace, Keycloak, any OIDC issuer): sign-in
    through OIDC (discovery from ``issuer``, code flow with PKCE, state and nonce) and, optionally, SCIM
    provisioning by one service account's token. Every field is changed through a four-eyes change
    (services.changes), except switching something off, which applies at once. The client secret is
    write-only: it is never shown back, in the admin, the change diff or the events."""

    class Kind(models.TextChoices):
        OKTA = "okta", "Okta"
        ENTRA = "entra", "Microsoft Entra ID"
        GOOGLE = "google", "Google Workspace"
        KEYCLOAK = "keycloak", "Keycloak"
        OTHER = "other", "Other OpenID Connect issuer"

    slug = models.SlugField(max_length=40, unique=True, help_text="In the sign-in and callback URLs, e.g. okta.")
    name = models.CharField(max_length=100, help_text='Shown on the sign-in page: "Sign in with <name>".')
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.OTHER)
    is_enabled = models.BooleanField(default=False, verbose_name="sign-in enabled")
    issuer = models.URLField(
        max_length=500,
        help_text="The issuer URL exactly as the provider names it (its discovery document is read from "
        "<issuer>/.well-known/openid-configuration and must name the same issuer).",
    )
    client_id = models.CharField(max_length=255)
    client_secret = models.TextField(blank=True)
    scopes = models.CharField(max_length=200, default="openid email profile")
    subject_claim = models.CharField(
        max_length=100,
        default="sub",
        validators=[CLAIM_NAME],
        help_text='The claim that names a person for good (never an e-mail address): "sub"; for Entra ID "oid".',
    )
    username_claim = models.CharField(
        max_length=100,
        default="preferred_username",
        validators=[CLAIM_NAME],
        help_text="The claim a new account's username is made from (just-in-time creation).",
    )
    jit_create_users = models.BooleanField(
        default=False,
        verbose_name="create accounts at first sign-in",
        help_text="Off: only people provisioned by SCIM (or who linked their own account) can sign in.",
    )
    accept_idp_mfa = models.BooleanField(
        default=False,
        verbose_name="accept the provider's MFA instead of the portal's TOTP",
        help_text="Only when the ID token's amr or acr claim proves it (values below); otherwise the TOTP "
        "step is asked as usual. Step-up actions always need the portal's TOTP.",
    )
    mfa_amr_values = models.CharField(
        max_length=200,
        default="mfa otp hwk swk",
        blank=True,
        help_text="Space-separated amr values (RFC 8176) any one of which proves MFA.",
    )
    mfa_acr_values = models.CharField(
        max_length=300, blank=True, help_text="Space-separated acr values any one of which proves MFA."
    )
    scim_enabled = models.BooleanField(default=False, verbose_name="SCIM provisioning enabled")
    scim_service_account = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="scim_provider",
        limit_choices_to={"is_service_account": True},
        help_text="The service account whose token (scope scim:provision) the provider's SCIM client uses.",
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(self.issuer or "")
        insecure_ok = getattr(settings, "OIDC_ALLOW_HTTP_ISSUER", False)
        if parts.scheme != "https" and not (insecure_ok and parts.scheme == "http"):
            raise ValidationError({"issuer": "The issuer must be an https:// URL."})
        if parts.query or parts.fragment:
            raise ValidationError({"issuer": "The issuer has no query or fragment."})
        if "openid" not in self.scopes.split():
            raise ValidationError({"scopes": 'The scopes must include "openid".'})
        if self.scim_service_account_id and not self.scim_service_account.is_service_account:
            raise ValidationError({"scim_service_account": "Choose a service account."})
        if self.scim_enabled and not self.scim_service_account_id:
            raise ValidationError({"scim_service_account": "SCIM needs the service account its token belongs to."})

    def amr_proving_mfa(self) -> set[str]:
        return set(self.mfa_amr_values.split())

    def acr_proving_mfa(self) -> set[str]:
        return set(self.mfa_acr_values.split())


class ExternalIdentityQuerySet(models.QuerySet):
    def with_scim_user_name(self, user_name: str) -> "ExternalIdentityQuerySet":
        """The links whose SCIM userName (``ExternalIdentity.scim_user_name``) is ``user_name``, case-insensitively:
        the provider's own name for the person, or — on a link made at sign-in that has none yet — the account's
        username. A provider looks a person up by the userName it was shown (Okta does, before a create)."""
        return self.filter(
            models.Q(user_name__iexact=user_name) | models.Q(user_name="", user__username__iexact=user_name)
        )


class ExternalIdentity(models.Model):
    """The link between an AccessGov account and a person at an identity provider. Sign-in finds the
    account by ``(provider, subject)`` only — never by e-mail. SCIM finds it by ``scim_id`` (ours, random:
    an id says nothing about other accounts). ``subject`` is the SCIM ``externalId`` for provisioned
    people (the provider sends its own stable id there), or the OIDC subject for accounts created or
    linked at sign-in."""

    provider = models.ForeignKey(IdentityProvider, on_delete=models.PROTECT, related_name="identities")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="external_identities")
    # NULL, not "": a provisioned person without externalId has no subject yet, and NULLs stay unique.
    subject = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    scim_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    user_name = models.CharField(max_length=255, blank=True, help_text="The provider's userName for the person.")
    provisioned_by_scim = models.BooleanField(default=False)
    deactivated_by_idp = models.BooleanField(
        default=False,
        help_text="The account was deactivated by this provider (SCIM): only then may it reactivate it.",
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    last_sign_in_at = models.DateTimeField(null=True, blank=True)

    objects = ExternalIdentityQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "external identities"
        constraints = [
            models.UniqueConstraint(fields=["provider", "user"], name="identity_one_link_per_provider"),
            models.UniqueConstraint(
                fields=["provider", "subject"], condition=models.Q(subject__isnull=False), name="identity_subject"
            ),
            models.UniqueConstraint(
                fields=["provider", "user_name"], condition=~models.Q(user_name=""), name="identity_user_name"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.provider.slug}:{self.subject or self.user_name}"

    @property
    def scim_user_name(self) -> str:
        """The userName SCIM shows the provider: its own name for the person, or — a link its owner made at sign-in
        has none until the provider sends one — the account's username. ``with_scim_user_name`` finds it by this."""
        return self.user_name or self.user.username


class IdentityGroup(models.Model):
    """A group the identity provider manages through SCIM: an AccessGov group (named ``<slug>: <name>``,
    so it can never be a local group such as the auditors) whose members are the provider's. A new group
    carries no rights; what its membership gives (eligibility, approver or owner rights) is decided in
    AccessGov through four-eyes changes."""

    provider = models.ForeignKey(IdentityProvider, on_delete=models.PROTECT, related_name="groups")
    group = models.OneToOneField("auth.Group", on_delete=models.PROTECT, related_name="identity_group")
    scim_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    external_id = models.CharField(max_length=255, blank=True)
    display_name = models.CharField(max_length=120)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["provider", "display_name"], name="identity_group_name"),
        ]

    def __str__(self) -> str:
        return self.group.name


class _NeverListedManager(DeviceManager):
    """django-otp lists a user's devices (``user_has_device``, the OTP step, enrolment) through this: the
    IdP's MFA is never one of them, so it can never be chosen for a code or count as enrolled."""

    def devices_for_user(self, user, confirmed=None):
        return self.none()


class IdentityProviderMFA(Device):
    """The second factor of a session signed in through an identity provider whose ID token proved MFA
    (amr/acr), when the provider is set to accept it. django-otp's middleware finds it from the session
    (so the session counts as verified) but it verifies no code and is never listed as a device."""

    provider = models.ForeignKey(IdentityProvider, on_delete=models.CASCADE, related_name="+")

    objects = _NeverListedManager()

    class Meta:
        verbose_name = "identity provider MFA"
        constraints = [models.UniqueConstraint(fields=["user", "provider"], name="idp_mfa_one_per_provider")]

    def verify_token(self, token) -> bool:
        return False

    def verify_is_allowed(self):
        return False, {"reason": "The identity provider's MFA verifies no code."}
