"""The outbound guard (issue 14, item 9): a system's Slack webhook URL is checked like webhook
connectors and event webhooks — https, no loopback/private/link-local address unless the operator
sets WEBHOOK_ALLOW_PRIVATE_TARGETS — when it is saved (a four-eyes connector setting) and when the
notifications worker posts; and every sender connects to the address it checked (DNS rebinding).

Receivers are real sockets this test opens on 127.0.0.1. Where a test needs a name that resolves
differently from one moment to the next, the system resolver (``socket.getaddrinfo``) is replaced by
a small table: the network, not AccessGov's code, is what the test plays."""

import socket
import threading
from contextlib import contextmanager

import pytest
from django.test import Client, override_settings
from django.urls import reverse

from accessgov import notifications
from accessgov.connectors.base import ConnectorError
from accessgov.connectors.webhook import post_signed
from accessgov.exceptions import PolicyViolation
from accessgov.models import ChangeRequest, System
from accessgov.services import changes
from tests.conftest import verify_session
from tests.support.admin_forms import post_admin_form
from tests.support.receivers import SlackReceiver
from tests.support.requests import submit

pytestmark = pytest.mark.django_db
INTERNAL_URLS = [
    "http://127.0.0.1:8080/hook",
    "https://127.0.0.1/hook",
    "https://10.1.2.3/services/T0/B0/x",
    "https://169.254.169.254/latest/meta-data/",
    "https://[::1]/hook",
    "https://localhost/hook",
    "https://100.64.0.1/hook",
    # IPv6 that wraps an internal IPv4 address: NAT64 (well-known and local-use), 6to4, IPv4-compatible.
    "https://[64:ff9b::7f00:1]/hook",
    "https://[64:ff9b::a9fe:a9fe]/latest/meta-data/",
    "https://[64:ff9b:1::a00:1]/hook",
    "https://[2002:7f00:1::]/hook",
    "https://[::127.0.0.1]/hook",
]


def test_an_ipv6_address_is_judged_by_the_ipv4_address_it_wraps():
    from accessgov.net import _is_public

    assert not any(_is_public(a) for a in ("64:ff9b::7f00:1", "2002:a00:1::1", "::ffff:10.0.0.1", "::", "::1"))
    assert not _is_public("2001:0:4136:e378:8000:63bf:3fff:fdd2")  # Teredo to 192.0.2.45 (documentation)
    # A public IPv4 address behind NAT64 or 6to4 stays reachable: DNS64 on an IPv6-only subnet hands these out.
    assert all(_is_public(a) for a in ("64:ff9b::808:808", "2002:808:808::1", "::ffff:8.8.8.8", "2001:4860:4860::8888"))


def as_(user) -> Client:
    return verify_session(Client(), user)


def system_url(system) -> str:
    return reverse("admin:accessgov_system_change", args=[system.pk])


# --- At saving time ---------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [*INTERNAL_URLS, "http://1.1.1.1/services/T0/B0/x"])
@override_settings(WEBHOOK_ALLOW_PRIVATE_TARGETS=False)
def test_the_admin_refuses_an_internal_or_plain_http_slack_url(world, admins, url):
    first, _ = admins
    response = post_admin_form(as_(first), system_url(world.system), "system_form", slack_webhook_url=url)
    assert response.status_code == 200
    page = response.content.decode()
    assert "resolves to an internal address" in page or "must start with https://" in page
    assert System.objects.get(pk=world.system.pk).slack_webhook_url == ""
    assert not ChangeRequest.objects.exists()


@override_settings(WEBHOOK_ALLOW_PRIVATE_TARGETS=False)
def test_a_new_system_with_an_internal_slack_url_is_refused_too(admins):
    first, _ = admins
    response = post_admin_form(
        as_(first),
        reverse("admin:accessgov_system_add"),
        "system_form",
        name="Billing DB",
        slug="billing-db",
        slack_webhook_url="https://169.254.169.254/latest/meta-data/",
    )
    assert response.status_code == 200
    assert "resolves to an internal address (169.254.169.254)" in response.content.decode()
    assert not System.objects.filter(slug="billing-db").exists()


def test_a_slack_url_is_a_four_eyes_connector_setting(world, admins):
    first, second = admins
    url = "https://1.1.1.1/services/T0/B0/x"  # a public address: no name to resolve in the test
    response = post_admin_form(as_(first), system_url(world.system), "system_form", slack_webhook_url=url)
    change = ChangeRequest.objects.get()
    assert response["Location"] == reverse("change_detail", args=[change.pk])
    assert System.objects.get(pk=world.system.pk).slack_webhook_url == ""  # proposed, not applied
    assert change.kind == ChangeRequest.Kind.SYSTEM
    assert change.changes["slack_webhook_url"]["new"] == url
    with pytest.raises(Exception, match="Nobody approves their own"):
        changes.change_approve(first, change.pk)
    changes.change_approve(second, change.pk)
    assert System.objects.get(pk=world.system.pk).slack_webhook_url == url


