"""The expiry scheduler: one long-running process (``manage.py run_scheduler``) that ends and starts
grants on time and removes the access at the targets, from the database alone.

Design (docs/OPERATIONS.md has the operator's view and the failure modes):

- **No per-grant state anywhere but the database.** Each round asks the database for the earliest
  stored-active ``expires_at``, scheduled ``starts_at`` and outbox retry (``services.scheduler.next_due``:
  three index probes, the same cost for a million grants as for none), runs ``grant_activate_due`` /
  ``grant_expire_due`` when one is due, and drains every system with due outbox items. Then it sleeps
  until the next due instant, at most ``SCHEDULER_INTERVAL_SECONDS`` (1 s).
- **Woken early** on PostgreSQL by ``LISTEN accessgov_scheduler``: a transaction that writes a sooner
  deadline or an outbox item sends ``NOTIFY`` (delivered at its commit). On SQLite it polls.
- **One at a time, by lease.** Run two or more for availability: one holds the lease row
  (``SchedulerLease``) and renews it every round; the others try to take it every interval and succeed
  once it lapses (``SCHEDULER_LEASE_SECONDS`` after the last renewal: the holder died or hung) or was
  released (the holder stopped). Exclusivity saves work, it is not what makes the work correct: every
  transition is set-based under skip-locked row locks and every outbox item is leased, so a paused
  holder that wakes up after a standby took over does nothing twice.
- **Removals per system, in threads.** Each system with due outbox items gets its own drain
  (``outbox_drain(system_id=…)``) on one of ``SCHEDULER_DRAIN_THREADS`` threads: a target that blocks
  (bounded by the connector's lock and statement timeouts) holds up only its own removals, and never
  the expiry loop.
- **The broker is optional.** Expiry and removal need only the database. The Celery messages the
  services send after a commit (emails, a worker's drain) are handed to a background thread, so a Redis
  outage never stalls a round; what cannot be sent is logged and dropped, as in any other process.
- **Stops fast.** SIGTERM/SIGINT: the round in progress finishes, drains send nothing new (the item in
  flight finishes, the rest are released), the lease is released so a standby takes over at once, and
  the process exits within a few seconds whatever the number of grants.
"""

import contextlib
import logging
import os
import queue
import signal
import socket
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import close_old_connections, connection

from accessgov import clock
from accessgov.services import grants, provisioning
from accessgov.services import scheduler as db

logger = logging.getLogger("accessgov.scheduler")
SHUTDOWN_GRACE_SECONDS = 3.0  # how long a stopping scheduler waits for drains in flight
BUSY_RETRY_SECONDS = 0.2  # something is due but was locked by another transaction: look again soon
ERROR_RETRY_SECONDS = 1.0
STOP_CHECK_SECONDS = 0.25  # a waiting scheduler notices stop() within this
RENEW_EVERY = 5  # the holder renews its lease when a fifth of it has passed (1 s with the default 5 s)


class BackgroundPublisher:
    """Publishes this process's Celery messages from a thread: ``app.send_task`` (what ``task.delay``
    calls) only queues the message here. A broker outage then costs the scheduler nothing; a message
    that cannot be sent is logged and dropped (as ``on_commit(robust=True)`` does elsewhere); at most
    ``maxsize`` wait, the rest are dropped with a log line."""

    def __init__(self, app, maxsize: int = 10_000) -> None:
        self.app = app
        self.queue: queue.Queue = queue.Queue(maxsize)
        self._send = app.send_task
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)

    def install(self) -> None:
        self.app.send_task = self.send_task
        self._thread.start()

    def uninstall(self, flush_seconds: float = 1.0) -> None:
        """Give the thread up to ``flush_seconds`` to send what waits, then stop it (what is left is dropped)."""
        deadline = time.monotonic() + flush_seconds
        while not self.queue.empty() and time.monotonic() < deadline:
            time.sleep(0.02)
        self.app.send_task = self._send
        while True:  # make room for the stop sign if the queue is full
            try:
                self.queue.put_nowait(None)
                break
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self.queue.get_nowait()

    def send_task(self, *args, **kwargs) -> None:
        try:
            self.queue.put_nowait((args, kwargs))
        except queue.Full:
            logger.error("broker unreachable for long: dropped message %s", args[0] if args else "?")

    def _run(self) -> None:
        while True:
            message = self.queue.get()
            if message is None:
                return
            args, kwargs = message
            try:
                self._send(*args, **kwargs)
            except Exception as exc:
                logger.warning("could not send %s: %s", args[0] if args else "?", exc.__class__.__name__)


