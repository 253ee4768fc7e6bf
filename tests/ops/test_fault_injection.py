"""Fault injection with real processes: Celery workers and beats as subprocesses, a private
redis-server that the tests stop and start, a PostgreSQL target (or a local webhook receiver).

Each test starts its OWN redis-server on a free port (never the shared one) and its own workers and
beats against the test database; fixtures stop every process they started. The test process itself
runs tasks eagerly for setup, and publishes to the private Redis only where a test says so.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
import redis
from celery import Celery
from celery.result import allow_join_result
from django.db import connection, transaction
from django.test import Client, override_settings
from django.utils import timezone
from psycopg import sql

from accessgov.ledger.verify import verify_chain
from accessgov.models import (
    AccessEvent,
    Eligibility,
    Grant,
    JobRun,
    NotificationDelivery,
    OutboxItem,
    QueuedNotification,
    Role,
    System,
)
from accessgov.services import access_requests as ar
from accessgov.services import grants as gs
from accessgov.services.scheduler import scheduler_wake
from tests.conftest import REQUIRE_SERVICES, verify_session
from tests.support.databases import database_url_of_this_test
from tests.support.pg_target import PgTarget
from tests.support.provisioning import WEBHOOK_SECRET, Receiver, approve, event_types, in_another_connection, make_due
from tests.support.workers import start_beat, start_scheduler, start_worker

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]
LEASE_SECONDS = 6  # the workers' PROVISIONING_LEASE_SECONDS (60 by default), so a dead worker's lease ends soon
# Statements at a target are bounded well under that lease (PROVISIONING_TARGET_*_TIMEOUT_SECONDS, 5 and 10 s
# by default; settings refuse a statement timeout of half the lease or more).
TARGET_LOCK_TIMEOUT, TARGET_STATEMENT_TIMEOUT = 2.5, 2.9
SCHEDULER_LEASE = 2  # the schedulers' SCHEDULER_LEASE_SECONDS (5 by default), so a standby takes over soon
GRANTS = 10  # due at once in the two-beats test
NOTIFIED = re.compile(r"notification (\w+) #(\d+): \d+ emails")


def wait_for(condition: Callable[[], object], timeout: float, interval: float = 0.1):
    """Poll ``condition`` until it returns something truthy (returned) or the deadline passes (falsy)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


# --- A private Redis ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PrivateRedis:
    """A redis-server of this test alone, without persistence: stopping it loses every queued message,
    as a crashed broker would. Restarted on the same port, so clients reconnect to the same URL."""

    def __init__(self, workdir: Path):
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = workdir
        self.process: subprocess.Popen | None = None

    def ping(self) -> bool:
        """PING over a plain socket: one try, no client-side retries (redis-py would back off)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", str(self.workdir)),
            ],
            stdout=(self.workdir / "redis.log").open("a"),
            stderr=subprocess.STDOUT,
        )
        assert wait_for(self.ping, timeout=10), (self.workdir / "redis.log").read_text()

    def stop(self) -> None:
        """Down hard (SIGKILL): nothing is flushed, clients see refused connections."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        assert not self.ping()

    def queued(self) -> int:
        return redis.Redis(port=self.port).llen("celery")


