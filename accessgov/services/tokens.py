"""API tokens: make (the secret is returned once), revoke, and authenticate a presented secret.

Only the sha256 of a secret is stored. A secret looks like ``agv_p_<43 url-safe chars>`` (``agv_s_``
for service accounts) so secret scanners and people recognise it. Making a personal token and revoking
any token each record an access event in their transaction (token.created, token.revoked: the token's id,
name, kind, scopes, expiry — never the secret); a service token is made by an approved four-eyes change
(its change.applied event) or by an OIDC exchange (token.oidc_exchanged). What a token *does* is recorded
in each AccessEvent it causes (``data["via"]``, see services.events.acting_via).
"""

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction

from accessgov import clock, permissions
from accessgov.exceptions import NotAuthorized, PolicyViolation, TransitionNotAllowed
from accessgov.models import AccessEvent, ApiToken, Role, User
from accessgov.services.events import event_record

Scope = ApiToken.Scope
PERSONAL_MAX_LIFETIME = timedelta(days=366)
SERVICE_MAX_LIFETIME = timedelta(days=366)
LAST_USED_RESOLUTION = timedelta(minutes=1)
# Provisioning is an identity provider's, never a person's: a token that may provision has no other scope.
MACHINE_ONLY_SCOPES = {Scope.SCIM_PROVISION.value}
# Scopes only service tokens carry: activity reports are evidence about people, never made by the person;
# provisioning is an identity provider's.
SERVICE_ONLY_SCOPES = {Scope.ACTIVITY_WRITE.value, *MACHINE_ONLY_SCOPES}
# Scopes a personal token gets when its owner does not pick: everything a person does.
PERSONAL_DEFAULT_SCOPES = [s.value for s in Scope if s.value not in SERVICE_ONLY_SCOPES]


def offered_token_scopes(user: User) -> list[str]:
    """The scopes a person is offered for a personal token: what a person's token can carry, less what
    this person cannot do now (requesting without a role to request, the approval queue without a role to
    decide, the ledger and evidence packs without being an auditor). A token never does more than its owner may at the time of each
    call, whatever it carries; this keeps the form to what would work."""
    cannot: set[str] = set()
    if not permissions.eligible_roles(user, clock.now()).exists():
        cannot.add(Scope.REQUESTS_CREATE.value)
    if not permissions.decidable_role_ids(user):
        cannot |= {Scope.DECISIONS_READ.value, Scope.DECISIONS_DECIDE.value}
    if not permissions.is_auditor(user):
        cannot.add(Scope.EVENTS_READ.value)
    if not permissions.can_build_evidence_pack(user):
        cannot |= {Scope.EVIDENCE_READ.value, Scope.EVIDENCE_BUILD.value}
    return [scope for scope in PERSONAL_DEFAULT_SCOPES if scope not in cannot]


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_service_secret() -> str:
    """A new service-token secret (for tokens made from a verified CI identity, services.integrations)."""
    return _new_secret(ApiToken.Kind.SERVICE)


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
    client_address: str | None = None,
) -> tuple[ApiToken, str]:
    """Make a token for ``user`` and return it with its secret (the only time the secret exists in
    clear). People make their own personal tokens; service tokens are made by staff (the admin). One
    token.created event (``token_record``: never the secret) in the same transaction.
    Raises PolicyViolation for a bad name, scope or expiry, NotAuthorized for anyone else's token."""
    now = clock.now()
    name = name.strip()
    if not name:
        raise PolicyViolation("Give the token a name that says where it is used.")
    if kind == ApiToken.Kind.SERVICE:
        raise NotAuthorized(
            "Service-account tokens are made through a four-eyes change (admin → API tokens), never directly."
        )
    if actor.pk != user.pk:
        raise NotAuthorized("People make their own personal tokens.")
    if user.is_service_account:
        raise PolicyViolation("A service account has no personal tokens.")
    _validate_expiry(expires_at, now, PERSONAL_MAX_LIFETIME)
    scopes = _clean_scopes(PERSONAL_DEFAULT_SCOPES if scopes is None else scopes)
    if MACHINE_ONLY_SCOPES & set(scopes):
        raise PolicyViolation("Provisioning (scim:provision) is for an identity provider's service token only.")
    if SERVICE_ONLY_SCOPES & set(scopes):
        raise PolicyViolation("Activity is reported by service accounts: a personal token cannot carry activity:write.")
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
        event_record(
            AccessEvent.Type.TOKEN_CREATED,
            actor=actor,
            client_address=client_address,
            reason=f"API token {token.name} created",
            data=token_record(token, role_ids=sorted(r.pk for r in roles or [])),
        )
    return token, secret


def token_record(token: ApiToken, **extra) -> dict:
    """What the ledger says about a token it made or ended: never its secret or the secret's hash."""
    return {
        "token_id": token.pk,
        "name": token.name,
        "kind": token.kind,
        "user_id": token.user_id,
        "display_prefix": token.display_prefix,
        "scopes": list(token.scopes),
        "expires_at": token.expires_at.isoformat(),
        **extra,
    }


def _validate_expiry(expires_at: datetime, now: datetime, lifetime: timedelta) -> None:
    if expires_at <= now:
        raise PolicyViolation("The expiry must be in the future.")
    if expires_at - now > lifetime:
        raise PolicyViolation(f"A token may live at most {lifetime.days} days.")


def service_account_problem(user: User) -> str | None:
    """Why ``user`` cannot hold a service token, or None: only a dedicated, active service account with
    no usable password and no authenticator (so no person can act as it in the portal)."""
    from django_otp import devices_for_user

    if not user.is_service_account:
        return f"{user.get_username()} is a person, not a service account: service tokens never act as a person."
    if not user.is_active:
        return f"{user.get_username()} is deactivated."
    if user.has_usable_password() or next(devices_for_user(user, confirmed=None), None) is not None:
        return f"{user.get_username()} has a password or an authenticator: it is not a pure service account."
    return None


