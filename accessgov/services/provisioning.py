"""The provisioning outbox: enqueue in the state change's transaction; drain with no I/O inside a
transaction; record outcomes with one access event per provisioning state change.

Processing one item: (1) claim it — lock, check it is due and not leased, take a lease, commit;
(2) talk to the target — apply/remove, then read back; (3) record — lock again, write the outcome on
the item and the grant, one event, commit. A second delivery of the same item finds it leased or done
and does nothing, so an item has one effect however often it is processed.
"""

import logging
import threading
import time
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Min, Q

from accessgov import clock, dbsql, permissions
from accessgov.connectors import ConnectorError, Target, TargetBusy, connector_for
from accessgov.exceptions import TransitionNotAllowed
from accessgov.models import AccessEvent, Grant, OutboxItem, System, User
from accessgov.services import after_commit, notification_outbox
from accessgov.services.activity import capture
from accessgov.services.events import actor_label, event_record, event_record_rows
from accessgov.services.scheduler import scheduler_wake

logger = logging.getLogger("accessgov.provisioning")
Action = OutboxItem.Action
State = Grant.Provisioning
Type = AccessEvent.Type


# True in the scheduler process (accessgov/scheduler.py): it drains the outbox itself right after each
# round, so its own writes neither wake it nor ask a worker to drain the same items.
DRAINED_BY_THIS_PROCESS = False


def _drain_after_commit(action: str) -> None:
    """New outbox items: a worker drains them after the commit (when the broker is up). A removal also
    wakes the scheduler in this transaction, which removes the access at once without the broker. An
    apply does not: the worker told after the commit applies it within milliseconds, and two drains
    racing for every approval only cost both; without a broker or a worker the scheduler finds the item
    at its next look (within SCHEDULER_INTERVAL_SECONDS)."""
    if DRAINED_BY_THIS_PROCESS:
        return
    if action == Action.REMOVE:
        scheduler_wake()
    after_commit.enqueue("drain_outbox")


def provisioning_enqueue(
    grant: Grant, action: str, now: datetime, *, marked: bool = False, new_grant: bool = False
) -> OutboxItem:
    """Write the outbox row for ``grant`` (caller's transaction) and note the request on the grant (unless
    ``marked``: the caller wrote ``pending_fields`` in its own save or insert of the grant). ``new_grant``:
    the caller inserted the grant in this transaction, so it has no item yet (no other transaction can
    reference an uncommitted row) and its item is the first, without counting; the unique key would refuse
    a second one."""
    item = OutboxItem.objects.create(
        grant=grant,
        action=action,
        number=1 if new_grant else dbsql.outbox_next_number(grant.pk, action),
        created_at=now,
        next_attempt_at=now,
    )
    if not marked:
        grant.save(update_fields=note_pending(grant, action, now))
    _drain_after_commit(action)
    return item


def note_pending(grant: Grant, action: str, now: datetime) -> list[str]:
    """Set on ``grant`` what queuing ``action`` notes (``pending_fields``), for a save of it; returns the
    fields' names."""
    fields = pending_fields(action, now)
    for name, value in fields.items():
        setattr(grant, name, value)
    return list(fields)


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
    dbsql.outbox_insert(grant_ids, action, now)
    if not marked:
        Grant.objects.filter(pk__in=grant_ids).update(**pending_fields(action, now))
    _drain_after_commit(action)


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


def _skip(items: list[OutboxItem], now: datetime, job: str = "provisioning") -> None:
    """APPLY items (locked by the caller) of grants no longer active: nothing is sent, each is done as
    "skipped" with one provisioning.skipped event, and a grant still waiting to be applied is not applied."""
    for item in items:
        grant = item.grant
        item.done_at, item.outcome = now, "skipped"
        item.save(update_fields=["done_at", "outcome"])
        if grant.provisioning_state == State.PENDING:
            grant.provisioning_state = State.NOT_APPLIED
            grant.save(update_fields=["provisioning_state"])
        event_record(
            Type.PROVISIONING_SKIPPED,
            job=job,
            grant=grant,
            access_request=grant.access_request,
            data={"outbox_item": item.idempotency_key},
        )


