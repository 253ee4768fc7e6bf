"""Every outbound call ends within its time limit as a whole, not per socket read: a provider or receiver
that sends its status line at once and then one byte at a time (``tests/support/trickling.py``) held a
portal request — a ticket checked with Jira, an on-call rule asking PagerDuty — until gunicorn killed the
worker, and one event-webhook receiver held the notifications queue for minutes while its lease ran out
and the same delivery went out twice. ``accessgov.net.deadline`` now cuts every call at its timeout
(1 s here): the call fails as a timeout does, to people or to a retry."""

import http.server
import threading
import time

import pytest
from django.db import connection
from django.test import override_settings
from django.urls import reverse

from accessgov import net
from accessgov.connectors import webhook as webhook_connector
from accessgov.integrations import slack
from accessgov.models import (
    AccessRequest,
    AutoApprovalRule,
    EventWebhookSubscription,
    OnCallProvider,
    SlackWorkspace,
    TicketProvider,
    WebhookDelivery,
)
from accessgov.services import webhook_outbox, webhooks
from accessgov.services.webhooks import webhook_deliveries_drain, webhook_deliveries_send
from tests.support.integration_world import client_for
from tests.support.requests import submit
from tests.support.trickling import TricklingServer

pytestmark = pytest.mark.django_db

TIMEOUT = 1.0
# Over the timeout, a call may spend: the timer thread waking, TLS teardown, the portal's own work on the
# request. Without a whole-call deadline the same calls took the trickling server's 6 s (or forever).
MARGIN = 1.5
DEFAULT_WEBHOOK_TIMEOUT = webhook_connector.TIMEOUT_SECONDS


@pytest.fixture(params=["body", "headers"])
def trickling_provider(request, settings):
    """A provider on HTTPS (its certificate trusted as INTEGRATIONS_CA_FILE) trickling its answer, and a
    one-second INTEGRATIONS_TIMEOUT_SECONDS."""
    settings.INTEGRATIONS_ALLOW_PRIVATE_URLS = True
    settings.INTEGRATIONS_TIMEOUT_SECONDS = TIMEOUT
    with TricklingServer(mode=request.param, tls=True) as server:
        settings.INTEGRATIONS_CA_FILE = server.ca_file
        yield server


@pytest.fixture(params=["body", "headers"])
def trickling_receiver(request, monkeypatch):
    """An event-webhook receiver on plain http trickling its answer, and a one-second webhook timeout."""
    monkeypatch.setattr(webhook_connector, "TIMEOUT_SECONDS", TIMEOUT)
    with override_settings(WEBHOOK_ALLOW_PRIVATE_TARGETS=True), TricklingServer(mode=request.param, tls=False) as s:
        yield s


def _timed(call):
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


@pytest.fixture
def warm_request_form(world):
    """The first page a test process renders imports and compiles what every later one reuses (over a second on a
    busy machine, with two test workers): the request form is rendered once here, so the timed requests measure
    the provider calls."""
    assert client_for(world.requester).get(reverse("request_new")).status_code == 200


def test_a_ticket_checked_with_a_trickling_jira_is_refused_at_the_timeout(world, warm_request_form, trickling_provider):
    provider = TicketProvider.objects.create(
        name="Jira", base_url=trickling_provider.url + "/jira", username="bot@example.com", api_token="t"
    )
    world.role.ticket_required = True
    world.role.ticket_provider = provider
    world.role.save()

    response, elapsed = _timed(
        lambda: client_for(world.requester).post(
            reverse("request_new"),
            {"role": world.role.pk, "duration": "1h", "justification": "Rotate credentials", "ticket": "OPS-42"},
        )
    )

    assert elapsed < TIMEOUT + MARGIN, elapsed
    assert response.status_code == 400
    page = response.content.decode()
    assert "The ticket could not be confirmed" in page and "cannot be reached (TimeoutError)" in page
    assert not AccessRequest.objects.exists()
    assert trickling_provider.requests == [
        "GET /jira/rest/api/2/issue/OPS-42?fields=summary,status,assignee,project,issuetype HTTP/1.1"
    ]


def test_an_on_call_rule_asking_a_trickling_pagerduty_sends_the_request_to_people_at_the_timeout(
    world, warm_request_form, trickling_provider
):
    provider = OnCallProvider.objects.create(name="PagerDuty", base_url=trickling_provider.url + "/pd", api_key="k")
    AutoApprovalRule.objects.create(
        role=world.role, name="on call", oncall_provider=provider, oncall_escalation_policy="PEP1", oncall_max_level=1
    )

    response, elapsed = _timed(
        lambda: client_for(world.requester).post(
            reverse("request_new"),
            {"role": world.role.pk, "duration": "2h", "justification": "Mitigating the checkout outage now"},
        )
    )

    assert elapsed < TIMEOUT + MARGIN, elapsed
    assert response.status_code == 302
    access_request = AccessRequest.objects.get(requester=world.requester)
    assert access_request.status == AccessRequest.Status.PENDING
    note = access_request.auto_approval_note
    assert "PagerDuty could not answer (TimeoutError)" in note and "Sent to approvers instead" in note
    assert len(trickling_provider.requests) == 1 and trickling_provider.requests[0].startswith("GET /pd/users")


