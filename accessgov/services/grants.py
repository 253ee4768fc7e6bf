"""Grant transitions: create/extend (from an approval), activate, expire, revoke, release; break-glass.

The expiry path is doubled: the scheduler (``accessgov/scheduler.py``: one process, woken at the next
``expires_at`` / ``starts_at`` the database holds) and the periodic sweep both call ``grant_expire_due``
and ``grant_activate_due``, which are set-based and idempotent. No timer is held per grant in a worker
or the broker; a transaction that writes a sooner deadline wakes the scheduler (``scheduler_wake``).
Reads never depend on any of it: see ``Grant.objects.active(now)``.
"""

import gc
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import copy_context
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q

from accessgov import clock, dbsql, inputs, otp, permissions, policies
from accessgov.exceptions import PolicyViolation, TransitionNotAllowed
from accessgov.models import (
    AccessEvent,
    AccessRequest,
    BreakGlassFollowUp,
    Grant,
    OutboxItem,
    Role,
    User,
)
from accessgov.services import notification_outbox, provisioning, withdrawals
from accessgov.services.events import event_record, event_record_rows, event_rows_prepare_meanwhile
from accessgov.services.scheduler import scheduler_wake
from accessgov.workflow import ensure_transition

Status = Grant.Status
Type = AccessEvent.Type
EXPIRY_REMINDER_BEFORE = timedelta(minutes=15)
BREAK_GLASS_FOLLOW_UP_WITHIN = timedelta(hours=24)
BREAK_GLASS_REMIND_EVERY = timedelta(hours=4)


def _lock(grant_id: int) -> Grant:
    try:
        return (
            Grant.objects.select_for_update(no_key=True, of=("self",))
            .select_related("role__system", "user", "access_request")  # the request: for its events
            .get(pk=grant_id)
        )
    except Grant.DoesNotExist as exc:
        raise TransitionNotAllowed("This grant does not exist.") from exc


def grant_create_for(
    access_request: AccessRequest,
    *,
    duration: timedelta,
    now: datetime,
    actor: User | None,
    job: str | None,
    client_address: str | None = None,
) -> Grant:
    """Create the grant of a just-approved request (caller holds the request lock, in its transaction).
    Active now, or scheduled when the request asked for a later start."""
    starts_at = max(access_request.starts_at or now, now)
    scheduled = starts_at > now

    def insert() -> Grant:
        with transaction.atomic():
            return Grant.objects.create(
                access_request=access_request,
                user=access_request.requester,
                role=access_request.role,
                status=Status.SCHEDULED if scheduled else Status.ACTIVE,
                is_break_glass=access_request.kind == AccessRequest.Kind.BREAK_GLASS,
                starts_at=starts_at,
                expires_at=starts_at + duration,
                created_at=now,
                activated_at=None if scheduled else now,
                # Active now: its apply is queued below, noted here rather than by a second write.
                **({} if scheduled else provisioning.pending_fields(OutboxItem.Action.APPLY, now)),
            )

    refused = "The requester already holds this role; the request cannot be granted twice."
    try:
        grant = insert()
    except IntegrityError as exc:
        # Their earlier grant of the role may have ended with nobody having swept it yet: then it is expired
        # now and the new one made (checked here, not before: it costs nothing when there is none).
        if holds_current(access_request.requester, access_request.role, now):
            raise TransitionNotAllowed(refused) from exc
        try:
            grant = insert()
        except IntegrityError as again:
            raise TransitionNotAllowed(refused) from again
    event_record(
        Type.GRANT_SCHEDULED if scheduled else Type.GRANT_ACTIVATED,
        actor=actor,
        job=job,
        client_address=client_address,
        access_request=access_request,
        grant=grant,
        data={"starts_at": grant.starts_at.isoformat(), "expires_at": grant.expires_at.isoformat()},
    )
    # The scheduler reads the new start and end from the row at its next look (within a second); a
    # NOTIFY wakes it at once in case a start comes sooner than that. (An end is minutes away at least:
    # the shortest policy duration.)
    if scheduled:
        scheduler_wake()
    else:
        provisioning.provisioning_enqueue(grant, OutboxItem.Action.APPLY, now, marked=True, new_grant=True)
    return grant


