"""gunicorn's request size limits are stated in gunicorn.conf.py, and a real gunicorn started with it answers
past them itself (414, 431; a malformed request 400) in plain text with the portal's headers, not its HTML page
(gunicorn.conf.py says how). Just under the limit the request reaches the application."""

import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _config() -> dict:
    config: dict = {}
    exec((ROOT / "gunicorn.conf.py").read_text(), config)  # noqa: S102 - our own config file
    return config


def test_the_request_size_limits_are_stated_in_the_config():
    config = _config()
    assert (config["limit_request_line"], config["limit_request_fields"], config["limit_request_field_size"]) == (
        4094,
        100,
        8190,
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


@pytest.fixture
def gunicorn_port(tmp_path):
    """gunicorn started in the project directory (so it reads gunicorn.conf.py), production settings."""
    port = _free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),  # made up for this run
        "SECURE_SSL_REDIRECT": "0",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'unused.sqlite3'}",  # the requests below read no table
    }
    command = [sys.executable, "-m", "gunicorn", "portal.wsgi:application", "--bind", f"127.0.0.1:{port}"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, process.stderr.read().decode()[-2000:] if process.stderr else ""
                time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


def _request_line(path: str, length: int) -> bytes:
    """``GET <path>?q=aaa… HTTP/1.1`` of exactly ``length`` bytes, without its line end."""
    head, tail = f"GET {path}?q=".encode(), b" HTTP/1.1"
    return head + b"a" * (length - len(head) - len(tail)) + tail


def test_gunicorn_answers_past_its_limits_itself_and_lets_a_request_just_under_them_through(gunicorn_port):
    host = b"\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    under = _raw(gunicorn_port, _request_line("/api/v1/token/", 4094) + host)
    assert under.startswith(b"HTTP/1.1 401 ")  # the API's own answer
    assert b"Content-Type: application/json" in under
    over = _raw(gunicorn_port, _request_line("/api/v1/token/", 4095) + host)
    assert over.startswith(b"HTTP/1.1 414 URI Too Long\r\n")
    headers = b"GET /api/v1/token/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n"
    too_big = _raw(gunicorn_port, headers)
    assert too_big.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    malformed = _raw(gunicorn_port, b"GET /api/v1/token/ HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header: x\r\n\r\n")
    assert malformed.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    for answer in (over, too_big, malformed):
        head, _, body = answer.partition(b"\r\n\r\n")
        fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
        assert fields[b"Content-Type"] == b"text/plain; charset=utf-8" and b"<" not in body
        assert int(fields[b"Content-Length"]) == len(body) and body.startswith(answer[9:12] + b" ")
        assert fields[b"X-Content-Type-Options"] == b"nosniff" and fields[b"Cache-Control"] == b"no-store"
        assert fields[b"X-Frame-Options"] == b"DENY" and b"default-src 'none'" in fields[b"Content-Security-Policy"]
    assert over.endswith(b"\n") and b"4094" in over.partition(b"\r\n\r\n")[2]
