"""The expiry scheduler in this process (accessgov/scheduler.py, services/scheduler.py): its lease, what
it finds due, one round at a time at fixed instants (time-machine), waking on NOTIFY, and publishing
without waiting for the broker. Real scheduler processes (killed, two at once, a blocked target, Redis
down) are in tests/ops/test_fault_injection.py; on the embedded SQLite database in tests/ops/test_expiry_worker.py."""

import socket
import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import time_machine
from celery import Celery
from django.db import connection, transaction
from django.test import override_settings
from django.utils import timezone

from accessgov.ledger.verify import verify_chain
from accessgov.models import AccessEvent, Eligibility, Grant, OutboxItem, SchedulerLease
from accessgov.scheduler import BackgroundPublisher, Scheduler
from accessgov.services import access_requests as ar
from accessgov.services import grants as gs
from accessgov.services import scheduler as db
from accessgov.services.provisioning import outbox_drain
from tests.support.provisioning import JUSTIFICATION, WEBHOOK_SECRET, Receiver, approve, event_types

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
H = timedelta(hours=1)
S = timedelta(seconds=1)


@pytest.fixture
def receiver():
    with Receiver(WEBHOOK_SECRET) as r:
        yield r


@pytest.fixture
def hooked(world, receiver):
    """The lifecycle world, "Payments DB" provisioned by a signed webhook to ``receiver``."""
    world.system.connector = "webhook"
    world.system.connector_config = {"url": receiver.url, "principal_template": "svc-{username}"}
    world.system.connector_secret = WEBHOOK_SECRET
    world.system.save()
    with override_settings(WEBHOOK_ALLOW_PRIVATE_TARGETS=True):
        yield world


def second_grantee(world, make_user) -> Grant:
    user = make_user("grantee2", device=False)
    Eligibility.objects.create(role=world.role, user=user)
    return approve(world, user)


def deliveries(receiver, kind: str) -> list[int]:
    return [d["json"]["grant_id"] for d in receiver.deliveries if d["json"]["type"] == kind]


# --- The lease ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_one_scheduler_holds_the_lease_and_a_standby_takes_it_only_once_it_has_lapsed():
    acquire = db.scheduler_lease_acquire
    assert acquire("a", T0, ttl_seconds=5)
    assert not acquire("b", T0 + S, ttl_seconds=5)
    assert acquire("a", T0 + 2 * S, ttl_seconds=5)  # renewed: now until T0 + 7 s
    assert not acquire("b", T0 + 6 * S, ttl_seconds=5)  # would have lapsed at T0 + 5 s without the renewal
    assert acquire("b", T0 + 7 * S, ttl_seconds=5)  # "a" stopped renewing (died, hung)
    assert not acquire("a", T0 + 8 * S, ttl_seconds=5)  # "a" comes back: it is the standby now
    lease = SchedulerLease.objects.get(name=db.LEASE_NAME)
    assert (lease.holder, lease.acquired_at, lease.renewed_at) == ("b", T0 + 7 * S, T0 + 7 * S)


