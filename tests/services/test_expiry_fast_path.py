"""The set-based fast path of the sweeps (grant_expire_due, grant_activate_due, event_record_rows):
exactly one correctly chained event and one outbox row per grant, in one transaction per batch, and a
failure anywhere in a batch leaves nothing of that batch written. Runs on SQLite (bulk_create fallback)
and, with DATABASE_URL, on PostgreSQL (UPDATE … RETURNING under SKIP LOCKED, COPY, INSERT … SELECT)."""

import threading
import time
from datetime import timedelta
from unittest import mock

import psycopg
import pytest
from django.db import IntegrityError, OperationalError, connection, transaction
from django.utils import timezone

from accessgov import dbsql, tasks
from accessgov.ledger import hashing
from accessgov.ledger.verify import verify_chain
from accessgov.models import (
    AccessEvent,
    AccessRequest,
    Eligibility,
    EventWebhookSubscription,
    Grant,
    OutboxItem,
    WebhookDelivery,
)
from accessgov.services import events as event_services
from accessgov.services import grants as gs
from accessgov.services import provisioning, webhook_outbox
from accessgov.services.events import acting_via, event_record, event_record_bulk
from accessgov.services.scheduler import next_due
from tests.support.factories import UserFactory

pytestmark = pytest.mark.django_db
H = timedelta(hours=1)


def make_grants(world, n: int, *, status: str = Grant.Status.ACTIVE, now=None) -> list[Grant]:
    """Setup only: n grants of world.role (one user each), due at ``now`` (ended 1..n seconds ago, or
    for scheduled grants started then). Written with the ORM, not through the services."""
    now = now or timezone.now()
    users = [UserFactory(username=f"bulk{i:03d}") for i in range(n)]
    # Eligible: activation re-checks eligibility (a standing condition).
    Eligibility.objects.bulk_create([Eligibility(role=world.role, user=user, starts_at=now - 3 * H) for user in users])
    requests = AccessRequest.objects.bulk_create(
        [
            AccessRequest(
                requester=user,
                role=world.role,
                status=AccessRequest.Status.APPROVED,
                requested_duration=H,
                approved_duration=H,
                justification="Bulk fixture for the sweep",
                created_at=now - 2 * H,
                lapses_at=now + H,
                decided_at=now - 2 * H,
            )
            for user in users
        ]
    )
    active = status == Grant.Status.ACTIVE
    return Grant.objects.bulk_create(
        [
            Grant(
                access_request=access_request,
                user=access_request.requester,
                role=world.role,
                status=status,
                starts_at=now - 2 * H if active else now - timedelta(seconds=i + 1),
                expires_at=now - timedelta(seconds=i + 1, microseconds=1000 * i) if active else now + H,
                created_at=now - 2 * H,
                activated_at=now - 2 * H if active else None,
            )
            for i, access_request in enumerate(requests)
        ]
    )


def assert_chain_and_counts(event_type: str, grants: list[Grant], action: str) -> list[AccessEvent]:
    report = verify_chain()
    assert report.ok, report.as_dict()
    written = list(AccessEvent.objects.filter(event_type=event_type).order_by("sequence"))
    assert sorted(e.grant_id for e in written) == sorted(g.pk for g in grants)  # exactly one per grant
    # Chain order is id order, and the events follow each other without a gap.
    assert [e.pk for e in written] == sorted(e.pk for e in written)
    assert [e.sequence for e in written] == list(range(written[0].sequence, written[0].sequence + len(written)))
    for event in written:
        assert event.hash == event.compute_hash(event.prev_hash)  # the one hashing function
    items = OutboxItem.objects.filter(action=action)
    assert sorted(items.values_list("grant_id", flat=True)) == sorted(g.pk for g in grants)
    assert {item.idempotency_key for item in items} == {f"grant-{g.pk}-{action}-1" for g in grants}
    assert not items.filter(done_at__isnull=False).exists()
    return written


