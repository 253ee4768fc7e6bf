"""Outbound event webhooks: deliveries written with their event (single and bulk paths), signed like the
webhook connector, retried with backoff, given up after the maximum attempts, logged in the admin, and
redelivered through the admin action.

Deliveries go to a real HTTP receiver on 127.0.0.1 (the ``Receiver`` of the connector tests, which checks
each POST with ``verify()``), so the address guard is opened with WEBHOOK_ALLOW_PRIVATE_TARGETS where a
test sends. Most tests run inside the test transaction, where on_commit callbacks do not run: they send
with the drain (what every sweep does) or run the callbacks with ``django_capture_on_commit_callbacks``.
"""

import base64
import io
import json
import socket
import time
from datetime import timedelta

import kombu.exceptions
import pytest
import time_machine
from auditlog.models import LogEntry
from django.core.management import call_command
from django.db import connection, transaction
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accessgov import tasks
from accessgov.connectors.webhook import verify
from accessgov.exceptions import NotAuthorized, TransitionNotAllowed
from accessgov.models import AccessEvent, EventWebhookSubscription, Grant, WebhookDelivery
from accessgov.services import access_requests as ar
from accessgov.services import grants as gs
from accessgov.services import webhook_outbox, webhooks
from accessgov.services.events import event_record
from accessgov.services.sweep import sweep_run
from accessgov.services.webhooks import (
    webhook_deliveries_drain,
    webhook_deliveries_enqueue,
    webhook_deliveries_send,
    webhook_delivery_redeliver,
)
from tests.conftest import sign_in, verify_session
from tests.support.concurrency import race
from tests.support.factories import RoleFactory, SystemFactory
from tests.support.provisioning import Receiver, make_due
from tests.support.requests import submit

pytestmark = pytest.mark.django_db
H = timedelta(hours=1)
JUSTIFICATION = "Investigating incident INC-42 on payments"
SECRET = "whsec_" + base64.b64encode(b"accessgov-event-webhook-test-key-42").decode()
allow_private = override_settings(WEBHOOK_ALLOW_PRIVATE_TARGETS=True)


@pytest.fixture
def receiver():
    with Receiver(SECRET) as r:
        yield r


def subscribe(url: str = "https://hooks.example.com/accessgov", *, types=("*",), system=None, active=True, name=""):
    return EventWebhookSubscription.objects.create(
        name=name or f"hook {'/'.join(types)}",
        url=url,
        event_types=list(types),
        system=system,
        secret=SECRET,
        is_active=active,
    )


def approve(w) -> Grant:
    access_request = submit(w)
    ar.access_request_approve(w.approver, access_request.pk, comment="ok")
    return Grant.objects.get(access_request=access_request)


def delivered_types(subscription) -> list[str]:
    return sorted(WebhookDelivery.objects.filter(subscription=subscription).values_list("event__event_type", flat=True))


def make_delivery_due(delivery: WebhookDelivery) -> None:
    """As if the backoff had elapsed."""
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


# --- Which events make deliveries -------------------------------------------------------------


def test_deliveries_are_written_for_matching_active_subscriptions_only(world):
    other_system = SystemFactory(name="Search cluster", slug="search")
    RoleFactory(system=other_system, name="reader")
    everything = subscribe(types=["*"])
    requests_only = subscribe(types=["request.*"])
    exact = subscribe(types=["request.approved", "grant.activated"])
    payments_grants = subscribe(types=["grant.*"], system=world.system)
    elsewhere = subscribe(types=["*"], system=other_system)
    paused = subscribe(types=["*"], active=False)

    grant = approve(world)

    types = sorted(AccessEvent.objects.filter(access_request=grant.access_request).values_list("event_type", flat=True))
    assert {"request.submitted", "request.approved", "decision.approve", "grant.activated"} <= set(types)
    assert delivered_types(everything) == types
    assert delivered_types(requests_only) == sorted(t for t in types if t.startswith("request."))
    assert delivered_types(exact) == ["grant.activated", "request.approved"]
    assert delivered_types(payments_grants) == sorted(t for t in types if t.startswith("grant."))
    assert delivered_types(elsewhere) == delivered_types(paused) == []
    delivery = WebhookDelivery.objects.filter(subscription=everything).first()
    assert (delivery.status, delivery.attempts, delivery.lease_until) == ("pending", 0, None)