class Scheduler:
    """One scheduler process. ``run()`` loops until ``stop()``; ``round()`` is one pass (tests call it
    directly) and returns how long to wait before the next."""

    def __init__(
        self,
        *,
        interval: float | None = None,
        lease_seconds: float | None = None,
        drain_threads: int | None = None,
        holder: str | None = None,
        lease_name: str = db.LEASE_NAME,
    ) -> None:
        self.interval = interval if interval is not None else settings.SCHEDULER_INTERVAL_SECONDS
        self.lease_seconds = lease_seconds if lease_seconds is not None else settings.SCHEDULER_LEASE_SECONDS
        self.drain_threads = drain_threads if drain_threads is not None else settings.SCHEDULER_DRAIN_THREADS
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease_name = lease_name
        self.leading = False
        self._renewed_at = datetime.min.replace(tzinfo=UTC)
        self.stopping = threading.Event()
        self._listener = None
        self._listener_retry_at = 0.0
        self._drains: queue.Queue[int] = queue.Queue()
        self._draining: set[int] = set()
        self._draining_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.counts = {"rounds": 0, "activated": 0, "expired": 0, "drains": 0, "removed_or_applied": 0}

    # --- one round ------------------------------------------------------------------------------

    def round(self) -> float:
        """Renew (or try to take) the lease; if held, activate and expire what is due and start a drain
        for every system with due outbox items. Returns the seconds until the next round."""
        now = clock.now()
        if self.leading and now < self._renewed_at + timedelta(seconds=self.lease_seconds / RENEW_EVERY):
            leading = True  # renewed moments ago: rounds come as often as grants end, renewals need not
        else:
            leading = db.scheduler_lease_acquire(self.holder, now, ttl_seconds=self.lease_seconds, name=self.lease_name)
            self._renewed_at = now
        if leading != self.leading:
            self.leading = leading
            logger.info("scheduler %s %s the lease", self.holder, "holds" if leading else "lost")
        self.counts["rounds"] += 1
        if not leading:
            return self.interval
        due = db.next_due(now)
        worked, stuck = False, False
        if due.activation is not None and due.activation <= now:
            activated = grants.grant_activate_due(now, job="scheduler")
            self.counts["activated"] += activated
            worked, stuck = worked or bool(activated), stuck or not activated
        if due.expiry is not None and due.expiry <= now:
            expired = grants.grant_expire_due(now, job="scheduler")
            self.counts["expired"] += expired
            worked, stuck = worked or bool(expired), stuck or not expired
            if expired:
                logger.info("expired %s grant(s), the first %.3f s after its end", expired, _lag(now, due))
        # A system whose drain is still running gets no second one; look again soon, in case its drain
        # ended just before the items that are due now.
        stuck = self._start_drains(now) or stuck
        if worked:
            due = db.next_due(clock.now())
        return self._wait_after(due, stuck)

    def _wait_after(self, due: db.Due, stuck: bool) -> float:
        now = clock.now()
        wait = self.interval
        earliest = due.earliest()
        if earliest is not None:
            wait = min(wait, (earliest - now).total_seconds() + 0.001)
        if stuck:
            # Due, but locked by another transaction (an extension, a sweep) or with a drain still running:
            # look again in a moment, without spinning on it.
            wait = min(wait, BUSY_RETRY_SECONDS) if wait > 0.001 else BUSY_RETRY_SECONDS
        return max(wait, 0.0)

    # --- drains ---------------------------------------------------------------------------------

    def _start_drains(self, now: datetime) -> bool:
        """Queue a drain for every system with due items that has none running; True if one had."""
        busy = False
        for system_id in db.systems_with_due_outbox(now):
            with self._draining_lock:
                if system_id in self._draining:
                    busy = True
                    continue
                self._draining.add(system_id)
            self._drains.put(system_id)
        return busy

    def _drain_thread(self) -> None:
        while not self.stopping.is_set():
            try:
                system_id = self._drains.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                close_old_connections()
                done = provisioning.outbox_drain(system_id=system_id, stop=self.stopping)
                self.counts["drains"] += 1
                self.counts["removed_or_applied"] += done
            except Exception:
                logger.exception("drain of system %s failed", system_id)
                connection.close()
            finally:
                with self._draining_lock:
                    self._draining.discard(system_id)

    def drain_now(self) -> None:
        """Tests: run the drains ``round()`` queued, in this thread, until none is left."""
        while True:
            try:
                system_id = self._drains.get_nowait()
            except queue.Empty:
                return
            try:
                self.counts["removed_or_applied"] += provisioning.outbox_drain(system_id=system_id, stop=self.stopping)
            finally:
                with self._draining_lock:
                    self._draining.discard(system_id)

    # --- waiting --------------------------------------------------------------------------------

    def _listen(self) -> None:
        """A separate autocommit connection LISTENing on the channel (PostgreSQL only); re-opened after
        a failure, at most once per interval."""
        if connection.vendor != "postgresql" or self._listener is not None:
            return
        if time.monotonic() < self._listener_retry_at:
            return
        import psycopg

        params = connection.settings_dict
        options = {
            key: value
            for key, value in (params.get("OPTIONS") or {}).items()
            if key in ("sslmode", "sslrootcert", "sslcert", "sslkey", "options", "connect_timeout")
        }
        try:
            self._listener = psycopg.connect(
                dbname=params["NAME"],
                user=params.get("USER") or None,
                password=params.get("PASSWORD") or None,
                host=params.get("HOST") or None,
                port=params.get("PORT") or None,
                autocommit=True,
                application_name="accessgov-scheduler",
                **options,
            )
            self._listener.execute(f"LISTEN {db.CHANNEL}")
        except psycopg.Error as exc:
            logger.warning("cannot LISTEN (%s); polling every %.1f s", exc.__class__.__name__, self.interval)
            self._close_listener()
            self._listener_retry_at = time.monotonic() + self.interval

    def _close_listener(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):  # closing a broken connection
                self._listener.close()
        self._listener = None

    def wait(self, seconds: float) -> None:
        """Sleep up to ``seconds``; return early on a NOTIFY (PostgreSQL) or on stop()."""
        if seconds <= 0 or self.stopping.is_set():
            return
        self._listen()
        if self._listener is None:
            self.stopping.wait(seconds)
            return
        deadline = time.monotonic() + seconds
        try:
            # In slices, so that stop() (a signal handler cannot touch the connection) ends the wait soon.
            while not self.stopping.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                if any(True for _ in self._listener.notifies(timeout=min(left, STOP_CHECK_SECONDS), stop_after=1)):
                    for _ in self._listener.notifies(timeout=0):  # and whatever else waits: one round for all
                        pass
                    return
        except Exception as exc:
            logger.warning("LISTEN connection lost (%s)", exc.__class__.__name__)
            self._close_listener()

    # --- the process ----------------------------------------------------------------------------

    def stop(self, *_args) -> None:
        self.stopping.set()

    def run(self, *, publish_in_background: bool = True) -> None:
        """Loop until stop() (SIGTERM and SIGINT call it)."""
        from portal.celery import app

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
        publisher = BackgroundPublisher(app) if publish_in_background and not app.conf.task_always_eager else None
        if publisher:
            publisher.install()
        provisioning.DRAINED_BY_THIS_PROCESS = True  # its own outbox items are drained by its rounds
        self._threads = [
            threading.Thread(target=self._drain_thread, name=f"drain-{n}", daemon=True)
            for n in range(self.drain_threads)
        ]
        for thread in self._threads:
            thread.start()
        logger.info(
            "scheduler %s started (interval %.1f s, lease %.1f s, %s drain threads, %s)",
            self.holder,
            self.interval,
            self.lease_seconds,
            self.drain_threads,
            "LISTEN/NOTIFY" if connection.vendor == "postgresql" else "polling",
        )
        failing_since: float | None = None
        last_logged = 0.0
        try:
            while not self.stopping.is_set():
                try:
                    close_old_connections()
                    wait = self.round()
                    failing_since = None
                except Exception:
                    # The database is away (or a bug): log it once with its traceback, then once a minute.
                    if failing_since is None or time.monotonic() - last_logged > 60:
                        logger.exception("scheduler round failed; retrying every %.1f s", ERROR_RETRY_SECONDS)
                        last_logged = time.monotonic()
                    failing_since = failing_since or time.monotonic()
                    self.leading = False
                    connection.close()
                    wait = ERROR_RETRY_SECONDS
                self.wait(wait)
        finally:
            self._shutdown(publisher)

    def _shutdown(self, publisher: BackgroundPublisher | None) -> None:
        started = time.monotonic()
        self.stopping.set()
        deadline = started + SHUTDOWN_GRACE_SECONDS
        while time.monotonic() < deadline:
            with self._draining_lock:
                if not self._draining:
                    break
            time.sleep(0.02)
        with self._draining_lock:
            unfinished = sorted(self._draining)
        if unfinished:
            logger.warning("stopping with drains in flight for systems %s (their items' leases will lapse)", unfinished)
        try:
            if self.leading:
                db.scheduler_lease_release(self.holder, clock.now(), name=self.lease_name)
        except Exception:
            logger.exception("could not release the lease (it lapses by itself)")
        if publisher:
            publisher.uninstall()
        self._close_listener()
        logger.info("scheduler %s stopped in %.2f s", self.holder, time.monotonic() - started)


def _lag(now: datetime, due: db.Due) -> float:
    return (now - due.expiry).total_seconds() if due.expiry else 0.0