@dataclass(frozen=True)
class ServiceTokenDraft:
    """A service token proposed but not yet approved: what the approval will create. The secret is shown
    to the proposer once, now; only its hash is kept (in the change's payload)."""

    payload: dict
    secret: str


def service_token_draft(
    *, user: User, name: str, expires_at: datetime, scopes: list[str], role_ids: list[int]
) -> ServiceTokenDraft:
    """Validate a service token for a four-eyes proposal (services.changes) and make its secret.
    Raises PolicyViolation."""
    now = clock.now()
    name = name.strip()
    if not name:
        raise PolicyViolation("Give the token a name that says where it is used.")
    problem = service_account_problem(user)
    if problem:
        raise PolicyViolation(problem)
    _validate_expiry(expires_at, now, SERVICE_MAX_LIFETIME)
    scopes = _clean_scopes(scopes)
    if MACHINE_ONLY_SCOPES & set(scopes) and (len(scopes) > 1 or role_ids):
        raise PolicyViolation("A SCIM token (scim:provision) carries that scope alone, for no role.")
    secret = _new_secret(ApiToken.Kind.SERVICE)
    payload = {
        "user_id": user.pk,
        "name": name,
        "scopes": scopes,
        "role_ids": sorted(role_ids),
        "expires_at": expires_at.isoformat(),
        "key_hash": hash_secret(secret),
        "display_prefix": secret[:10],
    }
    return ServiceTokenDraft(payload=payload, secret=secret)


def service_token_create_from(payload: dict, *, created_by: User) -> ApiToken:
    """Create the approved service token a draft describes (called by services.changes when a second
    admin approves it, in its transaction). Raises PolicyViolation when it can no longer be made."""
    user = User.objects.select_for_update(no_key=True, of=("self",)).get(pk=payload["user_id"])
    problem = service_account_problem(user)
    if problem:
        raise PolicyViolation(problem)
    expires_at = datetime.fromisoformat(payload["expires_at"])
    if expires_at <= clock.now():
        raise PolicyViolation("The token's expiry has passed since it was proposed; propose it again.")
    token = ApiToken.objects.create(
        user=user,
        kind=ApiToken.Kind.SERVICE,
        name=payload["name"],
        key_hash=payload["key_hash"],
        display_prefix=payload["display_prefix"],
        scopes=payload["scopes"],
        created_by=created_by,
        expires_at=expires_at,
    )
    if payload["role_ids"]:
        token.roles.set(Role.objects.filter(pk__in=payload["role_ids"]))
    return token


def api_token_revoke(
    actor: User,
    token_id: int,
    *,
    authorized: bool = False,
    client_address: str | None = None,
    reason: str = "",
) -> ApiToken:
    """The one way a token ends early. Its user may revoke it, and so may staff; ``authorized``: the
    caller is a service that already authorized ending it (``user_deactivate``, for the account's
    tokens; an applied account recovery). Locks the token; one token.revoked event in the same transaction
    (``reason``: why, when a service ends it). Raises TransitionNotAllowed when it is already revoked,
    NotAuthorized for anyone else."""
    with transaction.atomic():
        token = ApiToken.objects.select_for_update(of=("self",)).get(pk=token_id)
        if not authorized and token.user_id != actor.pk and not actor.is_staff:
            raise NotAuthorized("You may only revoke your own tokens.")
        if token.revoked_at is not None:
            raise TransitionNotAllowed("This token was already revoked.")
        token.revoked_at = clock.now()
        token.revoked_by = actor
        token.save(update_fields=["revoked_at", "revoked_by"])
        event_record(
            AccessEvent.Type.TOKEN_REVOKED,
            actor=actor,
            client_address=client_address,
            reason=reason or f"API token {token.name} revoked",
            data=token_record(token),
        )
        return token


def api_token_revoke_all(actor: User, user: User, *, reason: str = "", client_address: str | None = None) -> list[int]:
    """End every usable token of ``user`` now, each through ``api_token_revoke`` (with its token.revoked
    event; their account is being deactivated or recovered; the caller holds the account's lock and has
    authorized it). Returns the ids of the tokens revoked, in id order."""
    revoked = []
    for token_id in (
        ApiToken.objects.filter(user=user, revoked_at__isnull=True).order_by("pk").values_list("pk", flat=True)
    ):
        try:
            api_token_revoke(actor, token_id, authorized=True, reason=reason, client_address=client_address)
        except TransitionNotAllowed:
            continue  # revoked meanwhile by its user
        revoked.append(token_id)
    return revoked


@dataclass(frozen=True)
class Authentication:
    token: ApiToken | None
    code: str = ""
    message: str = ""


def api_token_authenticate(secret: str, *, client_address: str | None, now: datetime | None = None) -> Authentication:
    """Find the token a presented secret belongs to and check it may be used now (not revoked, not
    expired, its user active). Notes the last use (at most once a minute, a bookkeeping update)."""
    now = now or clock.now()
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
    if token.kind == ApiToken.Kind.SERVICE and (not token.user.is_service_account or token.user.has_usable_password()):
        return Authentication(None, "token_invalid", "A service token works only for a pure service account.")
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now, last_used_address=client_address)
        token.last_used_at, token.last_used_address = now, client_address
    return Authentication(token)


def token_label(token: ApiToken) -> dict:
    """How a token is named in the access events it causes."""
    return {"api_token_id": token.pk, "api_token_name": token.name, "api_token_kind": token.kind}