def test_events_without_a_role_go_to_global_subscriptions_only(world):
    everywhere = subscribe(types=["review.*"])
    payments = subscribe(types=["review.*"], system=world.system)
    with transaction.atomic():
        event = event_record(AccessEvent.Type.REVIEW_OPENED, job="test", data={"campaign_id": 1})

    assert list(WebhookDelivery.objects.values_list("subscription_id", "event_id")) == [(everywhere.pk, event.pk)]
    assert delivered_types(payments) == []


def test_events_about_webhooks_themselves_are_never_delivered(world):
    subscribe(types=["*"])
    with transaction.atomic():
        event_record(AccessEvent.Type.WEBHOOK_FAILED, job="test", data={})
    assert not WebhookDelivery.objects.exists()
    assert webhooks.event_type_matches(["*"], "webhook.redelivered") is False
    assert webhooks.event_type_pattern_problems(["webhook.*"]) == [
        "'webhook.*' matches no event type that webhooks deliver."
    ]
    assert webhooks.event_type_pattern_problems(["grant.*", "request.submitted", "*"]) == []
    assert webhooks.event_type_pattern_problems(["grant"]) and webhooks.event_type_pattern_problems([])


def test_a_rolled_back_change_leaves_no_delivery(world):
    subscribe(types=["*"])
    with pytest.raises(RuntimeError), transaction.atomic():
        submit(world)
        assert WebhookDelivery.objects.count() == 1  # written in the change's own transaction
        raise RuntimeError("the change fails after its event was recorded")

    assert not AccessEvent.objects.exists()
    assert not WebhookDelivery.objects.exists()


def test_finding_subscriptions_costs_one_query_per_role_and_transaction_and_one_per_bulk_batch(
    world, django_assert_num_queries
):
    subscribe(types=["grant.expired"])
    subscribe(types=["grant.*"], system=world.system)
    events = [AccessEvent(event_type="grant.expired", role_id=world.role.pk, actor_label="t") for _ in range(3)]
    with transaction.atomic():
        AccessEvent.objects.bulk_create(events)  # setup: saved rows (no chain needed here)
        with django_assert_num_queries(2):  # one SELECT for the subscriptions, one INSERT
            assert len(webhook_deliveries_enqueue(events)) == 6
        with django_assert_num_queries(0):  # the same role later in the transaction: read once already
            assert (
                webhook_deliveries_enqueue([AccessEvent(event_type="request.submitted", role_id=world.role.pk)]) == []
            )
        with django_assert_num_queries(1):  # another role, nothing matches: the SELECT only
            assert (
                webhook_deliveries_enqueue([AccessEvent(event_type="request.submitted", role_id=world.role_two.pk)])
                == []
            )


def test_the_expiry_sweep_makes_one_delivery_per_expired_grant(world, make_user):
    from accessgov.models import Eligibility

    subscription = subscribe(types=["grant.expired"])
    grants = [approve(world)]
    for name in ("second", "third"):
        user = make_user(name)
        Eligibility.objects.create(role=world.role, user=user)
        access_request = ar.access_request_submit(user, role=world.role, duration=H, justification=JUSTIFICATION)
        ar.access_request_approve(world.approver, access_request.pk, comment="ok")
        grants.append(Grant.objects.get(access_request=access_request))
    for grant in grants:
        make_due(grant)

    assert gs.grant_expire_due(timezone.now()) == 3

    deliveries = WebhookDelivery.objects.filter(subscription=subscription)
    expired_events = AccessEvent.objects.filter(event_type="grant.expired")
    assert sorted(deliveries.values_list("event_id", flat=True)) == sorted(expired_events.values_list("pk", flat=True))
    assert sorted(deliveries.values_list("event__grant_id", flat=True)) == sorted(g.pk for g in grants)


# --- Sending ------------------------------------------------------------------------------------