def test_a_slack_call_to_a_trickling_api_fails_as_a_timeout_at_the_timeout(trickling_provider):
    workspace = SlackWorkspace(name="Acme", team_id="T0", api_base_url=trickling_provider.url + "/api/", bot_token="x")
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        slack.client_for(workspace).chat_postMessage(channel="C0", text="hello")
    assert time.monotonic() - started < TIMEOUT + MARGIN
    assert trickling_provider.requests == ["POST /api/chat.postMessage HTTP/1.1"]


def test_an_event_webhook_receiver_trickling_its_answer_costs_one_timeout_per_attempt(world, trickling_receiver):
    subscription = EventWebhookSubscription.objects.create(
        name="slow", url=trickling_receiver.url + "/hook", event_types=["request.submitted"], secret="s" * 32
    )
    submit(world)  # its delivery is sent after the commit; this test sends it itself
    delivery = WebhookDelivery.objects.get(subscription=subscription)

    delivered, elapsed = _timed(lambda: webhook_deliveries_send([delivery.pk]))

    assert delivered == 0
    assert elapsed < TIMEOUT + MARGIN, elapsed
    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.PENDING and delivery.attempts == 1
    assert delivery.last_error == "The webhook could not be reached (TimeoutError)."
    assert delivery.lease_until is None  # recorded by the worker that still held the lease: a retry, later
    assert trickling_receiver.requests == ["POST /hook HTTP/1.1"]


def test_a_whole_batch_of_slow_receivers_is_sent_well_within_its_lease():
    """A claimed batch is sent one delivery after the other; each attempt now ends at the webhook timeout,
    so the lease (which keeps every other worker off the batch) outlasts the whole batch twice over."""
    assert webhooks.LEASE.total_seconds() >= webhooks.BATCH_SIZE * DEFAULT_WEBHOOK_TIMEOUT * 2
    assert net.TIMEOUT_SECONDS == DEFAULT_WEBHOOK_TIMEOUT == 5


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_delivery_in_flight_to_a_trickling_receiver_is_not_sent_again_by_another_drain(
    world, trickling_receiver, monkeypatch
):
    from accessgov.services import provisioning

    monkeypatch.setattr(provisioning, "_drain_after_commit", lambda action: None)
    monkeypatch.setattr(webhook_outbox, "_send_after_commit", lambda ids: None)  # the drains below send
    subscription = EventWebhookSubscription.objects.create(
        name="slow", url=trickling_receiver.url + "/hook", event_types=["request.submitted"], secret="s" * 32
    )
    submit(world)
    delivery = WebhookDelivery.objects.get(subscription=subscription)
    first: dict = {}

    def send_first() -> None:
        try:
            first["delivered"], first["elapsed"] = _timed(webhook_deliveries_drain)
        finally:
            connection.close()

    thread = threading.Thread(target=send_first)
    thread.start()
    for _ in range(100):  # until the first attempt is on the wire
        if trickling_receiver.requests:
            break
        time.sleep(0.02)
    second = webhook_deliveries_drain()
    thread.join(10)

    assert not thread.is_alive() and first["delivered"] == second == 0
    assert first["elapsed"] < TIMEOUT + MARGIN, first
    assert trickling_receiver.requests == ["POST /hook HTTP/1.1"]  # sent once, not twice at once
    delivery.refresh_from_db()
    assert delivery.attempts == 1 and "TimeoutError" in delivery.last_error and delivery.lease_until is None
    assert connection.vendor == "postgresql"


class _Answering(http.server.BaseHTTPRequestHandler):
    """A receiver that answers every POST at once (200, a complete body) and counts them."""

    protocol_version = "HTTP/1.1"
    posts = 0

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).posts += 1
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def test_a_post_answered_in_time_is_not_a_timeout_when_the_limit_passes_while_it_closes(monkeypatch, settings):
    """The review's finding: a receiver had answered 200, the limit passed while the connection closed (a busy
    worker), and the call was reported as a timeout — so the delivery was retried and sent twice."""
    import http.client
    import socketserver

    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Answering)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    close = http.client.HTTPConnection.close

    def slow_close(self):
        close(self)
        time.sleep(0.3)  # past the 0.2 s limit, after the whole answer was read

    monkeypatch.setattr(http.client.HTTPConnection, "close", slow_close)
    try:
        assert net.post(f"http://127.0.0.1:{server.server_address[1]}/hook", b"{}", {}, timeout=0.2) == 200
    finally:
        server.shutdown()
        server.server_close()
    assert _Answering.posts == 1
