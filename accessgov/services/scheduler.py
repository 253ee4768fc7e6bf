"""The expiry scheduler's database side: its lease, what becomes due next, and waking it up.

The scheduler process (``accessgov/scheduler.py``, ``manage.py run_scheduler``) keeps no per-grant
state: the database already knows every ``expires_at``, ``starts_at`` and outbox retry time, and the
earliest of each is one index probe (``grant_active_expires``, ``grant_status_starts``,
``outbox_due``). Callers: the scheduler process; and the services that write a new deadline or outbox
item (``services.grants``, ``services.provisioning``) call ``scheduler_wake`` in their transaction.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import connection
from django.db.models import Case, F, Q, Value, When

from accessgov import dbsql
from accessgov.models import Grant, OutboxItem, SchedulerLease, System

CHANNEL = "accessgov_scheduler"  # PostgreSQL LISTEN/NOTIFY channel
LEASE_NAME = "expiry"


def scheduler_wake() -> None:
    """Wake a waiting scheduler: something became due sooner than it planned, or an outbox item was
    written. On PostgreSQL a ``NOTIFY`` in the caller's transaction — delivered when it commits, never
    for a rollback; a no-op on SQLite, where the scheduler polls (at least every
    SCHEDULER_INTERVAL_SECONDS)."""
    dbsql.notify(CHANNEL)


# --- The lease ----------------------------------------------------------------------------------


def scheduler_lease_acquire(holder: str, now: datetime, *, ttl_seconds: float, name: str = LEASE_NAME) -> bool:
    """Take the lease, or renew it, for ``ttl_seconds`` from ``now``: True if ``holder`` holds it now.

    One conditional UPDATE on the lease row: it succeeds when ``holder`` already holds the lease, or
    when the lease has lapsed (its holder stopped renewing: died, hung, or released it). Two standbys
    racing for a lapsed lease: the second waits for the first one's row lock and then finds the lease
    taken (PostgreSQL re-checks the condition on the new row version; SQLite serializes writers), so
    exactly one wins. The row is created on first use."""
    lease = SchedulerLease.objects.filter(name=name)
    changed = lease.filter(Q(holder=holder) | Q(expires_at__isnull=True) | Q(expires_at__lte=now)).update(
        acquired_at=Case(When(holder=holder, then=F("acquired_at")), default=Value(now)),
        holder=holder,
        renewed_at=now,
        expires_at=now + timedelta(seconds=ttl_seconds),
    )
    if changed:
        return True
    if not lease.exists():
        SchedulerLease.objects.get_or_create(name=name)
        return scheduler_lease_acquire(holder, now, ttl_seconds=ttl_seconds, name=name)
    return False


def scheduler_lease_release(holder: str, now: datetime, *, name: str = LEASE_NAME) -> bool:
    """Give the lease up at once (a stopping scheduler), so a standby takes over at its next poll
    instead of waiting for the lease to lapse. Only the holder can release it."""
    return bool(SchedulerLease.objects.filter(name=name, holder=holder).update(expires_at=now))


# --- What is due --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Due:
    """The earliest instants at which the scheduler has work: a stored-active grant's end, a scheduled
    grant's start, and an outbox item's next retry (one still in the future; one due now is found by
    ``systems_with_due_outbox``). None: nothing of that kind."""

    expiry: datetime | None
    activation: datetime | None
    retry: datetime | None

    def earliest(self) -> datetime | None:
        instants = [at for at in (self.expiry, self.activation, self.retry) if at is not None]
        return min(instants) if instants else None


def next_due(now: datetime) -> Due:
    """One round trip, three index probes (each the first row of a partial or composite index: "nothing
    due" costs the same with a million active grants as with none)."""
    quote = connection.ops.quote_name
    grants, outbox = quote(Grant._meta.db_table), quote(OutboxItem._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT (SELECT min(expires_at) FROM {grants} WHERE status = %s), "  # noqa: S608 - fixed SQL; values are bound params
            f"(SELECT min(starts_at) FROM {grants} WHERE status = %s), "
            f"(SELECT min(next_attempt_at) FROM {outbox} WHERE done_at IS NULL AND next_attempt_at > %s)",
            [Grant.Status.ACTIVE, Grant.Status.SCHEDULED, connection.ops.adapt_datetimefield_value(now)],
        )
        expiry, activation, retry = cursor.fetchone()
    return Due(_as_utc(expiry), _as_utc(activation), _as_utc(retry))


def _as_utc(value) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite returns text from a raw cursor
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def systems_with_due_outbox(now: datetime) -> list[int]:
    """Systems (automatic connectors only) with outbox items due now and not leased: each gets its own
    drain, so a slow or blocked target holds up only its own items."""
    return list(
        OutboxItem.objects.filter(done_at__isnull=True, next_attempt_at__lte=now)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lte=now))
        .exclude(grant__role__system__connector=System.Connector.MANUAL)
        .values_list("grant__role__system_id", flat=True)
        .distinct()
        .order_by()
    )
