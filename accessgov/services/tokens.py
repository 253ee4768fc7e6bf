"""API tokens: make (the secret is returned once), revoke, and authenticate a presented secret.

Only the sha256 of a secret is stored. A secret looks like ``agv_p_<43 url-safe chars>`` (``agv_s_``
for service accounts) so secret scanners and people recognise it. Creation and revocation are
recorded by django-auditlog (model changes); what a token *does* is recorded in each AccessEvent it
causes (``data["via"]``, see services.events.acting_via).
"""

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from accessgov.exceptions import NotAuthorized, PolicyViolation, TransitionNotAllowed
from accessgov.models import ApiToken, Role, User

Scope = ApiToken.Scope
PERSONAL_MAX_LIFETIME = timedelta(days=366)
SERVICE_MAX_LIFETIME = timedelta(days=366)
LAST_USED_RESOLUTION = timedelta(minutes=1)
# Scopes a personal token gets when its owner does not pick: everything a person does.
PERSONAL_DEFAULT_SCOPES = [s.value for s in Scope]


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _new_secret(kind: str) -> str:
    letter = "s" if kind == ApiToken.Kind.SERVICE else "p"
    return f"{ApiToken.SECRET_PREFIX}{letter}_{secrets.token_urlsafe(32)}"


def _clean_scopes(scopes: list[str]) -> list[str]:
    unknown = sorted(set(scopes) - set(Scope.values))
    if unknown:
        raise PolicyViolation(f"Unknown scope(s): {', '.join(unknown)}.")
    if not scopes:
        raise PolicyViolation("Choose at least one scope.")
    return [s for s in Scope.values if s in set(scopes)]


def api_token_create(
    actor: User,
    *,
    user: User,
    name: str,
    kind: str,
    expires_at: datetime,
    scopes: list[str] | None = None,
    roles: list[Role] | None = None,
) -> tuple[ApiToken, str]:
    """Make a token for ``user`` and return it with its secret (the only time the secret exists in
    clear). People make their own personal tokens; service tokens are made by staff (the admin).
    Raises PolicyViolation for a bad name, scope or expiry, NotAuthorized for anyone else's token."""
    now = timezone.now()
    name = name.strip()
    if not name:
        raise PolicyViolation("Give the token a name that says where it is used.")
    if kind == ApiToken.Kind.PERSONAL and actor.pk != user.pk:
        raise NotAuthorized("People make their own personal tokens.")
    if kind == ApiToken.Kind.SERVICE and not actor.is_staff:
        raise NotAuthorized("Only admins make service-account tokens.")
    lifetime = PERSONAL_MAX_LIFETIME if kind == ApiToken.Kind.PERSONAL else SERVICE_MAX_LIFETIME
    if expires_at <= now:
        raise PolicyViolation("The expiry must be in the future.")
    if expires_at - now > lifetime:
        raise PolicyViolation(f"A token may live at most {lifetime.days} days.")
    scopes = _clean_scopes(PERSONAL_DEFAULT_SCOPES if scopes is None else scopes)
    secret = _new_secret(kind)
    with transaction.atomic():
        token = ApiToken.objects.create(
            user=user,
            kind=kind,
            name=name,
            key_hash=hash_secret(secret),
            display_prefix=secret[:10],
            scopes=scopes,
            created_at=now,
            created_by=actor,
            expires_at=expires_at,
        )
        if roles:
            token.roles.set(roles)
    return token, secret


def api_token_revoke(actor: User, token_id: int) -> ApiToken:
    """End a token now. Its user may revoke it, and so may staff. Raises TransitionNotAllowed when
    it is already revoked, NotAuthorized for anyone else."""
    with transaction.atomic():
        token = ApiToken.objects.select_for_update(of=("self",)).get(pk=token_id)
        if token.user_id != actor.pk and not actor.is_staff:
            raise NotAuthorized("You may only revoke your own tokens.")
        if token.revoked_at is not None:
            raise TransitionNotAllowed("This token was already revoked.")
        token.revoked_at = timezone.now()
        token.revoked_by = actor
        token.save(update_fields=["revoked_at", "revoked_by"])
        return token


@dataclass(frozen=True)
class Authentication:
    token: ApiToken | None
    code: str = ""
    message: str = ""


def api_token_authenticate(secret: str, *, client_address: str | None, now: datetime | None = None) -> Authentication:
    """Find the token a presented secret belongs to and check it may be used now (not revoked, not
    expired, its user active). Notes the last use (at most once a minute, a bookkeeping update)."""
    now = now or timezone.now()
    if not secret.startswith(ApiToken.SECRET_PREFIX) or len(secret) > 200:
        return Authentication(None, "token_invalid", "That is not an AccessGov token.")
    token = ApiToken.objects.select_related("user").filter(key_hash=hash_secret(secret)).first()
    if token is None:
        return Authentication(None, "token_invalid", "Unknown token.")
    if token.revoked_at is not None:
        return Authentication(None, "token_revoked", "This token was revoked.")
    if now >= token.expires_at:
        return Authentication(None, "token_expired", "This token has expired.")
    if not token.user.is_active:
        return Authentication(None, "user_inactive", "The token's user is deactivated.")
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now, last_used_address=client_address)
        token.last_used_at, token.last_used_address = now, client_address
    return Authentication(token)


def token_label(token: ApiToken) -> dict:
    """How a token is named in the access events it causes."""
    return {"api_token_id": token.pk, "api_token_name": token.name, "api_token_kind": token.kind}