@pytest.fixture
def private_redis(tmp_path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        reason = "needs the redis-server program (Debian package 'redis-server') to run a private Redis"
        if REQUIRE_SERVICES:
            pytest.fail(f"REQUIRE_SERVICES=1 but this test {reason}", pytrace=False)
        pytest.skip(reason)
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = PrivateRedis(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --- Workers and beats --------------------------------------------------------------------------


class Fleet:
    """The Celery processes of one test, each logging to its own file; all stopped at teardown."""

    def __init__(self, tmp_path: Path, broker_url: str):
        self.tmp_path = tmp_path
        self.broker_url = broker_url
        self.processes: dict[str, subprocess.Popen] = {}
        assert connection.settings_dict["NAME"].startswith("test_")  # never the development database
        self.database_url = database_url_of_this_test()

    def _env(self, name: str, extra: dict[str, str]) -> dict[str, str]:
        var_dir = self.tmp_path / name  # beats keep their schedule file here: one each
        var_dir.mkdir()
        return {
            "VAR_DIR": str(var_dir),
            "DATABASE_URL": self.database_url,
            "CELERY_BROKER_URL": self.broker_url,
            "CELERY_RESULT_BACKEND": self.broker_url,
            "CELERY_TASK_ALWAYS_EAGER": "0",
            "PROVISIONING_LEASE_SECONDS": str(LEASE_SECONDS),
            "PROVISIONING_TARGET_LOCK_TIMEOUT_SECONDS": str(TARGET_LOCK_TIMEOUT),
            "PROVISIONING_TARGET_STATEMENT_TIMEOUT_SECONDS": str(TARGET_STATEMENT_TIMEOUT),
            "WEBHOOK_ALLOW_PRIVATE_TARGETS": "1",
            "RECONCILE_INTERVAL_SECONDS": "3600",
            **extra,
        }

    def _log_file(self, name: str):
        return (self.tmp_path / f"{name}.log").open("w")

    def worker(self, name: str, concurrency: int = 0, **extra: str) -> subprocess.Popen:
        """A solo worker, or a prefork one with ``concurrency`` processes (production's pool)."""
        process = start_worker(
            self._env(name, extra), self._log_file(name), loglevel="INFO", name=name, concurrency=concurrency
        )
        self.processes[name] = process
        return process

    def scheduler(self, name: str, **extra: str) -> subprocess.Popen:
        """``manage.py run_scheduler`` with a short lease (SCHEDULER_LEASE_SECONDS), unless told otherwise."""
        env = {"SCHEDULER_LEASE_SECONDS": str(SCHEDULER_LEASE), **extra}
        process = start_scheduler(self._env(name, env), self._log_file(name))
        self.processes[name] = process
        return process

    def beat(self, name: str, **extra: str) -> subprocess.Popen:
        process = start_beat(self._env(name, extra), self._log_file(name))
        self.processes[name] = process
        return process

    def log(self, name: str) -> str:
        path = self.tmp_path / f"{name}.log"
        return path.read_text() if path.exists() else ""

    def logs(self) -> str:
        return "\n".join(f"--- {name} ---\n{self.log(name)[-3000:]}" for name in self.processes)

    def wait_logged(self, name: str, text: str, timeout: float = 60) -> None:
        assert wait_for(lambda: text in self.log(name), timeout, interval=0.2), self.logs()

    def kill(self, name: str) -> None:
        """kill -9: no warm shutdown, no acknowledgement, no clean-up of any kind."""
        process = self.processes[name]
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def stop(self, *names: str) -> None:
        """Warm shutdown, all at once (SIGTERM: a worker finishes its current task), then SIGKILL
        whatever is still running after 15 s."""
        processes = [self.processes[name] for name in names]
        for process in processes:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + 15
        for process in processes:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)

    def stop_all(self) -> None:
        self.stop(*self.processes)


@pytest.fixture
def fleet(tmp_path, private_redis) -> Iterator[Fleet]:
    processes = Fleet(tmp_path, private_redis.url)
    try:
        yield processes
    finally:
        processes.stop_all()


def send(broker_url: str, task: str, *args) -> None:
    """Put a task on the private Redis (a fresh client each time: the server may have restarted)."""
    client = Celery("probe", broker=broker_url, set_as_current=False)
    try:
        client.send_task(task, args=list(args))
    finally:
        client.close()


def wait_for_a_worker(broker_url: str, timeout: float = 60) -> None:
    """A round trip through the broker: some worker is consuming (after a start or a reconnection)."""
    client = Celery("probe", broker=broker_url, backend=broker_url, set_as_current=False)
    try:
        assert client.send_task("accessgov.tasks.ping").get(timeout=timeout) == "pong"
    finally:
        client.close()


def wait_for_sweep(after: float, timeout: float = 30) -> dict:
    """The counts of the first sweep that finished after ``after`` (Unix time), as the worker stored them."""

    def finished():
        run = JobRun.objects.filter(name="sweep").first()
        return run.result if run is not None and run.finished_at.timestamp() > after else None

    counts = wait_for(finished, timeout, interval=0.2)
    assert counts, "no sweep finished in time"
    return counts


@contextmanager
def portal_publishing_to(broker_url: str) -> Iterator[None]:
    """This process's Celery app sends its tasks to ``broker_url`` for real (instead of running them
    eagerly), so the services' after-commit tasks meet whatever state that broker is in."""
    from portal.celery import app

    saved = {"task_always_eager": app.conf.task_always_eager, "broker_url": app.conf.broker_url}

    def reset_pools():
        app._pool = None
        app.amqp._producer_pool = None

    reset_pools()
    app.conf.update(task_always_eager=False, broker_url=broker_url)
    try:
        yield
    finally:
        app.conf.update(saved)
        reset_pools()


# --- A PostgreSQL target ------------------------------------------------------------------------


@pytest.fixture
def pg(world):
    """The lifecycle world with "Payments DB" provisioned by the PostgreSQL connector into a throw-away
    database on the test server; the requester has a login role there."""
    settings = connection.settings_dict
    target = PgTarget(
        host=settings.get("HOST") or "127.0.0.1",
        port=int(settings.get("PORT") or 5432),
        superuser=settings.get("USER") or "postgres",
        password=settings.get("PASSWORD") or "",
    )
    try:
        target.create()
        System.objects.filter(pk=world.system.pk).update(
            connector=System.Connector.POSTGRES,
            connector_config=target.connector_config(),
            connector_secret=target.password,
        )
        Role.objects.filter(pk=world.role.pk).update(target_name=target.managed)
        world.system.refresh_from_db()
        world.role.refresh_from_db()
        world.target = target
        world.principal = target.create_login(world.requester.username)
        yield world
    finally:
        target.drop()


def provisioner_backends_waiting_on_a_lock(target: PgTarget) -> list[int]:
    with target.admin() as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE usename = %s AND wait_event_type = 'Lock'", (target.provisioner,)
        ).fetchall()
    return [row[0] for row in rows]


# --- 1. A worker killed mid-removal -------------------------------------------------------------