def test_the_guard_is_checked_again_when_the_change_is_approved(world, admins):
    first, second = admins
    with override_settings(WEBHOOK_ALLOW_PRIVATE_TARGETS=True):
        post_admin_form(as_(first), system_url(world.system), "system_form", slack_webhook_url="http://127.0.0.1:9/x")
    change = ChangeRequest.objects.get()
    with override_settings(WEBHOOK_ALLOW_PRIVATE_TARGETS=False), pytest.raises(PolicyViolation, match="internal"):
        changes.change_approve(second, change.pk)
    assert System.objects.get(pk=world.system.pk).slack_webhook_url == ""


# --- At sending time --------------------------------------------------------------------------------


@override_settings(WEBHOOK_ALLOW_PRIVATE_TARGETS=False)
def test_a_stored_internal_slack_url_is_refused_when_the_worker_posts(world, mailoutbox):
    with SlackReceiver() as receiver:
        # e.g. saved while internal targets were allowed, or written to the database by hand
        System.objects.filter(pk=world.system.pk).update(slack_webhook_url=receiver.url)
        access_request = submit(world)
        with pytest.raises(notifications.DeliveryFailed, match="must start with https://"):
            notifications.send_slack(notifications.request_submitted(access_request))
        System.objects.filter(pk=world.system.pk).update(slack_webhook_url=receiver.url.replace("http:", "https:"))
        with pytest.raises(notifications.DeliveryFailed, match=r"resolves to an internal address \(127\.0\.0\.1\)"):
            notifications.send_slack(notifications.request_submitted(access_request))
    assert receiver.posts == []


@override_settings(WEBHOOK_ALLOW_PRIVATE_TARGETS=True)
def test_an_operator_may_allow_an_internal_slack_receiver(world):
    with SlackReceiver() as receiver:
        System.objects.filter(pk=world.system.pk).update(slack_webhook_url=receiver.url)
        access_request = submit(world)
        assert notifications.send_slack(notifications.request_submitted(access_request)) is True
    [post] = receiver.posts
    assert str(world.role) in post["json"]["text"]
    assert post["host"] == receiver.url.split("/")[2]


@pytest.mark.parametrize("status", [302, 500])
@override_settings(WEBHOOK_ALLOW_PRIVATE_TARGETS=True)
def test_a_slack_answer_other_than_2xx_is_a_failure_and_a_redirect_is_not_followed(world, status):
    with SlackReceiver(status=status) as receiver:
        System.objects.filter(pk=world.system.pk).update(slack_webhook_url=receiver.url)
        access_request = submit(world)
        with pytest.raises(notifications.DeliveryFailed, match=f"answered {status}"):
            notifications.send_slack(notifications.request_submitted(access_request))
    assert len(receiver.posts) == 1


# --- DNS rebinding --------------------------------------------------------------------------------

PUBLIC = "93.184.216.34"  # what the name answers to the check: a public address
NAME = "hooks.rebind.test"


class Listener:
    """A TCP socket on 127.0.0.1 that counts the connections it accepts (and closes them)."""

    def __init__(self):
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.connections = 0
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                peer, _ = self.socket.accept()
            except OSError:
                return
            self.connections += 1
            peer.close()

    def close(self):
        self.socket.close()


@contextmanager
def rebinding_network(monkeypatch):
    """NAME answers PUBLIC the first time it is looked up and 127.0.0.1 (the ``inside`` listener)
    every time after; PUBLIC itself is routed to the ``outside`` listener."""
    real_getaddrinfo = socket.getaddrinfo
    inside, outside = Listener(), Listener()
    lookups = []

    def getaddrinfo(host, port, *args, **kwargs):
        if host == NAME:
            lookups.append(host)
            address = (PUBLIC, port) if len(lookups) == 1 else ("127.0.0.1", inside.port)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", address)]
        if host == PUBLIC:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", outside.port))]
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    try:
        yield inside, outside, lookups
    finally:
        inside.close()
        outside.close()


def _send_slack(world):
    System.objects.filter(pk=world.system.pk).update(slack_webhook_url=f"https://{NAME}/services/T0/B0/x")
    access_request = submit(world)
    with pytest.raises(notifications.DeliveryFailed, match="could not be reached"):
        notifications.send_slack(notifications.request_submitted(access_request))


def _send_webhook(world):
    with pytest.raises(ConnectorError, match="could not be reached"):
        post_signed(f"https://{NAME}/hook", "whsec_c2VjcmV0", "msg-1", b"{}")


