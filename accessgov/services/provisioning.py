"""The provisioning outbox: enqueue in the state change's transaction; drain with no I/O inside a
transaction; record outcomes with one access event per provisioning state change.

Processing one item: (1) claim it — lock, check it is due and not leased, take a lease, commit;
(2) talk to the target — apply/remove, then read back; (3) record — lock again, write the outcome on
the item and the grant, one event, commit. A second delivery of the same item finds it leased or done
and does nothing, so an item has one effect however often it is processed.
"""

import logging
import time
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from accessgov import permissions
from accessgov.connectors import ConnectorError, Target, connector_for
from accessgov.exceptions import NotAuthorized, TransitionNotAllowed
from accessgov.models import AccessEvent, Grant, OutboxItem, System, User
from accessgov.services.events import event_record

logger = logging.getLogger("accessgov.provisioning")
Action = OutboxItem.Action
State = Grant.Provisioning
Type = AccessEvent.Type


def _drain_after_commit() -> None:
    from accessgov import tasks

    transaction.on_commit(lambda: tasks.drain_outbox.delay(), robust=True)


def _key(grant_id: int, action: str) -> str:
    n = OutboxItem.objects.filter(grant_id=grant_id, action=action).count() + 1
    return f"grant-{grant_id}-{action}-{n}"


def provisioning_enqueue(grant: Grant, action: str, now: datetime) -> OutboxItem:
    """Write the outbox row for ``grant`` (caller's transaction) and note the request on the grant."""
    item = OutboxItem.objects.create(
        grant=grant, action=action, idempotency_key=_key(grant.pk, action), created_at=now, next_attempt_at=now
    )
    if action == Action.APPLY:
        grant.provisioning_state = State.PENDING
        grant.save(update_fields=["provisioning_state"])
    else:
        grant.provisioning_state = State.REMOVAL_PENDING
        grant.removal_requested_at = now
        grant.save(update_fields=["provisioning_state", "removal_requested_at"])
    _drain_after_commit()
    return item


def pending_fields(action: str, now: datetime) -> dict[str, object]:
    """What enqueuing ``action`` notes on a grant (for a caller that writes the grant in its own UPDATE)."""
    if action == Action.APPLY:
        return {"provisioning_state": State.PENDING}
    return {"provisioning_state": State.REMOVAL_PENDING, "removal_requested_at": now}


def provisioning_enqueue_bulk(grant_ids: list[int], action: str, now: datetime, *, marked: bool = False) -> None:
    """Set-based enqueue for sweeps: one outbox row per grant in one INSERT, one UPDATE for the grants
    (none when ``marked``: the caller's own UPDATE already set ``pending_fields``)."""
    if not grant_ids:
        return
    if connection.vendor == "postgresql":
        # INSERT … SELECT from the id array: the key numbers the grant's items of this action, as _key does.
        table = connection.ops.quote_name(OutboxItem._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(
                f"""INSERT INTO {table} (grant_id, action, idempotency_key, created_at, next_attempt_at, attempts,
                        last_error, outcome)
                    SELECT g, %(action)s, 'grant-' || g || '-' || %(action)s || '-'
                           || 1 + (SELECT count(*) FROM {table} o WHERE o.grant_id = g AND o.action = %(action)s),
                           %(now)s, %(now)s, 0, '', ''
                    FROM unnest(%(ids)s::bigint[]) AS t(g)""",  # noqa: S608 - fixed SQL; values are bound params
                {"action": action, "now": now, "ids": list(grant_ids)},
            )
    else:
        existing = dict(
            OutboxItem.objects.filter(grant_id__in=grant_ids, action=action)
            .values_list("grant_id")
            .annotate(n=Count("pk"))
        )
        OutboxItem.objects.bulk_create(
            [
                OutboxItem(
                    grant_id=gid,
                    action=action,
                    idempotency_key=f"grant-{gid}-{action}-{existing.get(gid, 0) + 1}",
                    created_at=now,
                    next_attempt_at=now,
                )
                for gid in grant_ids
            ],
            batch_size=1000,
        )
    if not marked:
        Grant.objects.filter(pk__in=grant_ids).update(**pending_fields(action, now))
    _drain_after_commit()


def _target(item: OutboxItem, connector) -> Target:
    grant = item.grant
    return Target(
        grant_id=grant.pk,
        principal=connector.principal_for(grant.user.get_username()),
        target_role=grant.role.target,
        username=grant.user.get_username(),
        role_label=str(grant.role),
        expires_at=grant.expires_at.isoformat(),
        operation_id=item.idempotency_key,
    )


def _backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(2 ** max(attempts - 1, 0), settings.PROVISIONING_MAX_BACKOFF_SECONDS))