def test_a_worker_killed_mid_removal_leaves_it_to_the_next_sweep_which_removes_the_access_exactly_once(
    pg, private_redis, fleet
):
    target, principal = pg.target, pg.principal
    grant = approve(pg)  # setup, in this process: the access is applied at the target
    assert target.members() == {principal}
    fleet.worker("doomed")
    wait_for_a_worker(private_redis.url)
    make_due(grant)

    # The target is slow: an uncommitted REVOKE of the same membership holds its row, so the worker's
    # REVOKE waits for it. The removal is then in flight when the worker dies.
    blocker = psycopg.connect(
        host=target.host, port=target.port, dbname=target.dbname, user=target.provisioner, password=target.password
    )
    try:
        blocker.execute(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(target.managed), sql.Identifier(principal)))
        send(private_redis.url, "accessgov.tasks.expire_grant", grant.pk)
        waiting = wait_for(lambda: provisioner_backends_waiting_on_a_lock(target), timeout=30)
        assert waiting, fleet.logs()
        item = OutboxItem.objects.get(grant=grant, action=OutboxItem.Action.REMOVE)
        assert item.done_at is None and item.lease_until is not None and item.attempts == 1  # in flight

        fleet.kill("doomed")
        # The dead worker's database session would still run its REVOKE once the row is free; end it, so
        # that only a recovery can remove the access and a skipped removal would show at the target.
        with target.admin() as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (waiting,))
        assert wait_for(lambda: not provisioner_backends_waiting_on_a_lock(target), timeout=10)
    finally:
        blocker.rollback()
        blocker.close()

    assert target.members() == {principal}  # the dead worker removed nothing
    grant.refresh_from_db()
    assert grant.status == Grant.Status.EXPIRED  # ended in AccessGov all the same
    assert grant.removal_confirmed_at is None
    assert "provisioning.removed" not in event_types(grant)

    fleet.worker("fresh")
    wait_for_a_worker(private_redis.url)
    # The dead worker's lease runs out; until then nobody takes the item (that is what a lease is for).
    assert wait_for(lambda: OutboxItem.objects.get(pk=item.pk).lease_until < timezone.now(), timeout=LEASE_SECONDS + 5)
    OutboxItem.objects.filter(pk=item.pk, done_at__isnull=True).get()  # still to do
    sent_at = time.time()
    send(private_redis.url, "accessgov.tasks.sweep")
    counts = wait_for_sweep(after=sent_at)

    assert counts["provisioned"] == 1, fleet.logs()  # one sweep did it
    assert target.members() == set()
    grant.refresh_from_db()
    assert grant.provisioning_state == Grant.Provisioning.CONFIRMED
    assert grant.removal_confirmed_at is not None and grant.provisioning_error == ""
    [removal] = OutboxItem.objects.filter(grant=grant, action=OutboxItem.Action.REMOVE)
    assert removal.outcome == "done" and removal.attempts == 2  # the dead worker's try, and the sweep's
    assert event_types(grant) == {
        "grant.activated": 1,
        "provisioning.applied": 1,
        "grant.expired": 1,
        "provisioning.removed": 1,
    }
    assert verify_chain().ok


# --- 2. Redis down while approving, and while expiring ------------------------------------------


def test_approving_while_redis_is_down_commits_everything_and_one_sweep_after_it_returns_applies_the_access(
    pg, private_redis, fleet
):
    access_request = ar.access_request_submit(
        pg.requester, role=pg.role, duration=timedelta(hours=1), justification="Investigating incident INC-42"
    )
    fleet.worker("worker")
    wait_for_a_worker(private_redis.url)
    approver = verify_session(Client(raise_request_exception=False), pg.approver)

    private_redis.stop()
    with portal_publishing_to(private_redis.url):
        started = time.monotonic()
        response = approver.post(f"/requests/{access_request.pk}/approve/", {"comment": "ok"})
        took = time.monotonic() - started
    print(f"approval with Redis down answered {response.status_code} in {took:.2f} s")
    assert response.status_code == 302, response.status_code
    assert took < 15

    def committed():
        grant = Grant.objects.get(access_request_id=access_request.pk)
        return (
            grant.pk,
            grant.status,
            grant.provisioning_state,
            list(OutboxItem.objects.filter(grant=grant).values_list("action", "attempts", "done_at")),
            sorted(
                AccessEvent.objects.filter(access_request_id=access_request.pk).values_list("event_type", flat=True)
            ),
        )

    grant_id, status, state, items, events = in_another_connection(committed)  # committed, seen from outside
    assert status == Grant.Status.ACTIVE
    assert Grant.objects.active(timezone.now()).filter(pk=grant_id).exists()
    assert state == Grant.Provisioning.PENDING
    assert items == [(OutboxItem.Action.APPLY, 0, None)]
    assert events == ["decision.approve", "grant.activated", "request.approved", "request.submitted"]
    assert pg.target.members() == set()  # the after-commit drain could not be sent

    private_redis.start()  # empty: every message published before the outage is gone
    wait_for_a_worker(private_redis.url)  # the same worker reconnected
    assert OutboxItem.objects.get(grant_id=grant_id).done_at is None  # nothing but the sweep will drain it
    sent_at = time.time()
    send(private_redis.url, "accessgov.tasks.sweep")
    counts = wait_for_sweep(after=sent_at)

    assert counts["provisioned"] == 1, fleet.logs()
    assert pg.target.members() == {pg.principal}
    with pg.target.connect_as(pg.principal) as session:
        assert pg.target.read_table_as_managed(session) == 2
    grant = Grant.objects.get(pk=grant_id)
    assert grant.provisioning_state == Grant.Provisioning.APPLIED
    assert event_types(grant)["provisioning.applied"] == 1
    assert OutboxItem.objects.get(grant=grant).attempts == 1
    assert verify_chain().ok