@allow_private
def test_deliveries_are_signed_and_carry_the_event_but_no_secret(world, receiver):
    subscription = subscribe(receiver.url, types=["grant.activated"])
    grant = approve(world)
    delivery = WebhookDelivery.objects.get()
    event = delivery.event

    assert webhook_deliveries_drain() == 1

    [sent] = receiver.deliveries
    assert sent["verified"] is True  # the connector's verify(): signature, fresh timestamp, first time
    assert sent["headers"]["webhook-id"] == delivery.message_id == f"event-{event.pk}-{subscription.pk}"
    assert sent["json"] == {
        "type": "grant.activated",
        "event_id": event.pk,
        "sequence": event.sequence,
        "occurred_at": event.occurred_at.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "actor": "approver",
        "access_request_id": grant.access_request_id,
        "grant_id": grant.pk,
        "role_id": world.role.pk,
        "role": "read-write",
        "system_id": world.system.pk,
        "system": "payments-db",
        "data": event.data,
    }
    raw = json.dumps(sent["headers"]) + sent["body"].decode()
    assert SECRET not in raw and SECRET.removeprefix("whsec_") not in raw
    assert JUSTIFICATION not in sent["body"].decode()
    assert verify(SECRET, sent["headers"], sent["body"], seen=receiver.seen_ids) is False  # a replay
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code, delivery.last_error) == (
        "delivered",
        1,
        200,
        "",
    )
    assert delivery.delivered_at is not None and delivery.lease_until is None
    assert webhook_deliveries_drain() == 0 and len(receiver.deliveries) == 1  # delivered once


@allow_private
def test_deliveries_are_sent_by_a_task_after_the_commit(world, receiver, django_capture_on_commit_callbacks):
    subscribe(receiver.url, types=["request.submitted"])
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        submit(world)
    assert callbacks  # the task was scheduled on commit (run eagerly here)
    assert [d["json"]["type"] for d in receiver.deliveries] == ["request.submitted"]
    assert WebhookDelivery.objects.get().status == "delivered"
    # The task is idempotent: running it again for the same id sends nothing.
    assert tasks.deliver_event_webhooks(list(WebhookDelivery.objects.values_list("pk", flat=True))) == 0
    assert len(receiver.deliveries) == 1


@allow_private
def test_a_broker_outage_loses_no_delivery_the_sweep_sends_it(
    world, receiver, monkeypatch, django_capture_on_commit_callbacks
):
    subscribe(receiver.url, types=["request.submitted"])

    def broker_down(*args, **kwargs):
        raise kombu.exceptions.OperationalError("Redis is down")

    monkeypatch.setattr(tasks.deliver_event_webhooks, "delay", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        access_request = submit(world)  # the commit succeeds; the failed delay() is swallowed (robust)
    assert access_request.pk and receiver.deliveries == []
    assert WebhookDelivery.objects.get().status == "pending"

    assert sweep_run(timezone.now())["webhooks_delivered"] == 1
    assert [d["json"]["type"] for d in receiver.deliveries] == ["request.submitted"]


@allow_private
@override_settings(EVENT_WEBHOOK_MAX_ATTEMPTS=12, EVENT_WEBHOOK_MAX_BACKOFF_SECONDS=3600)
def test_a_failing_receiver_is_retried_with_exponential_backoff_until_it_answers(world, receiver):
    receiver.status = 500
    subscribe(receiver.url, types=["request.submitted"])
    submit(world)
    delivery = WebhookDelivery.objects.get()

    waits = []
    for attempt in (1, 2, 3):
        before = timezone.now()
        assert webhook_deliveries_drain() == 0
        delivery.refresh_from_db()
        assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("pending", attempt, 500)
        assert delivery.last_error == "The receiver answered 500."
        waits.append(delivery.next_attempt_at - before)
        assert webhook_deliveries_drain() == 0  # not due yet: nothing is sent
        assert len(receiver.deliveries) == attempt
        make_delivery_due(delivery)
    for wait, expected in zip(waits, (10, 20, 40), strict=True):
        assert timedelta(seconds=expected) <= wait < timedelta(seconds=expected + 2), waits
    assert webhooks.retry_schedule()[-3:] == [timedelta(seconds=2560), timedelta(hours=1), timedelta(hours=1)]

    receiver.status = 200
    assert webhook_deliveries_drain() == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code, delivery.last_error) == (
        "delivered",
        4,
        200,
        "",
    )
    # Every attempt carried the same webhook-id and verified (each signed anew with its own timestamp).
    assert {d["headers"]["webhook-id"] for d in receiver.deliveries} == {delivery.message_id}
    assert all(verify(SECRET, d["headers"], d["body"]) for d in receiver.deliveries)
    assert not AccessEvent.objects.filter(event_type__startswith="webhook.").exists()


