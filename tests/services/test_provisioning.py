"""Provisioning at real targets: the PostgreSQL connector against a throw-away database on the test
server, a signed webhook to a local receiver, and the manual task list.

The PostgreSQL tests run transactional (``transaction=True``): the outbox is drained by an
``on_commit`` callback, which with CELERY_TASK_ALWAYS_EAGER runs ``drain_outbox`` in this process right
after the commit, so access is applied or removed by the time the service call returns. The webhook
and manual tests run inside the test transaction, where on_commit callbacks never run, and drain the
outbox explicitly (what the sweep does).
"""

import base64
import json
import time
from datetime import timedelta
from functools import partial

import kombu.exceptions
import psycopg
import pytest
from django.test import Client, override_settings
from django.utils import timezone
from psycopg import sql

from accessgov.connectors import ConnectorError, Target, connector_for
from accessgov.connectors.postgres import PostgresConnector
from accessgov.connectors.webhook import WebhookConnector, ensure_public_target, sign, verify
from accessgov.exceptions import NotAuthorized, TransitionNotAllowed
from accessgov.models import AccessEvent, DriftFinding, Eligibility, Grant, OutboxItem, System
from accessgov.services import access_requests as ar
from accessgov.services import grants as gs
from accessgov.services import provisioning
from accessgov.services.provisioning import manual_task_complete, outbox_drain, outbox_process
from accessgov.services.reconciliation import reconcile_system
from accessgov.services.sweep import sweep_run
from tests.conftest import verify_session
from tests.support.concurrency import race
from tests.support.provisioning import (
    JUSTIFICATION,
    WEBHOOK_SECRET,
    H,
    approve,
    event_types,
    in_another_connection,
    make_due,
    wait_until,
)

# --- Helpers ------------------------------------------------------------------------------------


def make_item_due(item: OutboxItem) -> None:
    """Move a retry's next_attempt_at to now (as if its backoff had elapsed)."""
    OutboxItem.objects.filter(pk=item.pk).update(next_attempt_at=timezone.now())


# --- A PostgreSQL target ------------------------------------------------------------------------


@pytest.fixture
def outbox_held(monkeypatch):
    """Approvals write their outbox row but nothing drains it after the commit (the tests do)."""
    monkeypatch.setattr(provisioning, "_drain_after_commit", lambda action: None)


@pytest.fixture
def apply_calls(monkeypatch):
    """Every GRANT the PostgreSQL connector sends, by operation id (thread-safe: list.append)."""
    calls: list[str] = []
    original = PostgresConnector.apply

    def spy(self, target):
        calls.append(target.operation_id)
        return original(self, target)

    monkeypatch.setattr(PostgresConnector, "apply", spy)
    return calls


# --- 1. Apply, query, expire, revoke, end the session -------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_grant_lets_the_grantee_query_and_its_expiry_revokes_and_ends_the_open_session(pg):
    target, principal = pg.target, pg.principal
    with target.connect_as(principal) as session, pytest.raises(psycopg.errors.InsufficientPrivilege):
        target.read_table_as_managed(session)  # no access before the grant

    grant = approve(pg)  # the drain runs eagerly in the approval's on_commit

    grant.refresh_from_db()
    assert grant.provisioning_state == Grant.Provisioning.APPLIED
    assert grant.provisioned_at is not None and grant.provisioning_error == ""
    assert target.members() == {principal}
    assert event_types(grant)["provisioning.applied"] == 1
    assert OutboxItem.objects.get(grant=grant).outcome == "done"

    session = target.connect_as(principal)
    try:
        assert target.read_table_as_managed(session) == 2  # SET ROLE + SELECT succeed

        make_due(grant)
        assert gs.grant_expire_due(timezone.now()) == 1  # the removal drains in its on_commit

        assert principal not in target.members()  # REVOKE happened
        # The session that did SET ROLE before the expiry would keep the privilege: it was ended.
        with pytest.raises(psycopg.OperationalError):
            session.execute("SELECT count(*) FROM payments")
    finally:
        session.close()
    assert wait_until(lambda: target.sessions_of(principal) == 0)

    grant.refresh_from_db()
    assert grant.status == Grant.Status.EXPIRED
    assert grant.provisioning_state == Grant.Provisioning.CONFIRMED
    assert grant.removal_confirmed_at is not None
    assert timedelta(0) < grant.revocation_lag < timedelta(seconds=10), grant.revocation_lag
    removed = AccessEvent.objects.get(grant=grant, event_type="provisioning.removed")
    assert removed.data["read_back"] is True
    assert removed.data["revocation_lag_seconds"] == pytest.approx(grant.revocation_lag.total_seconds(), abs=0.01)
    assert event_types(grant) == {
        "grant.activated": 1,
        "provisioning.applied": 1,
        "grant.expired": 1,
        "provisioning.removed": 1,
    }
    assert not OutboxItem.objects.filter(grant=grant, done_at__isnull=True).exists()