def manual_applies_withdraw(now: datetime, *, grant_ids: list[int] | None = None) -> int:
    """Open APPLY tasks of manual systems whose grant is no longer active (released, revoked, expired)
    are skipped, so that nobody is asked to give access that has ended (the drain does this for automatic
    systems when it reaches the item). Called where a grant ends early (``grant_ids``: in that transaction, without
    a savepoint of its own) and by every sweep."""
    with transaction.atomic(savepoint=False):
        qs = OutboxItem.objects.filter(
            done_at__isnull=True, action=Action.APPLY, grant__role__system__connector=System.Connector.MANUAL
        ).filter(~Q(grant__status=Grant.Status.ACTIVE) | Q(grant__expires_at__lte=now))
        if grant_ids is not None:
            qs = qs.filter(grant_id__in=grant_ids)
        items = list(
            qs.select_for_update(skip_locked=True, no_key=True, of=("self",))
            .select_related("grant__access_request", "grant__role")
            .order_by("pk")[:1000]
        )
        _skip(items, now, job="grant-ended" if grant_ids is not None else "sweep")
    return len(items)


def _claim(
    now: datetime, *, item_id: int | None = None, limit: int = 1, system_id: int | None = None
) -> list[OutboxItem]:
    """Lease up to ``limit`` due items (of one system, if given) in one short transaction. Concurrent
    drains skip each other's locked rows, so they take disjoint batches; a leased or finished item is
    never taken again."""
    with transaction.atomic():
        qs = OutboxItem.objects.filter(done_at__isnull=True, next_attempt_at__lte=now).filter(
            Q(lease_until__isnull=True) | Q(lease_until__lte=now)
        )
        if item_id is not None:
            qs = qs.filter(pk=item_id)
        else:
            qs = qs.exclude(grant__role__system__connector=System.Connector.MANUAL)
        if system_id is not None:
            qs = qs.filter(grant__role__system_id=system_id)
        candidates = list(
            qs.select_for_update(skip_locked=True, no_key=True, of=("self",))
            .select_related("grant__role__system", "grant__user", "grant__access_request")
            .order_by("pk")[:limit]
        )
        if not candidates:
            return []
        grant_ids = {item.grant_id for item in candidates}
        first_open = dict(
            OutboxItem.objects.filter(grant_id__in=grant_ids, done_at__isnull=True)
            .values("grant_id")
            .annotate(first=Min("pk"))
            .values_list("grant_id", "first")
        )
        claimed, skipped = [], []
        for item in candidates:
            if first_open[item.grant_id] < item.pk:
                continue  # keep each grant's changes in order: apply before remove
            if item.action == Action.APPLY and not item.grant.is_active_at(now):
                skipped.append(item)
                continue
            claimed.append(item)
        _skip(skipped, now)
        if claimed:
            OutboxItem.objects.filter(pk__in=[i.pk for i in claimed]).update(
                lease_until=now + timedelta(seconds=settings.PROVISIONING_LEASE_SECONDS),
                attempts=F("attempts") + 1,
            )
            for item in claimed:
                item.attempts += 1
        return claimed


def _event(
    event_type: str, grant: Grant, actor: User | None, finished: datetime, client_address: str | None, **fields
) -> dict:
    """One provisioning event as a row for ``event_record_rows`` (the role is the grant's, as
    ``event_record`` would take it; the address is the person's who marked a manual task done)."""
    return {
        "client_address": client_address,
        "occurred_at": finished,
        "event_type": event_type,
        "actor_id": actor.pk if actor else None,
        "actor_label": actor_label(actor, "provisioning"),
        "access_request_id": grant.access_request_id,
        "grant_id": grant.pk,
        "role_id": grant.role_id,
        "reason": fields.get("reason", ""),
        "data": fields.get("data", {}),
    }


def _update_grouped(model, changes: list[tuple[int, dict[str, object]]]) -> None:
    """Write per-row ``changes`` with one UPDATE per distinct set of values (a batch's rows mostly share
    theirs: done at the same instant, in the same state)."""
    groups: dict[tuple, list[int]] = {}
    for pk, values in changes:
        groups.setdefault(tuple(sorted(values.items())), []).append(pk)
    for values, pks in groups.items():
        model.objects.filter(pk__in=pks).update(**dict(values))