def grant_extend_for(
    access_request: AccessRequest,
    *,
    duration: timedelta,
    now: datetime,
    actor: User | None,
    job: str | None,
    client_address: str | None = None,
) -> Grant:
    """Move the end of the grant an approved extension request names (never a second grant)."""
    grant = _lock(access_request.extends_grant_id)
    if not grant.is_active_at(now):
        raise TransitionNotAllowed("The grant ended before the extension was approved; request access again.")
    ceiling = now + min(grant.role.max_duration, inputs.MAX_DURATION)  # a role saved before it was bounded
    new_expires_at = min(grant.expires_at + duration, ceiling)
    previous = grant.expires_at
    grant.expires_at = new_expires_at
    grant.extension_count += 1
    grant.expiry_reminder_sent_at = None
    grant.save(update_fields=["expires_at", "extension_count", "expiry_reminder_sent_at"])
    event_record(
        Type.GRANT_EXTENDED,
        actor=actor,
        job=job,
        client_address=client_address,
        access_request=access_request,
        grant=grant,
        data={"previous_expires_at": previous.isoformat(), "expires_at": new_expires_at.isoformat()},
    )
    # Nothing to schedule: the end only moves later, and the scheduler reads it from the row.
    return grant


def _transition_due(
    where: str,
    params: list,
    updates: dict,
    write_batch,
    *,
    grant_ids: list[int] | None,
    batch_size: int,
) -> int:
    """The set-based loop shared by activation and expiry: per batch, one transaction that updates the
    skip-locked due rows (``dbsql.grants_update_due``) and hands them to ``write_batch`` for their events, outbox
    rows and follow-up tasks. Returns how many grants changed.

    When more than one batch is due and the caller is not inside a transaction, a second writer on its own
    connection takes the next batches as well (``SWEEP_WRITERS``): batches are handed out in id order, each
    bounded before it is changed, and the writers' ``UPDATE``s, outbox and ledger writes run at the same
    time, each in its own transaction — the database's work on two cores instead of one. A
    writer that fails stops the hand-out; its batch rolls back and the next sweep takes it."""
    if grant_ids is not None and not grant_ids:
        return 0
    parallel = settings.SWEEP_WRITERS > 1 and connection.vendor == "postgresql" and not connection.in_atomic_block
    # Shared, the second writer starts as soon as the first batch's bounds show that more is due.
    batches = _DueBatches(where, params, updates, grant_ids, batch_size, shared=parallel)
    helpers: list[Future[int]] = []

    def more_due() -> None:
        if parallel and not helpers:
            helpers.extend(_writers_start(settings.SWEEP_WRITERS - 1, batches, write_batch))

    # A batch allocates a few hundred thousand short-lived objects without cycles (rows, tuples, dicts):
    # the cyclic collector would pass over them again and again (≈ 1 s per 100,000 grants), so it waits
    # until the batches are written.
    with _collector_paused():
        try:
            total = _write_batches(batches, write_batch, more_due)
        finally:
            batches.stop()  # nothing more is handed out once this writer has stopped, however it stopped
            done = [helper.exception() or helper.result() for helper in helpers]  # waits for each
        for outcome in done:
            if isinstance(outcome, BaseException):
                raise outcome
            total += outcome
    return total


