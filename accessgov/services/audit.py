"""The ledger's own operations as services: verifying the chain (recorded as an access event) and the
retention purge. ``manage.py verify_audit`` / ``purge_audit`` and the audit trail page call these; the
chain mechanics are ``accessgov/ledger``."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction

from accessgov import clock
from accessgov.activity.verify import SealReport, verify_activity_seals
from accessgov.exceptions import PolicyViolation
from accessgov.ledger import purge
from accessgov.ledger.verify import RETENTION_FLOOR_DAYS, ChainReport, verify_chain
from accessgov.models import AccessEvent, User
from accessgov.services.events import event_record


@dataclass(frozen=True)
class Verification:
    chain: ChainReport
    seals: SealReport


def audit_verify(actor: User, *, client_address: str | None, reason: str) -> Verification:
    """Check the hash chain and every activity seal, and record that someone checked (``audit.verified``,
    with both reports). The caller has authorized ``actor`` (an auditor). Raises nothing: a broken chain
    is a result, not an error."""
    report = verify_chain()
    seals = verify_activity_seals()
    with transaction.atomic():
        event_record(
            AccessEvent.Type.AUDIT_VERIFIED,
            actor=actor,
            client_address=client_address,
            reason=reason,
            data={**report.as_dict(), "activity_seals": seals.as_dict()},
        )
    return Verification(report, seals)


def audit_purge(before: datetime, *, dry_run: bool = False, job: str = "purge_audit") -> purge.PurgePlan | None:
    """Purge the access events before ``before`` (a prefix of the chain), leaving a checkpoint the rest
    verifies from, and record it (``audit.purged``) in the same transaction. Returns what was (with
    ``dry_run``: would be) purged, None when nothing is that old. Raises PolicyViolation when ``before``
    is inside the retention period (AUDIT_RETENTION_DAYS)."""
    if settings.AUDIT_RETENTION_DAYS < RETENTION_FLOOR_DAYS:
        raise PolicyViolation(
            f"Refused: AUDIT_RETENTION_DAYS is {settings.AUDIT_RETENTION_DAYS}; a purge keeps at least "
            f"{RETENTION_FLOOR_DAYS} days of events (audit evidence is kept at least a year)."
        )
    earliest_allowed = clock.now() - timedelta(days=settings.AUDIT_RETENTION_DAYS)
    if before > earliest_allowed:
        raise PolicyViolation(
            f"Refused: {before:%Y-%m-%d} is inside the retention period of {settings.AUDIT_RETENTION_DAYS} days "
            f"(events before {earliest_allowed:%Y-%m-%d} may be purged)."
        )
    plan = purge.purge_plan(before)
    if plan is None or dry_run:
        return plan
    with transaction.atomic():
        purge.purge_prefix(plan)
        event_record(
            AccessEvent.Type.AUDIT_PURGED,
            job=job,
            reason=f"Retention purge of events before {before:%Y-%m-%d}",
            data={
                "purged": plan.count,
                "up_to_sequence": plan.up_to_sequence,
                "up_to_hash": plan.up_to_hash,
                "retention_days": settings.AUDIT_RETENTION_DAYS,
            },
        )
    return plan