def _record_many(
    results: list[tuple[int, str]], *, actor: User | None = None, client_address: str | None = None
) -> dict[int, str]:
    """Write the outcomes of processed items — (item id, error or "") — in one transaction: lock the
    items and their grants (by id), then a few set-based UPDATEs and the events in one chained write
    (one ledger lock for the whole batch). Per item: "done", "failed", or "already done" (another
    delivery recorded it first: nothing is written twice)."""
    finished = clock.now()
    errors = dict(results)
    outcomes: dict[int, str] = {}
    with transaction.atomic():
        items = list(
            OutboxItem.objects.select_for_update(no_key=True, of=("self",)).filter(pk__in=errors).order_by("pk")
        )
        grants = {
            grant.pk: grant
            for grant in Grant.objects.select_for_update(no_key=True, of=("self",))
            .select_related("role__system")
            .filter(pk__in={item.grant_id for item in items})
            .order_by("pk")
        }
        removal_queued = set(
            OutboxItem.objects.filter(
                grant_id__in=[i.grant_id for i in items if i.action == Action.APPLY],
                action=Action.REMOVE,
                done_at__isnull=True,
            ).values_list("grant_id", flat=True)
        )
        reads_back: dict[int, bool] = {}
        events: list[dict] = []
        item_changes: list[tuple[int, dict[str, object]]] = []
        grant_changes: list[tuple[int, dict[str, object]]] = []
        for item in items:
            grant = grants[item.grant_id]
            if item.done_at is not None:
                outcomes[item.pk] = "already done"
                continue
            error = errors[item.pk]
            if error:
                next_attempt_at = finished + _backoff(item.attempts)
                item_changes.append(
                    (item.pk, {"lease_until": None, "last_error": error[:2000], "next_attempt_at": next_attempt_at})
                )
                if grant.provisioning_state != State.FAILED:
                    data = {"action": item.action, "outbox_item": item.idempotency_key}
                    events.append(
                        _event(
                            Type.PROVISIONING_FAILED, grant, actor, finished, client_address, reason=error, data=data
                        )
                    )
                grant_changes.append(
                    (grant.pk, {"provisioning_state": State.FAILED, "provisioning_error": error[:2000]})
                )
                outcomes[item.pk] = "failed"
                continue
            done_by_id = actor.pk if actor else None
            item_changes.append(
                (item.pk, {"lease_until": None, "done_at": finished, "outcome": "done", "done_by_id": done_by_id})
            )
            outcomes[item.pk] = "done"
            if item.action == Action.APPLY:
                state = State.REMOVAL_PENDING if grant.pk in removal_queued else State.APPLIED
                grant_changes.append(
                    (grant.pk, {"provisioned_at": finished, "provisioning_state": state, "provisioning_error": ""})
                )
                started = grant.activated_at or grant.starts_at
                data = {
                    "outbox_item": item.idempotency_key,
                    "seconds_after_activation": round((finished - started).total_seconds(), 3),
                }
                events.append(_event(Type.PROVISIONING_APPLIED, grant, actor, finished, client_address, data=data))
            else:
                system = grant.role.system
                if system.pk not in reads_back:
                    reads_back[system.pk] = connector_for(system).reads_back
                confirmed = reads_back[system.pk] and actor is None
                grant_changes.append(
                    (
                        grant.pk,
                        {
                            "removed_at": finished,
                            "removal_confirmed_at": finished,
                            "provisioning_state": State.CONFIRMED if confirmed else State.REMOVED,
                            "provisioning_error": "",
                        },
                    )
                )
                lag = (finished - grant.ended_at).total_seconds() if grant.ended_at else None
                data = {
                    "outbox_item": item.idempotency_key,
                    "read_back": confirmed,
                    "revocation_lag_seconds": round(lag, 3) if lag is not None else None,
                }
                events.append(_event(Type.PROVISIONING_REMOVED, grant, actor, finished, client_address, data=data))
        _update_grouped(OutboxItem, item_changes)
        _update_grouped(Grant, grant_changes)
        event_record_rows(events)
    return outcomes


def _record(item_id: int, error: str, *, actor: User | None = None, client_address: str | None = None) -> str:
    """Record one processed item's outcome (see ``_record_many``)."""
    return _record_many([(item_id, error)], actor=actor, client_address=client_address)[item_id]


READ_BACK_APPLY_MISSING = "Applied, but reading the target back does not show the access."
READ_BACK_REMOVE_STILL_THERE = "Removed, but reading the target back still shows the access."