# --- 2. Target down at expiry -------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_target_down_at_expiry_is_retried_until_it_is_back_without_a_false_removed(pg):
    target, principal = pg.target, pg.principal
    grant = approve(pg)
    assert target.members() == {principal}
    # The target goes away: nothing listens on port 1.
    System.objects.filter(pk=pg.system.pk).update(connector_config=target.connector_config(port=1))

    make_due(grant)
    assert gs.grant_expire_due(timezone.now()) == 1

    grant.refresh_from_db()
    item = OutboxItem.objects.get(grant=grant, action=OutboxItem.Action.REMOVE)
    assert grant.status == Grant.Status.EXPIRED  # access ended in AccessGov whatever the target says
    assert grant.provisioning_state == Grant.Provisioning.FAILED
    assert grant.provisioning_error.startswith(f"Cannot connect to {target.host}:1")
    assert grant.removal_requested_at is not None
    assert grant.removal_confirmed_at is None and grant.removed_at is None and grant.revocation_lag is None
    assert item.done_at is None and item.lease_until is None
    assert item.attempts == 1
    assert item.last_error == grant.provisioning_error
    assert target.password not in item.last_error
    assert item.next_attempt_at > timezone.now()

    # Not due yet: a drain right away leaves it alone.
    assert outbox_drain() == 0
    item.refresh_from_db()
    assert item.attempts == 1

    # Each retry after its backoff fails again: attempts grow, still one "failed" event, no "removed".
    for attempt in (2, 3, 4):
        make_item_due(item)
        before = timezone.now()
        assert outbox_drain() == 0
        item.refresh_from_db()
        assert item.attempts == attempt
        backoff = (item.next_attempt_at - before).total_seconds()
        assert 2 ** (attempt - 1) <= backoff < 2 ** (attempt - 1) + 5, backoff
    grant.refresh_from_db()
    assert grant.provisioning_state == Grant.Provisioning.FAILED
    assert grant.removal_confirmed_at is None
    assert event_types(grant)["provisioning.failed"] == 1
    assert event_types(grant)["provisioning.removed"] == 0
    assert principal in target.members()  # true: the access is still there

    # The target is back; the sweep (which drains the outbox) removes and confirms.
    System.objects.filter(pk=pg.system.pk).update(connector_config=target.connector_config())
    make_item_due(item)
    assert sweep_run(timezone.now())["provisioned"] == 1

    assert principal not in target.members()
    grant.refresh_from_db()
    item.refresh_from_db()
    assert grant.provisioning_state == Grant.Provisioning.CONFIRMED
    assert grant.removal_confirmed_at is not None and grant.provisioning_error == ""
    assert item.done_at is not None and item.attempts == 5
    assert event_types(grant)["provisioning.failed"] == 1
    assert event_types(grant)["provisioning.removed"] == 1


# --- 3. Broker down at approval -----------------------------------------------------------------


class DeadBroker:
    """The process's Celery app publishing for real to a broker nobody listens on, until restore()."""

    URL = "redis://127.0.0.1:9/0"

    def __init__(self):
        from portal.celery import app

        self.app = app
        self.saved = {"task_always_eager": app.conf.task_always_eager, "broker_url": app.conf.broker_url}

    def _reset_pools(self):
        self.app._pool = None
        self.app.amqp._producer_pool = None

    def start(self):
        self._reset_pools()
        self.app.conf.task_always_eager = False
        self.app.conf.broker_url = self.URL

    def restore(self):
        self.app.conf.update(self.saved)
        self._reset_pools()


@pytest.fixture
def dead_broker():
    broker = DeadBroker()
    try:
        yield broker
    finally:
        broker.restore()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_broker_down_at_approval_loses_nothing_and_the_outbox_drains_when_it_returns(pg, dead_broker):
    access_request = ar.access_request_submit(pg.requester, role=pg.role, duration=H, justification=JUSTIFICATION)
    dead_broker.start()
    try:
        ar.access_request_approve(pg.approver, access_request.pk, comment="ok")
        escaped = None
    except kombu.exceptions.OperationalError as exc:
        # See test_an_approver_is_not_shown_an_error_when_the_broker_is_down: the on_commit publish raises
        # after the commit and the exception reaches the approver.
        escaped = exc
    dead_broker.restore()
    print(f"approval with the broker down raised: {escaped!r}")

    # Everything the approval wrote was committed together (seen from another connection).
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

    grant_id, status, state, items, events = in_another_connection(committed)
    assert status == Grant.Status.ACTIVE
    assert state == Grant.Provisioning.PENDING
    assert items == [(OutboxItem.Action.APPLY, 0, None)]
    assert events == ["decision.approve", "grant.activated", "request.approved", "request.submitted"]
    assert pg.target.members() == set()  # nothing reached the target yet

    # The broker is back: the next sweep (or drain_outbox task) applies the access.
    assert sweep_run(timezone.now())["provisioned"] == 1
    grant = Grant.objects.get(pk=grant_id)
    assert grant.provisioning_state == Grant.Provisioning.APPLIED
    assert pg.target.members() == {pg.principal}
    with pg.target.connect_as(pg.principal) as session:
        assert pg.target.read_table_as_managed(session) == 2
    assert event_types(grant)["provisioning.applied"] == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_approver_is_not_shown_an_error_when_the_broker_is_down(pg, dead_broker):
    access_request = ar.access_request_submit(pg.requester, role=pg.role, duration=H, justification=JUSTIFICATION)
    approver = verify_session(Client(raise_request_exception=False), pg.approver)
    dead_broker.start()
    response = approver.post(f"/requests/{access_request.pk}/approve/", {"comment": "ok"})
    dead_broker.restore()

    assert Grant.objects.filter(access_request=access_request).exists()  # saved either way
    assert response.status_code in (200, 302), response.status_code  # today: 500


