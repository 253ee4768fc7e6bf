"""Issue 22: what a transaction remembers (the ledger head it wrote, the webhook subscriptions it read)
holds only while nothing it relied on was undone — forgotten at commit, at rollback and with a savepoint
that rolls back — so a transaction's later events chain to the right head and go to the right
subscriptions."""

import itertools
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from accessgov import transaction_memo
from accessgov.ledger.verify import verify_chain
from accessgov.models import AccessEvent, Eligibility, EventWebhookSubscription, Grant, WebhookDelivery
from accessgov.services import access_requests as ar
from accessgov.services import grants
from accessgov.services.events import event_record
from tests.support.concurrency import race
from tests.support.factories import RoleFactory

H = timedelta(hours=1)
HOOK = {"url": "https://hooks.example.com/in", "secret": "s3cret"}


class Undo(Exception):
    pass


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_nothing_is_remembered():
    assert not connection.in_atomic_block
    assert transaction_memo.remember("k", 1) == 1
    assert transaction_memo.recall("k") is None
    assert transaction_memo.remembered("k", lambda: 2) == 2
    assert transaction_memo.remembered("k", lambda: 3) == 3


@pytest.mark.django_db
def test_a_value_stands_until_a_savepoint_rolls_back():
    with transaction.atomic():
        transaction_memo.remember("outer", 1)
        with transaction.atomic():
            transaction_memo.remember("released", 2)
        assert transaction_memo.recall("released") == 2  # a released savepoint keeps what it did
        assert transaction_memo.recall("outer") == 1
        with pytest.raises(Undo), transaction.atomic():
            transaction_memo.remember("inner", 3)
            assert transaction_memo.recall("inner") == 3
            raise Undo
        assert transaction_memo.recall("inner") is None  # rolled back with its savepoint
        # A rollback forgets everything (reading again is always right; nothing says what it undid).
        assert transaction_memo.recall("outer") is None and transaction_memo.recall("released") is None
        assert transaction_memo.remembered("computed", lambda: 5) == 5
        assert transaction_memo.remembered("computed", lambda: 6) == 5


@pytest.mark.django_db
def test_remembering_registers_no_commit_callback(world):
    with transaction.atomic():
        before = len(connection.run_on_commit)
        transaction_memo.remember("k", 1)
        _record(world, 1)
        _record(world, 2)
        assert len(connection.run_on_commit) == before


@pytest.mark.django_db(transaction=True)
def test_a_value_is_forgotten_when_its_transaction_ends():
    with transaction.atomic():
        transaction_memo.remember("k", 1)
    with transaction.atomic():
        assert transaction_memo.recall("k") is None  # committed: a new transaction reads again
        transaction_memo.remember("k", 2)
    with pytest.raises(Undo), transaction.atomic():
        transaction_memo.remember("k", 3)
        raise Undo
    with transaction.atomic():
        assert transaction_memo.recall("k") is None  # rolled back
    assert transaction_memo.recall("k") is None  # and outside any transaction


@pytest.mark.django_db(transaction=True)
def test_stale_keys_of_ended_transactions_are_pruned():
    for n in range(200):
        with transaction.atomic():
            transaction_memo.remember(("k", n), n)
    assert len(connection._accessgov_transaction_memo) <= transaction_memo._PRUNE_ABOVE + 2


def _record(world, n: int) -> AccessEvent:
    return event_record(AccessEvent.Type.EXPORT_CREATED, actor=world.auditor, data={"n": n})


@pytest.mark.django_db
def test_a_transactions_events_take_the_ledger_lock_and_head_once(world):
    with transaction.atomic():
        _record(world, 0)
        with CaptureQueriesContext(connection) as queries:
            events = [_record(world, n) for n in (1, 2, 3)]
    # One INSERT an event: no lock, no read of the head (nor of the subscriptions: none match).
    statements = [q["sql"] or "(a precompiled read)" for q in queries.captured_queries]
    assert len(statements) == 3 and all(s.startswith("INSERT") for s in statements), statements
    assert [e.prev_hash for e in events[1:]] == [e.hash for e in events[:-1]]
    assert verify_chain().ok