def test_a_notification_whose_task_was_lost_with_redis_is_sent_once_by_the_first_sweep_after_it_returns(
    pg, private_redis, fleet
):
    """Reliability promise 10, for the people told: a request submitted while the broker is away still reaches
    its approvers — the notification commits with the request, and a sweep publishes it again."""
    fleet.worker("worker", EMAIL_BACKEND="django.core.mail.backends.console.EmailBackend")
    wait_for_a_worker(private_redis.url)
    private_redis.stop()
    with portal_publishing_to(private_redis.url):
        access_request = ar.access_request_submit(
            pg.requester, role=pg.role, duration=timedelta(hours=1), justification="Investigating incident INC-43"
        )
    queued = QueuedNotification.objects.get(kind="request_submitted")
    assert queued.object_ids == [access_request.pk] and queued.done_at is None  # committed with the request

    private_redis.start()  # empty: the task published at the commit is gone
    wait_for_a_worker(private_redis.url)
    sent_at = time.time()
    send(private_redis.url, "accessgov.tasks.sweep")
    assert wait_for_sweep(after=sent_at)["notifications_requeued"] == 0  # within the grace: its task may yet run
    QueuedNotification.objects.filter(pk=queued.pk).update(created_at=timezone.now() - timedelta(minutes=2))
    sent_at = time.time()
    send(private_redis.url, "accessgov.tasks.sweep")
    assert wait_for_sweep(after=sent_at)["notifications_requeued"] == 1, fleet.logs()

    def done():
        return QueuedNotification.objects.filter(pk=queued.pk, done_at__isnull=False).exists()

    assert wait_for(done, timeout=30, interval=0.2), fleet.logs()
    approvers = {pg.approver.email, pg.approver2.email}
    deliveries = NotificationDelivery.objects.filter(notification_id=queued.notification_id)
    assert {d.recipient.email for d in deliveries} >= {pg.approver.email}
    assert set(deliveries.values_list("status", flat=True)) == {NotificationDelivery.Status.SENT}
    # Once: a later sweep publishes nothing, and each approver got one email.
    sent_at = time.time()
    send(private_redis.url, "accessgov.tasks.sweep")
    assert wait_for_sweep(after=sent_at)["notifications_requeued"] == 0
    subjects = re.findall(r"^To: (\S+)$", fleet.log("worker"), flags=re.MULTILINE)
    assert sorted(subjects) == sorted(d.recipient.email for d in deliveries) and set(subjects) <= approvers | {""}


def test_a_grant_expiring_while_redis_is_down_is_never_active_past_its_end_and_one_sweep_after_it_returns_removes_it(
    pg, private_redis, fleet
):
    target, principal = pg.target, pg.principal
    grant = approve(pg)  # setup, in this process: the access is applied at the target
    assert target.members() == {principal}
    fleet.worker("worker")
    wait_for_a_worker(private_redis.url)
    # Setup only: the shortest policy duration is 5 minutes; make this grant end in 2 s.
    Grant.objects.filter(pk=grant.pk).update(expires_at=timezone.now() + timedelta(seconds=2))
    grant.refresh_from_db()
    assert Grant.objects.active(timezone.now()).filter(pk=grant.pk).exists()

    private_redis.stop()
    with portal_publishing_to(private_redis.url):
        wait_for(lambda: timezone.now() >= grant.expires_at, timeout=10)
        # Nothing has expired it (no worker can hear from beat), yet no read treats it as active.
        assert Grant.objects.get(pk=grant.pk).status == Grant.Status.ACTIVE
        now = timezone.now()
        assert now >= grant.expires_at
        assert not Grant.objects.active(now).filter(pk=grant.pk).exists()
        assert not Grant.objects.get(pk=grant.pk).is_active_at(now)

        # The expiry itself runs during the outage (the eta task of a worker that held it, or a sweep):
        # it commits; the removal and the notification it sends after the commit cannot be queued.
        assert gs.grant_expire_due(timezone.now(), grant_ids=[grant.pk], job="expiry-timer") == 1

    grant.refresh_from_db()
    assert grant.status == Grant.Status.EXPIRED and grant.ended_at == grant.expires_at
    [removal] = OutboxItem.objects.filter(grant=grant, action=OutboxItem.Action.REMOVE)
    assert removal.done_at is None and removal.attempts == 0  # waiting in the outbox, not lost
    assert target.members() == {principal}  # removal needs a process: it has not happened yet

    private_redis.start()
    wait_for_a_worker(private_redis.url)
    assert OutboxItem.objects.get(pk=removal.pk).done_at is None
    sent_at = time.time()
    send(private_redis.url, "accessgov.tasks.sweep")
    counts = wait_for_sweep(after=sent_at)

    assert counts["provisioned"] == 1 and counts["expired"] == 0, fleet.logs()
    assert target.members() == set()
    grant.refresh_from_db()
    assert grant.provisioning_state == Grant.Provisioning.CONFIRMED and grant.removal_confirmed_at is not None
    removal.refresh_from_db()
    assert removal.outcome == "done" and removal.attempts == 1
    assert event_types(grant) == {
        "grant.activated": 1,
        "provisioning.applied": 1,
        "grant.expired": 1,
        "provisioning.removed": 1,
    }
    assert verify_chain().ok