def test_expiry_fast_path_writes_one_chained_event_and_one_outbox_row_per_grant(
    world, monkeypatch, django_capture_on_commit_callbacks
):
    subscription = EventWebhookSubscription.objects.create(
        name="siem", url="https://siem.example.com/hook", secret="s" * 32, event_types=["grant.expired"]
    )
    EventWebhookSubscription.objects.create(
        name="requests only", url="https://siem.example.com/r", secret="s" * 32, event_types=["request.*"]
    )
    now = timezone.now()
    with transaction.atomic():  # the chain does not start at the sweep
        event_record("audit.verified", job="setup", data={"before": True})
    grants = make_grants(world, 23, now=now)
    notified, drained = [], []
    monkeypatch.setattr(
        tasks.notify_many, "delay", lambda kind, ids, notification_id: notified.append((kind, list(ids)))
    )
    monkeypatch.setattr(tasks.drain_outbox, "delay", lambda: drained.append(1))
    monkeypatch.setattr(tasks.deliver_event_webhooks, "delay", lambda ids: None)

    with django_capture_on_commit_callbacks(execute=True):
        assert gs.grant_expire_due(now, batch_size=10) == 23

    written = assert_chain_and_counts("grant.expired", grants, OutboxItem.Action.REMOVE)
    by_grant = {g.pk: g for g in Grant.objects.filter(pk__in=[g.pk for g in grants])}
    for grant in by_grant.values():
        assert grant.status == Grant.Status.EXPIRED
        assert grant.end_reason == Grant.EndReason.EXPIRED
        assert grant.ended_at == grant.expires_at
        assert grant.provisioning_state == Grant.Provisioning.REMOVAL_PENDING
        assert grant.removal_requested_at == now
    for event in written:
        grant = by_grant[event.grant_id]
        assert event.actor_label == "system:sweep"
        assert event.access_request_id == grant.access_request_id
        assert event.role_id == grant.role_id
        assert event.occurred_at == now
        assert event.data == {
            "expires_at": grant.expires_at.isoformat(),
            "observed_lag_seconds": round((now - grant.expires_at).total_seconds(), 3),
        }
    # Webhook deliveries for the matching subscription, one per event; notifications one task per batch.
    assert sorted(WebhookDelivery.objects.filter(subscription=subscription).values_list("event_id", flat=True)) == [
        e.pk for e in written
    ]
    assert WebhookDelivery.objects.count() == len(written)
    assert [len(ids) for kind, ids in notified] == [10, 10, 3]
    assert {kind for kind, _ in notified} == {"grant_ended"}
    assert sorted(i for _, ids in notified for i in ids) == sorted(by_grant)
    assert len(drained) == 3
    assert gs.grant_expire_due(now) == 0


def test_expiry_numbers_a_second_removal_item_after_an_earlier_one(world):
    now = timezone.now()
    [grant] = make_grants(world, 1, now=now)
    OutboxItem.objects.create(grant=grant, action="remove", number=1)
    assert gs.grant_expire_due(now, grant_ids=[grant.pk]) == 1
    assert sorted(item.idempotency_key for item in OutboxItem.objects.filter(grant=grant)) == [
        f"grant-{grant.pk}-remove-1",
        f"grant-{grant.pk}-remove-2",
    ]


def test_expiry_timer_takes_only_its_grants_and_none_that_are_not_due(world):
    now = timezone.now()
    grants = make_grants(world, 5, now=now)
    assert gs.grant_expire_due(now, grant_ids=[grants[1].pk, grants[3].pk]) == 2
    assert gs.grant_expire_due(now, grant_ids=[]) == 0
    assert gs.grant_expire_due(now - 2 * H) == 0  # nothing had ended yet then
    assert set(Grant.objects.filter(status="expired").values_list("pk", flat=True)) == {grants[1].pk, grants[3].pk}
    assert verify_chain().ok


def test_activation_fast_path_writes_one_chained_event_and_one_apply_row_per_grant(
    world, monkeypatch, django_capture_on_commit_callbacks
):
    now = timezone.now()
    grants = make_grants(world, 12, status=Grant.Status.SCHEDULED, now=now)
    sent = []
    monkeypatch.setattr(tasks.drain_outbox, "delay", lambda: sent.append("drain_outbox"))
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert gs.grant_activate_due(now, batch_size=5) == 12
    assert len(callbacks) == 3 and sent == ["drain_outbox"] * 3  # one per batch; no per-grant timer
    written = assert_chain_and_counts("grant.activated", grants, OutboxItem.Action.APPLY)
    assert {e.data["scheduled_start"] for e in written} == {True}
    for grant in Grant.objects.filter(pk__in=[g.pk for g in grants]):
        assert grant.status == Grant.Status.ACTIVE
        assert grant.activated_at == now
        assert grant.provisioning_state == Grant.Provisioning.PENDING
    # Their ends are scheduled by being in the table: the scheduler's next wake-up is the first of them.
    assert next_due(now).expiry == min(g.expires_at for g in grants)