# --- 4. One item, one effect --------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_same_outbox_item_processed_twice_in_a_row_has_one_effect(pg, outbox_held, apply_calls):
    grant = approve(pg)
    item = OutboxItem.objects.get(grant=grant)
    assert item.done_at is None and pg.target.members() == set()  # held: nothing drained it

    assert outbox_process(item.pk) == "done"
    assert outbox_process(item.pk) == "skipped"
    assert outbox_drain() == 0

    assert apply_calls == [item.idempotency_key]  # one GRANT sent
    item.refresh_from_db()
    assert item.outcome == "done" and item.attempts == 1
    assert event_types(grant)["provisioning.applied"] == 1
    assert pg.target.members() == {pg.principal}

    # At-least-once delivery also relies on the connector: a redelivered GRANT (a worker that died
    # between the target and the record) is harmless and leaves one membership.
    connector = connector_for(pg.system)
    redelivery = Target(grant.pk, pg.principal, pg.target.managed, "requester", str(pg.role), "", item.idempotency_key)
    connector.apply(redelivery)
    assert connector.is_applied(redelivery)
    with pg.target.admin() as conn:
        rows = conn.execute(
            "SELECT count(*) FROM pg_auth_members m JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s",
            (pg.principal,),
        ).fetchone()[0]
    assert rows == 1


@pytest.mark.parametrize("how", ["outbox_process", "outbox_drain"])
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_same_outbox_item_processed_by_two_workers_at_once_has_one_effect(
    pg, make_user, outbox_held, apply_calls, how
):
    for round_ in range(3):
        user = make_user(f"racer{round_}", device=False)
        Eligibility.objects.create(role=pg.role, user=user)
        principal = pg.target.create_login(user.username)
        grant = approve(pg, user)
        item = OutboxItem.objects.get(grant=grant)
        calls_before = len(apply_calls)

        if how == "outbox_process":
            call = partial(outbox_process, item.pk)
            expected = ["done", "skipped"]
        else:
            call = outbox_drain
            expected = [0, 1]
        outcomes = race({"first": call, "second": call}, jitter=0.02)

        assert all(o.ok for o in outcomes.values()), outcomes
        assert sorted(o.value for o in outcomes.values()) == expected, outcomes
        assert apply_calls[calls_before:] == [item.idempotency_key], outcomes  # one GRANT
        item.refresh_from_db()
        assert item.outcome == "done" and item.attempts == 1
        assert event_types(grant)["provisioning.applied"] == 1
        assert principal in pg.target.members()