def test_a_worker_holding_work_when_redis_goes_away_reconnects_by_itself_and_the_access_is_removed_after_it_returns(
    pg, make_user, private_redis, fleet
):
    # What crashed the worker for good (celery 5.7 + kombu 5.7, portal/broker.py): Redis goes away while
    # a prefork worker holds unacknowledged messages — a removal in progress (acks_late) and an eta
    # message an earlier version queued — and "Restoring N unacknowledged message(s)" ended in
    # AttributeError: 'NoneType' object has no attribute 'hostname', exit code 1.
    target = pg.target
    first = approve(pg)  # setup, in this process: applied at the target
    second_user = make_user("grantee2", device=False)
    Eligibility.objects.create(role=pg.role, user=second_user)
    second_principal = target.create_login(second_user.username)
    second = approve(pg, second_user)
    assert target.members() == {pg.principal, second_principal}
    worker = fleet.worker("worker", concurrency=2)
    wait_for_a_worker(private_redis.url)

    # Work held by the worker when Redis goes: (1) an eta timer of an earlier version for the second
    # grant, due in a few seconds — during the outage; (2) the first grant's expiry and removal, running,
    # blocked at the target by a session holding the member's row.
    Grant.objects.filter(pk=second.pk).update(expires_at=timezone.now() + timedelta(seconds=4))
    second.refresh_from_db()
    client = Celery("probe", broker=private_redis.url, set_as_current=False)
    client.send_task("accessgov.tasks.expire_grant", args=[second.pk], eta=second.expires_at)
    client.close()
    make_due(first)
    blocker = psycopg.connect(
        host=target.host, port=target.port, dbname=target.dbname, user=target.provisioner, password=target.password
    )
    try:
        blocker.execute(
            sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(target.managed), sql.Identifier(pg.principal))
        )
        send(private_redis.url, "accessgov.tasks.expire_grant", first.pk)
        assert wait_for(lambda: provisioner_backends_waiting_on_a_lock(target), timeout=30), fleet.logs()

        private_redis.stop()
        stopped_at = time.monotonic()
        fleet.wait_logged("worker", "Connection to broker lost", timeout=20)
        time.sleep(1)
    finally:
        blocker.rollback()  # the target lets the removal through, while Redis is still away
        blocker.close()
    # The removal in progress finishes and is recorded (PostgreSQL is up); its acknowledgement cannot
    # be sent. The second grant ends in the meantime: nothing in a worker or Redis expires it now.
    assert wait_for(lambda: Grant.objects.get(pk=first.pk).removal_confirmed_at is not None, timeout=15), fleet.logs()
    assert wait_for(lambda: timezone.now() > second.expires_at + timedelta(seconds=1), timeout=10)
    assert not Grant.objects.active(timezone.now()).filter(pk=second.pk).exists()
    assert worker.poll() is None, fleet.log("worker")[-4000:]  # alive, trying to reconnect

    private_redis.start()  # empty: the eta message and the unacknowledged ones are gone with it
    print(f"Redis away for {time.monotonic() - stopped_at:.1f} s")
    returned = time.monotonic()
    wait_for_a_worker(private_redis.url)  # the same worker, reconnected by itself
    print(f"worker consuming again {time.monotonic() - returned:.1f} s after Redis returned")
    assert worker.poll() is None
    sent_at = time.time()
    send(private_redis.url, "accessgov.tasks.sweep")  # what beat sends every 30 s
    counts = wait_for_sweep(after=sent_at)

    assert counts["expired"] == 1, fleet.logs()
    # The removal is the sweep's own drain or the drain task its expiry queued, whichever claims the item
    # first (on a loaded machine the task can win, and the sweep then counts nothing provisioned).
    assert wait_for(
        lambda: Grant.objects.filter(pk__in=[first.pk, second.pk], removal_confirmed_at__isnull=True).count() == 0,
        timeout=30,
    ), fleet.logs()
    assert target.members() == set()
    log = fleet.log("worker")
    assert "Restoring" in log or "Couldn't ack" in log, log[-4000:]  # it really held unacknowledged work
    assert "Unrecoverable error" not in log and "AttributeError" not in log, log[-4000:]
    for grant in (first, second):
        grant.refresh_from_db()
        assert grant.status == Grant.Status.EXPIRED
        assert grant.provisioning_state == Grant.Provisioning.CONFIRMED
        assert event_types(grant) == {
            "grant.activated": 1,
            "provisioning.applied": 1,
            "grant.expired": 1,
            "provisioning.removed": 1,
        }
        [removal] = OutboxItem.objects.filter(grant=grant, action=OutboxItem.Action.REMOVE)
        assert removal.outcome == "done"
    assert verify_chain().ok


# --- 3. Two beats at once -----------------------------------------------------------------------


@pytest.fixture
def receiver():
    with Receiver(WEBHOOK_SECRET) as r:
        yield r


