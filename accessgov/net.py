"""The network edges: the real client address of an HTTP request, the guard for every outbound
POST (webhook connectors, event webhooks, Slack), the whole-call deadline every outbound call
(those POSTs, the integrations' provider calls, sign-in's calls to an OIDC issuer, the evidence pack's
upload to S3) runs under, and name lookups that end in bounded time."""

import contextvars
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest


def _valid(address: str) -> str | None:
    try:
        return str(ipaddress.ip_address(address.strip()))
    except ValueError:
        return None


def client_address(request: HttpRequest) -> str | None:
    """Return the client's IP address.

    ``X-Forwarded-For`` is trusted only when ``TRUSTED_PROXY_COUNT`` proxies are configured: the
    address is then the one the outermost trusted proxy saw (the N-th entry from the right), so a
    client cannot choose its own address by sending the header itself. Used by django-axes (password
    lockout), the OTP failure log and access events.
    """
    remote = _valid(request.META.get("REMOTE_ADDR", "") or "")
    proxies = settings.TRUSTED_PROXY_COUNT
    if proxies <= 0:
        return remote
    forwarded = [part for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    if len(forwarded) < proxies:
        return remote
    return _valid(forwarded[-proxies]) or remote


# --- Outbound targets: the one guard for every POST the portal makes ---------------------------------
#
# Webhook connectors, event webhooks and Slack notifications post to URLs an admin typed. Each goes
# through ``target_problems`` when it is saved and through ``post`` when it is sent: https only, a host
# whose every address is public (no loopback, private, link-local, shared, reserved or multicast
# address) — unless the operator sets WEBHOOK_ALLOW_PRIVATE_TARGETS, for receivers on a development
# machine or a private network. ``post`` resolves the host once, checks those addresses and connects
# to one of them: a name that answers a public address to the check and an internal one a moment later
# (DNS rebinding) cannot move the connection. TLS is verified against the host name; redirects are
# answered, never followed.

TIMEOUT_SECONDS = 5
RESPONSE_READ_LIMIT = 64 * 1024


class TargetRefused(Exception):
    """The URL may not be posted to; ``str()`` says every reason, for the person who typed it."""


class TargetUnreachable(Exception):
    """The target was allowed but could not be reached (refused, timed out, TLS failed, no answer)."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str
    addresses: tuple[str, ...]


# IPv6 prefixes that carry an IPv4 address in their low 32 bits, which a translator or tunnel on the
# path may deliver to: NAT64 (RFC 6052 well-known and RFC 8215 local-use) and the deprecated
# IPv4-compatible form. 6to4 (2002::/16) carries it in bits 16-47 and Teredo obfuscated: ``ipaddress``
# unwraps both.
_IPV4_CARRIERS = tuple(ipaddress.IPv6Network(n) for n in ("64:ff9b::/96", "64:ff9b:1::/48", "::/96"))


def _is_public(address: str) -> bool:
    """A global unicast address. An IPv6 address that wraps an IPv4 one (IPv4-mapped or -compatible,
    NAT64, 6to4, Teredo) is judged by the IPv4 address inside: a translator or tunnel on the path may
    deliver to it (``64:ff9b::7f00:1`` is 127.0.0.1 behind NAT64, as an IPv6-only subnet's DNS64 hands out)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and (inner := _wrapped_ipv4(ip)) is not None:
        return _is_public(str(inner))
    return ip.is_global and not ip.is_multicast and not ip.is_reserved


def _wrapped_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped or ip.sixtofour:
        return ip.ipv4_mapped or ip.sixtofour
    if ip.teredo:
        return ip.teredo[1]
    if any(ip in network for network in _IPV4_CARRIERS):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _resolve(host: str, port: int) -> list[str]:
    return resolve(host, port)


def _check(
    url: str, *, resolve_always: bool, allow_private: bool | None = None, setting: str = "WEBHOOK_ALLOW_PRIVATE_TARGETS"
) -> tuple[Target | None, list[str]]:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return None, ["The URL must be an http(s) URL with a host."]
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None, ["The URL's port is not a port number."]
    if allow_private is None:
        allow_private = settings.WEBHOOK_ALLOW_PRIVATE_TARGETS
    problems = []
    if parts.scheme != "https" and not allow_private:
        problems.append("The URL must start with https://.")
    addresses: list[str] = []
    if resolve_always or not allow_private:
        try:
            addresses = _resolve(parts.hostname, port)
        except TimeoutError as error:
            problems.append(f"{error}.")
        except (OSError, UnicodeError):
            problems.append(f"Cannot resolve {parts.hostname}.")
    if not allow_private:
        internal = next((address for address in addresses if not _is_public(address)), None)
        if internal is not None:
            # The gravest problem first: someone may be pointing the portal at its own network.
            problems.insert(
                0,
                f"{parts.hostname} resolves to an internal address ({internal}); an operator must allow "
                f"internal targets ({setting}).",
            )
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, parts.hostname, port, path, tuple(addresses)), problems


def target_problems(
    url: str, *, allow_private: bool | None = None, setting: str = "WEBHOOK_ALLOW_PRIVATE_TARGETS"
) -> list[str]:
    """Why ``url`` may not be saved as a target (empty: it may). Used where admins type target URLs:
    webhook connectors, event webhook subscriptions, a system's Slack webhook, and (with their own
    operator ``setting``, whose value is ``allow_private``) the integrations' provider URLs."""
    return _check(url, resolve_always=False, allow_private=allow_private, setting=setting)[1]


def checked_address(url: str, *, allow_private: bool, setting: str) -> str | None:
    """The address a connection to ``url`` must go to, resolved and checked once (None when internal
    targets are allowed: nothing to pin). Raises TargetRefused with the guard's reasons. Connecting to this
    address, not to whatever the name resolves to a moment later, is what stops DNS rebinding."""
    target, problems = _check(url, resolve_always=not allow_private, allow_private=allow_private, setting=setting)
    if problems or target is None:
        raise TargetRefused(" ".join(problems))
    if allow_private:
        return None
    if not target.addresses:
        raise TargetRefused(f"Cannot resolve {target.host}.")
    return target.addresses[0]


def pin(connection: http.client.HTTPConnection, address: str | None) -> http.client.HTTPConnection:
    """``connection`` (HTTP or HTTPS: the Host header, TLS server name and certificate check stay the URL's
    host) made to connect to ``address`` instead of resolving the host again (None: to its host), its
    socket watched by the current ``deadline``."""
    connection._create_connection = _connect_to(address)  # type: ignore[attr-defined]
    return connection


def post(url: str, body: bytes, headers: dict[str, str], *, timeout: float = TIMEOUT_SECONDS) -> int:
    """POST ``body`` to ``url`` through the guard and return the answer's HTTP status (a redirect is
    returned as its 3xx status, never followed). Raises TargetRefused (the guard said no) or
    TargetUnreachable. The host is resolved once: the connection goes to an address that was checked,
    tried in the resolver's order until one accepts the connection (nothing is sent twice). The whole
    exchange — the name lookup, connecting, TLS, sending, the status line, the headers and up to
    RESPONSE_READ_LIMIT bytes of the answer — ends within ``timeout`` (``deadline``): a receiver trickling
    its answer is cut off then, like one that does not answer at all (TargetUnreachable("TimeoutError")),
    and so is a lookup that does not end."""
    last_error: OSError | None = None
    try:
        with deadline(timeout) as call:
            target, problems = _check(url, resolve_always=True)
            if problems or target is None:
                call.done()
                raise TargetRefused(" ".join(problems))
            connection_class = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
            for address in target.addresses:
                connection = connection_class(target.host, target.port, address=address, timeout=timeout)
                try:
                    connection.connect()
                except OSError as exc:
                    last_error = exc
                    connection.close()
                    continue
                try:
                    connection.request("POST", target.path, body=body, headers=headers)
                    response = connection.getresponse()
                    response.read(RESPONSE_READ_LIMIT)
                    call.done()
                    return response.status
                finally:
                    connection.close()
    except (OSError, http.client.HTTPException) as exc:
        raise TargetUnreachable(f"{exc.__class__.__name__}") from None
    raise TargetUnreachable(f"{last_error.__class__.__name__ if last_error else 'no address'}")


def _connect_to(address: str | None):
    """http.client's ``_create_connection``, connecting to ``address`` (None: the connection's own host)
    through ``connect``: within the current deadline, and watched by it."""

    def create_connection(host_port, timeout, source_address=None):
        return connect((address or host_port[0], host_port[1]), timeout, source_address)

    return create_connection


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to ``address`` (checked) while speaking to ``host`` (the Host header)."""

    def __init__(self, host: str, port: int, *, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._create_connection = _connect_to(address)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """Connects to ``address`` (checked); TLS server name and certificate check use ``host``."""

    def __init__(self, host: str, port: int, *, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._create_connection = _connect_to(address)


# --- Whole-call deadlines: one time limit for every outbound call ---------------------------------------
#
# A socket timeout bounds one read: a peer that sends its headers and then a byte every few seconds never
# trips it, and held a portal request (or a worker) for minutes. So every outbound call runs inside
# ``deadline(seconds)``, and every socket it opens goes through ``connect`` (http.client through
# ``pin``/_connect_to, httpx through integrations.http's network backend, urllib3 — requests, botocore — through
# ``_watch_urllib3``), which looks the name up in bounded time (``resolve``), waits at most the time
# left for the connection and registers a duplicate of the socket with the deadline. When the time is up,
# a timer shuts that duplicate down: shutdown acts on the connection, not on one descriptor, so it ends
# whatever the call is blocked in — TLS handshake, send, status line, headers, body; plain or TLS — even
# after TLS wrapped the socket in a new object. The call then fails as a timeout does (TimeoutError),
# whatever error the hang-up caused inside the client, and also when the client took the hang-up for the
# end of the answer: a cut answer is never used. The duplicate stays ours until the call ends, so the
# timer never touches a descriptor that was closed and reused meanwhile. A wait with no socket for the timer
# to shut (a name lookup, a connect) is given only the time left; when it runs out it expires the deadline
# itself (``_time_is_up``), so the call fails as the same timeout whether the timer or the wait noticed first.


class Deadline:
    """The time limit of one outbound call (see ``deadline``)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expires_at = time.monotonic() + seconds
        self.expired = False
        self._lock = threading.Lock()
        self._finished = False
        self._watched: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def remaining(self) -> float:
        return max(self.expires_at - time.monotonic(), 0.0)

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            if self._finished:
                return
            watched = sock.dup()
            self._watched.append(watched)
            if self.expired:
                _hang_up(watched)

    def _expire(self) -> None:
        with self._lock:
            if self._finished:
                return
            self.expired = True
            for watched in self._watched:
                _hang_up(watched)

    def _start(self) -> None:
        self._timer.start()

    def done(self) -> None:
        """The whole answer is in: a timer firing from now on (while the call closes its connection, say)
        changes nothing, and the call is not reported as timed out — a POST that was answered is not sent
        again by its retry. An answer cut short never gets here: the hang-up comes first."""
        self._timer.cancel()
        with self._lock:
            self._finished = True

    def _finish(self) -> None:
        self._timer.cancel()
        with self._lock:
            self._finished = True
            for watched in self._watched:
                watched.close()
            self._watched.clear()


_deadlines: contextvars.ContextVar[tuple[Deadline, ...]] = contextvars.ContextVar("outbound_deadlines", default=())


def _hang_up(sock: socket.socket) -> None:
    with suppress(OSError):  # the peer or the client closed it already
        sock.shutdown(socket.SHUT_RDWR)


@contextmanager
def deadline(seconds: float) -> Iterator[Deadline]:
    """Run one outbound call within ``seconds`` in all. Sockets opened inside (through ``connect``) are
    shut down when the time is up, and the block then raises TimeoutError: in place of whatever the
    hang-up made the client raise, and also when the client returned (its answer may be cut short), or
    when a lookup or a connect ran out of the time left (whatever the client made of that: the guard's
    refusal, a connection error a client would retry).
    Deadlines nest; each applies. Used by ``post`` (event webhooks, webhook connectors, Slack incoming
    webhooks), by every provider call of the integrations (accessgov.integrations.http: Jira, GitHub,
    OIDC issuers; the PagerDuty client's transport; the Slack Web API client), by sign-in's calls to an
    identity provider (accessgov.identity.oidc, through requests) and by the evidence pack's upload to S3
    (accessgov.evidence.delivery, through botocore): urllib3's connections are watched too (below)."""
    current = Deadline(seconds)
    token = _deadlines.set((*_deadlines.get(), current))
    current._start()
    try:
        yield current
    except Exception as error:
        if current.expired:
            raise TimeoutError(f"no complete answer within {seconds:g} s") from error
        raise
    finally:
        current._finish()
        _deadlines.reset(token)
    if current.expired:
        raise TimeoutError(f"no complete answer within {seconds:g} s")


def time_left(timeout: float | None) -> float | None:
    """``timeout`` shortened to what the current deadlines leave (a connect's wait)."""
    for current in _deadlines.get():
        timeout = current.remaining() if timeout is None else min(timeout, current.remaining())
    return timeout


def _time_is_up() -> None:
    """A wait given what the deadlines leave (``time_left``) ended without its answer: the deadlines it ran out
    expire now, their timers may not have fired yet. The call then fails as their timeout, whichever noticed
    first (a lookup's TimeoutError would otherwise be the guard's refusal, or a connection error a client retries
    under a new deadline)."""
    for current in _deadlines.get():
        if current.remaining() <= 0:
            current._expire()


def watch(sock: socket.socket) -> None:
    """Register ``sock`` (just connected) with the current deadlines: it is shut down when one passes."""
    for current in _deadlines.get():
        current.watch(sock)


SocketOption = tuple[int, int, int | bytes]


def connect(
    address: tuple[str, int],
    timeout: float | None,
    source_address: tuple[str, int] | None = None,
    socket_options: Iterable[SocketOption] = (),
) -> socket.socket:
    """``socket.create_connection`` within the current deadlines, the socket watched by them. A host name
    is looked up with ``resolve`` (in bounded time), and its addresses are tried in the resolver's order.
    ``socket_options`` are set before connecting, as urllib3 and httpcore set theirs: a receive buffer
    (SO_RCVBUF) sizes the window offered when the connection is made, not after. A socket that cannot be
    watched (no descriptor left to duplicate) is closed, never left open."""
    host, port = address
    addresses = [host] if _is_address(host) else resolve(host, port, timeout=time_left(timeout))
    last_error: OSError = OSError(f"{host} has no address")
    for candidate in addresses:
        wait = time_left(timeout)
        if wait is not None and wait <= 0:
            _time_is_up()
            raise TimeoutError("no time left to connect")
        try:
            sock = _open((candidate, port), wait, source_address, socket_options)
        except OSError as error:  # refused, unreachable, no answer in time: the next address, if time is left
            _time_is_up()
            last_error = error
            continue
        try:
            watch(sock)
        except BaseException:
            sock.close()
            raise
        return sock
    raise last_error


def _open(
    address: tuple[str, int],
    timeout: float | None,
    source_address: tuple[str, int] | None,
    socket_options: Iterable[SocketOption],
) -> socket.socket:
    """A socket connected to ``address`` (an IP address: nothing is looked up), its options set first."""
    family, kind, proto, _, sockaddr = socket.getaddrinfo(
        *address, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        for level, option, value in socket_options:
            sock.setsockopt(level, option, value)
        sock.settimeout(timeout)
        if source_address:
            sock.bind(source_address)
        sock.connect(sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# --- Name lookups in bounded time -------------------------------------------------------------------------
#
# A lookup (``getaddrinfo``) opens no socket a deadline could shut, and the system resolver may take its own
# time — tens of seconds for a name server that does not answer — whatever a caller's timeout says. So the
# lookup runs in a thread of its own and the caller waits for it at most DNS_TIMEOUT_SECONDS, or what the
# current deadline leaves: it then fails with TimeoutError ("<host> did not resolve within N s"). A lookup left
# behind ends when the system resolver gives up; its thread is a daemon and holds nothing of the caller's.

DNS_TIMEOUT_SECONDS = 5.0
# Lookups under way at once, at most: a resolver that stops answering holds each one's thread until it gives up
# (tens of seconds) while its caller has gone on; past this many, a lookup fails at once instead of adding a thread.
LOOKUPS_AT_ONCE = 16
_lookups = threading.BoundedSemaphore(LOOKUPS_AT_ONCE)


def resolve(host: str, port: int, *, timeout: float | None = None) -> list[str]:
    """The addresses of ``host`` (TCP), in the resolver's order, without repeats. Waits at most ``timeout``
    (default DNS_TIMEOUT_SECONDS), shortened to what the current deadlines leave. Raises TimeoutError when the
    lookup has not ended by then, OSError (socket.gaierror) when it fails, UnicodeError for a name that cannot
    be a host name. Used by the outbound guard (``target_problems``, ``checked_address``, ``post``) and by every
    connection a deadline watches (``connect``)."""
    if _is_address(host):
        return [host]  # nothing to look up
    wait = time_left(DNS_TIMEOUT_SECONDS if timeout is None else min(timeout, DNS_TIMEOUT_SECONDS))
    if wait is not None and wait <= 0:
        _time_is_up()
        raise TimeoutError(f"no time left to resolve {host}")
    if not _lookups.acquire(blocking=False):
        raise TimeoutError(f"{host} was not looked up: {LOOKUPS_AT_ONCE} lookups are still waiting for an answer")
    outcome: list = []
    finished = threading.Event()

    def lookup() -> None:
        try:
            outcome.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except BaseException as error:  # handed to the caller, who raises it
            outcome.append(error)
        finally:
            finished.set()
            _lookups.release()

    try:
        threading.Thread(target=lookup, name=f"resolve {host[:60]}", daemon=True).start()
    except RuntimeError as error:  # no thread to be had (the process's limit)
        _lookups.release()
        raise OSError(f"{host} was not looked up: {error}") from error
    if not finished.wait(wait) or not outcome:
        _time_is_up()
        raise TimeoutError(f"{host} did not resolve within {wait or 0:.2g} s")
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return list(dict.fromkeys(str(info[4][0]) for info in outcome[0]))


# --- urllib3 (requests, botocore): its connections are watched by the current deadline -------------------------
#
# mozilla-django-oidc asks the OIDC issuer through ``requests``, and boto3 talks to S3 through botocore; both
# connect with urllib3's ``util.connection.create_connection``, called by name at every new connection. Inside a
# deadline it is ``connect`` (a bounded lookup, the socket options set before connecting as urllib3's own sets
# them, the time left to connect, the socket watched); outside, urllib3's own, untouched. Only connections opened inside the deadline are watched: a call reusing a pooled connection
# opened before it is not cut — the callers here (sign-in, the evidence upload) make a new client per call.


def _urllib3_connect(address, timeout=None, source_address=None, socket_options=None) -> socket.socket:
    host, port = address
    timeout = timeout if isinstance(timeout, int | float) else None  # urllib3's "no timeout given" sentinel
    return connect((host.strip("[]"), port), timeout, source_address, socket_options or ())


def _watch_urllib3() -> None:
    try:
        from urllib3.util import connection as urllib3_connection
    except ImportError:  # pragma: no cover - installed with requests and botocore
        return
    original = urllib3_connection.create_connection
    if getattr(original, "watched_by_deadlines", False):
        return

    def create_connection(address, *args, **kwargs):
        if not _deadlines.get():
            return original(address, *args, **kwargs)
        return _urllib3_connect(address, *args, **kwargs)

    create_connection.watched_by_deadlines = True  # type: ignore[attr-defined]
    urllib3_connection.create_connection = create_connection


_watch_urllib3()