def _claim(now: datetime, *, item_id: int | None = None, limit: int = 1) -> list[OutboxItem]:
    """Lease up to ``limit`` due items in one short transaction. Concurrent drains skip each other's
    locked rows, so they take disjoint batches; a leased or finished item is never taken again."""
    with transaction.atomic():
        qs = OutboxItem.objects.filter(done_at__isnull=True, next_attempt_at__lte=now).filter(
            Q(lease_until__isnull=True) | Q(lease_until__lte=now)
        )
        if item_id is not None:
            qs = qs.filter(pk=item_id)
        else:
            qs = qs.exclude(grant__role__system__connector=System.Connector.MANUAL)
        candidates = list(
            qs.select_for_update(skip_locked=True, no_key=True, of=("self",))
            .select_related("grant__role__system", "grant__user", "grant__access_request")
            .order_by("pk")[:limit]
        )
        if not candidates:
            return []
        grant_ids = {item.grant_id for item in candidates}
        earlier_open = set(
            OutboxItem.objects.filter(grant_id__in=grant_ids, done_at__isnull=True).values_list("grant_id", "pk")
        )
        claimed, skipped = [], []
        for item in candidates:
            if any(gid == item.grant_id and pk < item.pk for gid, pk in earlier_open):
                continue  # keep each grant's changes in order: apply before remove
            if item.action == Action.APPLY and not item.grant.is_active_at(now):
                skipped.append(item)
                continue
            claimed.append(item)
        for item in skipped:
            grant = item.grant
            item.done_at, item.outcome = now, "skipped"
            item.save(update_fields=["done_at", "outcome"])
            if grant.provisioning_state == State.PENDING:
                grant.provisioning_state = State.NOT_APPLIED
                grant.save(update_fields=["provisioning_state"])
            event_record(
                Type.PROVISIONING_SKIPPED,
                job="provisioning",
                grant=grant,
                access_request=grant.access_request,
                data={"outbox_item": item.idempotency_key},
            )
        if claimed:
            OutboxItem.objects.filter(pk__in=[i.pk for i in claimed]).update(
                lease_until=now + timedelta(seconds=settings.PROVISIONING_LEASE_SECONDS),
                attempts=F("attempts") + 1,
            )
            for item in claimed:
                item.attempts += 1
        return claimed


def _record(item_id: int, error: str, *, actor: User | None = None) -> str:
    finished = timezone.now()
    with transaction.atomic():
        item = OutboxItem.objects.select_for_update(no_key=True, of=("self",)).get(pk=item_id)
        grant = (
            Grant.objects.select_for_update(no_key=True, of=("self",))
            .select_related("access_request")
            .get(pk=item.grant_id)
        )
        if item.done_at is not None:
            return "already done"
        item.lease_until = None
        if error:
            item.last_error = error[:2000]
            item.next_attempt_at = finished + _backoff(item.attempts)
            item.save(update_fields=["lease_until", "last_error", "next_attempt_at"])
            if grant.provisioning_state != State.FAILED:
                event_record(
                    Type.PROVISIONING_FAILED,
                    actor=actor,
                    job="provisioning",
                    grant=grant,
                    access_request=grant.access_request,
                    reason=error,
                    data={"action": item.action, "outbox_item": item.idempotency_key},
                )
            grant.provisioning_state = State.FAILED
            grant.provisioning_error = error[:2000]
            grant.save(update_fields=["provisioning_state", "provisioning_error"])
            return "failed"
        item.done_at, item.outcome, item.done_by = finished, "done", actor
        item.save(update_fields=["lease_until", "done_at", "outcome", "done_by"])
        grant.provisioning_error = ""
        if item.action == Action.APPLY:
            grant.provisioned_at = finished
            removal_queued = OutboxItem.objects.filter(grant=grant, action=Action.REMOVE, done_at__isnull=True).exists()
            grant.provisioning_state = State.REMOVAL_PENDING if removal_queued else State.APPLIED
            grant.save(update_fields=["provisioned_at", "provisioning_state", "provisioning_error"])
            event_record(
                Type.PROVISIONING_APPLIED,
                actor=actor,
                job="provisioning",
                grant=grant,
                access_request=grant.access_request,
                data={
                    "outbox_item": item.idempotency_key,
                    "seconds_after_activation": round(
                        (finished - (grant.activated_at or grant.starts_at)).total_seconds(), 3
                    ),
                },
            )
        else:
            reads_back = connector_for(grant.role.system).reads_back and actor is None
            grant.removed_at = finished
            grant.removal_confirmed_at = finished
            grant.provisioning_state = State.CONFIRMED if reads_back else State.REMOVED
            grant.save(update_fields=["removed_at", "removal_confirmed_at", "provisioning_state", "provisioning_error"])
            lag = (finished - grant.ended_at).total_seconds() if grant.ended_at else None
            event_record(
                Type.PROVISIONING_REMOVED,
                actor=actor,
                job="provisioning",
                grant=grant,
                access_request=grant.access_request,
                data={
                    "outbox_item": item.idempotency_key,
                    "read_back": reads_back,
                    "revocation_lag_seconds": round(lag, 3) if lag is not None else None,
                },
            )
        return "done"