@pytest.mark.django_db
def test_a_stopping_scheduler_releases_the_lease_so_a_standby_takes_over_at_once():
    assert db.scheduler_lease_acquire("a", T0, ttl_seconds=5)
    assert not db.scheduler_lease_release("b", T0 + S)  # only the holder releases it
    assert not db.scheduler_lease_acquire("b", T0 + S, ttl_seconds=5)
    assert db.scheduler_lease_release("a", T0 + S)
    assert db.scheduler_lease_acquire("b", T0 + S, ttl_seconds=5)  # not 4 s later


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_standbys_racing_for_a_lapsed_lease_never_both_win():
    assert db.scheduler_lease_acquire("old", T0, ttl_seconds=1)
    for attempt in range(5):
        now = T0 + timedelta(seconds=10 * (attempt + 1))  # the lease has lapsed each time
        barrier = threading.Barrier(2)
        won: dict[str, bool] = {}

        def race(name: str, now=now, barrier=barrier, won=won) -> None:
            try:
                barrier.wait(timeout=10)
                won[name] = db.scheduler_lease_acquire(name, now, ttl_seconds=5)
            finally:
                connection.close()

        threads = [threading.Thread(target=race, args=(f"standby-{attempt}-{n}",)) for n in (1, 2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert sorted(won.values()) == [False, True], won
        assert SchedulerLease.objects.get().holder == next(name for name, ok in won.items() if ok)


# --- What is due --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_next_due_is_the_earliest_stored_active_end_scheduled_start_and_future_retry(hooked, make_user):
    assert db.next_due(T0) == db.Due(None, None, None)
    with time_machine.travel(T0, tick=False):
        first = approve(hooked)  # ends T0 + 1 h; its APPLY item is due now (not a future retry)
        second = second_grantee(hooked, make_user)
    Grant.objects.filter(pk=second.pk).update(
        status=Grant.Status.SCHEDULED, starts_at=T0 + 2 * H, expires_at=T0 + 3 * H, activated_at=None
    )
    assert db.next_due(T0) == db.Due(expiry=first.expires_at, activation=T0 + 2 * H, retry=None)
    OutboxItem.objects.filter(grant=first).update(next_attempt_at=T0 + 30 * S)
    assert db.next_due(T0).retry == T0 + 30 * S
    assert db.next_due(T0).earliest() == T0 + 30 * S
    assert db.next_due(T0 + 31 * S).retry is None  # due now: found by systems_with_due_outbox instead
    assert db.systems_with_due_outbox(T0 + 31 * S) == [hooked.system.pk]
    # Ended grants are not waited for, even past their end (only stored-active ones are).
    Grant.objects.filter(pk=first.pk).update(
        status=Grant.Status.EXPIRED, ended_at=first.expires_at, end_reason=Grant.EndReason.EXPIRED
    )
    assert db.next_due(T0).expiry is None


# --- One round at a time ------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_round_expires_what_is_due_removes_the_access_and_sleeps_until_the_next_end(hooked, receiver, make_user):
    with time_machine.travel(T0, tick=False):
        first = approve(hooked)
        second = second_grantee(hooked, make_user)
    Grant.objects.filter(pk=second.pk).update(expires_at=first.expires_at + timedelta(milliseconds=400))
    scheduler = Scheduler(interval=1.0, lease_seconds=5, holder="test")

    with time_machine.travel(T0 + S, tick=False):
        assert scheduler.round() == 1.0  # nothing ends within the interval
        scheduler.drain_now()
    assert sorted(deliveries(receiver, "access.apply")) == sorted([first.pk, second.pk])  # applied

    with time_machine.travel(first.expires_at - timedelta(milliseconds=1), tick=False):
        assert scheduler.round() == pytest.approx(0.002, abs=1e-6)  # wakes at the end, not a second later
    assert Grant.objects.get(pk=first.pk).status == Grant.Status.ACTIVE

    with time_machine.travel(first.expires_at + timedelta(milliseconds=100), tick=False):
        wait = scheduler.round()
        scheduler.drain_now()
    first.refresh_from_db()
    assert first.status == Grant.Status.EXPIRED and first.provisioning_state == Grant.Provisioning.REMOVED
    assert Grant.objects.get(pk=second.pk).status == Grant.Status.ACTIVE
    assert wait == pytest.approx(0.301, abs=1e-6)  # until the second one's end
    expired = AccessEvent.objects.get(grant=first, event_type="grant.expired")
    assert expired.actor_label == "system:scheduler"
    assert expired.data["observed_lag_seconds"] == 0.1
    assert deliveries(receiver, "access.remove") == [first.pk]

    with time_machine.travel(first.expires_at + timedelta(milliseconds=400), tick=False):
        assert scheduler.round() == 1.0
        scheduler.drain_now()
    assert deliveries(receiver, "access.remove") == [first.pk, second.pk]
    for grant in (first, second):
        assert event_types(grant) == {
            "grant.activated": 1,
            "provisioning.applied": 1,
            "grant.expired": 1,
            "provisioning.removed": 1,
        }
    assert scheduler.counts["expired"] == 2
    assert verify_chain().ok


@pytest.mark.django_db
def test_a_round_starts_a_scheduled_grant_at_its_start_and_applies_it(hooked, receiver):
    with time_machine.travel(T0, tick=False):
        grant = approve(hooked)
    Grant.objects.filter(pk=grant.pk).update(
        status=Grant.Status.SCHEDULED, starts_at=T0 + H, expires_at=T0 + 2 * H, activated_at=None, provisioning_state=""
    )
    OutboxItem.objects.filter(grant=grant).update(done_at=T0, outcome="skipped")  # setup: never applied
    scheduler = Scheduler(interval=1.0, lease_seconds=5, holder="test")
    with time_machine.travel(T0 + H - timedelta(milliseconds=250), tick=False):
        assert scheduler.round() == pytest.approx(0.251, abs=1e-6)
    with time_machine.travel(T0 + H, tick=False):
        scheduler.round()
        scheduler.drain_now()
    grant.refresh_from_db()
    assert grant.status == Grant.Status.ACTIVE and grant.activated_at == T0 + H
    assert grant.provisioning_state == Grant.Provisioning.APPLIED
    assert AccessEvent.objects.get(grant=grant, data__scheduled_start=True).actor_label == "system:scheduler"
    assert deliveries(receiver, "access.apply") == [grant.pk]


@pytest.mark.django_db
def test_a_standby_round_changes_nothing(hooked):
    with time_machine.travel(T0, tick=False):
        grant = approve(hooked)
    assert db.scheduler_lease_acquire("the-holder", T0 + H, ttl_seconds=5)
    standby = Scheduler(interval=1.0, lease_seconds=5, holder="standby")
    with time_machine.travel(T0 + H + S, tick=False):
        assert standby.round() == 1.0
        standby.drain_now()
    grant.refresh_from_db()
    assert grant.status == Grant.Status.ACTIVE  # stored state; reads already say it ended
    assert not Grant.objects.active(T0 + H + S).filter(pk=grant.pk).exists()
    assert standby.counts["expired"] == 0 and not standby.leading


@pytest.mark.django_db
def test_a_failed_removal_is_retried_when_its_capped_backoff_ends_not_a_sweep_later(hooked, receiver):
    # Item 7 of issue 15: with only the 30 s sweep, a retry due 30 s after a failure was made 60 s after
    # it (its next_attempt_at fell just after a sweep started). The scheduler wakes at next_attempt_at.
    with time_machine.travel(T0, tick=False):
        grant = approve(hooked)
        assert outbox_drain() == 1
    scheduler = Scheduler(interval=1.0, lease_seconds=5, holder="test")
    receiver.status = 503
    failed_at = grant.expires_at + timedelta(milliseconds=50)
    with time_machine.travel(failed_at, tick=False):
        scheduler.round()
        scheduler.drain_now()
    removal = OutboxItem.objects.get(grant=grant, action=OutboxItem.Action.REMOVE)
    assert removal.attempts == 1 and removal.done_at is None
    assert removal.next_attempt_at == failed_at + S  # the first backoff
    # Setup: as if it had failed 9 times by now (the backoff is at its cap from here on).
    OutboxItem.objects.filter(pk=removal.pk).update(attempts=9, next_attempt_at=failed_at)
    with time_machine.travel(failed_at + timedelta(milliseconds=10), tick=False):
        scheduler.round()
        scheduler.drain_now()
    removal.refresh_from_db()
    assert removal.attempts == 10
    retry_at = failed_at + timedelta(milliseconds=10) + 30 * S  # capped: PROVISIONING_MAX_BACKOFF_SECONDS
    assert removal.next_attempt_at == retry_at
    receiver.status = 200  # the target recovers

    with time_machine.travel(retry_at - timedelta(milliseconds=100), tick=False):
        assert scheduler.round() == pytest.approx(0.101, abs=1e-6)  # sleeps until the retry is due
        scheduler.drain_now()
    assert OutboxItem.objects.get(pk=removal.pk).attempts == 10  # not yet
    with time_machine.travel(retry_at, tick=False):
        scheduler.round()
        scheduler.drain_now()
    removal.refresh_from_db()
    assert removal.outcome == "done" and removal.attempts == 11
    assert Grant.objects.get(pk=grant.pk).removed_at == retry_at
    assert event_types(grant)["provisioning.removed"] == 1


# --- Waking -------------------------------------------------------------------------------------


def _listener() -> psycopg.Connection:
    s = connection.settings_dict
    conn = psycopg.connect(
        dbname=s["NAME"],
        user=s["USER"] or None,
        password=s["PASSWORD"] or None,
        host=s["HOST"] or None,
        port=s["PORT"] or None,
        autocommit=True,
    )
    conn.execute(f"LISTEN {db.CHANNEL}")
    return conn


def _received(listener: psycopg.Connection, timeout: float) -> int:
    return len(list(listener.notifies(timeout=timeout)))


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_removal_or_a_scheduled_start_wakes_a_listening_scheduler_at_commit_and_never_for_a_rollback(world):
    listener = _listener()
    try:
        grant = approve(world)  # active: its end is an hour away, its APPLY goes to the worker told after commit
        assert _received(listener, 0.5) == 0
        with transaction.atomic():
            gs.grant_release(world.requester, grant.pk)  # its removal is due now
            assert _received(listener, 0.3) == 0  # nothing before the commit
        assert _received(listener, 5) >= 1
        later = ar.access_request_submit(
            world.requester, role=world.role, duration=H, justification=JUSTIFICATION, starts_at=timezone.now() + H
        )
        ar.access_request_approve(world.approver, later.pk)  # a scheduled grant: its start may be sooner
        assert _received(listener, 5) >= 1
        with pytest.raises(RuntimeError), transaction.atomic():
            db.scheduler_wake()
            raise RuntimeError("rolled back")
        assert _received(listener, 0.5) == 0
    finally:
        listener.close()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_waiting_scheduler_wakes_at_a_notify_instead_of_its_timeout():
    scheduler = Scheduler(interval=30.0, lease_seconds=5, holder="test")

    def wake_later() -> None:
        time.sleep(0.3)
        try:
            with transaction.atomic():
                db.scheduler_wake()
        finally:
            connection.close()

    try:
        scheduler.wait(0.01)  # opens the LISTEN connection
        thread = threading.Thread(target=wake_later)
        thread.start()
        started = time.monotonic()
        scheduler.wait(20.0)
        woke_after = time.monotonic() - started
        thread.join(timeout=10)
    finally:
        scheduler._close_listener()
    assert 0.2 < woke_after < 5, woke_after


@pytest.mark.django_db(transaction=True)
def test_a_waiting_scheduler_stops_waiting_soon_after_stop():
    scheduler = Scheduler(interval=30.0, lease_seconds=5, holder="test")
    try:
        scheduler.wait(0.01)  # on PostgreSQL: opens the LISTEN connection; on SQLite: polls
        threading.Timer(0.2, scheduler.stop).start()
        started = time.monotonic()
        scheduler.wait(20.0)
        stopped_after = time.monotonic() - started
    finally:
        scheduler._close_listener()
    assert stopped_after < 1, stopped_after


# --- Publishing without waiting for the broker --------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_scheduler_hands_messages_to_a_thread_so_a_dead_broker_never_stalls_a_round():
    app = Celery("probe", broker=f"redis://127.0.0.1:{_closed_port()}/0", set_as_current=False)
    app.conf.broker_connection_timeout = 1
    publisher = BackgroundPublisher(app, maxsize=3)
    publisher.install()
    try:
        started = time.monotonic()
        for n in range(5):  # the queue holds 3; the rest are dropped, with a log line, not waited for
            app.send_task("accessgov.tasks.notify", args=["grant_ended", n])
        took = time.monotonic() - started
    finally:
        publisher.uninstall(flush_seconds=0)
        app.close()
    assert took < 0.1, took
    assert app.send_task == publisher._send  # uninstalled


@pytest.mark.redis
def test_messages_handed_to_the_publisher_reach_the_broker_in_order(tmp_path):
    import os

    import redis

    url = os.environ["REDIS_URL"]
    redis.Redis.from_url(url).delete("probe-queue")
    app = Celery("probe", broker=url, set_as_current=False)
    publisher = BackgroundPublisher(app)
    publisher.install()
    try:
        for n in range(3):
            app.send_task("accessgov.tasks.heartbeat", args=[], queue="probe-queue", kwargs={}, task_id=f"probe-{n}")
        publisher.uninstall(flush_seconds=5)
        assert redis.Redis.from_url(url).llen("probe-queue") == 3
    finally:
        redis.Redis.from_url(url).delete("probe-queue")
        app.close()
