"""The one-time link to choose a new password that an approved account recovery emails (so the admin who
proposed the recovery never knows the password).

The link carries the account's id and a token from Django's ``PasswordResetTokenGenerator`` (an HMAC of
the account's state and a timestamp, under ``SECRET_KEY``): nothing about it is stored. It works only
while the recovery's state holds: the account is active, its password is the unusable one the recovery
set, its session stamp and email address are the ones the recovery left — so choosing a password, a
later recovery, a deactivation or a changed address spends it — and for ``PASSWORD_RESET_TIMEOUT``
seconds (``ACCOUNT_RECOVERY_LINK_HOURS``)."""

from django.contrib.auth.tokens import PasswordResetTokenGenerator
from django.urls import reverse
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_decode, urlsafe_base64_encode

from accessgov.models import User


class RecoveryLinkTokens(PasswordResetTokenGenerator):
    key_salt = "accessgov.recovery.RecoveryLinkTokens"

    def _make_hash_value(self, user, timestamp) -> str:
        return f"{user.pk}|{user.password}|{user.session_stamp}|{int(user.is_active)}|{user.email}|{timestamp}"


tokens = RecoveryLinkTokens()


def awaits_password(user: User) -> bool:
    """The account is one a recovery link may still set a password for."""
    return user.is_active and not user.is_service_account and not user.has_usable_password() and bool(user.email)


def link_path(user: User) -> str:
    """The link's path (a new token each call; every one valid until the password is chosen)."""
    return reverse("accounts:recover", args=[urlsafe_base64_encode(force_bytes(user.pk)), tokens.make_token(user)])


def user_for(uidb64: str, token: str) -> User | None:
    """The account a link is for, or None when the link is malformed, tampered with, spent or expired."""
    try:
        pk = int(urlsafe_base64_decode(uidb64).decode("ascii"))
    except (ValueError, TypeError, UnicodeDecodeError, OverflowError):
        return None
    if not 0 < pk < 2**63 or len(token) > 100:
        return None
    user = User.objects.filter(pk=pk).first()
    if user is None or not awaits_password(user) or not tokens.check_token(user, token):
        return None
    return user