class _DueBatches:
    """The due rows, handed out batch by batch to the sweep's writers (each in its own transaction), in id
    order: ``take`` runs the skip-locked ``UPDATE … RETURNING`` of the next batch in the caller's transaction.
    Alone, a writer's batch ends where its ``UPDATE`` stopped. ``shared`` (more than one writer), the batch's
    last id is looked up first (``grants_due_boundary``, a read) and the next batch handed out from there,
    so that the writers' ``UPDATE``s run at the same time on disjoint ranges."""

    def __init__(
        self, where: str, params: list, updates: dict, grant_ids: list[int] | None, batch_size: int, *, shared: bool
    ):
        self.where, self.params, self.updates = where, params, updates
        self.grant_ids, self.batch_size, self.shared = grant_ids, batch_size, shared
        self.after_id, self.exhausted = 0, False
        self._lock = threading.Lock()

    def _update(self, after_id: int, up_to_id: int | None = None) -> list[dbsql.DueRow]:
        return dbsql.grants_update_due(
            self.where,
            self.params,
            self.updates,
            grant_ids=self.grant_ids,
            batch_size=self.batch_size,
            after_id=after_id,
            up_to_id=up_to_id,
        )

    def take(self, more_due: Callable[[], None] | None = None) -> list[dbsql.DueRow]:
        """The next batch, changed (empty when none is left). ``more_due`` is called when more is due after
        it: once the batch is changed, or — shared — as soon as its bounds are known."""
        with self._lock:
            if self.exhausted:
                return []
            after_id = self.after_id
            if self.shared:
                up_to_id = dbsql.grants_due_boundary(
                    self.where, self.params, grant_ids=self.grant_ids, batch_size=self.batch_size, after_id=after_id
                )
                if up_to_id is None:
                    self.exhausted = True  # fewer than a batch left: this is the last
                else:
                    self.after_id = up_to_id
            else:
                due = self._update(after_id)
                if due:
                    self.after_id = due[-1][0]
                self.exhausted = len(due) < self.batch_size
        if more_due is not None and not self.exhausted:
            more_due()
        return self._update(after_id, up_to_id) if self.shared else due

    def stop(self) -> None:
        self.exhausted = True


def _write_batches(batches: _DueBatches, write_batch, more_due: Callable[[], None] | None = None) -> int:
    """One writer: batches until none is left, each taken and written in one transaction."""
    total = 0
    while True:
        with transaction.atomic():
            due = batches.take(more_due)
            if not due:
                return total
            write_batch(due)
        total += len(due)


def _writers_start(count: int, batches: _DueBatches, write_batch) -> list["Future[int]"]:
    """``count`` more writers in threads, each on its own database connection (closed when it ends), in a
    copy of the caller's context."""

    def writer() -> int:
        try:
            return _write_batches(batches, write_batch)
        except BaseException:
            batches.stop()
            raise
        finally:
            connection.close()  # this thread's own connection

    pool = ThreadPoolExecutor(max_workers=count, thread_name_prefix="accessgov-sweep")
    try:
        return [pool.submit(copy_context().run, writer) for _ in range(count)]
    finally:
        pool.shutdown(wait=False)  # each thread ends with its writer


def _write_due_batch(due: list[tuple], action: str, now: datetime, event_row: Callable[..., dict]) -> None:
    """A due batch's writes after its ``UPDATE``: one outbox row per grant, then one event per grant
    (``event_row`` of each returned row), last, as the ledger lock is held from there to the commit. The
    events' Python (row dicts, canonical text) runs in a worker thread while the database writes the
    outbox rows (``event_rows_prepare_meanwhile``)."""
    events = event_rows_prepare_meanwhile(lambda: [event_row(*row) for row in due])
    provisioning.provisioning_enqueue_bulk([row[0] for row in due], action, now, marked=True)
    event_record_rows(events.result())


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the block (reference counting still frees everything)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def grant_activate_due(
    now: datetime, *, grant_ids: list[int] | None = None, job: str = "sweep", batch_size: int = 5000
) -> int:
    """Set-based: scheduled grants whose start has come become active (one event each), one
    skip-locked batch per transaction, like ``grant_expire_due``."""

    def write_batch(due) -> None:
        _write_due_batch(
            due,
            OutboxItem.Action.APPLY,
            now,
            lambda pk, access_request_id, role_id, _: {
                "occurred_at": now,
                "event_type": Type.GRANT_ACTIVATED,
                "actor_label": f"system:{job}",
                "grant_id": pk,
                "access_request_id": access_request_id,
                "role_id": role_id,
                "data": {"scheduled_start": True},
            },
        )

    activated = _transition_due(
        f"status = %s AND starts_at <= %s AND {dbsql.holder_may_hold_sql()}",
        [Status.SCHEDULED, dbsql.db_datetime(now), dbsql.db_datetime(now), dbsql.db_datetime(now)],
        {"status": Status.ACTIVE, "activated_at": now, **provisioning.pending_fields(OutboxItem.Action.APPLY, now)},
        write_batch,
        grant_ids=grant_ids,
        batch_size=batch_size,
    )
    # Eligibility is a standing condition: a scheduled grant whose holder was deactivated or lost the
    # role's eligibility before its start is revoked instead (it never reached the target).
    ineligible = Grant.objects.filter(status=Status.SCHEDULED, starts_at__lte=now).filter(~dbsql.holder_may_hold_q(now))
    if grant_ids is not None:
        ineligible = ineligible.filter(pk__in=grant_ids)
    for pk in ineligible.values_list("pk", flat=True)[:batch_size]:
        try:
            grant_revoke_by_system(pk, reason="Not eligible for the role at the scheduled start.", job=job)
        except TransitionNotAllowed:
            continue  # activated or ended meanwhile
    return activated