def test_two_beats_running_at_once_expire_remove_and_notify_each_grant_exactly_once(
    world, make_user, private_redis, fleet, receiver
):
    System.objects.filter(pk=world.system.pk).update(
        connector=System.Connector.WEBHOOK,
        connector_config={"url": receiver.url, "principal_template": "svc-{username}"},
        connector_secret=WEBHOOK_SECRET,
    )
    world.system.refresh_from_db()
    # The processes start while this process creates the grants (their sweeps find nothing due yet).
    started = time.monotonic()
    for name in ("worker-1", "worker-2"):
        fleet.worker(name)
    for name in ("beat-1", "beat-2"):
        fleet.beat(name, SWEEP_INTERVAL_SECONDS="0.5")
    grants = []
    with override_settings(WEBHOOK_ALLOW_PRIVATE_TARGETS=True):
        for n in range(GRANTS):
            user = make_user(f"grantee{n}", device=False)
            Eligibility.objects.create(role=world.role, user=user)
            grants.append(approve(world, user))  # applied at the receiver (here, or by a sweep's drain)
    ids = sorted(g.pk for g in grants)
    for name in ("worker-1", "worker-2"):
        fleet.wait_logged(name, "ready.")
    for name in ("beat-1", "beat-2"):
        fleet.wait_logged(name, "Sending due task sweep")
    print(f"{GRANTS} grants, 2 workers and 2 beats ready in {time.monotonic() - started:.1f} s")
    started = time.monotonic()
    # Setup only: all of them end in 3 s. Both beats' sweeps now remind, expire and remove, at once.
    Grant.objects.filter(pk__in=ids).update(expires_at=timezone.now() + timedelta(seconds=3))

    def all_removed() -> bool:
        return Grant.objects.filter(pk__in=ids, removal_confirmed_at__isnull=False).count() == len(ids)

    assert wait_for(all_removed, timeout=30, interval=0.2), fleet.logs()
    print(f"all expired and removed {time.monotonic() - started:.1f} s after their end was set 3 s ahead")
    # Let both beats go on sweeping a little: nothing may be done again.
    sent_before = {name: fleet.log(name).count("Sending due task sweep") for name in ("beat-1", "beat-2")}
    for name, before in sent_before.items():
        assert wait_for(
            lambda name=name, before=before: fleet.log(name).count("Sending due task sweep") >= before + 3, 10
        )
    fleet.stop("beat-1", "beat-2")
    assert wait_for(lambda: private_redis.queued() == 0, timeout=20)
    fleet.stop("worker-1", "worker-2")

    worker_logs = fleet.log("worker-1") + fleet.log("worker-2")
    assert "raised unexpected" not in worker_logs, fleet.logs()
    for name in ("worker-1", "worker-2"):
        assert "Task accessgov.tasks.sweep[" in fleet.log(name), fleet.logs()  # both really swept
    expired = Counter(
        AccessEvent.objects.filter(event_type="grant.expired", grant_id__in=ids).values_list("grant_id", flat=True)
    )
    assert expired == dict.fromkeys(ids, 1)
    removed = Counter(
        AccessEvent.objects.filter(event_type="provisioning.removed", grant_id__in=ids).values_list(
            "grant_id", flat=True
        )
    )
    assert removed == dict.fromkeys(ids, 1)
    removals = Counter(
        OutboxItem.objects.filter(grant_id__in=ids, action=OutboxItem.Action.REMOVE, outcome="done").values_list(
            "grant_id", flat=True
        )
    )
    assert removals == dict.fromkeys(ids, 1)
    assert not OutboxItem.objects.filter(grant_id__in=ids, done_at__isnull=True).exists()
    deliveries = Counter((d["json"]["type"], d["json"]["grant_id"]) for d in receiver.deliveries)
    assert deliveries == {(kind, pk): 1 for pk in ids for kind in ("access.apply", "access.remove")}  # told once
    notified = Counter((kind, int(pk)) for kind, pk in NOTIFIED.findall(worker_logs))
    assert {pk: notified["grant_ended", pk] for pk in ids} == dict.fromkeys(ids, 1)
    # A sweep in the 3 s before the end reminds; whether one ran in time depends on the machine's load.
    assert all(notified["grant_expiring", pk] <= 1 for pk in ids), notified
    assert set(Grant.objects.filter(pk__in=ids).values_list("status", flat=True)) == {Grant.Status.EXPIRED}
    assert verify_chain().ok


def test_two_sweeps_overlapping_remind_each_grantee_of_the_end_once(world, make_user, mailoutbox):
    # What the two-beats test can only catch by luck, forced: the second sweep runs its reminders while
    # the first has claimed the same grants and not yet committed (two connections, two threads).
    grants = []
    for n in range(3):
        user = make_user(f"grantee{n}", device=False)
        Eligibility.objects.create(role=world.role, user=user)
        grants.append(approve(world, user))
    ids = [g.pk for g in grants]
    Grant.objects.filter(pk__in=ids).update(expires_at=timezone.now() + timedelta(minutes=10))
    mailoutbox.clear()
    now = timezone.now()
    first_claimed, second_done = threading.Event(), threading.Event()
    reminded: dict[str, int] = {}

    def first():
        with transaction.atomic():  # holds its claim until the second sweep has had its turn
            reminded["first"] = gs.grant_remind_expiring(now)
            first_claimed.set()
            second_done.wait(timeout=3)  # before the fix, the second sweep waited here on the row locks

    def second():
        first_claimed.wait(timeout=10)
        reminded["second"] = gs.grant_remind_expiring(now)
        second_done.set()

    def in_thread(call):
        try:
            call()
        finally:
            connection.close()

    threads = [threading.Thread(target=in_thread, args=(call,)) for call in (first, second)]
    with allow_join_result():  # eager tasks in threads (see tests/services/test_concurrency.race)
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)

    assert reminded == {"first": 3, "second": 0}
    assert sorted(m.to[0] for m in mailoutbox if "ends at" in m.subject) == sorted(g.user.email for g in grants)
    assert Grant.objects.filter(pk__in=ids, expiry_reminder_sent_at=now).count() == 3


# --- 4. The scheduler: killed, alone through a Redis outage, and a target holding a lock -------------