def _perform(item: OutboxItem, connector, *, patient: bool = True) -> str:
    """Talk to the target for one leased item (no transaction open) and return the error, if any.
    ``patient=False`` (a removal tried before the others' turn is over): a lock held at the target raises
    TargetBusy after a short wait instead of returning it, so the caller can put the item off."""
    target = _target(item, connector)
    try:
        if item.action == Action.APPLY:
            # Activity capture starts before the access does (pgaudit on the login role, a digest snapshot).
            capture.capture_before_apply(item.grant, connector)
            connector.apply(target)
            if connector.reads_back and not connector.is_applied(target):
                return READ_BACK_APPLY_MISSING
        else:
            if patient:
                connector.remove(target)
            else:
                connector.remove_many([target], patient=False)
            if connector.reads_back and connector.is_applied(target):
                return READ_BACK_REMOVE_STILL_THERE
            capture.capture_after_remove([item.grant], connector)
    except ConnectorError as exc:
        if isinstance(exc, TargetBusy) and not patient:
            raise
        return str(exc)
    except Exception as exc:  # a bug or an unexpected library error must not lose the item
        logger.exception("outbox item %s crashed", item.idempotency_key)
        return f"Unexpected error: {exc.__class__.__name__}"
    return ""


def _perform_many(
    items: list[OutboxItem], connector, *, send_until: float, stop: threading.Event | None = None
) -> tuple[list[tuple[int, str]], list[OutboxItem]]:
    """Talk to the target for leased items of one system; returns (item id, error or "") in order, for
    the items it sent, and the removals put off because the target held a lock on them (``_perform_later``,
    once the others are recorded). A connector that removes in bulk gets the batch's removals at once — one
    removal and one read back for all of them, each still confirmed by name — waiting only briefly for locks
    at the target. If the target refuses that as a whole (one missing login role fails the statement, or a
    member is locked), each removal is done alone, so one bad item holds back no other. Nothing is sent
    after ``send_until`` (``time.monotonic()``): past it the lease
    may run out while an item is in flight, and another drain could take the item again — an APPLY sent
    after that drain skipped it and removed the grant would give access back. Unsent items are
    released for the next drain. Nor after ``stop`` is set (the scheduler is shutting down): the
    item in flight finishes, the rest are released."""

    def may_send() -> bool:
        return _may_send(send_until, stop)

    removals = [item for item in items if item.action == Action.REMOVE]
    errors: dict[int, str] = {}
    # A connector that removes in bulk first tries with a short wait for locks at the target: a member another
    # session holds then delays the others by a fraction of a second, not by the lock timeout twice over.
    in_bulk = getattr(connector, "removes_in_bulk", False)
    if len(removals) > 1 and in_bulk and may_send():
        targets = {item.pk: _target(item, connector) for item in removals}
        try:
            connector.remove_many(list(targets.values()), patient=False)
            still_there = connector.applied_among(list(targets.values())) if connector.reads_back else set()
        except ConnectorError:
            pass  # each one alone, below
        except Exception:
            logger.exception("bulk removal of %s outbox items crashed", len(removals))
        else:
            errors = {pk: READ_BACK_REMOVE_STILL_THERE if t in still_there else "" for pk, t in targets.items()}
            capture.capture_after_remove([item.grant for item in removals if not errors[item.pk]], connector)
    results, unsent, busy = [], [], []
    for item in items:
        if item.pk in errors:
            results.append((item.pk, errors[item.pk]))
        elif not may_send():
            unsent.append(item.pk)
        elif in_bulk and item.action == Action.REMOVE and len(removals) > 1:
            try:
                results.append((item.pk, _perform(item, connector, patient=False)))
            except TargetBusy:
                busy.append(item)  # removed after the others are recorded, waiting the full lock timeout
        else:
            results.append((item.pk, _perform(item, connector)))
    _release(unsent)
    return results, busy


def _perform_later(
    busy: list[OutboxItem], connector, *, send_until: float, stop: threading.Event | None = None
) -> list[tuple[int, str]]:
    """The removals ``_perform_many`` put off, each alone with the full lock timeout (the same limits)."""
    results, unsent = [], []
    for item in busy:
        if _may_send(send_until, stop):
            results.append((item.pk, _perform(item, connector)))
        else:
            unsent.append(item.pk)
    _release(unsent)
    return results