@allow_private
@override_settings(EVENT_WEBHOOK_MAX_ATTEMPTS=3)
def test_a_delivery_is_marked_failed_after_the_maximum_attempts_and_that_is_recorded(world, receiver):
    receiver.status = 302  # a redirect is not followed: it is a failure like any non-2xx
    subscription = subscribe(receiver.url, types=["request.submitted"], name="CI bot")
    submit(world)
    delivery = WebhookDelivery.objects.get()
    for _ in range(3):
        make_delivery_due(delivery)
        webhook_deliveries_drain()

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("failed", 3, 302)
    assert receiver.other_hits == []
    gave_up = AccessEvent.objects.get(event_type="webhook.failed")
    assert gave_up.actor_label == "system:webhooks" and gave_up.reason == "The receiver answered 302."
    assert gave_up.data == {
        "delivery_id": delivery.pk,
        "subscription_id": subscription.pk,
        "subscription": "CI bot",
        "event_id": delivery.event_id,
        "event_type": "request.submitted",
        "attempts": 3,
        "last_status_code": 302,
    }
    make_delivery_due(delivery)
    assert webhook_deliveries_drain() == 0 and len(receiver.deliveries) == 3  # given up: never sent again


@allow_private
def test_an_unreachable_receiver_costs_one_attempt_per_drain_not_one_per_event(world):
    subscription = subscribe(closed_port_url(), types=["request.*", "decision.*", "grant.*"])
    approve(world)
    count = WebhookDelivery.objects.filter(subscription=subscription).count()
    assert count >= 3

    assert webhook_deliveries_drain() == 0

    attempts = sorted(WebhookDelivery.objects.values_list("attempts", flat=True))
    assert attempts == [0] * (count - 1) + [1]
    tried = WebhookDelivery.objects.get(attempts=1)
    assert tried.last_status_code is None and "could not be reached" in tried.last_error
    assert not WebhookDelivery.objects.filter(lease_until__isnull=False).exists()


@override_settings(WEBHOOK_ALLOW_PRIVATE_TARGETS=False)
def test_a_subscription_pointing_inside_is_refused_at_sending_time_too(world, receiver):
    subscribe(receiver.url, types=["request.submitted"])  # e.g. saved while internal targets were allowed
    submit(world)
    assert webhook_deliveries_drain() == 0
    assert receiver.deliveries == []
    assert "must start with https://" in WebhookDelivery.objects.get().last_error


@allow_private
def test_an_inactive_subscription_keeps_its_deliveries_until_it_is_active_again(world, receiver):
    subscription = subscribe(receiver.url, types=["request.submitted"])
    submit(world)
    EventWebhookSubscription.objects.filter(pk=subscription.pk).update(is_active=False)
    assert webhook_deliveries_drain() == 0 and receiver.deliveries == []
    assert WebhookDelivery.objects.get().attempts == 0
    EventWebhookSubscription.objects.filter(pk=subscription.pk).update(is_active=True)
    assert webhook_deliveries_drain() == 1


# --- Redelivery ---------------------------------------------------------------------------------


@pytest.fixture
def admin_user(make_user):
    return make_user("root", is_staff=True, is_superuser=True)


@allow_private
def test_an_admin_redelivers_from_the_delivery_log_and_that_is_recorded(world, receiver, admin_user):
    subscription = subscribe(receiver.url, types=["grant.activated"], name="Deploy bot")
    approve(world)
    assert webhook_deliveries_drain() == 1
    delivery = WebhookDelivery.objects.get()
    admin = sign_in(Client(), admin_user)  # password, then a real TOTP code

    log = admin.get("/admin/accessgov/webhookdelivery/")
    assert log.status_code == 200
    html = log.content.decode()
    assert "grant.activated" in html and "Deploy bot" in html and "Delivered" in html
    assert "Redeliver selected deliveries now" in html
    detail = admin.get(f"/admin/accessgov/webhookdelivery/{delivery.pk}/change/").content.decode()
    assert "&quot;type&quot;:&quot;grant.activated&quot;" in detail  # the body, for the admin to inspect

    response = admin.post(
        "/admin/accessgov/webhookdelivery/", {"action": "redeliver", "_selected_action": [delivery.pk]}
    )
    assert response.status_code == 302

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.redelivery_count) == ("pending", 0, 1)
    recorded = AccessEvent.objects.get(event_type="webhook.redelivered")
    assert recorded.actor == admin_user and recorded.client_address == "127.0.0.1"
    assert recorded.data == {
        "delivery_id": delivery.pk,
        "subscription_id": subscription.pk,
        "subscription": "Deploy bot",
        "event_id": delivery.event_id,
        "event_type": "grant.activated",
        "previous_status": "delivered",
        "previous_attempts": 1,
    }
    assert WebhookDelivery.objects.count() == 1  # the redelivery event itself is not delivered

    first_second = int(receiver.deliveries[0]["headers"]["webhook-timestamp"])
    while int(time.time()) == first_second:  # a redelivery in the same second would look like a replay
        time.sleep(0.05)
    assert webhook_deliveries_drain() == 1
    assert [d["headers"]["webhook-id"] for d in receiver.deliveries] == [delivery.message_id] * 2
    assert [d["verified"] for d in receiver.deliveries] == [True, True]  # signed anew: not a replay
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("delivered", 1)