@pytest.mark.parametrize("send", [_send_slack, _send_webhook], ids=["slack", "webhook"])
@override_settings(WEBHOOK_ALLOW_PRIVATE_TARGETS=False)
def test_a_name_that_rebinds_to_an_internal_address_after_the_check_is_not_followed_inside(world, monkeypatch, send):
    with rebinding_network(monkeypatch) as (inside, outside, lookups):
        send(world)
        outside.thread.join(timeout=0.5)
    assert inside.connections == 0  # nothing reached the internal address
    assert outside.connections == 1  # the connection went to the address that was checked
    assert lookups == [NAME]  # the name was resolved once


# --- DNS rebinding: the connection goes to the address that was checked ------------------------------


def test_a_provider_name_re_pointed_inside_after_the_check_is_not_reached(settings, monkeypatch):
    """The guard resolves a provider's host and checks the address; if the name then resolves to an internal
    address (DNS rebinding: a short TTL, a second answer), the connection must still go to the checked one.
    The resolver is the only thing simulated: its first answer is public, every later one is 127.0.0.1, where
    a listener counts who connects."""
    import socket
    import threading

    from accessgov.integrations.http import ProviderError, request_json

    settings.INTEGRATIONS_ALLOW_PRIVATE_URLS = False
    settings.INTEGRATIONS_TIMEOUT_SECONDS = 1
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    accepted: list[object] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    real = socket.getaddrinfo
    answers: list[str] = []

    def resolver(host, *args, **kwargs):
        if host != "provider.rebind.example":
            return real(host, *args, **kwargs)
        address = "93.184.216.34" if not answers else "127.0.0.1"  # public first, then inside
        answers.append(address)
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    try:
        with pytest.raises(ProviderError):
            request_json("GET", f"https://provider.rebind.example:{port}/keys", provider="Test provider")
    finally:
        stop.set()
        thread.join(2)
        listener.close()
    assert answers == ["93.184.216.34"]  # resolved once, by the guard
    assert accepted == []  # nothing reached the internal listener


def _slack_call():
    from accessgov.integrations import slack
    from accessgov.models import SlackWorkspace

    workspace = SlackWorkspace(name="Acme", team_id="T0", api_base_url=f"https://{NAME}/api/", bot_token="xoxb-test")
    slack.client_for(workspace).chat_postMessage(channel="C0", text="hello")


def _pagerduty_call():
    from accessgov.integrations import pagerduty
    from accessgov.models import OnCallProvider

    provider = OnCallProvider(name="PagerDuty", base_url=f"https://{NAME}/pd", api_key="pd-test")
    pagerduty.incident_status(provider, "P123")


@pytest.mark.parametrize("call", [_slack_call, _pagerduty_call], ids=["slack-sdk", "pagerduty"])
def test_the_provider_sdks_connect_to_the_checked_address_too(settings, monkeypatch, call):
    """Slack's WebClient and PagerDuty's client open their own connections; they used to resolve the provider's
    name again after the guard's check, so a name re-pointed inside was followed there."""
    settings.INTEGRATIONS_ALLOW_PRIVATE_URLS = False
    settings.INTEGRATIONS_TIMEOUT_SECONDS = 1
    with rebinding_network(monkeypatch) as (inside, outside, lookups):
        with pytest.raises(Exception):  # noqa: B017 - the listener hangs up: any failure; where it went is the test
            call()
        outside.thread.join(timeout=0.5)
    assert inside.connections == 0  # nothing reached the internal address
    assert outside.connections >= 1  # the connection went to the address that was checked
    assert lookups == [NAME]  # the name was resolved once, by the guard


def test_slack_redirects_are_not_followed(settings):
    """urllib's default opener, which slack_sdk used, follows a redirect to any address the guard never saw."""
    import http.server

    from accessgov.integrations import slack
    from accessgov.models import SlackWorkspace

    settings.INTEGRATIONS_ALLOW_PRIVATE_URLS = True
    elsewhere = Listener()

    class Redirecting(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{elsewhere.port}/latest/meta-data/")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Redirecting)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    workspace = SlackWorkspace(
        name="Acme", team_id="T0", api_base_url=f"http://127.0.0.1:{server.server_port}/api/", bot_token="xoxb-test"
    )
    try:
        from slack_sdk.errors import SlackApiError

        with pytest.raises(SlackApiError) as raised:
            slack.client_for(workspace).chat_postMessage(channel="C0", text="hello")
        assert raised.value.response.status_code == 302
    finally:
        thread.join(2)
        server.server_close()
        elsewhere.close()
    assert elsewhere.connections == 0