def expired_event_data(expires_at: datetime, now: datetime) -> dict[str, object]:
    """What a ``grant.expired`` event says, whichever path recorded it (the sweep's batch, or ``_end``
    finding a grant already past its end): its end and how late the expiry was observed."""
    return {
        "expires_at": expires_at.isoformat(),
        "observed_lag_seconds": round((now - expires_at).total_seconds(), 3),
    }


# Per batch: one transaction; it holds the ledger lock from its events to its commit (see
# docs/PERFORMANCE.md, expiry sweep: larger batches pay fewer commits, smaller ones hold the lock less and
# let two writers overlap more; 10,000 was the fastest of 5,000 / 10,000 / 12,500 / 25,000 with two).
EXPIRE_BATCH_SIZE = 10_000


def grant_expire_due(
    now: datetime, *, grant_ids: list[int] | None = None, job: str = "sweep", batch_size: int = EXPIRE_BATCH_SIZE
) -> int:
    """Set-based: every active grant with ``expires_at <= now`` becomes expired, in bounded batches of
    one transaction each: one ``UPDATE … RETURNING`` over the skip-locked due rows (status, end and
    removal requested at once), one removal outbox row per grant (``INSERT … SELECT``), one chained
    event per grant (``event_record_rows``, last: the ledger lock is held from there to the commit)
    and one notification task per batch. Rows locked by another transaction are skipped (the next
    sweep takes them), so parallel sweeps never collide."""
    actor = f"system:{job}"

    def write_batch(due) -> None:
        _write_due_batch(
            due,
            OutboxItem.Action.REMOVE,
            now,
            lambda pk, access_request_id, role_id, expires_at: {
                "occurred_at": now,
                "event_type": Type.GRANT_EXPIRED,
                "actor_label": actor,
                "grant_id": pk,
                "access_request_id": access_request_id,
                "role_id": role_id,
                "data": expired_event_data(expires_at, now),
            },
        )
        notification_outbox.notify_many("grant_ended", [row[0] for row in due])

    return _transition_due(
        "status = %s AND expires_at <= %s",
        [Status.ACTIVE, dbsql.db_datetime(now)],
        {
            "status": Status.EXPIRED,
            "ended_at": F("expires_at"),
            "end_reason": Grant.EndReason.EXPIRED,
            **provisioning.pending_fields(OutboxItem.Action.REMOVE, now),
        },
        write_batch,
        grant_ids=grant_ids,
        batch_size=batch_size,
    )


def holds_current(user: User, role: Role, now: datetime) -> bool:
    """``user`` holds a grant of ``role`` that has not ended (caller in a transaction). One whose time is up but
    which the sweeper has not reached yet is expired first, here (its event, removal and notice as the
    sweep writes them): a grant never stands in the way of asking again, or of a new grant, once it has ended."""
    current = list(Grant.objects.current().filter(user=user, role=role).values_list("pk", "expires_at"))
    stale = [pk for pk, expires_at in current if expires_at <= now]
    if stale:
        grant_expire_due(now, grant_ids=stale, job="expiry-found-on-request")
    return len(stale) < len(current)