def failing_on_call(n: int, real=None):
    """A stand-in that raises on its n-th call (and calls ``real`` before that)."""
    calls = {"n": 0}

    def fail(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= n:
            raise IntegrityError("injected failure")
        return real(*args, **kwargs) if real else None

    return fail


# Where a batch can fail after its UPDATE: preparing its events (in the worker thread), halfway through
# hashing/streaming its events, after its events (finding webhook subscriptions), after its outbox rows.
FAILURE_POINTS = {
    "preparing-events": lambda: (hashing, "canonical_head", failing_on_call(5, hashing.canonical_head)),
    "mid-events": lambda: (hashing, "hash_canonical", failing_on_call(9, hashing.hash_canonical)),
    "after-events": lambda: (
        webhook_outbox,
        "webhook_deliveries_enqueue_refs",
        failing_on_call(1, webhook_outbox.webhook_deliveries_enqueue_refs),
    ),
    "after-outbox": lambda: (provisioning, "_drain_after_commit", failing_on_call(1)),
}


@pytest.mark.parametrize("where", FAILURE_POINTS)
def test_a_failure_mid_batch_leaves_nothing_of_the_batch_written(world, monkeypatch, where):
    now = timezone.now()
    grants = make_grants(world, 15, now=now)
    target, name, stand_in = FAILURE_POINTS[where]()
    monkeypatch.setattr(target, name, stand_in)
    with pytest.raises(IntegrityError, match="injected"):
        gs.grant_expire_due(now, batch_size=20)
    monkeypatch.undo()
    assert Grant.objects.filter(status="active").count() == 15
    assert not Grant.objects.exclude(provisioning_state="").exists()
    assert not AccessEvent.objects.exists()
    assert not OutboxItem.objects.exists()
    assert verify_chain().ok
    assert gs.grant_expire_due(now) == 15  # the next sweep does the whole batch
    assert_chain_and_counts("grant.expired", grants, OutboxItem.Action.REMOVE)


def test_a_failure_in_a_later_batch_keeps_the_committed_batches_whole(world, monkeypatch):
    now = timezone.now()
    grants = make_grants(world, 12, now=now)
    # Batches of 5: the second batch fails halfway through its events (call 5 + 3).
    monkeypatch.setattr(hashing, "hash_canonical", failing_on_call(8, hashing.hash_canonical))
    with pytest.raises(IntegrityError):
        gs.grant_expire_due(now, batch_size=5)
    monkeypatch.undo()
    done = set(Grant.objects.filter(status="expired").values_list("pk", flat=True))
    assert len(done) == 5
    assert set(AccessEvent.objects.values_list("grant_id", flat=True)) == done
    assert set(OutboxItem.objects.values_list("grant_id", flat=True)) == done
    assert verify_chain().ok
    assert gs.grant_expire_due(now) == 7
    assert_chain_and_counts("grant.expired", grants, OutboxItem.Action.REMOVE)


def test_bulk_events_recorded_through_a_token_carry_it_and_still_verify(world):
    via = {"token_id": 7, "token_kind": "service"}
    events = [
        AccessEvent(event_type="request.cancelled", actor_label="svc", role_id=world.role.pk, data={"n": i})
        for i in range(3)
    ]
    with acting_via(via), transaction.atomic():
        event_record_bulk(events)
    assert [e.data for e in AccessEvent.objects.order_by("sequence")] == [{"n": i, "via": via} for i in range(3)]
    assert [e.pk for e in events] == list(AccessEvent.objects.order_by("sequence").values_list("pk", flat=True))
    assert verify_chain().ok


@pytest.mark.django_db(transaction=True)
def test_bulk_rows_are_written_only_inside_a_transaction():
    with pytest.raises(RuntimeError, match="inside the transaction"):
        event_services.event_record_rows([{"event_type": "audit.verified", "actor_label": "x"}])


def test_the_fast_path_is_the_one_this_database_uses(world):
    """PostgreSQL writes events with COPY (no bulk_create); SQLite falls back to bulk_create."""
    now = timezone.now()
    make_grants(world, 3, now=now)
    with mock.patch.object(AccessEvent.objects, "bulk_create", wraps=AccessEvent.objects.bulk_create) as bulk:
        assert gs.grant_expire_due(now) == 3
    assert bulk.called == (connection.vendor != "postgresql")
    assert verify_chain().ok


# --- Two writers (SWEEP_WRITERS) ----------------------------------------------------------------------


def interleaved_takes(monkeypatch) -> list[tuple[str, int]]:
    """Spy on the hand-out of batches: (thread name, batch size) per take. The caller's thread waits
    before its second batch until the second writer has taken one, so both always write."""
    takes: list[tuple[str, int]] = []
    helper_took = threading.Event()
    real_take = gs._DueBatches.take

    def take(self, *args):
        main = threading.current_thread() is threading.main_thread()
        if main and takes:
            assert helper_took.wait(10), "the second writer never took a batch"
        due = real_take(self, *args)
        takes.append((threading.current_thread().name, len(due)))
        if not main:
            helper_took.set()
        return due

    monkeypatch.setattr(gs._DueBatches, "take", take)
    return takes


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_large_expiry_is_written_by_two_writers_each_batch_in_its_own_transaction(world, monkeypatch, settings):
    settings.SWEEP_WRITERS = 2
    now = timezone.now()
    grants = make_grants(world, 23, now=now)
    takes = interleaved_takes(monkeypatch)

    assert gs.grant_expire_due(now, batch_size=3) == 23

    writers = {name for name, size in takes if size}
    assert len(writers) == 2 and "MainThread" in writers, takes
    assert sum(size for _, size in takes) == 23
    assert_chain_and_counts("grant.expired", grants, OutboxItem.Action.REMOVE)
    # Each batch committed on its own: the grants were changed by 8 transactions (7 batches of 3, one of 2).
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(DISTINCT xmin::text) FROM accessgov_grant WHERE status = 'expired'")
        assert cursor.fetchone()[0] == 8
    assert gs.grant_expire_due(now, batch_size=3) == 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_two_writers_change_their_batches_at_the_same_time_on_disjoint_ranges(world, monkeypatch, settings):
    """Each batch is bounded (its last id looked up) before it is changed, so the second writer's ``UPDATE``
    does not wait for the first one's: here every ``UPDATE`` is held open 0.3 s, and the two writers' overlap."""
    settings.SWEEP_WRITERS = 2
    now = timezone.now()
    grants = make_grants(world, 12, now=now)
    updates: list[tuple[str, float, float, list[int]]] = []
    real_update_due = dbsql.grants_update_due

    def slow_update(*args, **kwargs):
        started = time.monotonic()
        due = real_update_due(*args, **kwargs)
        time.sleep(0.3)
        updates.append((threading.current_thread().name, started, time.monotonic(), [row[0] for row in due]))
        return due

    monkeypatch.setattr(dbsql, "grants_update_due", slow_update)
    assert gs.grant_expire_due(now, batch_size=3) == 12

    assert len({name for name, *_ in updates}) == 2, updates
    overlapping = [
        (a, b) for a in updates for b in updates if a[0] < b[0] and a[1] < b[2] and b[1] < a[2] and a[3] and b[3]
    ]
    assert overlapping, updates
    # Disjoint ranges in id order: every grant changed once, each batch a run of consecutive ids.
    changed = sorted(pk for *_, ids in updates for pk in ids)
    assert changed == sorted(g.pk for g in grants)
    assert all(ids == sorted(ids) and len(ids) == 3 for *_, ids in updates if ids)
    assert_chain_and_counts("grant.expired", grants, OutboxItem.Action.REMOVE)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_exactly_one_batch_due_with_two_writers_expires_each_grant_once(world, settings):
    # The first batch's bounds show a full batch: the second writer starts and finds nothing after it.
    settings.SWEEP_WRITERS = 2
    now = timezone.now()
    grants = make_grants(world, 3, now=now)
    assert gs.grant_expire_due(now, batch_size=3) == 3
    assert_chain_and_counts("grant.expired", grants, OutboxItem.Action.REMOVE)
    assert gs.grant_expire_due(now, batch_size=3) == 0


def test_the_due_boundary_is_the_last_id_of_the_next_full_batch(world):
    now = timezone.now()
    ids = sorted(g.pk for g in make_grants(world, 7, now=now))
    Grant.objects.filter(pk=ids[1]).update(expires_at=now + H)  # not due: not counted
    due = [pk for pk in ids if pk != ids[1]]
    where, params = "status = %s AND expires_at <= %s", [Grant.Status.ACTIVE, dbsql.db_datetime(now)]

    def boundary(after_id, grant_ids=None):
        return dbsql.grants_due_boundary(where, params, grant_ids=grant_ids, batch_size=3, after_id=after_id)

    assert boundary(0) == due[2]
    assert boundary(due[2]) == due[5]
    assert boundary(due[5]) is None  # fewer than a batch left
    assert boundary(0, grant_ids=due[:3]) == due[2]
    assert boundary(0, grant_ids=due[:2]) is None


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("failing", ["second writer", "first writer"])
def test_a_failing_writer_stops_the_sweep_and_leaves_only_whole_batches(world, monkeypatch, settings, failing):
    settings.SWEEP_WRITERS = 2
    now = timezone.now()
    grants = make_grants(world, 23, now=now)
    interleaved_takes(monkeypatch)
    real_hash = hashing.hash_canonical

    def failing_in_one_writer(*args):
        if (threading.current_thread() is threading.main_thread()) == (failing == "first writer"):
            raise IntegrityError(f"injected failure in the {failing}")
        return real_hash(*args)

    monkeypatch.setattr(hashing, "hash_canonical", failing_in_one_writer)
    with pytest.raises(IntegrityError, match=failing):
        gs.grant_expire_due(now, batch_size=3)
    monkeypatch.undo()

    # Whole batches of the other writer only (none, if it had not taken one before the failure): the failed
    # batch (3 grants) and any batch not yet taken are untouched.
    expired = set(Grant.objects.filter(status="expired").values_list("pk", flat=True))
    assert len(expired) <= 20
    assert set(AccessEvent.objects.values_list("grant_id", flat=True)) == expired
    assert set(OutboxItem.objects.values_list("grant_id", flat=True)) == expired
    assert not Grant.objects.filter(status="active").exclude(provisioning_state="").exists()
    assert verify_chain().ok
    # The next sweep (one writer or two) takes what is left, the failed batch included.
    assert gs.grant_expire_due(now, batch_size=3) == 23 - len(expired)
    assert_chain_and_counts("grant.expired", grants, OutboxItem.Action.REMOVE)


def test_inside_a_transaction_the_sweep_stays_on_the_callers_connection(world, monkeypatch, settings):
    """A caller's open transaction (a test's, or anyone wrapping the sweep in ``atomic``) keeps every batch
    in it: a second writer on another connection would not see the caller's uncommitted rows."""
    settings.SWEEP_WRITERS = 2
    now = timezone.now()
    grants = make_grants(world, 7, now=now)
    takes: list[str] = []
    real_take = gs._DueBatches.take
    monkeypatch.setattr(
        gs._DueBatches,
        "take",
        lambda self, *args: takes.append(threading.current_thread().name) or real_take(self, *args),
    )
    assert gs.grant_expire_due(now, batch_size=2) == 7
    assert set(takes) == {"MainThread"}
    assert_chain_and_counts("grant.expired", grants, OutboxItem.Action.REMOVE)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_second_writer_whose_connection_is_killed_leaves_only_whole_batches(world, monkeypatch, settings):
    """The second writer's PostgreSQL session is terminated (``pg_terminate_backend``, as an operator or
    a pooler would) right after it took a batch: that batch rolls back with the session, the sweep
    reports the failure, and the next sweep expires what is left."""
    settings.SWEEP_WRITERS = 2
    now = timezone.now()
    grants = make_grants(world, 23, now=now)
    interleaved_takes(monkeypatch)
    taking = gs._DueBatches.take
    killed = []

    def take_then_lose_the_connection(self, *args):
        due = taking(self, *args)
        if due and threading.current_thread() is not threading.main_thread() and not killed:
            pid = connection.connection.info.backend_pid  # this writer's own session
            db = connection.settings_dict
            with psycopg.connect(
                dbname=db["NAME"], user=db["USER"], host=db["HOST"], port=db["PORT"] or 5432, autocommit=True
            ) as admin:
                admin.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])
            killed.append(pid)
        return due

    monkeypatch.setattr(gs._DueBatches, "take", take_then_lose_the_connection)
    with pytest.raises(OperationalError):
        gs.grant_expire_due(now, batch_size=3)
    monkeypatch.undo()

    assert killed
    expired = set(Grant.objects.filter(status="expired").values_list("pk", flat=True))
    assert len(expired) <= 20  # the killed batch (3 grants) rolled back with its session
    assert set(AccessEvent.objects.values_list("grant_id", flat=True)) == expired
    assert set(OutboxItem.objects.values_list("grant_id", flat=True)) == expired
    assert verify_chain().ok
    assert gs.grant_expire_due(now, batch_size=3) == 23 - len(expired)
    assert_chain_and_counts("grant.expired", grants, OutboxItem.Action.REMOVE)