def end_in(grant: Grant, seconds: float) -> Grant:
    """Setup only (the shortest policy duration is 5 minutes): the grant ends ``seconds`` from now, and
    the scheduler is woken as the services do when they write a deadline."""
    with transaction.atomic():
        Grant.objects.filter(pk=grant.pk).update(expires_at=timezone.now() + timedelta(seconds=seconds))
        scheduler_wake()
    grant.refresh_from_db()
    return grant


def leader_of(fleet: "Fleet", names: tuple[str, ...], timeout: float = 30) -> str:
    """The scheduler that took the lease (the one that logged it; the others stand by)."""
    holder = wait_for(lambda: [n for n in names if "holds the lease" in fleet.log(n)], timeout, interval=0.1)
    assert holder and len(holder) == 1, fleet.logs()
    return holder[0]


def confirmed(grant: Grant) -> bool:
    """The removal is recorded as confirmed (its read back at the target has been committed)."""
    return Grant.objects.filter(pk=grant.pk, removal_confirmed_at__isnull=False).exists()


def removal_lag(grant: Grant) -> float:
    grant.refresh_from_db()
    assert grant.removal_confirmed_at is not None
    return (grant.removal_confirmed_at - grant.expires_at).total_seconds()


def assert_ended_and_removed_once(*grants: Grant) -> None:
    for grant in grants:
        grant.refresh_from_db()
        assert grant.status == Grant.Status.EXPIRED
        assert grant.provisioning_state == Grant.Provisioning.CONFIRMED
        types = event_types(grant)
        assert types["grant.expired"] == 1 and types["provisioning.removed"] == 1, types
        assert AccessEvent.objects.get(grant=grant, event_type="grant.expired").actor_label == "system:scheduler"
        [removal] = OutboxItem.objects.filter(grant=grant, action=OutboxItem.Action.REMOVE)
        assert removal.outcome == "done"
    assert verify_chain().ok


@pytest.fixture
def two_grantees(pg, make_user):
    """The requester's grant and a second grantee's, both applied at the target."""
    first = approve(pg)
    user = make_user("grantee2", device=False)
    Eligibility.objects.create(role=pg.role, user=user)
    principal = pg.target.create_login(user.username)
    second = approve(pg, user)
    assert pg.target.members() == {pg.principal, principal}
    return first, second


def test_a_killed_scheduler_is_replaced_by_its_standby_which_ends_and_removes_each_grant_once(pg, two_grantees, fleet):
    first, second = two_grantees
    names = ("scheduler-1", "scheduler-2")
    for name in names:
        fleet.scheduler(name)  # no worker at all: the scheduler needs only PostgreSQL
    leader = leader_of(fleet, names)
    standby = next(n for n in names if n != leader)

    first = end_in(first, 1.5)
    assert wait_for(lambda: confirmed(first), 20), fleet.logs()
    lag_before = removal_lag(first)
    assert "expired 1 grant" in fleet.log(leader) and "expired" not in fleet.log(standby)  # one at a time

    fleet.kill(leader)  # kill -9: no lease released, nothing cleaned up
    killed_at = timezone.now()
    second = end_in(second, 1.0)
    assert wait_for(lambda: confirmed(second), 30), fleet.logs()
    lag_after = removal_lag(second)
    took_over = "holds the lease" in fleet.log(standby)
    print(
        f"removal lag with the first scheduler {lag_before:.3f} s; after it was killed, by the standby "
        f"{lag_after:.3f} s (lease {SCHEDULER_LEASE} s, grant ended 1 s after the kill)"
    )
    assert took_over, fleet.logs()
    assert lag_before < 2
    # The standby takes over once the lease has lapsed (renewed at most ~1 s before the kill).
    assert (second.removal_confirmed_at - killed_at).total_seconds() < SCHEDULER_LEASE + 4
    assert pg.target.members() == set()
    stopping = time.monotonic()
    fleet.stop(standby)
    assert time.monotonic() - stopping < 5 and fleet.processes[standby].returncode == 0
    assert "Traceback" not in fleet.log(standby), fleet.log(standby)
    assert_ended_and_removed_once(first, second)


def test_the_scheduler_alone_ends_and_removes_access_on_time_while_redis_is_down(
    pg, two_grantees, private_redis, fleet
):
    first, second = two_grantees
    fleet.scheduler("scheduler")
    leader_of(fleet, ("scheduler",))
    private_redis.stop()  # for the whole test: no broker, no worker
    first, second = end_in(first, 1.0), end_in(second, 1.5)
    assert wait_for(lambda: confirmed(first) and confirmed(second), 20), fleet.logs()
    assert pg.target.members() == set()
    lags = [removal_lag(first), removal_lag(second)]
    print(f"revocation lag with Redis down: {', '.join(f'{lag:.3f} s' for lag in lags)}")
    assert max(lags) < 2
    assert fleet.processes["scheduler"].poll() is None
    fleet.stop("scheduler")
    log = fleet.log("scheduler")
    assert "could not send accessgov.tasks.notify" in log  # emails could not be queued; nothing waited for them
    assert_ended_and_removed_once(first, second)


