"""The one clock every decision about time reads: the database's (QUALITY.md promise 8: "a grant is never
treated as active at or after ``expires_at``, measured by the database clock").

``now()`` is this process's ``timezone.now()`` moved by how far it is from PostgreSQL's
``clock_timestamp()``, measured at most once a minute per process (half the round trip taken off). So a
web, worker or scheduler host whose clock runs behind the database's still sees a grant end at its
``expires_at`` as the database counts it, and every host writes the same instants into the ledger. On
SQLite (one machine: the embedded default) and with ``DATABASE_CLOCK=0`` — the test suite, which travels in
time — it is ``timezone.now()``. A failed measurement keeps the last offset and is tried again a minute later.
"""

import threading
import time
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

RESYNC_SECONDS = 60.0

_offset = timedelta(0)
_measured_at: float | None = None
_lock = threading.Lock()


def now() -> datetime:
    """The current instant by the database's clock (aware, UTC)."""
    if not (settings.DATABASE_CLOCK and connection.vendor == "postgresql"):
        return timezone.now()
    _measure_if_due()
    return timezone.now() + _offset


def offset() -> timedelta:
    """How far the database's clock is ahead of this process's (negative: behind), as last measured."""
    return _offset


def _measure_if_due() -> None:
    global _offset, _measured_at
    started = time.monotonic()
    if _measured_at is not None and started - _measured_at < RESYNC_SECONDS:
        return
    with _lock:
        if _measured_at is not None and started - _measured_at < RESYNC_SECONDS:
            return
        _measured_at = started  # also when it fails: never a query per call
        try:
            before = timezone.now()
            with connection.cursor() as cursor:
                cursor.execute("SELECT clock_timestamp()")
                database = cursor.fetchone()[0]
            after = timezone.now()
        except Exception:
            return
        _offset = database - (before + (after - before) / 2)


def forget() -> None:
    """No offset until measured again at the next ``now()`` (tests; after the database moved)."""
    global _measured_at, _offset
    with _lock:
        _measured_at, _offset = None, timedelta(0)
