"""Sealing activity into the ledger, checking the seals, and purging sealed activity past retention.

A seal covers a set of rows: a grant's activity once its removal is confirmed at the target (and
ACTIVITY_SEAL_DELAY_SECONDS have passed, for log lines still on their way); rows that arrive for an
already sealed grant later (a supplement); and activity without a grant, per system. Each seal is an
``ActivitySeal`` row and one ``activity.sealed`` access event carrying the row count, counts by kind and
class, and a SHA-256 over the rows' canonical content in id order. The rows get the seal's id, after
which PostgreSQL refuses to change them (trigger, migration 0017). ``verify_activity_seals`` recomputes
every seal from its rows (``accessgov.activity.verify``) and compares it with the ledger, whose own chain
``verify_chain`` checks.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Max, Q

from accessgov import clock
from accessgov.activity.verify import seal_digest
from accessgov.models import AccessEvent, ActivityRecord, ActivitySeal, Grant, GrantActivity, System
from accessgov.services.activity.store import ADVISORY_CLASS
from accessgov.services.events import event_record, event_record_rows

SEAL_BATCH = 200
_FIELDS = ActivityRecord.HASHED_FIELDS


def _lock_systems(system_ids) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            for system_id in sorted(set(system_ids)):  # one order for everyone: no deadlock
                cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [ADVISORY_CLASS, system_id])


@dataclass(frozen=True)
class Group:
    system_id: int
    grant_id: int | None
    supplement: bool = False


def activity_seal_due(now: datetime, *, batch_size: int = SEAL_BATCH) -> int:
    """Seal what is due (called by every sweep): ended grants whose removal is done, late rows of sealed
    grants, and activity without a grant, each once the seal delay has passed. Skip-locked and idempotent:
    parallel sweeps seal disjoint grants. Returns the number of seals made."""
    cutoff = now - timedelta(seconds=settings.ACTIVITY_SEAL_DELAY_SECONDS)
    removal_done = Q(grant__removed_at__lte=cutoff) | (
        Q(grant__provisioning_state__in=[Grant.Provisioning.NOT_APPLIED, ""]) & Q(grant__ended_at__lte=cutoff)
    )
    made = 0
    candidates = dict(
        GrantActivity.objects.filter(sealed_at__isnull=True, grant__ended_at__isnull=False)
        .filter(removal_done)
        .values_list("pk", "grant__role__system_id")[:batch_size]
    )
    if candidates:
        with transaction.atomic():
            # The ingest lock first, then the rows (the order the ingest takes them in): no deadlock.
            _lock_systems(candidates.values())
            locked = GrantActivity.objects.filter(pk__in=list(candidates), sealed_at__isnull=True).select_for_update(
                skip_locked=True, no_key=True, of=("self",)
            )
            groups = [Group(candidates[pk], pk) for pk in sorted(locked.values_list("pk", flat=True))]
            if groups:
                made += _seal(groups, now)
    late = [
        (system_id, grant_id)
        for grant_id, system_id in GrantActivity.objects.filter(
            late_activity=True, sealed_at__isnull=False
        ).values_list("pk", "grant__role__system_id")[:batch_size]
    ]
    unattributed = list(
        ActivityRecord.objects.filter(seal__isnull=True, grant__isnull=True, ingested_at__lte=cutoff)
        .filter(~Q(kind=ActivityRecord.Kind.SESSION) | Q(state="ended"))
        .values_list("system_id", flat=True)
        .distinct()
    )
    groups = [Group(system_id, grant_id, supplement=True) for system_id, grant_id in late]
    groups += [Group(system_id, None) for system_id in unattributed]
    if groups:
        with transaction.atomic():
            made += _seal(groups, now, cutoff=cutoff)
    return made


def _rows_of(group: Group, cutoff: datetime | None):
    rows = ActivityRecord.objects.filter(seal__isnull=True, system_id=group.system_id)
    if group.grant_id is not None:
        rows = rows.filter(grant_id=group.grant_id)
    else:
        rows = rows.filter(grant__isnull=True).filter(~Q(kind=ActivityRecord.Kind.SESSION) | Q(state="ended"))
    if cutoff is not None and group.grant_id is None:
        rows = rows.filter(ingested_at__lte=cutoff)
    return rows.order_by("pk")


def _seal(groups: list[Group], now: datetime, *, cutoff: datetime | None = None) -> int:
    """Seal each group's unsealed rows (in the caller's transaction, under the systems' ingest locks so no
    row of theirs is being written meanwhile): one seal row, the rows marked, one event per group."""
    _lock_systems(group.system_id for group in groups)
    grants = {
        g.pk: g
        for g in Grant.objects.filter(pk__in=[group.grant_id for group in groups if group.grant_id]).only(
            "pk", "role_id", "access_request_id"
        )
    }
    slugs = dict(System.objects.filter(pk__in={g.system_id for g in groups}).values_list("pk", "slug"))
    events, made = [], 0
    for group in groups:
        values = list(_rows_of(group, cutoff).values_list(*_FIELDS))
        if not values and (group.grant_id is None or group.supplement):
            continue
        content_hash, count, summary = seal_digest(values)
        seal = ActivitySeal.objects.create(
            system_id=group.system_id,
            grant_id=group.grant_id,
            sealed_at=now,
            row_count=count,
            content_hash=content_hash,
            summary=summary,
        )
        if values:
            ids = [row[0] for row in values]
            for start in range(0, len(ids), 10_000):
                ActivityRecord.objects.filter(pk__in=ids[start : start + 10_000]).update(seal=seal)
        grant = grants.get(group.grant_id) if group.grant_id else None
        what = (
            f"grant #{group.grant_id}" + (" (late activity)" if group.supplement else "")
            if group.grant_id
            else f"activity without a grant on {slugs.get(group.system_id, group.system_id)}"
        )
        events.append(
            (
                seal,
                {
                    "occurred_at": now,
                    "event_type": AccessEvent.Type.ACTIVITY_SEALED,
                    "actor_label": "system:activity",
                    "grant_id": group.grant_id,
                    "role_id": grant.role_id if grant else None,
                    "access_request_id": grant.access_request_id if grant else None,
                    "reason": f"Activity of {what} sealed: {count} row{'s' if count != 1 else ''}",
                    "data": {
                        "seal_id": seal.pk,
                        "system": slugs.get(group.system_id),
                        "rows": count,
                        "hash": content_hash,
                        "supplement": group.supplement,
                        **summary,
                    },
                },
            )
        )
        made += 1
    supplements = [group.grant_id for group in groups if group.supplement]
    if supplements:  # under the ingest locks: no row of theirs arrived since they were read
        GrantActivity.objects.filter(pk__in=supplements).update(late_activity=False)
    if not events:
        return 0
    rows = [row for _, row in events]
    event_record_rows(rows)
    for (seal, _), row in zip(events, rows, strict=True):
        ActivitySeal.objects.filter(pk=seal.pk).update(event_id=row["id"])
    primary = [group.grant_id for group in groups if group.grant_id and not group.supplement]
    if primary:
        GrantActivity.objects.filter(pk__in=primary, sealed_at__isnull=True).update(sealed_at=now)

    return made


# --- Retention ---------------------------------------------------------------------------------------


def activity_purge(before: datetime, *, dry_run: bool = False) -> dict:
    """Delete the rows of seals made before ``before`` — a prefix of the seals, so the ledger can say
    "every seal up to #N" — and record it (``activity.purged``). The caller checked the retention period.
    On PostgreSQL the trigger lets the deletion through only inside this transaction."""
    first_kept = ActivitySeal.objects.filter(sealed_at__gte=before).order_by("pk").values_list("pk", flat=True).first()
    prefix = ActivitySeal.objects.filter(purged_at__isnull=True)
    prefix = prefix.filter(pk__lt=first_kept) if first_kept is not None else prefix
    through = prefix.aggregate(through=Max("pk"))["through"]
    if through is None:
        return {"seals": 0, "rows": 0, "through_seal_id": None}
    seals = prefix.count()
    doomed = ActivityRecord.objects.filter(seal_id__lte=through, seal__isnull=False)
    rows = doomed.count()
    if dry_run:
        return {"seals": seals, "rows": rows, "through_seal_id": through}
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT set_config('accessgov.activity_purge', 'on', true)")
        doomed._raw_delete(doomed.db)
        ActivitySeal.objects.filter(pk__lte=through, purged_at__isnull=True).update(purged_at=clock.now())
        event_record(
            AccessEvent.Type.ACTIVITY_PURGED,
            job="purge_activity",
            reason=f"Retention purge of activity sealed before {before:%Y-%m-%d}",
            data={
                "through_seal_id": through,
                "seals": seals,
                "rows": rows,
                "before": before.isoformat(),
                "retention_days": settings.ACTIVITY_RETENTION_DAYS,
            },
        )
    return {"seals": seals, "rows": rows, "through_seal_id": through}