def _perform(item: OutboxItem, connector) -> str:
    """Talk to the target for one leased item (no transaction open) and return the error, if any."""
    target = _target(item, connector)
    try:
        if item.action == Action.APPLY:
            connector.apply(target)
            if connector.reads_back and not connector.is_applied(target):
                return "Applied, but reading the target back does not show the access."
        else:
            connector.remove(target)
            if connector.reads_back and connector.is_applied(target):
                return "Removed, but reading the target back still shows the access."
    except ConnectorError as exc:
        return str(exc)
    except Exception as exc:  # a bug or an unexpected library error must not lose the item
        logger.exception("outbox item %s crashed", item.idempotency_key)
        return f"Unexpected error: {exc.__class__.__name__}"
    return ""


def outbox_process(item_id: int) -> str:
    """Process one outbox item now (idempotent). Returns what happened, for logs and tests."""
    claimed = _claim(timezone.now(), item_id=item_id)
    if not claimed:
        return "skipped"
    item = claimed[0]
    connector = connector_for(item.grant.role.system)
    try:
        if not connector.automatic:
            OutboxItem.objects.filter(pk=item.pk).update(lease_until=None, attempts=F("attempts") - 1)
            return "manual"
        return _record(item.pk, _perform(item, connector))
    finally:
        connector.close()


def outbox_drain(now: datetime | None = None, *, batch_size: int = 50, budget_seconds: float = 20.0) -> int:
    """Lease and process due automatic items in batches, oldest first, within a time budget;
    target connections are reused within the drain. Returns the number of items completed."""
    started = time.monotonic()
    done = 0
    connectors: dict[int, object] = {}
    try:
        while time.monotonic() - started < budget_seconds:
            batch = _claim(now or timezone.now(), limit=batch_size)
            if not batch:
                break
            for item in batch:
                system = item.grant.role.system
                connector = connectors.get(system.pk) or connectors.setdefault(system.pk, connector_for(system))
                done += _record(item.pk, _perform(item, connector)) == "done"
    finally:
        for connector in connectors.values():
            connector.close()
    return done


def manual_task_complete(actor: User, item_id: int) -> str:
    """A person confirms they applied/removed access on a manual system (owners and approvers)."""
    item = OutboxItem.objects.select_related("grant__role__system").get(pk=item_id)
    system = item.grant.role.system
    if system.connector != System.Connector.MANUAL:
        raise TransitionNotAllowed("This system is provisioned automatically.")
    if not (
        permissions.can_manage_eligibility(actor, system) or permissions.can_approve_for_role(actor, item.grant.role)
    ):
        raise NotAuthorized("Only owners and approvers of the system complete its provisioning tasks.")
    if item.done_at is not None:
        raise TransitionNotAllowed("This task is already done.")
    with transaction.atomic():
        OutboxItem.objects.filter(pk=item.pk).update(attempts=item.attempts + 1)
    return _record(item.pk, "", actor=actor)


def removal_alert_due(now: datetime) -> int:
    """Grants whose removal is overdue beyond the threshold: alert owners once (dashboard shows them).
    Claimed under skip-locked row locks, so parallel sweeps alert once."""
    from accessgov import tasks

    threshold = now - timedelta(minutes=settings.PROVISIONING_REMOVAL_ALERT_MINUTES)
    with transaction.atomic():
        ids = list(
            Grant.objects.filter(
                removal_requested_at__lte=threshold, removal_confirmed_at__isnull=True, removal_alerted_at__isnull=True
            )
            .select_for_update(skip_locked=True, no_key=True, of=("self",))
            .values_list("pk", flat=True)[:1000]
        )
        if ids:
            Grant.objects.filter(pk__in=ids).update(removal_alerted_at=now)
            transaction.on_commit(lambda: tasks.notify_many.delay("removal_overdue", ids), robust=True)
    return len(ids)


def overdue_removals(grants_qs, now: datetime):
    threshold = now - timedelta(minutes=settings.PROVISIONING_REMOVAL_ALERT_MINUTES)
    return grants_qs.filter(removal_requested_at__lte=threshold, removal_confirmed_at__isnull=True)