@pytest.fixture
def second_system(pg, make_user):
    """A second PostgreSQL target (its own database and roles) as a second system, where the requester is
    eligible and has a login role; created and dropped around the test."""
    settings = connection.settings_dict
    target = PgTarget(
        host=settings.get("HOST") or "127.0.0.1",
        port=int(settings.get("PORT") or 5432),
        superuser=settings.get("USER") or "postgres",
        password=settings.get("PASSWORD") or "",
    )
    try:
        target.create()
        system = System.objects.create(
            name="Ledger DB",
            slug="ledger-db",
            connector=System.Connector.POSTGRES,
            connector_config=target.connector_config(),
            connector_secret=target.password,
        )
        role = Role.objects.create(
            system=system,
            name="read-write",
            target_name=target.managed,
            approvals_required=1,
            default_duration=timedelta(hours=1),
            max_duration=timedelta(hours=4),
        )
        Eligibility.objects.create(role=role, user=pg.requester, starts_at=timezone.now() - timedelta(days=1))
        from guardian.shortcuts import assign_perm

        assign_perm("accessgov.approve_role", pg.approver, role)
        pg.ledger_target, pg.ledger_role = target, role
        pg.ledger_principal = target.create_login(pg.requester.username)
        yield pg
    finally:
        target.drop()


def test_a_target_holding_a_lock_delays_only_its_own_removals_and_its_own_is_made_when_it_lets_go(second_system, fleet):
    pg = second_system
    blocked, free = pg.target, pg.ledger_target
    ledger = ar.access_request_submit(
        pg.requester, role=pg.ledger_role, duration=timedelta(hours=1), justification="Investigating INC-42 ledger"
    )
    ar.access_request_approve(pg.approver, ledger.pk, comment="ok")
    on_blocked, on_free = approve(pg), Grant.objects.get(access_request=ledger)
    assert blocked.members() == {pg.principal} and free.members() == {pg.ledger_principal}
    fleet.scheduler("scheduler")
    leader_of(fleet, ("scheduler",))

    holder = psycopg.connect(
        host=blocked.host, port=blocked.port, dbname=blocked.dbname, user=blocked.provisioner, password=blocked.password
    )
    try:
        # A session at the first target holds the grantee's membership row, uncommitted.
        holder.execute(
            sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(blocked.managed), sql.Identifier(pg.principal))
        )
        ends = timezone.now() + timedelta(seconds=1.5)
        with transaction.atomic():
            Grant.objects.filter(pk__in=[on_blocked.pk, on_free.pk]).update(expires_at=ends)
            scheduler_wake()
        assert wait_for(lambda: confirmed(on_free), 15), fleet.logs()
        free_lag = removal_lag(on_free)
        assert free.members() == set()
        # The blocked one fails after the lock timeout, and is retried with backoff: never more than one
        # of our statements waits at that target (issue 15: one more blocked worker every lease).
        waiting_samples = []
        deadline = time.monotonic() + 3 * TARGET_LOCK_TIMEOUT
        while time.monotonic() < deadline:
            waiting_samples.append(len(provisioner_backends_waiting_on_a_lock(blocked)))
            time.sleep(0.1)
        item = OutboxItem.objects.get(grant=on_blocked, action=OutboxItem.Action.REMOVE)
        assert item.done_at is None and item.attempts >= 2, (item.attempts, fleet.logs())
        assert "lock timeout" in item.last_error
        assert blocked.members() == {pg.principal}
    finally:
        holder.rollback()  # the target lets go
        holder.close()
    released = timezone.now()
    assert wait_for(lambda: confirmed(on_blocked), 30), fleet.logs()
    assert blocked.members() == set()
    blocked_lag = removal_lag(on_blocked)
    on_blocked.refresh_from_db()
    after_release = (on_blocked.removal_confirmed_at - released).total_seconds()
    print(
        f"free target removed {free_lag:.3f} s after the end; blocked one {blocked_lag:.1f} s after it "
        f"({after_release:.1f} s after the lock was let go, {item.attempts}+ attempts); "
        f"our statements waiting at the blocked target: at most {max(waiting_samples)}"
    )
    assert free_lag < 2  # not held up by the other target
    assert max(waiting_samples) <= 1
    # The retry after the release comes at the item's backoff (1, 2, 4 … s, capped), not a sweep later.
    assert after_release < 2 ** (item.attempts - 1) + 2
    fleet.stop("scheduler")
    assert_ended_and_removed_once(on_blocked, on_free)
    assert event_types(on_blocked)["provisioning.failed"] == 1  # recorded once, however many attempts


# --- 5. Two beats opening the quarter's access review at once ----------------------------------------


def test_two_beats_firing_the_quarterly_review_at_once_open_one_campaign(world, private_redis, fleet):
    from accessgov.models import ReviewCampaign

    for name in ("worker-1", "worker-2"):
        fleet.worker(name)
    for name in ("worker-1", "worker-2"):
        fleet.wait_logged(name, "ready.")
    # What two beats do when the quarter's cron fires: each sends the task; a worker takes each.
    client = Celery("probe", broker=private_redis.url, set_as_current=False)
    try:
        for _ in range(2):
            client.send_task("accessgov.tasks.quarterly_review")
    finally:
        client.close()
    for name in ("worker-1", "worker-2"):
        fleet.wait_logged(name, "Task accessgov.tasks.quarterly_review[", timeout=30)
    assert wait_for(
        lambda: all("succeeded" in fleet.log(n).split("quarterly_review[", 1)[-1] for n in ("worker-1", "worker-2")), 30
    ), fleet.logs()
    [campaign] = ReviewCampaign.objects.all()
    items = list(campaign.items.values_list("eligibility_id", "grant_id"))
    assert len(items) == len(set(items)) == 2
    assert AccessEvent.objects.filter(event_type="review.opened").count() == 1
    assert verify_chain().ok