@pytest.fixture
def grantees(pg, make_user):
    """Three more grantees of pg.role with login roles at the target, their access applied."""

    def make() -> list[Grant]:
        grants = []
        for n in range(3):
            user = make_user(f"burst{n}", device=False)
            Eligibility.objects.create(role=pg.role, user=user)
            pg.target.create_login(user.username)
            grants.append(approve(pg, user))
        return grants

    return make


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_removals_drained_together_are_one_revoke_yet_each_is_confirmed_by_name_and_sessions_end(
    pg, grantees, outbox_held, monkeypatch
):
    grants = [approve(pg), *grantees()]
    assert outbox_drain() == 4
    assert len(pg.target.members()) == 4
    bulk_calls: list[int] = []
    original = PostgresConnector.remove_many

    def spy(self, targets, **kwargs):
        bulk_calls.append(len(targets))
        return original(self, targets, **kwargs)

    monkeypatch.setattr(PostgresConnector, "remove_many", spy)
    session = pg.target.connect_as(pg.principal)
    try:
        assert pg.target.read_table_as_managed(session) == 2
        for grant in grants:
            make_due(grant)
        assert gs.grant_expire_due(timezone.now()) == 4

        assert outbox_drain() == 4

        assert bulk_calls == [4]  # one REVOKE for the batch, not one per grant
        assert pg.target.members() == set()
        with pytest.raises(psycopg.OperationalError):
            session.execute("SELECT count(*) FROM payments")  # the SET ROLE session was ended
    finally:
        session.close()
    for grant in grants:
        grant.refresh_from_db()
        assert grant.provisioning_state == Grant.Provisioning.CONFIRMED
        assert grant.removal_confirmed_at is not None and grant.removed_at == grant.removal_confirmed_at
        assert event_types(grant)["provisioning.removed"] == 1
        assert AccessEvent.objects.get(grant=grant, event_type="provisioning.removed").data["read_back"] is True
    assert outbox_drain() == 0
    # A redelivered bulk removal (a worker that died between the target and the record) is harmless.
    connector = connector_for(pg.system)
    targets = [
        Target(g.pk, connector.principal_for(g.user.username), pg.target.managed, g.user.username, "", "")
        for g in grants
    ]
    try:
        connector.remove_many(targets)
        assert connector.applied_among(targets) == set()
    finally:
        connector.close()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_removal_the_target_refuses_fails_alone_and_the_rest_of_its_batch_is_removed(pg, grantees, outbox_held):
    grants = [approve(pg), *grantees()]
    assert outbox_drain() == 4
    gone = grants[1]
    missing = pg.target.principal(gone.user.username)
    with pg.target.admin(dbname="postgres") as conn:  # a DBA dropped the login role: REVOKE … FROM it fails
        conn.execute(
            sql.SQL("REVOKE CONNECT ON DATABASE {} FROM {}").format(
                sql.Identifier(pg.target.dbname), sql.Identifier(missing)
            )
        )
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(missing)))
    for grant in grants:
        make_due(grant)
    assert gs.grant_expire_due(timezone.now()) == 4

    assert outbox_drain() == 3

    assert pg.target.members() == set()
    for grant in grants:
        grant.refresh_from_db()
    assert [g.provisioning_state for g in grants] == [
        Grant.Provisioning.CONFIRMED,
        Grant.Provisioning.FAILED,
        Grant.Provisioning.CONFIRMED,
        Grant.Provisioning.CONFIRMED,
    ]
    assert gone.removal_confirmed_at is None and "does not exist" in gone.provisioning_error
    assert event_types(gone)["provisioning.failed"] == 1 and event_types(gone)["provisioning.removed"] == 0
    item = OutboxItem.objects.get(grant=gone, action=OutboxItem.Action.REMOVE)
    assert item.done_at is None and item.lease_until is None and item.next_attempt_at > timezone.now()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_earlier_versions_timer_expires_and_removes_its_own_grant_once(pg, grantees, outbox_held):
    from accessgov import tasks

    grants = [approve(pg), *grantees()]
    assert outbox_drain() == 4
    for grant in grants:
        make_due(grant)

    assert tasks.expire_grant(grants[2].pk) == 1  # its own grant only; the others are the scheduler's
    assert Grant.objects.filter(status=Grant.Status.ACTIVE).count() == 3
    assert [tasks.expire_grant(g.pk) for g in grants] == [1, 1, 0, 1]  # each timer: its own grant
    assert pg.target.members() == set()  # removed without waiting for a drain task
    assert [tasks.expire_grant(g.pk) for g in grants] == [0, 0, 0, 0]  # a redelivered timer: nothing left

    for grant in grants:
        grant.refresh_from_db()
        assert grant.status == Grant.Status.EXPIRED
        assert grant.provisioning_state == Grant.Provisioning.CONFIRMED
        assert event_types(grant) == {
            "grant.activated": 1,
            "provisioning.applied": 1,
            "grant.expired": 1,
            "provisioning.removed": 1,
        }
        assert AccessEvent.objects.get(grant=grant, event_type="grant.expired").actor_label == "system:expiry-timer"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_target_holding_the_members_row_fails_the_removal_after_the_lock_timeout_instead_of_blocking(
    pg, outbox_held, settings
):
    # Issue 15: with no lock_timeout, one uncommitted transaction at the target blocked the REVOKE for
    # ever, and every lease another drain claimed the item and blocked one more worker process.
    settings.PROVISIONING_TARGET_LOCK_TIMEOUT_SECONDS = 1.0
    target = pg.target
    grant = approve(pg)
    assert outbox_drain() == 1 and target.members() == {pg.principal}
    make_due(grant)
    assert gs.grant_expire_due(timezone.now()) == 1
    blocker = psycopg.connect(
        host=target.host, port=target.port, dbname=target.dbname, user=target.provisioner, password=target.password
    )
    try:
        blocker.execute(
            sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(target.managed), sql.Identifier(pg.principal))
        )
        started = time.monotonic()
        assert outbox_drain() == 0
        took = time.monotonic() - started
        removal = OutboxItem.objects.get(grant=grant, action=OutboxItem.Action.REMOVE)
        assert removal.done_at is None and removal.lease_until is None and removal.attempts == 1
        assert "lock timeout" in removal.last_error
        with target.admin() as conn:  # nothing of ours is left waiting at the target
            waiting = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND wait_event_type = 'Lock'",
                (target.provisioner,),
            ).fetchone()[0]
        assert waiting == 0
    finally:
        blocker.rollback()
        blocker.close()
    print(f"removal refused after {took:.2f} s (lock timeout 1 s)")
    # One removal alone (no bulk for a batch of one): it waited the lock timeout (1 s) and no more — a real
    # measured bound, with room for a loaded CI machine.
    assert 1.0 <= took < 4
    grant.refresh_from_db()
    assert grant.provisioning_state == Grant.Provisioning.FAILED

    make_item_due(removal)  # its backoff has passed; the target lets it through now
    assert outbox_drain() == 1
    assert target.members() == set()
    assert event_types(grant)["provisioning.removed"] == 1 and event_types(grant)["provisioning.failed"] == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_one_member_locked_at_the_target_does_not_hold_back_the_removal_of_the_others(
    pg, grantees, outbox_held, settings
):
    """A probe saw the three free members of a batch confirmed only after the locked one had waited out the
    lock timeout twice (bulk, then alone): ≈ 10 s of revocation lag for grants nothing blocked."""
    settings.PROVISIONING_TARGET_LOCK_TIMEOUT_SECONDS = 3.0
    target = pg.target
    grants = [approve(pg), *grantees()]
    assert outbox_drain() == 4
    locked = grants[1]
    blocker = psycopg.connect(
        host=target.host, port=target.port, dbname=target.dbname, user=target.provisioner, password=target.password
    )
    try:
        blocker.execute(
            sql.SQL("REVOKE {} FROM {}").format(
                sql.Identifier(target.managed), sql.Identifier(target.principal(locked.user.username))
            )
        )
        for grant in grants:
            make_due(grant)
        assert gs.grant_expire_due(timezone.now()) == 4
        started = timezone.now()
        assert outbox_drain() == 3
        for grant in grants:
            grant.refresh_from_db()
        free = [g for g in grants if g.pk != locked.pk]
        lags = [(g.removal_confirmed_at - started).total_seconds() for g in free]
        print(f"the free members confirmed {max(lags):.2f} s after the drain began (lock timeout 3 s)")
        assert all(g.provisioning_state == Grant.Provisioning.CONFIRMED for g in free)
        assert max(lags) < 2.0  # well under one lock timeout: not held back by the locked member
        assert locked.provisioning_state == Grant.Provisioning.FAILED and "lock timeout" in locked.provisioning_error
        assert target.members() == {target.principal(locked.user.username)}
    finally:
        blocker.rollback()
        blocker.close()
    make_item_due(OutboxItem.objects.get(grant=locked, action=OutboxItem.Action.REMOVE))
    assert outbox_drain() == 1 and target.members() == set()
    assert all(event_types(g)["provisioning.removed"] == 1 for g in grants)