@allow_private
@override_settings(EVENT_WEBHOOK_MAX_ATTEMPTS=1)
def test_redelivery_gives_a_failed_delivery_a_fresh_set_of_attempts(world, receiver, admin_user):
    receiver.status = 503
    subscribe(receiver.url, types=["request.submitted"])
    submit(world)
    webhook_deliveries_drain()
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "failed"

    receiver.status = 200
    webhook_delivery_redeliver(admin_user, delivery.pk)
    assert webhook_deliveries_send([delivery.pk]) == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.redelivery_count) == ("delivered", 1, 1)


def test_only_portal_admins_redeliver_and_not_while_a_delivery_is_being_sent(world, admin_user):
    subscription = subscribe(types=["request.submitted"])
    submit(world)
    delivery = WebhookDelivery.objects.get()
    for someone in (world.requester, world.approver, world.auditor):
        with pytest.raises(NotAuthorized):
            webhook_delivery_redeliver(someone, delivery.pk)

    WebhookDelivery.objects.filter(pk=delivery.pk).update(lease_until=timezone.now() + timedelta(seconds=60))
    with pytest.raises(TransitionNotAllowed, match="being sent right now"):
        webhook_delivery_redeliver(admin_user, delivery.pk)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(lease_until=None)
    EventWebhookSubscription.objects.filter(pk=subscription.pk).update(is_active=False)
    with pytest.raises(TransitionNotAllowed, match="inactive"):
        webhook_delivery_redeliver(admin_user, delivery.pk)
    assert not AccessEvent.objects.filter(event_type="webhook.redelivered").exists()

    auditor = verify_session(Client(), world.auditor)
    assert auditor.get("/admin/accessgov/webhookdelivery/").status_code == 302  # not staff: admin sign-in


# --- The subscription in the admin: validated, secret write-only --------------------------------


def _subscription_form(**fields):
    return {
        "name": "Deploy bot",
        "system": "",
        "url": "",
        "event_types": "grant.*",
        "secret": "",
        "is_active": "on",
        **fields,
    }