def _end(
    grant: Grant,
    *,
    now: datetime,
    end_reason: str,
    event_type: str,
    reason: str,
    actor: User | None = None,
    job: str | None = None,
    client_address: str | None = None,
    data: dict | None = None,
) -> Grant:
    """The one end-of-grant transition: every path that ends a grant early (revoke, release, an account
    deactivated, an access review's revoke, its ticket closing, its incident resolving) calls it on the
    grant it has locked, in its transaction.

    Whenever the stored state was active, removal at the target is queued — also when the grant is
    already past ``expires_at`` but not yet swept: access there ended at ``expires_at``, so that case is
    recorded as the expiry it is (status expired, ``grant.expired`` event naming who found it). A
    scheduled grant never reached the target: it is revoked with nothing to remove. A pending extension of
    the grant is withdrawn with it.
    Raises TransitionNotAllowed when the grant has already ended, saying how (released, revoked, expired)."""
    if grant.ended_at is not None and grant.end_reason:
        raise TransitionNotAllowed(
            f"This grant already ended ({grant.get_end_reason_display().lower()}); there is nothing left to end."
        )
    if grant.status == Status.ACTIVE and grant.expires_at <= now:
        ensure_transition("grant", grant.status, Status.EXPIRED)
        grant.status, grant.ended_at, grant.end_reason = Status.EXPIRED, grant.expires_at, Grant.EndReason.EXPIRED
        removal = provisioning.note_pending(grant, OutboxItem.Action.REMOVE, now)  # its removal is queued below
        grant.save(update_fields=["status", "ended_at", "end_reason", *removal])
        event_record(
            Type.GRANT_EXPIRED,
            actor=actor,
            job=job,
            client_address=client_address,
            grant=grant,
            access_request=grant.access_request,
            reason=f"Already past its end when ended early ({reason})",
            data={
                **(data or {}),
                **expired_event_data(grant.expires_at, now),
                "found_by": event_type,
            },
        )
        provisioning.provisioning_enqueue(grant, OutboxItem.Action.REMOVE, now, marked=True)
        notification_outbox.notify("grant_ended", grant.pk)
        withdrawals.extensions_withdraw_for_ended_grants(now, grant_ids=[grant.pk], job="grant-ended")
        provisioning.manual_applies_withdraw(now, grant_ids=[grant.pk])
        return grant
    ensure_transition("grant", grant.status, Status.REVOKED)
    was_active = grant.status == Status.ACTIVE
    grant.status, grant.ended_at, grant.end_reason, grant.ended_by = Status.REVOKED, now, end_reason, actor
    if was_active:
        removal = provisioning.note_pending(grant, OutboxItem.Action.REMOVE, now)  # its removal is queued below
    else:
        grant.provisioning_state, removal = Grant.Provisioning.NOT_APPLIED, ["provisioning_state"]
    grant.save(update_fields=["status", "ended_at", "end_reason", "ended_by", *removal])
    event_record(
        event_type,
        actor=actor,
        job=job,
        client_address=client_address,
        grant=grant,
        access_request=grant.access_request,
        reason=reason,
        data=data,
    )
    if was_active:
        provisioning.provisioning_enqueue(grant, OutboxItem.Action.REMOVE, now, marked=True)
    notification_outbox.notify("grant_ended", grant.pk)
    withdrawals.extensions_withdraw_for_ended_grants(now, grant_ids=[grant.pk], job="grant-ended")
    provisioning.manual_applies_withdraw(now, grant_ids=[grant.pk])
    return grant


def grant_revoke(actor: User, grant_id: int, *, reason: str, client_address: str | None = None) -> Grant:
    """An approver of the role, or an owner of the system, ends someone's access now (reason required)."""
    if not reason.strip():
        raise PolicyViolation("Say why you revoke this access: the grantee and auditors will read it.")
    now = clock.now()
    with transaction.atomic():
        grant = _lock(grant_id)
        permissions.ensure_can_revoke_grant(actor, grant)
        return _end(
            grant,
            actor=actor,
            reason=reason.strip(),
            end_reason=Grant.EndReason.REVOKED,
            event_type=Type.GRANT_REVOKED,
            now=now,
            client_address=client_address,
        )


