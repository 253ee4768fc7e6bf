"""Integration settings and bookkeeping. Re-exported by ``accessgov.models``.

Provider settings (on-call and ticket providers, the Slack workspace, OIDC trust policies) are policy:
edited in the admin through four-eyes change requests (services.changes); their secrets are write-only.
"""

from datetime import timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone


class OnCallProvider(models.Model):
    """Where on-call shifts and incidents are read (PagerDuty first; the kind leaves room for Opsgenie and
    incident.io). People are matched by their email address."""

    class Kind(models.TextChoices):
        PAGERDUTY = "pagerduty", "PagerDuty"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.PAGERDUTY)
    base_url = models.URLField(default="https://api.pagerduty.com", help_text="The provider's REST API address.")
    api_key = models.TextField(blank=True, help_text="Read-only REST API key. Never shown back, never logged.")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        verbose_name = "on-call provider"

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if problem := self.base_url_problem():
            raise ValidationError({"base_url": problem})

    def base_url_problem(self) -> str | None:
        """PagerDuty's official client speaks https only: it refuses any other base URL, so a plain
        ``http://`` one is refused when saved (the admin form, and again when the change is applied) and
        before every call — even where INTEGRATIONS_ALLOW_PRIVATE_URLS lets the other providers use http."""
        if self.base_url and urlsplit(self.base_url).scheme != "https":
            return (
                "PagerDuty is reached over https:// only (its client refuses any other URL), "
                "even when internal addresses are allowed."
            )
        return None


class TicketProvider(models.Model):
    """Where tickets live (Jira, or GitHub Issues: ``integrations.tickets`` picks the client by kind).
    Requests for a role bound to it must name a ticket that exists and is open; ticket-bound grants end
    when it closes (signed webhook, and polling as a safety net)."""

    class Kind(models.TextChoices):
        JIRA = "jira", "Jira"
        GITHUB = "github", "GitHub Issues"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.JIRA)
    base_url = models.URLField(
        help_text="Jira: e.g. https://your-site.atlassian.net. GitHub: https://api.github.com "
        "(Enterprise Server: https://<host>/api/v3)."
    )
    username = models.CharField(
        max_length=200, blank=True, help_text="Jira: the API user's email address. GitHub: not used."
    )
    api_token = models.TextField(
        blank=True,
        help_text="Jira: the API user's token. GitHub: a fine-grained token with Issues: read. "
        "Never shown back, never logged.",
    )
    webhook_secret = models.TextField(
        blank=True,
        help_text="Secret of the signed webhook (Jira: X-Hub-Signature; GitHub: X-Hub-Signature-256). "
        "Never shown back.",
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        verbose_name = "ticket provider"

    def __str__(self) -> str:
        return self.name

    def issue_url(self, key: str) -> str:
        return f"{self.base_url.rstrip('/')}/browse/{key}"


class SlackWorkspace(models.Model):
    """A Slack app installed in one workspace: approval requests are posted to ``channel`` with
    Approve/Deny buttons; interactivity requests are verified with ``signing_secret``."""

    name = models.CharField(max_length=100, unique=True)
    team_id = models.CharField(max_length=30, unique=True, help_text="The workspace id (T…).")
    api_base_url = models.URLField(default="https://slack.com/api/", help_text="Slack's Web API address.")
    bot_token = models.TextField(blank=True, help_text="Bot token (xoxb-…). Never shown back, never logged.")
    signing_secret = models.TextField(blank=True, help_text="The app's signing secret. Never shown back.")
    channel = models.CharField(max_length=30, help_text="Channel id (C…) where approval requests are posted.")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        verbose_name = "Slack workspace"

    def __str__(self) -> str:
        return self.name


class SlackUserLink(models.Model):
    """A Slack user acting as an AccessGov user: made with a one-time code the user created in the portal
    after a fresh TOTP code. Written only by services.integrations."""

    workspace = models.ForeignKey(SlackWorkspace, on_delete=models.CASCADE, related_name="links")
    slack_user_id = models.CharField(max_length=30)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="slack_links")
    linked_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "Slack user link"
        constraints = [
            models.UniqueConstraint(fields=["workspace", "slack_user_id"], name="slack_link_one_per_slack_user"),
            models.UniqueConstraint(fields=["workspace", "user"], name="slack_link_one_per_user"),
        ]

    def __str__(self) -> str:
        return f"{self.slack_user_id} → {self.user}"


