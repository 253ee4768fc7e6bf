"""Read by gunicorn when it starts in this directory (the image's /app, `make`-less installs).

gunicorn itself trusts X-Forwarded-Proto (and -Ssl, -Protocol) from 127.0.0.1 by default and then tells
Django the request was HTTPS: a client on the same host could skip the redirect to HTTPS. AccessGov reads
proxy headers itself, and only with TRUSTED_PROXY_COUNT set (SECURE_PROXY_SSL_HEADER, the audit IP:
docs/SECURITY.md), so gunicorn trusts none.

The request size limits, stated rather than left to gunicorn's defaults (the same values): a request line
(method, path and query string) over 4094 bytes is answered 414, more than 100 header fields or one over
8190 bytes 431 (a malformed request line or header 400), by gunicorn before Django sees the request. gunicorn
writes those answers itself (``gunicorn.util.write_error``, the one writer of its error answers, unchanged in
signature since gunicorn 19) as a small HTML page, and offers no setting for them; each worker replaces that
writer (``post_worker_init``, a server hook) with ``plain_text_error``: the same status and reason, a plain-text
body every client can read (an API client too: which one asked is unknown, the request could not be read), and
the headers every portal answer carries. tests/ops/test_gunicorn_limits.py starts a real gunicorn to hold it.
The TLS proxy in front usually refuses such requests first, with its own page (nginx: 414/400 past
``large_client_header_buffers``, 8 KB). Every list, filter and export link the portal makes is far below these
limits; the API's next/previous links too.
"""

forwarded_allow_ips = ""

limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190


ERROR_HEADERS = (
    "Connection: close\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "X-Content-Type-Options: nosniff\r\n"
    "Cache-Control: no-store\r\n"
    "Content-Security-Policy: default-src 'none'; frame-ancestors 'none'\r\n"
    "X-Frame-Options: DENY\r\n"
    "Referrer-Policy: same-origin\r\n"
)


def plain_text_error(sock, status_int, reason, mesg) -> None:
    """gunicorn's ``util.write_error``, answering in plain text with the portal's headers (no HTML page)."""
    from gunicorn.util import write_nonblock

    body = f"{status_int} {reason}: {mesg}\n".encode()
    head = f"HTTP/1.1 {status_int} {reason}\r\n{ERROR_HEADERS}Content-Length: {len(body)}\r\n\r\n"
    write_nonblock(sock, head.encode("latin-1") + body)


def post_worker_init(worker) -> None:
    from gunicorn import util

    util.write_error = plain_text_error