def grant_release(actor: User, grant_id: int, *, client_address: str | None = None) -> Grant:
    """The grantee gives access back early."""
    now = clock.now()
    with transaction.atomic():
        grant = _lock(grant_id)
        permissions.ensure_can_release_grant(actor, grant)
        return _end(
            grant,
            actor=actor,
            reason="Cancelled by the grantee before it started."
            if now < grant.starts_at
            else "Released early by the grantee.",
            end_reason=Grant.EndReason.RELEASED,
            event_type=Type.GRANT_RELEASED,
            now=now,
            client_address=client_address,
        )


def grant_remind_expiring(now: datetime) -> int:
    """Tell grantees once, EXPIRY_REMINDER_BEFORE the end (bookkeeping only, not a state change).
    The grants are claimed under skip-locked row locks, so parallel sweeps remind each once."""
    with transaction.atomic():
        ids = list(
            Grant.objects.active(now)
            .filter(expires_at__lte=now + EXPIRY_REMINDER_BEFORE, expiry_reminder_sent_at__isnull=True)
            .select_for_update(skip_locked=True, no_key=True, of=("self",))
            .values_list("pk", flat=True)[:1000]
        )
        if ids:
            Grant.objects.filter(pk__in=ids).update(expiry_reminder_sent_at=now)
            notification_outbox.notify_many("grant_expiring", ids)
    return len(ids)


# --- Break-glass --------------------------------------------------------------------------------


def break_glass_activate(
    actor: User,
    *,
    role: Role,
    justification: str,
    duration: timedelta,
    step_up_at: datetime | None,
    client_address: str | None = None,
) -> Grant:
    """Self-activation without a peer, on roles that allow it: a fresh TOTP, a reason, at most 1 h.
    Approvers and auditors are told at once, and a follow-up another person must acknowledge
    within 24 h is opened."""
    now = clock.now()
    otp.ensure_step_up(step_up_at, now, action="Break-glass")
    with transaction.atomic():
        role = Role.objects.select_for_update(no_key=True, of=("self",)).select_related("system").get(pk=role.pk)
        if not role.break_glass_allowed:
            raise PolicyViolation(f"{role} does not allow break-glass access.")
        permissions.ensure_can_request_role(actor, role, now)
        policies.validate_duration(
            role, duration, ceiling=policies.BREAK_GLASS_MAX_DURATION, ceiling_is="Break-glass access lasts"
        )
        if len(justification.strip()) < 10:
            raise PolicyViolation("Explain the emergency (at least 10 characters).")
        if holds_current(actor, role, now):
            raise TransitionNotAllowed(f"You already have access to {role}.")
        access_request = AccessRequest.objects.create(
            requester=actor,
            role=role,
            kind=AccessRequest.Kind.BREAK_GLASS,
            status=AccessRequest.Status.APPROVED,
            requested_duration=duration,
            approved_duration=duration,
            justification=justification.strip(),
            created_at=now,
            lapses_at=now,
            decided_at=now,
        )
        grant = Grant.objects.create(
            access_request=access_request,
            user=actor,
            role=role,
            status=Status.ACTIVE,
            is_break_glass=True,
            starts_at=now,
            expires_at=now + duration,
            created_at=now,
            activated_at=now,
        )
        follow_up = BreakGlassFollowUp.objects.create(grant=grant, due_at=now + BREAK_GLASS_FOLLOW_UP_WITHIN)
        event_record(
            Type.BREAK_GLASS_ACTIVATED,
            actor=actor,
            client_address=client_address,
            access_request=access_request,
            grant=grant,
            reason=access_request.justification,
            data={
                "duration_seconds": int(duration.total_seconds()),
                "step_up_at": step_up_at.isoformat(),
                "follow_up_due_at": follow_up.due_at.isoformat(),
            },
        )
        provisioning.provisioning_enqueue(grant, OutboxItem.Action.APPLY, now, new_grant=True)
        notification_outbox.notify("break_glass_activated", grant.pk)
        return grant


