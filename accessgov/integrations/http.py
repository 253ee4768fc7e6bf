"""Reaching a provider over HTTP: the internal-address guard, a whole-call deadline (``net.deadline``), no
redirects, bounded answers. Provider URLs come from four-eyed settings, and still may not point inside the
network unless the operator allows it (INTEGRATIONS_ALLOW_PRIVATE_URLS), checked again at every call."""

import http.client
import json
import socket
import ssl
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import httpcore2
import httpx2
from django.conf import settings
from httpcore2._backends.sync import SyncStream

from accessgov import net

MAX_ANSWER_BYTES = 1_000_000


class ProviderError(Exception):
    """The provider could not be asked or gave an answer we cannot use. ``str`` is fit to show people
    (no secret, no body): callers fail closed with it."""


def ensure_allowed_url(url: str) -> str | None:
    """https to a public address; plain http and internal addresses only with INTEGRATIONS_ALLOW_PRIVATE_URLS.
    Returns the checked address to connect to (None when internal addresses are allowed)."""
    allow = settings.INTEGRATIONS_ALLOW_PRIVATE_URLS
    parts = urlsplit(url)
    if parts.scheme != "https" and not (parts.scheme == "http" and allow):
        raise ProviderError(f"{parts.hostname or url} must be reached over https://.")
    try:
        return net.checked_address(url, allow_private=allow, setting="INTEGRATIONS_ALLOW_PRIVATE_URLS")
    except net.TargetRefused as error:
        raise ProviderError(str(error)) from None


def url_problems(url: str) -> list[str]:
    """For admin forms: what is wrong with a provider URL (empty: nothing)."""
    try:
        ensure_allowed_url(url)
    except ProviderError as error:
        return [str(error)]
    return []


def ssl_context() -> ssl.SSLContext:
    """Certificate checks as usual, also trusting INTEGRATIONS_CA_FILE when the operator sets one."""
    context = ssl.create_default_context()
    if settings.INTEGRATIONS_CA_FILE:
        context.load_verify_locations(cafile=settings.INTEGRATIONS_CA_FILE)
    return context


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class _PinnedHTTPSHandler(urllib.request.HTTPSHandler):
    """Connects to the address the guard checked (``net.pin``), not to what the name resolves to when urllib
    asks again: a provider name that is re-pointed at an internal address between the check and the connection
    (DNS rebinding) still reaches the checked one. Its socket is watched by the call's ``net.deadline``."""

    def __init__(self, address: str | None, context: ssl.SSLContext) -> None:
        super().__init__(context=context)
        self._address = address

    def https_open(self, req):
        def connection(host, **kwargs):
            return net.pin(http.client.HTTPSConnection(host, **kwargs), self._address)

        return self.do_open(connection, req, context=self._context)


class _WatchedHTTPHandler(urllib.request.HTTPHandler):
    """Plain http (only when internal addresses are allowed: nothing to pin), its socket watched by the
    call's ``net.deadline`` like every other."""

    def http_open(self, req):
        return self.do_open(lambda host, **kwargs: net.pin(http.client.HTTPConnection(host, **kwargs), None), req)


def opener(address: str | None, context: ssl.SSLContext) -> urllib.request.OpenerDirector:
    """urllib as every provider call uses it: to ``address`` (checked by ``ensure_allowed_url``; None when
    internal addresses are allowed), with ``context``, and a redirect answered, never followed (a redirect
    is a second address the guard never saw). Run its calls inside ``net.deadline``."""
    return urllib.request.build_opener(_NoRedirect, _WatchedHTTPHandler, _PinnedHTTPSHandler(address, context))


class _PinnedNetwork(httpcore2.SyncBackend):
    """httpcore's sockets, connected by ``net.connect`` to ``address`` (None: the host asked for, looked up in
    bounded time, not by httpcore's own unbounded ``getaddrinfo``) within the current ``net.deadline`` and
    watched by it; httpcore's socket options and TCP_NODELAY set before connecting."""

    def __init__(self, address: str | None) -> None:
        self._address = address

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        options = [*(socket_options or ()), (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
        source = None if local_address is None else (local_address, 0)
        try:
            sock = net.connect((self._address or host, port), timeout, source, options)
        except TimeoutError as error:  # no time left, or the name did not resolve in it
            raise httpcore2.ConnectTimeout(str(error)) from error
        except (OSError, UnicodeError) as error:
            raise httpcore2.ConnectError(str(error)) from error
        return SyncStream(sock)


class PinnedTransport(httpx2.HTTPTransport):
    """httpx's transport (the PagerDuty client's) connecting to ``address`` (checked; None when internal
    addresses are allowed); TLS server name and certificate check stay the URL's host; its sockets are
    watched by the call's ``net.deadline``. No proxy from the environment: that would be another address
    the guard never saw."""

    def __init__(self, address: str | None, context: ssl.SSLContext) -> None:
        super().__init__(verify=context, trust_env=False)
        self._pool = httpcore2.ConnectionPool(ssl_context=context, network_backend=_PinnedNetwork(address))


def _exchange(
    opener_: urllib.request.OpenerDirector, request: urllib.request.Request, timeout: float
) -> tuple[int, bytes]:
    """The answer's status and up to MAX_ANSWER_BYTES + 1 bytes of its body (an error status's too)."""
    try:
        with opener_.open(request, timeout=timeout) as response:
            return response.status, response.read(MAX_ANSWER_BYTES + 1)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read(MAX_ANSWER_BYTES + 1)


def _request(method: str, url: str, headers: dict[str, str] | None, body: Any) -> urllib.request.Request:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - scheme checked by the caller
    request.add_header("Accept", "application/json")
    request.add_header("User-Agent", "AccessGov-Integrations/1")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    return request


def request_json(
    method: str, url: str, *, headers: dict[str, str] | None = None, body: Any = None, provider: str
) -> tuple[int, Any]:
    """One call; returns (status, parsed JSON or None). Raises ProviderError when the address is refused,
    the provider has not answered completely within INTEGRATIONS_TIMEOUT_SECONDS (the whole call: the address
    check and its name lookup, connecting, TLS, headers and body — ``net.deadline``), redirects, or answers more
    than MAX_ANSWER_BYTES or something that is not JSON (4xx answers are returned, not raised)."""
    timeout = settings.INTEGRATIONS_TIMEOUT_SECONDS
    try:
        with net.deadline(timeout):
            address = ensure_allowed_url(url)
            status, raw = _exchange(opener(address, ssl_context()), _request(method, url, headers, body), timeout)
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        raise ProviderError(f"{provider} cannot be reached ({reason.__class__.__name__}).") from None
    if 300 <= status < 400:
        raise ProviderError(f"{provider} answered with a redirect ({status}); check its URL.")
    if status >= 500 or status == 429:
        raise ProviderError(f"{provider} is unavailable (HTTP {status}).")
    if len(raw) > MAX_ANSWER_BYTES:
        raise ProviderError(f"{provider} answered more than {MAX_ANSWER_BYTES} bytes.")
    if not raw:
        return status, None
    try:
        return status, json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ProviderError(f"{provider} did not answer JSON (HTTP {status}).") from None
