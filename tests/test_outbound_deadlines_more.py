"""The outbound calls that were still bounded per socket read only now end within a whole-call limit, against a
local server on loopback that answers one byte a second (a per-read timeout never trips on it):

- sign-in through an identity provider: its discovery document, token endpoint and keys (requests, through
  mozilla-django-oidc). The sign-in page answers 503 with a clear message at OIDC_TIMEOUT instead of waiting for
  the issuer (or for gunicorn to kill the worker);
- the evidence pack's upload to S3-compatible storage (botocore): the delivery fails at
  EVIDENCE_DELIVERY_S3_TIMEOUT_SECONDS with a clear DeliveryError;
- name lookups: a lookup that does not end (a name server that never answers) cannot hold a webhook URL check,
  a webhook POST, an integration call (its address check included, and with internal URLs allowed, where the
  client looks the name up itself) or the sign-in page. No local server can make the system resolver slow
  for one name without touching the machine's configuration, so these tests slow ``socket.getaddrinfo`` itself
  (the library boundary every lookup goes through: the guard's, urllib3's), never the portal's own code.
"""

import socket
import threading
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from django.test import Client

from accessgov import net
from accessgov.evidence import delivery
from accessgov.integrations import http as integrations_http
from accessgov.integrations import pagerduty, slack
from accessgov.models import IdentityProvider, OnCallProvider, SlackWorkspace
from tests.support.trickling import TricklingServer

pytestmark = pytest.mark.django_db

LIMIT = 2.0  # seconds: every whole-call limit in these tests
# Over the limit a call may spend: the timer thread waking, closing the connection, the portal's own work.
# Without a whole-call limit the same calls took the trickling server's GIVE_UP_AFTER (or the slow lookup's).
MARGIN = 1.5
GIVE_UP_AFTER = 12.0
# botocore's standard retry mode sleeps up to 1 s, then up to 2 s, between its three attempts; an attempt after the
# limit fails at once (no time left to connect), but the sleeps before it are botocore's.
BOTOCORE_BACKOFF = 3.0
SLOW_HOST = "idp.slow-dns.test"


@pytest.fixture(params=["body", "headers"])
def trickler(request):
    """A loopback HTTP server answering one byte a second (``tests/support/trickling.py``); the paths a test puts in
    ``trickler.fast`` answer their JSON at once."""
    with TricklingServer(mode=request.param, tls=False, interval=1.0, give_up_after=GIVE_UP_AFTER) as server:
        yield server


@pytest.fixture
def slow_dns(monkeypatch):
    """``socket.getaddrinfo`` never answering for SLOW_HOST (until the test ends); other names as usual."""
    original = socket.getaddrinfo
    released = threading.Event()
    asked = []

    def getaddrinfo(host, *args, **kwargs):
        if host == SLOW_HOST:
            asked.append(host)
            released.wait(GIVE_UP_AFTER)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return original(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield asked
    released.set()


def _timed(call):
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


# --- Sign-in through an identity provider -------------------------------------------------------------------


def _provider(issuer: str) -> IdentityProvider:
    slug = f"idp{uuid.uuid4().hex[:8]}"
    return IdentityProvider.objects.create(
        slug=slug, name="Slow IdP", is_enabled=True, issuer=issuer, client_id="portal", client_secret="s3cret"
    )


def _discovery_document(issuer: str, server: TricklingServer, *, token: str, jwks: str) -> dict:
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{server.url}/authorize",
        "token_endpoint": f"{server.url}{token}",
        "jwks_uri": f"{server.url}{jwks}",
        "id_token_signing_alg_values_supported": ["RS256"],
    }


@pytest.fixture(autouse=True)
def _warm_sign_in_page(db):
    """The first request of a test process imports and compiles what every later one reuses (about a second on a
    busy machine): made here, with a provider nobody listens for, so the timed requests measure the calls."""
    Client().get(f"/sso/{_provider('http://127.0.0.1:9/').slug}/start/")