def _may_send(send_until: float, stop: threading.Event | None) -> bool:
    """Still inside the drain's send window (``time.monotonic()``), and not shutting down."""
    return time.monotonic() < send_until and not (stop is not None and stop.is_set())


def _release(item_ids: list[int]) -> None:
    """Leased items not sent: free for the next drain, the attempt not counted."""
    if item_ids:
        OutboxItem.objects.filter(pk__in=item_ids, done_at__isnull=True).update(
            lease_until=None, attempts=F("attempts") - 1
        )


def outbox_process(item_id: int) -> str:
    """Process one outbox item now (idempotent). Returns what happened, for logs and tests."""
    claimed = _claim(clock.now(), item_id=item_id)
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


def outbox_drain(
    now: datetime | None = None,
    *,
    batch_size: int = 200,
    budget_seconds: float = 20.0,
    system_id: int | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Lease and process due automatic items in batches, oldest first, within a time budget: per batch
    and system one connector call per item (removals in bulk where the connector can), and one
    transaction recording the whole batch; target connections are reused within the drain. Batches
    are large because a round (claim + record) costs about the same for 50 items as for 200 (on a
    busy 2-core machine 0.1 to 0.3 s), and a burst of removals should take few rounds. ``system_id``:
    only that system's items (the scheduler drains each system in its own thread); ``stop``: take no
    new batch and send nothing more once set. Returns the number of items completed."""
    started = time.monotonic()
    done = 0
    connectors: dict[int, object] = {}
    try:
        while time.monotonic() - started < budget_seconds and not (stop is not None and stop.is_set()):
            batch = _claim(now or clock.now(), limit=batch_size, system_id=system_id)
            if not batch:
                break
            # Sending stops at half the lease: one item in flight (connector timeouts are seconds) then
            # still ends before the lease does.
            send_until = time.monotonic() + settings.PROVISIONING_LEASE_SECONDS / 2
            by_system: dict[int, list[OutboxItem]] = {}
            for item in batch:
                by_system.setdefault(item.grant.role.system_id, []).append(item)
            results: list[tuple[int, str]] = []
            put_off: list[tuple[object, list[OutboxItem]]] = []
            for items in by_system.values():
                system = items[0].grant.role.system
                connector = connectors.get(system.pk) or connectors.setdefault(system.pk, connector_for(system))
                sent, busy = _perform_many(items, connector, send_until=send_until, stop=stop)
                results += sent
                if busy:
                    put_off.append((connector, busy))
            done += sum(outcome == "done" for outcome in _record_many(results).values())
            # Removals a lock at the target held up: after the others are recorded, so they do not wait too.
            later = [
                r
                for connector, busy in put_off
                for r in _perform_later(busy, connector, send_until=send_until, stop=stop)
            ]
            if later:
                done += sum(outcome == "done" for outcome in _record_many(later).values())
    finally:
        for connector in connectors.values():
            connector.close()
    return done


def manual_task_complete(actor: User, item_id: int, *, client_address: str | None = None) -> str:
    """A person confirms they applied/removed access on a manual system (owners and approvers)."""
    item = OutboxItem.objects.select_related("grant__role__system").get(pk=item_id)
    system = item.grant.role.system
    if system.connector != System.Connector.MANUAL:
        raise TransitionNotAllowed("This system is provisioned automatically.")
    permissions.ensure_can_complete_manual_task(actor, item.grant)
    if item.done_at is not None:
        raise TransitionNotAllowed("This task is already done.")
    if item.action == Action.APPLY and manual_applies_withdraw(clock.now(), grant_ids=[item.grant_id]):
        raise TransitionNotAllowed(
            f"Grant #{item.grant_id} has already ended: there is nothing to apply, and this task is withdrawn. "
            "If you did apply it, its removal task is open."
        )
    with transaction.atomic():
        OutboxItem.objects.filter(pk=item.pk).update(attempts=item.attempts + 1)
    return _record(item.pk, "", actor=actor, client_address=client_address)


def removal_alert_due(now: datetime) -> int:
    """Grants whose removal is overdue beyond the threshold: alert owners once (dashboard shows them).
    Claimed under skip-locked row locks, so parallel sweeps alert once."""
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
            notification_outbox.notify_many("removal_overdue", ids)
    return len(ids)
