"""Signing off activity findings: a second person — not the person whose activity it was, and independent
of them (``permissions.independence_problem``) — says what they checked. One ``activity.signed_off``
event, in the transaction that closes the finding."""

from django.db import transaction

from accessgov import clock, permissions
from accessgov.exceptions import PolicyViolation, TransitionNotAllowed
from accessgov.models import AccessEvent, ActivityFinding, User
from accessgov.services.events import event_record


def activity_finding_sign_off(
    actor: User, finding_id: int, *, comment: str, client_address: str | None = None
) -> ActivityFinding:
    """Close an open finding with what the signer checked. Locks the finding. Raises PolicyViolation (no
    comment), TransitionNotAllowed (already signed off, or no such finding) or NotAuthorized (the subject,
    someone not independent of them, or someone who neither audits nor approves/owns)."""
    comment = comment.strip()
    if not comment:
        raise PolicyViolation("Write what you checked: the comment is the evidence of this sign-off.")
    if len(comment) > 5000:
        raise PolicyViolation("Keep the comment under 5,000 characters.")
    with transaction.atomic():
        finding = (
            ActivityFinding.objects.select_for_update(no_key=True, of=("self",))
            .select_related("system", "role__system", "grant__access_request", "user")
            .filter(pk=finding_id)
            .first()
        )
        if finding is None:
            raise TransitionNotAllowed("This finding does not exist.")
        if not finding.is_open:
            raise TransitionNotAllowed("This finding was already signed off.")
        permissions.ensure_can_sign_off_finding(actor, finding)
        finding.status = ActivityFinding.Status.SIGNED_OFF
        finding.signed_off_by, finding.signed_off_at, finding.comment = actor, clock.now(), comment
        finding.save(update_fields=["status", "signed_off_by", "signed_off_at", "comment"])
        event_record(
            AccessEvent.Type.ACTIVITY_SIGNED_OFF,
            actor=actor,
            client_address=client_address,
            grant=finding.grant,
            access_request=finding.grant.access_request if finding.grant else None,
            role=finding.role,
            reason=comment,
            data={
                "finding_id": finding.pk,
                "kind": finding.kind,
                "system": finding.system.slug,
                "principal": finding.principal,
                "count": finding.count,
            },
        )
        return finding
