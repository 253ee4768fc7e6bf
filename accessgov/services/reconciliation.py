"""Reconciliation: compare each target's members with the grants that should be there.

Drift is access at the target with no active (or in-flight) grant behind it: somebody ran GRANT by
hand, or a removal was undone. Each new finding is an access event; systems that opt in get the drift
removed. Target I/O happens outside transactions.
"""

import logging
from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import Q

from accessgov.connectors import ConnectorError, connector_for
from accessgov.models import AccessEvent, DriftFinding, Grant, System
from accessgov.services.events import event_record

logger = logging.getLogger("accessgov.provisioning")
Type = AccessEvent.Type


def _expected_principals(connector, role, now: datetime) -> set[str]:
    """Who may hold ``role`` at the target now without it being drift: every grant still active in
    stored state — including one past its ``expires_at`` that the scheduler has not expired yet (its
    removal is due, and will go through the outbox: it is in flight, not drift) — and every ended grant
    whose removal is not confirmed yet."""
    in_flight = Q(removal_requested_at__isnull=False, removal_confirmed_at__isnull=True)
    grants = Grant.objects.filter(role=role).filter(Q(status=Grant.Status.ACTIVE) | in_flight).select_related("user")
    return {connector.principal_for(g.user.get_username()) for g in grants}


def reconcile_system(system: System, now: datetime) -> dict[str, int]:
    connector = connector_for(system)
    counts = {"drift": 0, "removed": 0, "resolved": 0}
    provisioner = (system.connector_config or {}).get("user")
    for role in system.roles.all():
        try:
            members = connector.members(role.target)
        except ConnectorError as exc:
            logger.warning("reconciliation of %s skipped: %s", role, exc)
            continue
        if members is None:
            continue
        drift = members - _expected_principals(connector, role, now) - {provisioner}
        open_findings = {f.principal: f for f in DriftFinding.objects.filter(role=role, resolved_at__isnull=True)}
        for principal in sorted(drift):
            with transaction.atomic():
                finding = open_findings.get(principal)
                if finding is None:
                    try:
                        with transaction.atomic():
                            finding = DriftFinding.objects.create(
                                system=system, role=role, principal=principal, detected_at=now, last_seen_at=now
                            )
                    except IntegrityError:
                        continue  # another reconciliation recorded it at the same time
                    event_record(
                        Type.DRIFT_DETECTED,
                        job="reconcile",
                        role=role,
                        reason=f"{principal} holds {role.target} at the target without an active grant.",
                        data={"principal": principal, "finding_id": finding.pk},
                    )
                    counts["drift"] += 1
                else:
                    DriftFinding.objects.filter(pk=finding.pk).update(last_seen_at=now)
            if system.reconcile_remove_drift:
                try:
                    connector.remove_principal(principal, role.target)
                except ConnectorError as exc:
                    logger.warning("drift removal failed for %s on %s: %s", principal, role, exc)
                    continue
                with transaction.atomic():
                    # Conditional: a reconciliation running at the same moment (two beats) may have
                    # removed and recorded it first; the removal is recorded once.
                    if not DriftFinding.objects.filter(pk=finding.pk, resolved_at__isnull=True).update(
                        resolved_at=now, removed_by_accessgov=True
                    ):
                        continue
                    event_record(
                        Type.DRIFT_REMOVED,
                        job="reconcile",
                        role=role,
                        reason=f"Removed {principal} from {role.target}.",
                        data={"principal": principal},
                    )
                counts["removed"] += 1
        gone = [f.pk for p, f in open_findings.items() if p not in members]
        if gone:
            counts["resolved"] += DriftFinding.objects.filter(pk__in=gone).update(resolved_at=now)
    connector.close()
    return counts


def reconcile_all(now: datetime) -> dict[str, int]:
    totals = {"systems": 0, "drift": 0, "removed": 0, "resolved": 0}
    for system in System.objects.exclude(connector=System.Connector.MANUAL):
        counts = reconcile_system(system, now)
        totals["systems"] += 1
        for key, value in counts.items():
            totals[key] += value
    return totals
