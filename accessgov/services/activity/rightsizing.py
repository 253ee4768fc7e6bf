"""Right-sizing proposals from real use: one click proposes a shorter maximum duration for a role, or the
end of an eligibility nobody used. Both are ordinary four-eyed policy changes (``services.changes``): a
second admin approves them on /changes/."""

from datetime import timedelta

from accessgov import clock, permissions
from accessgov.exceptions import PolicyViolation
from accessgov.models import ChangeRequest, Eligibility, Role, User
from accessgov.services import changes as change_services

MINIMUM_MAX_DURATION = timedelta(minutes=15)


def right_sizing_propose_max_duration(
    actor: User, role_id: int, max_duration: timedelta, *, client_address: str | None = None
) -> ChangeRequest:
    """Propose ``max_duration`` (shorter than today's) as the role's maximum; the default shrinks with it
    when it would exceed it. Raises NotAuthorized (not an admin) or PolicyViolation."""
    permissions.ensure_can_propose_right_sizing(actor)
    role = Role.objects.filter(pk=role_id).first()
    if role is None:
        raise PolicyViolation("No such role.")
    if max_duration < MINIMUM_MAX_DURATION:
        raise PolicyViolation("A maximum shorter than 15 minutes is not proposed from here.")
    if max_duration >= role.max_duration:
        raise PolicyViolation(f"{role}'s maximum is already {role.max_duration}: a proposal here only shortens it.")
    role.max_duration = max_duration
    fields = ["max_duration"]
    if role.default_duration > max_duration:
        role.default_duration = max_duration
        fields.append("default_duration")
    return change_services.change_propose(
        actor, kind=ChangeRequest.Kind.ROLE, instance=role, fields=fields, client_address=client_address
    )


def right_sizing_propose_end_eligibility(
    actor: User, eligibility_id: int, *, client_address: str | None = None
) -> ChangeRequest:
    """Propose ending an eligibility now (it applies when a second admin approves it; the sweep then
    withdraws the person's pending requests for the role). Raises NotAuthorized or PolicyViolation."""
    permissions.ensure_can_propose_right_sizing(actor)
    now = clock.now()
    eligibility = Eligibility.objects.select_related("role__system", "user", "group").filter(pk=eligibility_id).first()
    if eligibility is None or (eligibility.ends_at is not None and eligibility.ends_at <= now):
        raise PolicyViolation("This eligibility does not exist or has already ended.")
    if eligibility.starts_at >= now:
        raise PolicyViolation("This eligibility has not started yet.")
    eligibility.ends_at = now
    return change_services.change_propose(
        actor,
        kind=ChangeRequest.Kind.ELIGIBILITY,
        instance=eligibility,
        fields=["ends_at"],
        client_address=client_address,
    )
