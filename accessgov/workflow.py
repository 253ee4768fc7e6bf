"""The transition tables (pure data) and the one guard every transition service calls."""

from accessgov.exceptions import TransitionNotAllowed
from accessgov.models import AccessRequest, Grant

RequestStatus = AccessRequest.Status
GrantStatus = Grant.Status

REQUEST_TRANSITIONS: dict[str, frozenset[str]] = {
    RequestStatus.PENDING: frozenset(
        {RequestStatus.APPROVED, RequestStatus.DENIED, RequestStatus.CANCELLED, RequestStatus.LAPSED}
    ),
    RequestStatus.APPROVED: frozenset(),
    RequestStatus.DENIED: frozenset(),
    RequestStatus.CANCELLED: frozenset(),
    RequestStatus.LAPSED: frozenset(),
}

GRANT_TRANSITIONS: dict[str, frozenset[str]] = {
    GrantStatus.SCHEDULED: frozenset({GrantStatus.ACTIVE, GrantStatus.REVOKED}),
    GrantStatus.ACTIVE: frozenset({GrantStatus.EXPIRED, GrantStatus.REVOKED}),
    GrantStatus.EXPIRED: frozenset(),
    GrantStatus.REVOKED: frozenset(),
}

_TABLES = {"request": (REQUEST_TRANSITIONS, RequestStatus), "grant": (GRANT_TRANSITIONS, GrantStatus)}


def can_transition(kind: str, current: str, target: str) -> bool:
    table, _ = _TABLES[kind]
    return target in table[current]


def ensure_transition(kind: str, current: str, target: str) -> None:
    """Raise TransitionNotAllowed with a message a person understands ("already approved")."""
    if can_transition(kind, current, target):
        return
    _, labels = _TABLES[kind]
    label: str = labels(current).label.lower()
    noun = "request" if kind == "request" else "grant"
    raise TransitionNotAllowed(f"This {noun} is already {label}; it cannot be {labels(target).label.lower()} now.")