def _assert_unavailable_page(response, elapsed: float) -> None:
    assert response.status_code == 503, response.content[:300]
    assert b"Slow IdP cannot be reached right now" in response.content
    assert elapsed < LIMIT + MARGIN, f"the sign-in page took {elapsed:.1f} s"


def test_the_sign_in_page_answers_at_the_limit_when_the_issuers_discovery_trickles(settings, trickler):
    settings.OIDC_TIMEOUT = LIMIT
    provider = _provider(f"{trickler.url}/{uuid.uuid4().hex}")  # nothing fast: discovery trickles

    response, elapsed = _timed(lambda: Client().get(f"/sso/{provider.slug}/start/"))

    _assert_unavailable_page(response, elapsed)
    assert any("/.well-known/openid-configuration" in line for line in trickler.requests)


def _start_flow(client: Client, provider: IdentityProvider) -> str:
    start = client.get(f"/sso/{provider.slug}/start/")
    assert start.status_code == 302, start.content[:300]
    return parse_qs(urlsplit(start["Location"]).query)["state"][0]


def test_the_callback_answers_at_the_limit_when_the_token_endpoint_trickles(settings, trickler):
    settings.OIDC_TIMEOUT = LIMIT
    issuer = f"{trickler.url}/{uuid.uuid4().hex}"
    trickler.fast[f"{urlsplit(issuer).path}/.well-known/openid-configuration"] = _discovery_document(
        issuer, trickler, token="/token-slow", jwks="/jwks-unused"
    )
    provider = _provider(issuer)
    client = Client()
    state = _start_flow(client, provider)

    response, elapsed = _timed(lambda: client.get(f"/sso/{provider.slug}/callback/", {"state": state, "code": "c0de"}))

    _assert_unavailable_page(response, elapsed)
    assert "POST /token-slow HTTP/1.1" in trickler.requests


def test_the_callback_answers_at_the_limit_when_the_providers_keys_trickle(settings, trickler):
    settings.OIDC_TIMEOUT = LIMIT
    issuer = f"{trickler.url}/{uuid.uuid4().hex}"
    trickler.fast[f"{urlsplit(issuer).path}/.well-known/openid-configuration"] = _discovery_document(
        issuer, trickler, token="/token", jwks="/jwks-slow"
    )
    # An ID token naming a key: the keys are asked for before its signature is checked.
    id_token = jwt.encode({"sub": "x"}, "not-the-key-" * 4, algorithm="HS256", headers={"kid": "k1"})
    trickler.fast["/token"] = {"access_token": "a", "token_type": "Bearer", "id_token": id_token}
    provider = _provider(issuer)
    client = Client()
    state = _start_flow(client, provider)

    response, elapsed = _timed(lambda: client.get(f"/sso/{provider.slug}/callback/", {"state": state, "code": "c0de"}))

    _assert_unavailable_page(response, elapsed)
    assert "GET /jwks-slow HTTP/1.1" in trickler.requests


def test_the_sign_in_page_answers_at_the_limit_when_the_issuers_name_does_not_resolve_in_time(settings, slow_dns):
    settings.OIDC_TIMEOUT = LIMIT
    provider = _provider(f"http://{SLOW_HOST}:18399/{uuid.uuid4().hex}")

    response, elapsed = _timed(lambda: Client().get(f"/sso/{provider.slug}/start/"))

    _assert_unavailable_page(response, elapsed)
    assert slow_dns == [SLOW_HOST]


# --- The evidence pack's upload to S3 -----------------------------------------------------------------------