@pytest.mark.django_db
def test_an_event_rolled_back_with_its_savepoint_is_not_chained_to(world):
    with transaction.atomic():
        first = _record(world, 1)
        with pytest.raises(Undo), transaction.atomic():
            _record(world, 2)
            _record(world, 3)
            raise Undo
        after = _record(world, 4)
        with transaction.atomic():
            released = _record(world, 5)
        last = _record(world, 6)
    assert after.prev_hash == first.hash and after.sequence == first.sequence + 1
    assert last.prev_hash == released.hash
    events = list(AccessEvent.objects.order_by("sequence"))
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(events))
    assert verify_chain().ok


@pytest.mark.django_db
def test_bulk_and_single_events_in_one_transaction_keep_one_chain(world):
    from accessgov.services.events import event_record_rows

    rows = [{"occurred_at": world.role.system.created_at, "event_type": "export.created", "actor_label": "x"}]
    with transaction.atomic():
        _record(world, 1)
        event_record_rows([dict(r) for r in rows * 3])
        single = _record(world, 2)
        with pytest.raises(Undo), transaction.atomic():
            event_record_rows([dict(r) for r in rows * 2])
            raise Undo
        event_record_rows([dict(r) for r in rows])
    events = list(AccessEvent.objects.order_by("sequence"))
    assert [e.sequence for e in events] == list(range(1, 7))
    assert events[4].pk == single.pk and events[5].prev_hash == single.hash
    assert verify_chain().ok


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_auto_approved_requests_keep_one_chain(world, make_user):
    """Three events per transaction (submitted, auto-approved, activated) from six connections at once."""
    auto = RoleFactory(system=world.system, name="read-only", approvals_required=0)
    people = [make_user(f"auto{i}") for i in range(6)]
    for person in people:
        Eligibility.objects.create(role=auto, user=person)

    def work(person):
        for _ in range(3):
            request = ar.access_request_submit(person, role=auto, duration=H, justification="Chain under load")
            grants.grant_release(person, Grant.objects.get(access_request=request).pk)

    outcomes = race({person.username: (lambda p=person: work(p)) for person in people})
    assert [o for o in outcomes.values() if not o.ok] == []
    report = verify_chain()
    assert report.ok, report.problem
    # submitted, approved, activated, released — and the manual system's Apply task, never done, withdrawn
    # (provisioning.skipped) in the release's transaction.
    assert report.checked == AccessEvent.objects.count() == 6 * 3 * 5


@pytest.mark.django_db
def test_a_subscription_saved_in_the_transaction_gets_its_later_events(world):
    with transaction.atomic():
        before = event_record(AccessEvent.Type.GRANT_EXPIRED, job="test", role=world.role)
        subscription = EventWebhookSubscription.objects.create(name="new", event_types=["*"], **HOOK)
        after = event_record(AccessEvent.Type.GRANT_EXPIRED, job="test", role=world.role)
        subscription.is_active = False
        subscription.save()
        off = event_record(AccessEvent.Type.GRANT_EXPIRED, job="test", role=world.role)
    delivered = set(WebhookDelivery.objects.values_list("event_id", flat=True))
    assert delivered == {after.pk}, (before.pk, after.pk, off.pk)


@pytest.mark.django_db
def test_a_transactions_events_of_one_role_read_the_subscriptions_once(world):
    EventWebhookSubscription.objects.create(name="all", event_types=["grant.*"], **HOOK)
    with transaction.atomic():
        event_record(AccessEvent.Type.GRANT_EXPIRED, job="test", role=world.role)
        with CaptureQueriesContext(connection) as queries:
            for _ in range(3):
                event_record(AccessEvent.Type.GRANT_EXPIRED, job="test", role=world.role)
    statements = [q["sql"] or "(a precompiled read)" for q in queries.captured_queries]
    assert len(statements) == 6 and all(s.startswith("INSERT") for s in statements), statements  # event, delivery
    assert WebhookDelivery.objects.count() == 4
