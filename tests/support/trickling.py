"""A provider or receiver that answers too slowly to be useful but never slowly enough to trip a socket
timeout: it reads the request, then sends its answer one byte at a time (a loopback server in a thread,
plain HTTP or HTTPS with a certificate made per run). ``mode="body"``: the status line and headers
(``Content-Length: 100000``) at once, then the body byte by byte; ``mode="headers"``: the status line,
then the headers byte by byte, never finishing them. A byte every ``interval`` seconds. The paths in ``fast``
(the query left out) answer their JSON at once instead, so a test can let the first steps of a flow through
(an issuer's discovery document, say) and trickle a later one. It gives up after ``give_up_after`` seconds, so a
client without a whole-call deadline ends (late) instead of hanging the test run."""

import json
import socket
import socketserver
import ssl
import tempfile
import threading
import time
from contextlib import suppress
from pathlib import Path

from tests.support.fake_providers import _self_signed

BODY_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
HEADERS_HEAD = b"HTTP/1.1 200 OK\r\n"


class _Handler(socketserver.BaseRequestHandler):
    server: "TricklingServer._Server"

    def handle(self) -> None:
        server = self.server
        connection: socket.socket = self.request
        connection.settimeout(server.give_up_after)
        try:
            head = self._read_request(connection)
        except OSError:
            return
        if head is None:
            return
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        server.requests.append(request_line)
        target = request_line.split(" ")[1] if request_line.count(" ") >= 2 else ""
        fast = server.fast.get(target.split("?", 1)[0])
        if fast is not None:
            body = json.dumps(fast).encode()
            answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            with suppress(OSError):
                connection.sendall(answer + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            return
        if server.mode == "body":
            start, drip = BODY_HEAD, b"{" + b" " * 99_999
        else:
            start, drip = HEADERS_HEAD, b"X-Slow: " + b"a" * 60_000
        started = time.monotonic()
        try:
            connection.sendall(start)
            for byte in drip:
                if server.stopping.wait(server.interval) or time.monotonic() - started > server.give_up_after:
                    break
                connection.sendall(bytes([byte]))
        except OSError:  # the client hung up: what a deadline does
            pass
        server.hung_up_after.append(time.monotonic() - started)

    @staticmethod
    def _read_request(connection: socket.socket) -> bytes | None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = connection.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length" and value.strip().isdigit():
                length = int(value.strip())
        while len(rest) < length:
            chunk = connection.recv(65536)
            if not chunk:
                break
            rest += chunk
        return head


class TricklingServer:
    """``with TricklingServer(tls=True) as slow:`` — ``slow.url`` (http(s)://127.0.0.1:<port>), ``slow.ca_file``
    (trusts the HTTPS certificate), ``slow.requests`` (request lines received), ``slow.fast`` (path → JSON answered
    at once)."""

    class _Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True
        mode: str
        interval: float
        give_up_after: float
        requests: list
        hung_up_after: list
        fast: dict
        stopping: threading.Event

    def __init__(self, *, mode: str = "body", tls: bool = True, interval: float = 0.2, give_up_after: float = 6.0):
        assert mode in ("body", "headers")
        self._tmp = tempfile.TemporaryDirectory()
        self.server = self._Server(("127.0.0.1", 0), _Handler)
        self.server.mode, self.server.interval, self.server.give_up_after = mode, interval, give_up_after
        self.server.requests, self.server.hung_up_after, self.server.stopping = [], [], threading.Event()
        self.server.fast = {}
        self.ca_file = ""
        if tls:
            cert, key = _self_signed(Path(self._tmp.name))
            self.ca_file = str(cert)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def requests(self) -> list:
        return self.server.requests

    @property
    def fast(self) -> dict:
        return self.server.fast

    def __enter__(self) -> "TricklingServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.stopping.set()
        self.server.shutdown()
        self.server.server_close()
        self._tmp.cleanup()