def test_the_signing_secret_is_never_shown_in_admin_pages_or_the_audit_log(world, admin_user, make_user):
    from accessgov.models import ChangeRequest
    from accessgov.services import changes

    second = make_user("root2", is_staff=True, is_superuser=True)  # a subscription is four-eyed (issue 22)
    admin = verify_session(Client(), admin_user)
    secret = "whsec_" + base64.b64encode(b"very-secret-signing-key-0000").decode()
    with allow_private:
        response = admin.post(
            "/admin/accessgov/eventwebhooksubscription/add/",
            _subscription_form(url="http://127.0.0.1:9/hook", event_types="grant.*, request.approved", secret=secret),
        )
        assert response.status_code == 302, response.content.decode()[:3000]
        changes.change_approve(second, ChangeRequest.objects.get(status="pending").pk)
    subscription = EventWebhookSubscription.objects.get()
    assert (subscription.secret, subscription.event_types) == (secret, ["grant.*", "request.approved"])

    # Editing with the secret left empty keeps it; the change is audited without the secret.
    with allow_private:
        response = admin.post(
            f"/admin/accessgov/eventwebhooksubscription/{subscription.pk}/change/",
            _subscription_form(url="http://127.0.0.1:9/other", event_types="grant.*"),
        )
        assert response.status_code == 302
        changes.change_approve(second, ChangeRequest.objects.get(status="pending").pk)
    subscription.refresh_from_db()
    assert subscription.secret == secret and subscription.url == "http://127.0.0.1:9/other"

    approve(world)  # deliveries for the log pages
    delivery = WebhookDelivery.objects.first()
    pages = [
        "/admin/accessgov/eventwebhooksubscription/",
        f"/admin/accessgov/eventwebhooksubscription/{subscription.pk}/change/",
        f"/admin/accessgov/eventwebhooksubscription/{subscription.pk}/history/",
        "/admin/accessgov/webhookdelivery/",
        f"/admin/accessgov/webhookdelivery/{delivery.pk}/change/",
        "/admin/auditlog/logentry/",
    ]
    for page in pages:
        response = admin.get(page)
        assert response.status_code == 200, page
        assert secret not in response.content.decode() and "very-secret" not in response.content.decode(), page
    entries = LogEntry.objects.get_for_object(subscription)
    assert entries.count() == 2
    assert all("secret" not in (entry.changes_dict or {}) for entry in entries)
    assert secret not in json.dumps([entry.changes for entry in entries], default=str)
    recorded = list(ChangeRequest.objects.values("payload", "changes", "secret_payload")) + list(
        AccessEvent.objects.values("data")
    )
    assert secret not in json.dumps(recorded, default=str)  # secret_payload is wiped once applied


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"url": "http://hooks.example.com/x"}, "must start with https://"),
        ({"url": "https://127.0.0.1/hook"}, "resolves to an internal address"),
        ({"url": "https://10.1.2.3/hook"}, "resolves to an internal address"),
        ({"event_types": "grants.*"}, "matches no event type"),
        ({"event_types": " , "}, "Choose at least one event type"),
        ({"secret": ""}, "A signing secret is required."),
    ],
)
@override_settings(WEBHOOK_ALLOW_PRIVATE_TARGETS=False)
def test_the_admin_refuses_an_unsafe_or_unclear_subscription(admin_user, fields, error):
    admin = verify_session(Client(), admin_user)
    data = {**_subscription_form(url="https://1.1.1.1/hook", secret=SECRET), **fields}
    response = admin.post("/admin/accessgov/eventwebhooksubscription/add/", data)
    assert response.status_code == 200
    assert error in response.content.decode()
    assert not EventWebhookSubscription.objects.exists()


# --- Retention and concurrency ------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_purging_old_events_takes_their_delivery_log_along(world):
    from datetime import UTC, datetime

    from accessgov.models import Eligibility

    subscribe(types=["request.*"])
    Eligibility.objects.update(starts_at=datetime(2010, 1, 1, tzinfo=UTC))
    with time_machine.travel(datetime(2016, 3, 1, 12, tzinfo=UTC), tick=False):
        ar.access_request_cancel(world.requester, submit(world).pk)
    assert WebhookDelivery.objects.count() == 2

    call_command("purge_audit", "--before", "2017-01-01", stdout=io.StringIO())

    assert not WebhookDelivery.objects.exists()
    assert AccessEvent.objects.filter(event_type="audit.purged").count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@allow_private
def test_parallel_drains_send_each_delivery_once(world, receiver, monkeypatch):
    from accessgov.services import provisioning

    monkeypatch.setattr(provisioning, "_drain_after_commit", lambda action: None)
    monkeypatch.setattr(webhook_outbox, "_send_after_commit", lambda ids: None)  # the drains below do the sending
    subscribe(receiver.url, types=["*"])
    for _ in range(3):
        ar.access_request_cancel(world.requester, submit(world).pk)
    total = WebhookDelivery.objects.count()
    assert total == 6

    outcomes = race({f"drain-{n}": lambda: webhook_deliveries_drain(batch_size=2) for n in range(4)})

    assert all(outcome.ok for outcome in outcomes.values()), outcomes
    assert sum(outcome.value for outcome in outcomes.values()) == total
    assert len(receiver.deliveries) == total
    assert len({d["headers"]["webhook-id"] for d in receiver.deliveries}) == total
    assert connection.vendor == "postgresql"


def test_the_delivery_log_page_has_a_constant_number_of_queries(world, admin_user, django_assert_max_num_queries):
    subscribe(types=["*"])
    for _ in range(3):
        ar.access_request_cancel(world.requester, submit(world).pk)
    admin = verify_session(Client(), admin_user)
    admin.get("/admin/accessgov/webhookdelivery/")
    with CaptureQueriesContext(connection) as few:
        admin.get("/admin/accessgov/webhookdelivery/")
    for _ in range(5):
        ar.access_request_cancel(world.requester, submit(world).pk)
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert admin.get("/admin/accessgov/webhookdelivery/").status_code == 200