# --- 5. Drift -----------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_membership_granted_outside_accessgov_is_detected_once_and_removed_when_the_system_opts_in(pg):
    target = pg.target
    grant = approve(pg)
    intruder = target.create_login("intruder")
    target.grant_by_hand(intruder)
    assert target.members() == {pg.principal, intruder}

    counts = reconcile_system(pg.system, timezone.now())

    assert counts == {"drift": 1, "removed": 0, "resolved": 0}
    finding = DriftFinding.objects.get()
    assert (finding.principal, finding.role, finding.resolved_at) == (intruder, pg.role, None)
    detected = AccessEvent.objects.get(event_type="drift.detected")
    assert detected.data == {"principal": intruder, "finding_id": finding.pk}
    assert detected.role == pg.role and detected.actor_label == "system:reconcile"
    # The grantee, whose grant is active, is not drift; and nothing was removed (not opted in).
    assert not DriftFinding.objects.filter(principal=pg.principal).exists()
    assert target.members() == {pg.principal, intruder}

    # Again: the same finding is seen again, not duplicated.
    later = timezone.now()
    assert reconcile_system(pg.system, later) == {"drift": 0, "removed": 0, "resolved": 0}
    assert DriftFinding.objects.count() == 1
    assert DriftFinding.objects.get().last_seen_at == later
    assert AccessEvent.objects.filter(event_type="drift.detected").count() == 1

    # The system opts in: the drift is removed at the target and the finding resolved.
    System.objects.filter(pk=pg.system.pk).update(reconcile_remove_drift=True)
    pg.system.refresh_from_db()
    assert reconcile_system(pg.system, timezone.now()) == {"drift": 0, "removed": 1, "resolved": 0}

    assert target.members() == {pg.principal}  # read back: the intruder's membership is gone
    finding.refresh_from_db()
    assert finding.resolved_at is not None and finding.removed_by_accessgov
    removed = AccessEvent.objects.get(event_type="drift.removed")
    assert removed.data == {"principal": intruder}
    assert AccessEvent.objects.filter(event_type__startswith="drift.").count() == 2
    grant.refresh_from_db()
    assert grant.provisioning_state == Grant.Provisioning.APPLIED
    assert reconcile_system(pg.system, timezone.now()) == {"drift": 0, "removed": 0, "resolved": 0}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_membership_granted_by_hand_with_admin_option_is_drift_too(pg):
    intruder = pg.target.create_login("intruder")
    with pg.target.admin() as conn:
        conn.execute(
            sql.SQL("GRANT {} TO {} WITH ADMIN OPTION").format(
                sql.Identifier(pg.target.managed), sql.Identifier(intruder)
            )
        )

    assert reconcile_system(pg.system, timezone.now())["drift"] == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_grants_that_just_ended_and_are_not_expired_yet_are_in_flight_not_drift_even_with_removal_on(pg, grantees):
    # Issue 15: reconciliation running between a grant's end and its expiry (the scheduler or the sweep
    # has not got to it yet) reported every such grantee as drift - and with "remove drift" on, would
    # have removed the access outside the outbox, with no provisioning.removed for the grant.
    grants = [approve(pg), *grantees()]
    System.objects.filter(pk=pg.system.pk).update(reconcile_remove_drift=True)
    pg.system.refresh_from_db()
    for grant in grants:
        make_due(grant)  # ended a second ago; still active in stored state
    members = pg.target.members()
    assert len(members) == 4
    now = timezone.now()
    assert not Grant.objects.active(now).filter(pk__in=[g.pk for g in grants]).exists()

    assert reconcile_system(pg.system, now) == {"drift": 0, "removed": 0, "resolved": 0}
    assert not DriftFinding.objects.exists()
    assert pg.target.members() == members  # not removed behind the outbox's back

    # Their expiry and removal through the outbox, then reconciliation again: still nothing.
    assert gs.grant_expire_due(timezone.now()) == 4  # its after-commit drain removes them (eager here)
    outbox_drain()
    assert pg.target.members() == set()
    assert reconcile_system(pg.system, timezone.now()) == {"drift": 0, "removed": 0, "resolved": 0}
    for grant in grants:
        assert event_types(grant)["provisioning.removed"] == 1
    assert not AccessEvent.objects.filter(event_type__startswith="drift.").exists()