def break_glass_acknowledge(
    actor: User, follow_up_id: int, *, comment: str, client_address: str | None = None
) -> BreakGlassFollowUp:
    """Someone other than the grantee reviews a break-glass use and signs it off with a comment — once the
    access has ended: a use still going on cannot be reviewed whole (what is done after the sign-off would
    go unreviewed). Locks the follow-up; the grant's end is read by the clock (``Grant.is_active_at``), so
    an expired grant the sweeper has not reached yet counts as ended, and a grant never becomes active
    again, so it needs no lock. Raises PolicyViolation (no comment), NotAuthorized, TransitionNotAllowed
    (already acknowledged; the grant still active — the follow-up stays open)."""
    if not comment.strip():
        raise PolicyViolation("Write what you checked: the comment is the evidence of this review.")
    with transaction.atomic():
        follow_up = (
            BreakGlassFollowUp.objects.select_for_update(no_key=True, of=("self",))
            .select_related("grant__role__system", "grant__access_request", "grant__user")
            .get(pk=follow_up_id)
        )
        if not follow_up.is_open:
            raise TransitionNotAllowed("This follow-up was already acknowledged.")
        permissions.ensure_can_acknowledge_break_glass(actor, follow_up.grant)
        now = clock.now()
        if follow_up.grant.is_active_at(now):
            raise TransitionNotAllowed(
                f"{follow_up.grant.user.get_username()}'s break-glass access to {follow_up.grant.role} is still "
                f"active (until {follow_up.grant.expires_at:%Y-%m-%d %H:%M} UTC): it can be acknowledged once it "
                "has ended. Ask them to release it, or wait for it to end; the follow-up stays open."
            )
        follow_up.acknowledged_by = actor
        follow_up.acknowledged_at = now
        follow_up.comment = comment.strip()
        follow_up.save(update_fields=["acknowledged_by", "acknowledged_at", "comment"])
        event_record(
            Type.BREAK_GLASS_ACKNOWLEDGED,
            actor=actor,
            client_address=client_address,
            grant=follow_up.grant,
            access_request=follow_up.grant.access_request,
            reason=follow_up.comment,
        )
        return follow_up


def break_glass_remind_overdue(now: datetime) -> int:
    """Re-notify open follow-ups past their due time, at most every BREAK_GLASS_REMIND_EVERY (claimed
    under skip-locked row locks, so parallel sweeps remind each once)."""
    with transaction.atomic():
        ids = list(
            BreakGlassFollowUp.objects.filter(acknowledged_at__isnull=True, due_at__lte=now)
            .filter(Q(last_reminded_at__isnull=True) | Q(last_reminded_at__lte=now - BREAK_GLASS_REMIND_EVERY))
            .select_for_update(skip_locked=True, no_key=True, of=("self",))
            .values_list("pk", flat=True)[:1000]
        )
        if ids:
            BreakGlassFollowUp.objects.filter(pk__in=ids).update(last_reminded_at=now)
            notification_outbox.notify_many("break_glass_overdue", ids)
    return len(ids)


def grant_revoke_by_system(
    grant_id: int,
    *,
    reason: str,
    job: str,
    end_reason: str = Grant.EndReason.REVOKED,
    event_type: str = Type.GRANT_REVOKED,
    data: dict | None = None,
    actor: User | None = None,
    client_address: str | None = None,
) -> Grant:
    """End a grant as the consequence of another change (an account deactivated, a person removed from a
    group, an access review's outcome, its ticket closed, its incident resolved): no permission check on
    the grant, the event names ``actor`` when a person or a provider's service account caused it (else
    the job) and says why (``end_reason``/``event_type``, ``data``: the evidence). Callers are services
    that already authorized their own action."""
    now = clock.now()
    with transaction.atomic():
        grant = _lock(grant_id)
        return _end(
            grant,
            now=now,
            end_reason=end_reason,
            event_type=event_type,
            reason=reason,
            job=job,
            data=data,
            actor=actor,
            client_address=client_address,
        )
