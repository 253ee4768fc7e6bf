"""The sockets an outbound call opens inside ``net.deadline`` behave as the client asked, and none is left open when
the call fails. Against a loopback server that reports what the kernel saw of the client's connection; a fault is
made at the library boundary (the standard library's socket), never by patching the portal's code.

- urllib3 (requests, botocore) sets its ``socket_options`` before connecting. Inside a deadline they were set after:
  a receive buffer (SO_RCVBUF) sizes the TCP window the client offers in its SYN, so set afterwards it changed
  nothing the peer sees;
- a connection that cannot be watched by the deadline (``dup()`` failing: no descriptor left) was left open.
"""

import errno
import os
import socket
import socketserver
import ssl
import threading

import httpx2
import pytest
import urllib3

from accessgov import net
from accessgov.integrations.http import PinnedTransport

SMALL_BUFFER = 4096  # bytes: a window this small needs no window scaling (RFC 7323); Linux offers scale 0 for it


def _peer_window_scale(connection: socket.socket) -> int:
    """The window scale the client offered when it connected (TCP_INFO's ``tcpi_snd_wscale``, the low four bits of
    its seventh byte): what its receive buffer was at connect time."""
    return connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)[6] & 0x0F


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        while self.rfile.readline() not in (b"\r\n", b""):
            pass
        body = str(_peer_window_scale(self.request)).encode()
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))


@pytest.fixture
def window_reporter():
    """A loopback HTTP server answering every request with the window scale the client's SYN offered."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _urllib3_get(port: int, socket_options: list) -> tuple[int, int]:
    """GET through urllib3 (as requests and botocore connect): the window scale the server saw and the client
    socket's TCP_NODELAY."""
    connection = urllib3.connection.HTTPConnection("127.0.0.1", port, timeout=2, socket_options=socket_options)
    try:
        connection.request("GET", "/")
        nodelay = connection.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        return int(connection.getresponse().data), nodelay
    finally:
        connection.close()


def test_urllib3s_socket_options_take_effect_inside_a_deadline_as_outside(window_reporter):
    options = [*urllib3.connection.HTTPConnection.default_socket_options]  # TCP_NODELAY
    small = [*options, (socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)]
    default_scale, _ = _urllib3_get(window_reporter, options)
    outside = _urllib3_get(window_reporter, small)

    with net.deadline(2):
        inside = _urllib3_get(window_reporter, small)

    assert default_scale > 0  # a default buffer needs window scaling: the small one is visible
    assert outside == (0, 1)
    assert inside == outside  # the small window offered, and TCP_NODELAY on


def test_httpxs_connections_inside_a_deadline_have_tcp_nodelay(window_reporter):
    transport = PinnedTransport(None, ssl.create_default_context())  # as PagerDuty's client, internal URLs allowed
    url = f"http://127.0.0.1:{window_reporter}/"
    with net.deadline(2), httpx2.Client(transport=transport) as client, client.stream("GET", url) as response:
        sock = response.extensions["network_stream"].get_extra_info("socket")
        nodelay = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        scale = int(response.read())
    assert (response.status_code, nodelay) == (200, 1) and scale > 0


def _no_descriptor_left(sock: socket.socket) -> socket.socket:
    raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))


def test_a_connection_the_deadline_cannot_watch_is_closed_not_left_open(monkeypatch):
    """``net.connect`` connects, then hands a duplicate of the socket to the deadline; with no descriptor left for
    the duplicate (a process at its RLIMIT_NOFILE: ``dup`` fails with EMFILE), the call fails — and the connection it
    had just opened stayed open (as long as the failure was held: a traceback, a retry loop, a log record), unseen by
    anything that could close it. The failure is made at the library boundary (``socket.socket.dup``): lowering the
    process's descriptor limit for real also starves the other threads a test run has."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(2)
    try:
        with net.deadline(2), monkeypatch.context() as patch:
            patch.setattr(socket.socket, "dup", _no_descriptor_left)
            with pytest.raises(OSError) as failure:
                net.connect(listener.getsockname(), 2)
        assert failure.value.errno == errno.EMFILE
        peer, _ = listener.accept()  # the handshake was complete: the failure came after connecting
        with peer:
            peer.settimeout(2)
            try:
                closed = peer.recv(1) == b""
            except TimeoutError:
                closed = False
        assert closed, "the connection the failed call opened is still open"
        del failure
    finally:
        listener.close()