# --- 6. Webhook ---------------------------------------------------------------------------------


@pytest.fixture
def hooked(world, receiver):
    """The lifecycle world with "Payments DB" provisioned by a signed webhook to ``receiver``."""
    System.objects.filter(pk=world.system.pk).update(
        connector=System.Connector.WEBHOOK,
        connector_config={"url": receiver.url, "principal_template": "svc-{username}"},
        connector_secret=WEBHOOK_SECRET,
    )
    world.system.refresh_from_db()
    return world


@pytest.mark.django_db
def test_the_webhook_posts_signed_deliveries_that_a_receiver_verifies_once(hooked, receiver):
    grant = approve(hooked)
    apply_item = OutboxItem.objects.get(grant=grant)
    with override_settings(WEBHOOK_ALLOW_PRIVATE_TARGETS=True):
        assert WebhookConnector.validate_config(hooked.system.connector_config, WEBHOOK_SECRET) == []
        assert outbox_drain() == 1

    [delivery] = receiver.deliveries
    assert delivery["verified"] is True
    assert delivery["headers"]["webhook-id"] == apply_item.idempotency_key == f"grant-{grant.pk}-apply-1"
    assert WEBHOOK_SECRET not in json.dumps(delivery["headers"]) + delivery["body"].decode()
    assert delivery["json"] == {
        "type": "access.apply",
        "grant_id": grant.pk,
        "principal": "svc-requester",
        "username": "requester",
        "target_role": "read-write",
        "role": "Payments DB · read-write",
        "expires_at": grant.expires_at.isoformat(),
    }
    grant.refresh_from_db()
    assert grant.provisioning_state == Grant.Provisioning.APPLIED
    assert event_types(grant)["provisioning.applied"] == 1

    headers, body = delivery["headers"], delivery["body"]
    # A replay of the same delivery (same webhook-id) is refused by a receiver that remembers ids.
    assert verify(WEBHOOK_SECRET, headers, body, seen=receiver.seen_ids) is False
    # An altered body no longer matches the signature.
    altered = body.replace(b'"read-write"', b'"admin"')
    assert altered != body
    assert verify(WEBHOOK_SECRET, headers, altered, seen=set()) is False
    # A correctly signed but stale (or far-future) delivery is refused; the same, fresh, passes.
    for skew, accepted in ((-301, False), (301, False), (-5, True)):
        timestamp = int(time.time()) + skew
        resigned = {
            **headers,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(WEBHOOK_SECRET, headers["webhook-id"], timestamp, body),
        }
        assert verify(WEBHOOK_SECRET, resigned, body, seen=set()) is accepted, skew
    # The wrong secret fails.
    assert verify("whsec_" + base64.b64encode(b"another key").decode(), headers, body, seen=set()) is False

    # Expiry: an access.remove delivery with its own id; a webhook cannot read back, so "removed".
    make_due(grant)
    assert gs.grant_expire_due(timezone.now()) == 1
    with override_settings(WEBHOOK_ALLOW_PRIVATE_TARGETS=True):
        assert outbox_drain() == 1
    removal = receiver.deliveries[1]
    assert removal["verified"] is True
    assert removal["json"]["type"] == "access.remove"
    assert removal["headers"]["webhook-id"] == f"grant-{grant.pk}-remove-1"
    grant.refresh_from_db()
    assert grant.provisioning_state == Grant.Provisioning.REMOVED
    assert grant.removal_confirmed_at is not None
    assert AccessEvent.objects.get(grant=grant, event_type="provisioning.removed").data["read_back"] is False
    assert len(receiver.deliveries) == 2 and receiver.other_hits == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://10.0.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://localhost:8000/hook",
    ],
)
@override_settings(WEBHOOK_ALLOW_PRIVATE_TARGETS=False)
def test_the_address_guard_refuses_internal_webhook_targets(url):
    with pytest.raises(ConnectorError, match="resolves to an internal address"):
        ensure_public_target(url)
    problems = WebhookConnector.validate_config({"url": url}, WEBHOOK_SECRET)
    assert len(problems) == 1 and "resolves to an internal address" in problems[0], problems


