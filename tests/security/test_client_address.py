"""The recorded client address is the real peer: a forged X-Forwarded-For changes neither the address
in the ledger (AccessEvent.client_address) nor the password lockout, unless TRUSTED_PROXY_COUNT says
a proxy in front adds that header - and then only the entry that proxy wrote counts."""

import pytest
from django.test import Client, override_settings
from django.urls import reverse

from accessgov.models import AccessEvent, AccessRequest
from tests.conftest import PASSWORD, verify_session

pytestmark = pytest.mark.django_db

PEER = "198.51.100.7"
PROXY = "10.0.0.2"


def submit_form(client: Client, world, **meta) -> AccessEvent:
    response = client.post(
        reverse("request_new"),
        {"role": world.role.pk, "duration": "30m", "justification": "Fix the nightly batch", "ticket": ""},
        **meta,
    )
    assert response.status_code == 302, response.content
    access_request = AccessRequest.objects.latest("pk")
    return AccessEvent.objects.get(access_request=access_request, event_type=AccessEvent.Type.REQUEST_SUBMITTED)


def test_a_forged_forwarded_header_does_not_change_the_ledger_address(world):
    client = verify_session(Client(), world.requester)
    event = submit_form(client, world, REMOTE_ADDR=PEER, HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert event.client_address == PEER


@override_settings(TRUSTED_PROXY_COUNT=1)
def test_behind_a_trusted_proxy_the_address_it_saw_is_recorded(world):
    client = verify_session(Client(), world.requester)
    # The client forged 6.6.6.6; the proxy appended the address it really saw.
    event = submit_form(client, world, REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.50")
    assert event.client_address == "203.0.113.50"


@override_settings(TRUSTED_PROXY_COUNT=1)
def test_behind_a_trusted_proxy_a_missing_header_falls_back_to_the_peer(world):
    client = verify_session(Client(), world.requester)
    assert submit_form(client, world, REMOTE_ADDR=PROXY).client_address == PROXY


def _wrong_passwords(requester, count: int, **meta) -> None:
    for attempt in range(count):
        forged = {"HTTP_X_FORWARDED_FOR": f"203.0.113.{attempt + 10}"}
        response = Client().post(
            reverse("accounts:login"), {"username": requester.username, "password": "wrong"}, **{**forged, **meta}
        )
        assert response.status_code in (200, 429)


def _sign_in_status(requester, **meta) -> int:
    response = Client().post(reverse("accounts:login"), {"username": requester.username, "password": PASSWORD}, **meta)
    return response.status_code


def test_rotating_forged_forwarded_headers_do_not_escape_the_password_lockout(requester, settings):
    _wrong_passwords(requester, settings.AXES_FAILURE_LIMIT, REMOTE_ADDR=PEER)
    # Right password, yet another forged address: still locked, because the peer is the same.
    assert _sign_in_status(requester, REMOTE_ADDR=PEER, HTTP_X_FORWARDED_FOR="203.0.113.200") == 429
    # The lockout is per username and real address: the same person elsewhere is not locked out.
    assert _sign_in_status(requester, REMOTE_ADDR="198.51.100.99") == 302


@override_settings(TRUSTED_PROXY_COUNT=1)
def test_behind_a_trusted_proxy_the_lockout_follows_the_client_not_the_proxy(requester, settings):
    _wrong_passwords(requester, settings.AXES_FAILURE_LIMIT, REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="203.0.113.5")
    assert _sign_in_status(requester, REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="203.0.113.5") == 429
    # Another client through the same proxy is not locked out with them; a forged left entry changes nothing.
    assert _sign_in_status(requester, REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="203.0.113.5, 203.0.113.6") == 302


def test_the_forged_header_is_not_trusted_for_https_either(client, settings):
    """X-Forwarded-Proto counts only behind a configured proxy (else a client could claim HTTPS)."""
    assert settings.TRUSTED_PROXY_COUNT == 0
    assert settings.SECURE_PROXY_SSL_HEADER is None
    response = client.get(reverse("accounts:login"), HTTP_X_FORWARDED_PROTO="https")
    assert "Strict-Transport-Security" not in response


# --- django-auditlog's change log (issue 14, item 11) --------------------------------------------


def _change_log_entry(access_request: AccessRequest):
    from auditlog.models import LogEntry

    return LogEntry.objects.get_for_object(access_request).get(action=LogEntry.Action.CREATE)


def test_a_forged_forwarded_header_does_not_change_the_change_log_address(world):
    client = verify_session(Client(), world.requester)
    event = submit_form(client, world, REMOTE_ADDR=PEER, HTTP_X_FORWARDED_FOR="203.0.113.9", HTTP_X_FORWARDED_PORT="7")
    entry = _change_log_entry(event.access_request)
    assert entry.remote_addr == event.client_address == PEER
    assert entry.remote_port is None  # a header any client writes is not evidence
    assert entry.actor == world.requester


@override_settings(TRUSTED_PROXY_COUNT=1)
def test_behind_a_trusted_proxy_the_change_log_records_the_address_the_proxy_saw(world):
    client = verify_session(Client(), world.requester)
    event = submit_form(client, world, REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.50")
    assert _change_log_entry(event.access_request).remote_addr == event.client_address == "203.0.113.50"


@pytest.mark.postgres
@pytest.mark.parametrize(
    "forwarded", ["not-an-ip", "<script>", "1.2.3.4:99999999999", "203.0.113.9, x", "[::1", "\u0661.\u0662.3.4"]
)
def test_a_forwarded_header_that_is_not_an_address_never_breaks_a_change(world, forwarded):
    """PostgreSQL's inet column refused what the stock middleware copied from the header: every
    model-changing request answered 500. The change log now records the ledger's address."""
    client = verify_session(Client(), world.requester)
    event = submit_form(client, world, REMOTE_ADDR=PEER, HTTP_X_FORWARDED_FOR=forwarded, HTTP_X_FORWARDED_PORT="-5")
    entry = _change_log_entry(event.access_request)
    assert entry.remote_addr == event.client_address == PEER
    assert entry.remote_port is None