class SlackLinkCode(models.Model):
    """A one-time code linking a Slack user to the portal user who made it (only the hash is kept)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    code_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"Slack link code of {self.user}"


class SlackMessage(models.Model):
    """The Slack message that carries an approval request's buttons, kept so it can be updated for
    everyone when the request is decided anywhere."""

    access_request = models.ForeignKey("accessgov.AccessRequest", on_delete=models.CASCADE, related_name="+")
    workspace = models.ForeignKey(SlackWorkspace, on_delete=models.CASCADE, related_name="+")
    channel = models.CharField(max_length=30)
    ts = models.CharField(max_length=30)
    posted_at = models.DateTimeField(default=timezone.now)
    shown_state = models.CharField(max_length=100, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["access_request", "workspace"], name="slack_message_one_per_request"),
        ]

    def __str__(self) -> str:
        return f"Slack message for request #{self.access_request_id}"


class SlackRequestSeen(models.Model):
    """Signed Slack requests already handled (replay guard within the signature's 5-minute window)."""

    signature_hash = models.CharField(max_length=64, unique=True)
    seen_at = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self) -> str:
        return f"Slack request seen at {self.seen_at:%Y-%m-%d %H:%M:%S}"


def _default_scopes() -> list[str]:
    return ["requests:create", "requests:read", "requests:cancel", "grants:read", "grants:release"]


MAX_OIDC_TOKEN_LIFETIME = timedelta(hours=1)


class OidcTrustPolicy(models.Model):
    """Which CI identity tokens may be exchanged for a short-lived AccessGov token: the issuer, the
    audience and required claims (repository, ref, environment, workflow …) map to a service account,
    limited to some roles and scopes. Four-eyed like other policy."""

    name = models.CharField(max_length=100, unique=True)
    issuer = models.URLField(help_text="e.g. https://token.actions.githubusercontent.com")
    audience = models.CharField(max_length=200, help_text="The aud the job asks for, e.g. your portal's URL.")
    required_claims = models.JSONField(
        default=dict,
        help_text='Claims that must match exactly, e.g. {"repository": "acme/payments", "ref": "refs/heads/main", '
        '"environment": "production"}. A value ending in * matches by prefix.',
    )
    service_account = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="+",
        limit_choices_to={"is_service_account": True},
    )
    role_ids = models.JSONField(default=list, blank=True, help_text="Ids of the roles the token may use (required).")
    scopes = models.JSONField(default=_default_scopes)
    token_lifetime = models.DurationField(default=timedelta(minutes=15), help_text="At most 1 hour.")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        verbose_name = "OIDC trust policy"
        verbose_name_plural = "OIDC trust policies"

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        problems = []
        if not isinstance(self.required_claims, dict) or not self.required_claims:
            problems.append("Name at least one required claim (for GitHub: repository).")
        elif not all(isinstance(k, str) and isinstance(v, str) and v for k, v in self.required_claims.items()):
            problems.append("Required claims are names with non-empty text values.")
        if (
            not isinstance(self.role_ids, list)
            or not self.role_ids
            or not all(isinstance(i, int) for i in self.role_ids)
        ):
            problems.append("List the ids of the roles the pipeline may use.")
        if not self.token_lifetime or not timedelta(minutes=1) <= self.token_lifetime <= MAX_OIDC_TOKEN_LIFETIME:
            problems.append("The token lifetime is between 1 minute and 1 hour.")
        if self.issuer and not self.issuer.startswith("https://") and not settings.INTEGRATIONS_ALLOW_PRIVATE_URLS:
            problems.append("The issuer must be an https:// URL.")
        if problems:
            raise ValidationError(problems)


class OidcTokenUse(models.Model):
    """An identity token already exchanged (by issuer and jti): each works once."""

    policy = models.ForeignKey(OidcTrustPolicy, on_delete=models.CASCADE, related_name="+")
    issuer = models.CharField(max_length=200)
    jti = models.CharField(max_length=200)
    used_at = models.DateTimeField(default=timezone.now)
    token_expires_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["issuer", "jti"], name="oidc_token_used_once")]

    def __str__(self) -> str:
        return f"{self.issuer} {self.jti}"