@override_settings(WEBHOOK_ALLOW_PRIVATE_TARGETS=False)
def test_the_address_guard_refuses_urls_that_are_not_http():
    for url in ("file:///etc/passwd", "gopher://127.0.0.1/", "http:///no-host"):
        with pytest.raises(ConnectorError, match="must be an http"):
            ensure_public_target(url)


@pytest.mark.django_db
@override_settings(WEBHOOK_ALLOW_PRIVATE_TARGETS=False)
def test_a_delivery_to_an_internal_address_is_refused_before_anything_is_sent(hooked, receiver):
    grant = approve(hooked)
    assert outbox_drain() == 0
    assert receiver.deliveries == []
    grant.refresh_from_db()
    assert grant.provisioning_state == Grant.Provisioning.FAILED
    assert "resolves to an internal address (127.0.0.1)" in grant.provisioning_error


@pytest.mark.parametrize("status", [500, 302])
@pytest.mark.django_db
@override_settings(WEBHOOK_ALLOW_PRIVATE_TARGETS=True)
def test_a_webhook_answering_an_error_or_a_redirect_is_a_failure_and_is_retried(hooked, receiver, status):
    receiver.status = status
    grant = approve(hooked)

    assert outbox_drain() == 0

    assert len(receiver.deliveries) == 1
    assert receiver.other_hits == []  # the redirect was not followed
    item = OutboxItem.objects.get(grant=grant)
    grant.refresh_from_db()
    assert item.done_at is None and item.attempts == 1
    assert item.last_error == grant.provisioning_error == f"The webhook answered {status}."
    assert grant.provisioning_state == Grant.Provisioning.FAILED
    assert event_types(grant)["provisioning.failed"] == 1
    assert event_types(grant)["provisioning.applied"] == 0

    # The receiver recovers; the retry (same webhook-id, so it can de-duplicate) succeeds. (This
    # receiver answers whatever verify() says; see the strict receiver below for why that matters.)
    receiver.status = 200
    make_item_due(item)
    assert outbox_drain() == 1
    assert [d["headers"]["webhook-id"] for d in receiver.deliveries] == [item.idempotency_key] * 2
    grant.refresh_from_db()
    assert grant.provisioning_state == Grant.Provisioning.APPLIED
    assert event_types(grant)["provisioning.applied"] == 1


@pytest.mark.django_db
@override_settings(WEBHOOK_ALLOW_PRIVATE_TARGETS=True)
def test_a_strict_receiver_accepts_the_retry_of_a_delivery_it_failed_to_process(hooked, receiver):
    receiver.refuse_unverified = True
    receiver.status = 500  # verified, then failed while applying
    grant = approve(hooked)
    assert outbox_drain() == 0

    receiver.status = 200
    # Retries are at least a second apart (the backoff starts at 1 s), so each is signed with a new
    # timestamp; only a byte-identical re-send is a replay.
    first_second = int(time.time())
    while int(time.time()) == first_second:
        time.sleep(0.05)
    make_item_due(OutboxItem.objects.get(grant=grant))
    outbox_drain()

    assert [d["verified"] for d in receiver.deliveries] == [True, True]
    grant.refresh_from_db()
    assert grant.provisioning_state == Grant.Provisioning.APPLIED


# --- 7. Manual connector ------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_manual_system_waits_for_an_owner_or_approver_to_complete_the_task(world):
    assert world.system.connector == System.Connector.MANUAL
    grant = approve(world)
    item = OutboxItem.objects.get(grant=grant)

    assert outbox_drain() == 0
    assert outbox_process(item.pk) == "manual"
    item.refresh_from_db()
    assert (item.done_at, item.attempts, item.lease_until, item.last_error) == (None, 0, None, "")
    grant.refresh_from_db()
    assert grant.provisioning_state == Grant.Provisioning.PENDING

    for someone in (world.requester, world.outsider, world.auditor):
        with pytest.raises(NotAuthorized):
            manual_task_complete(someone, item.pk)

    assert manual_task_complete(world.owner, item.pk) == "done"

    item.refresh_from_db()
    assert item.done_at is not None and item.done_by == world.owner and item.attempts == 1
    grant.refresh_from_db()
    assert grant.provisioning_state == Grant.Provisioning.APPLIED
    applied = AccessEvent.objects.get(grant=grant, event_type="provisioning.applied")
    assert applied.actor == world.owner and applied.actor_label == "owner"
    with pytest.raises(TransitionNotAllowed, match="already done"):
        manual_task_complete(world.approver, item.pk)

    # Removal too is a person's task; a person's word is "removed", never "confirmed" (no read-back).
    make_due(grant)
    gs.grant_expire_due(timezone.now())
    removal = OutboxItem.objects.get(grant=grant, action=OutboxItem.Action.REMOVE)
    assert outbox_drain() == 0
    assert manual_task_complete(world.approver, removal.pk) == "done"
    grant.refresh_from_db()
    assert grant.provisioning_state == Grant.Provisioning.REMOVED
    assert AccessEvent.objects.get(grant=grant, event_type="provisioning.removed").actor == world.approver


