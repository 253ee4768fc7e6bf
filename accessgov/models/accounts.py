"""People and machine identities: the user model (session stamp, service accounts)."""

import secrets

from django.conf import settings
from django.contrib.auth.models import AbstractUser
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

    # Issue 18 (everyday use): the person's own time zone (an IANA name; empty: UTC until the browser
    # fills it), read by the time-zone middleware from this row, which the request has loaded already.
    time_zone = models.CharField(
        max_length=64, blank=True, help_text="IANA time zone (e.g. Europe/Berlin) times are shown in; empty: UTC."
    )
    # {"<notification category>": {"email": bool, "slack": bool}}; a category not named is on.
    notification_preferences = models.JSONField(default=dict, blank=True, editable=False)
    # Inbox read mark: every "what happened" item up to this ledger sequence counts as read.
    inbox_read_through = models.PositiveBigIntegerField(default=0, editable=False)

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