def test_an_upload_to_storage_that_trickles_its_answers_fails_at_the_limit(settings, trickler, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    settings.EVIDENCE_DELIVERY_DIR = ""
    settings.EVIDENCE_DELIVERY_S3_BUCKET = "audit-evidence"
    settings.EVIDENCE_DELIVERY_S3_PREFIX = "accessgov/"
    settings.EVIDENCE_DELIVERY_S3_ENDPOINT_URL = trickler.url
    settings.EVIDENCE_DELIVERY_S3_REGION = "us-east-1"
    settings.EVIDENCE_DELIVERY_S3_TIMEOUT_SECONDS = LIMIT
    pack = tmp_path / "pack.zip"
    pack.write_bytes(b"PK" + b"\0" * 4096)

    started = time.monotonic()
    with pytest.raises(delivery.DeliveryError, match=r"within 2 s"):
        delivery.deliver(pack, "pack.zip", "0" * 64)
    elapsed = time.monotonic() - started

    assert elapsed < LIMIT + BOTOCORE_BACKOFF + MARGIN, f"the upload took {elapsed:.1f} s"
    assert any(line.startswith("PUT /audit-evidence/accessgov/pack.zip") for line in trickler.requests)


# --- Name lookups -------------------------------------------------------------------------------------------


def test_a_webhook_url_whose_name_does_not_resolve_in_time_is_refused_with_a_clear_reason(
    monkeypatch, settings, slow_dns
):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False  # the guard looks names up only when it is on
    monkeypatch.setattr(net, "DNS_TIMEOUT_SECONDS", LIMIT, raising=False)

    problems, elapsed = _timed(lambda: net.target_problems(f"https://{SLOW_HOST}/hooks/accessgov"))

    assert problems == [f"{SLOW_HOST} did not resolve within 2 s."]
    assert elapsed < LIMIT + MARGIN


def test_a_webhook_post_to_a_name_that_does_not_resolve_in_time_ends_at_its_timeout(slow_dns):
    started = time.monotonic()
    # The lookup ran out of the call's time: the call's timeout, as when the receiver is slow (not the guard's refusal).
    with pytest.raises(net.TargetUnreachable, match=r"^TimeoutError$"):
        net.post(f"https://{SLOW_HOST}/hooks/accessgov", b"{}", {"Content-Type": "application/json"}, timeout=LIMIT)
    assert time.monotonic() - started < LIMIT + MARGIN


def _pagerduty(base_url: str):
    """A PagerDuty question (its client speaks httpx): the status of an incident."""
    provider = OnCallProvider.objects.create(name="PagerDuty", base_url=base_url, api_key="k")
    return lambda: pagerduty.incident_status(provider, "PINC1")


def _jira(base_url: str):
    """A Jira question (urllib, through ``request_json``)."""
    return lambda: integrations_http.request_json("GET", f"{base_url}/rest/api/2/myself", provider="Jira")


def _slack(base_url: str):
    """A Slack Web API call (slack_sdk, through the integrations' opener)."""
    workspace = SlackWorkspace(name="Acme", team_id="T0", api_base_url=f"{base_url}/api/", bot_token="x")
    return lambda: slack.client_for(workspace).chat_postMessage(channel="C0", text="hello")


PROVIDER_CALLS = {"pagerduty": _pagerduty, "jira": _jira, "slack": _slack}
PROVIDER_TIMEOUTS = {  # what each raises when a provider does not answer in time (a trickling one too)
    "pagerduty": (integrations_http.ProviderError, r"^PagerDuty could not answer \(TimeoutError\)\.$"),
    "jira": (integrations_http.ProviderError, r"^Jira cannot be reached \(TimeoutError\)\.$"),
    "slack": (TimeoutError, r"^no complete answer within 2 s$"),
}


@pytest.mark.parametrize("dns_timeout", [net.DNS_TIMEOUT_SECONDS, LIMIT], ids=["lookup-5s", "lookup-as-long"])
@pytest.mark.parametrize("provider", PROVIDER_CALLS)
def test_an_integration_calls_address_check_ends_within_the_calls_limit(
    settings, monkeypatch, slow_dns, provider, dns_timeout
):
    """The address check (the guard looks the provider's name up to refuse internal addresses) is part of the call:
    ``request_json`` and Slack's client ran it before the call's limit started, so a name server that never answers cost the lookup's
    5 s and then the call's own limit on top. Now both fit the one limit, and a lookup that runs out of the call's
    time fails as the call's timeout, whether the lookup or the call's timer notices first."""
    monkeypatch.setattr(net, "DNS_TIMEOUT_SECONDS", dns_timeout)
    settings.INTEGRATIONS_ALLOW_PRIVATE_URLS = False
    settings.INTEGRATIONS_TIMEOUT_SECONDS = LIMIT
    call = PROVIDER_CALLS[provider](f"https://{SLOW_HOST}")

    started = time.monotonic()
    error, message = PROVIDER_TIMEOUTS[provider]
    with pytest.raises(error, match=message):
        call()
    assert time.monotonic() - started < LIMIT + MARGIN
    assert slow_dns == [SLOW_HOST]


@pytest.mark.parametrize("provider", PROVIDER_CALLS)
def test_an_address_check_whose_lookup_gives_up_within_the_call_names_the_lookup(
    settings, monkeypatch, slow_dns, provider
):
    monkeypatch.setattr(net, "DNS_TIMEOUT_SECONDS", LIMIT / 2)  # the lookup's own limit, shorter than the call's
    settings.INTEGRATIONS_ALLOW_PRIVATE_URLS = False
    settings.INTEGRATIONS_TIMEOUT_SECONDS = LIMIT
    call = PROVIDER_CALLS[provider](f"https://{SLOW_HOST}")

    started = time.monotonic()
    with pytest.raises(integrations_http.ProviderError, match=f"^{SLOW_HOST} did not resolve within 1 s.$"):
        call()
    assert time.monotonic() - started < LIMIT / 2 + MARGIN


@pytest.mark.parametrize("provider", PROVIDER_CALLS)
def test_with_internal_urls_allowed_a_name_that_never_resolves_ends_the_call_at_its_limit(settings, slow_dns, provider):
    """With INTEGRATIONS_ALLOW_PRIVATE_URLS on, the guard looks nothing up (there is no address to pin) and the
    client looks the name up as it connects: httpx (PagerDuty's client) did that with its own ``getaddrinfo``,
    unbounded — a silent name server held the request form until the resolver gave up. Now every client looks
    names up through ``net.resolve`` within the call's limit, and the call fails as any other timeout does."""
    settings.INTEGRATIONS_ALLOW_PRIVATE_URLS = True
    settings.INTEGRATIONS_TIMEOUT_SECONDS = LIMIT
    call = PROVIDER_CALLS[provider](f"https://{SLOW_HOST}")

    started = time.monotonic()
    error, message = PROVIDER_TIMEOUTS[provider]
    with pytest.raises(error, match=message):
        call()
    assert time.monotonic() - started < LIMIT + MARGIN
    assert slow_dns == [SLOW_HOST]


def test_lookups_that_never_answer_hold_a_bounded_number_of_threads_and_the_next_fails_at_once(monkeypatch, slow_dns):
    """The review's finding: every lookup left a thread behind for as long as the resolver took (300 lookups, 300
    threads), and with no thread left to start the guard raised a RuntimeError (a 500 in the webhook form)."""
    monkeypatch.setattr(net, "DNS_TIMEOUT_SECONDS", 0.05)
    threads_before = threading.active_count()
    for _ in range(net.LOOKUPS_AT_ONCE):
        with pytest.raises(TimeoutError, match="did not resolve within"):
            net.resolve(SLOW_HOST, 443)
    started = time.monotonic()
    for _ in range(3 * net.LOOKUPS_AT_ONCE):
        with pytest.raises(TimeoutError, match="lookups are still waiting for an answer"):
            net.resolve(SLOW_HOST, 443)
    assert time.monotonic() - started < 1  # at once, no thread started
    assert threading.active_count() - threads_before <= net.LOOKUPS_AT_ONCE
    assert len(slow_dns) == net.LOOKUPS_AT_ONCE  # the resolver was asked only by the threads allowed
    # An address is not looked up at all (no thread, even now), and the guard still answers in words.
    assert net.resolve("203.0.113.7", 443) == ["203.0.113.7"] and net.resolve("::1", 443) == ["::1"]
    assert net.target_problems(f"https://{SLOW_HOST}/hook", allow_private=False) == [
        f"{SLOW_HOST} was not looked up: {net.LOOKUPS_AT_ONCE} lookups are still waiting for an answer."
    ]