@pytest.mark.django_db
def test_the_provisioning_page_lists_pending_manual_tasks_and_the_owner_marks_one_done(world):
    grant = approve(world)
    item = OutboxItem.objects.get(grant=grant)
    done_url = f"/provisioning/tasks/{item.pk}/done/"
    owner = verify_session(Client(), world.owner)

    page = owner.get("/provisioning/")
    assert page.status_code == 200
    html = page.content.decode()
    assert f"#{grant.pk}</a> requester → read-write" in html
    assert f'action="{done_url}"' in html and "Mark applied" in html

    requester = verify_session(Client(), world.requester)
    assert f'action="{done_url}"' not in requester.get("/provisioning/").content.decode()
    assert requester.post(done_url).status_code == 403
    assert verify_session(Client(), world.outsider).post(done_url).status_code == 404
    item.refresh_from_db()
    assert item.done_at is None

    response = owner.post(done_url)
    assert response.status_code == 302 and response["Location"] == "/provisioning/"
    item.refresh_from_db()
    assert item.done_by == world.owner
    grant.refresh_from_db()
    assert grant.provisioning_state == Grant.Provisioning.APPLIED
    applied = AccessEvent.objects.get(grant=grant, event_type="provisioning.applied")
    assert (applied.actor, applied.client_address) == (world.owner, "127.0.0.1")  # a person's event: their address
    html = owner.get("/provisioning/").content.decode()
    assert "Nothing waiting." in html and done_url not in html
    assert owner.post(done_url).status_code == 409  # already done


@pytest.mark.django_db
@pytest.mark.parametrize("end", ["release", "expiry"])
def test_nobody_is_asked_to_apply_access_that_has_ended(world, end):
    """A manual system's Apply task outlived its grant: "Mark applied" on a released grant recorded the access as
    applied at the target 14 minutes after it had ended. Now the task is withdrawn when the grant ends (early: in
    its transaction; by expiry: by the sweep), and one marked late is refused."""

    grant = approve(world)
    apply_task = OutboxItem.objects.get(grant=grant, action=OutboxItem.Action.APPLY)
    owner = verify_session(Client(), world.owner)
    if end == "release":
        gs.grant_release(world.requester, grant.pk)
    else:
        make_due(grant)
        assert sweep_run(timezone.now())["manual_applies_withdrawn"] == 1
    apply_task.refresh_from_db()
    assert (apply_task.done_at is not None, apply_task.outcome, apply_task.done_by) == (True, "skipped", None)
    html = owner.get("/provisioning/").content.decode()
    assert "Mark applied" not in html and "Mark removed" in html
    response = owner.post(f"/provisioning/tasks/{apply_task.pk}/done/")
    assert response.status_code == 409
    grant.refresh_from_db()
    assert grant.provisioned_at is None
    assert not AccessEvent.objects.filter(grant=grant, event_type="provisioning.applied").exists()
    assert AccessEvent.objects.filter(grant=grant, event_type="provisioning.skipped").count() == 1


@pytest.mark.django_db
def test_an_apply_task_whose_grant_expired_before_any_sweep_is_refused_and_withdrawn(world):
    grant = approve(world)
    apply_task = OutboxItem.objects.get(grant=grant, action=OutboxItem.Action.APPLY)
    make_due(grant)  # past its end, not swept yet
    with pytest.raises(TransitionNotAllowed, match="has already ended: there is nothing to apply"):
        manual_task_complete(world.owner, apply_task.pk)
    apply_task.refresh_from_db()
    assert apply_task.outcome == "skipped"
    grant.refresh_from_db()
    assert grant.provisioned_at is None


@pytest.mark.django_db
def test_a_drain_sends_nothing_once_half_its_lease_has_passed(hooked, receiver, outbox_held, settings, monkeypatch):
    """An item sent after its lease ran out could be sent by two drains (an APPLY after another drain
    skipped it and removed the grant would give access back): a slow target makes the drain hand the
    rest of its batch back instead, and each item is still sent once."""
    # Both through the ``settings`` fixture: beside ``@override_settings`` it restored the decorator's state after
    # the decorator had ended, and the guard stayed open for the rest of the worker's tests.
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    settings.PROVISIONING_LEASE_SECONDS = 1
    receiver.delay = 0.6
    Eligibility.objects.create(role=hooked.role, user=hooked.outsider)
    grants = [approve(hooked), approve(hooked, user=hooked.outsider)]
    claimed_at, sent_at = {}, {}
    claim, perform = provisioning._claim, provisioning._perform

    def claim_spy(*args, **kwargs):
        items = claim(*args, **kwargs)
        claimed_at.update({item.pk: time.monotonic() for item in items})
        return items

    def perform_spy(item, connector):
        sent_at[item.pk] = time.monotonic()
        return perform(item, connector)

    monkeypatch.setattr(provisioning, "_claim", claim_spy)
    monkeypatch.setattr(provisioning, "_perform", perform_spy)

    assert outbox_drain() == 2
    items = OutboxItem.objects.filter(grant__in=grants)
    assert sorted(i.outcome for i in items) == ["done", "done"] and {i.attempts for i in items} == {1}
    assert len(receiver.deliveries) == 2
    # Every send began within half a lease of the claim it ran under (the second item was handed back
    # after the first took 0.6 s, and claimed again).
    assert all(sent_at[pk] - claimed_at[pk] < 0.5 for pk in sent_at)
