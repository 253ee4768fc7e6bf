"""The ``accessgov`` console script end to end: a real subprocess against a live test server, with
a real API token; approvals and denials come from another user, through the services, while the
client waits. Answers a real portal never gives (redirects, odd JSON, a slow server) come from a tiny
local HTTP server."""

import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.db import OperationalError
from django.utils import timezone

from accessgov.models import AccessRequest, ApiToken, Grant
from accessgov.services import access_requests as request_services
from accessgov.services import tokens as token_services
from accessgov_cli import main as cli
from tests.support.api_helpers import make_token

CONSOLE_SCRIPT = Path(sys.executable).parent / "accessgov"
ROLE = "payments-db/read-write"
REASON = "Deploy release 2026.11 to production"


@pytest.fixture
def run(transactional_db, live_server, world, tmp_path):
    """Run the console script as the requester (personal token) against the live server."""
    _, secret = make_token(world.requester, name="ci job")

    def run_cli(*args: str, token: str | None = secret, wait: bool = True, **env: str):
        environment = {
            **os.environ,
            "HOME": str(tmp_path),
            "ACCESSGOV_CONFIG": str(tmp_path / "none.toml"),
            "ACCESSGOV_URL": live_server.url,
            **env,
        }
        environment.pop("ACCESSGOV_TOKEN", None)
        if token is not None:
            environment["ACCESSGOV_TOKEN"] = token
        process = subprocess.Popen(
            [str(CONSOLE_SCRIPT), *args], env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        if not wait:
            return process
        stdout, stderr = process.communicate(timeout=60)
        return process.returncode, stdout, stderr

    return run_cli


def _requested_id(process) -> int:
    """The request id the CLI announces on stderr once its POST has been answered (reading the
    database from this thread while the server thread writes could collide on SQLite)."""
    line = process.stderr.readline()
    match = re.match(r"Requested: request (\d+) ", line)
    assert match, f"the CLI did not announce a request: {line!r}"
    return int(match.group(1))


def _finish(process) -> tuple[str, str]:
    """Wait for the CLI and read the rest of its output through the same buffered pipes (lines
    already buffered by ``_requested_id`` are not lost, as they would be with ``communicate``)."""
    process.wait(timeout=60)
    return process.stdout.read(), process.stderr.read()


def _as_another_user(action, *args, **kwargs):
    """Run a service call from this thread, retrying SQLite's shared-cache "table is locked" while the
    live server's thread holds the table (PostgreSQL never needs the retry)."""
    for _ in range(100):
        try:
            return action(*args, **kwargs)
        except OperationalError as error:
            if "locked" not in str(error):
                raise
            time.sleep(0.05)
    raise AssertionError("the database stayed locked")


def _request_and_wait(run, *extra: str):
    return run(
        "--quiet",
        "request",
        ROLE,
        "--for",
        "30m",
        "--reason",
        REASON,
        "--wait",
        "--poll-interval",
        "0.2",
        *extra,
        wait=False,
    )


def test_request_with_wait_exits_zero_once_another_user_approves(run, world):
    process = _request_and_wait(run, "--timeout", "60s")
    request_id = _requested_id(process)
    time.sleep(0.5)  # the client is polling a pending request now
    _as_another_user(request_services.access_request_approve, world.approver, request_id, comment="go ahead")
    stdout, stderr = _finish(process)
    assert process.returncode == cli.EXIT_OK, stderr
    grant = Grant.objects.get(access_request_id=request_id)
    assert stdout.strip() == str(grant.pk)
    assert "Waiting for approval" in stderr
    assert "Access granted" in stderr
    assert grant.expires_at - grant.starts_at == timedelta(minutes=30)


def test_request_with_wait_exits_non_zero_with_the_reason_when_denied(run, world):
    process = _request_and_wait(run, "--timeout", "60s")
    request_id = _requested_id(process)
    _as_another_user(request_services.access_request_deny, world.approver, request_id, comment="Use the read-only role")
    stdout, stderr = _finish(process)
    assert process.returncode == cli.EXIT_DENIED
    assert f"Request {request_id} was denied: Use the read-only role" in stderr
    assert stdout == ""


def test_request_with_wait_times_out_and_cancels_the_pending_request(run, world):
    code, _, stderr = run(
        "request", ROLE, "--for", "30m", "--reason", REASON, "--wait", "--timeout", "2s", "--poll-interval", "0.2"
    )
    assert code == cli.EXIT_TIMEOUT, stderr
    assert "Timed out after 2 s" in stderr
    assert "the request was cancelled" in stderr
    assert AccessRequest.objects.get(requester=world.requester).status == "cancelled"


def test_timeout_with_keep_pending_leaves_the_request_for_the_approvers(run, world):
    code, _, stderr = run(
        "request",
        ROLE,
        "--for",
        "30m",
        "--reason",
        REASON,
        "--wait",
        "--timeout",
        "1s",
        "--keep-pending",
        "--poll-interval",
        "0.2",
    )
    assert code == cli.EXIT_TIMEOUT, stderr
    assert AccessRequest.objects.get(requester=world.requester).status == "pending"


def _approved(world) -> tuple[AccessRequest, Grant]:
    """The requester's request for an hour of ROLE, approved by the approver through the services, and its grant."""
    access_request = request_services.access_request_submit(
        world.requester, role=world.role, duration=timedelta(hours=1), justification=REASON
    )
    request_services.access_request_approve(world.approver, access_request.pk)
    return access_request, Grant.objects.get(access_request=access_request)


def test_status_grants_and_release_work_end_to_end(run, world):
    access_request, grant = _approved(world)
    code, stdout, _ = run("status", str(access_request.pk))
    assert code == 0
    assert f"request {access_request.pk} {ROLE} approved; grant {grant.pk} active" in stdout
    code, stdout, _ = run("status")
    assert code == 0 and f"request {access_request.pk}" in stdout
    code, stdout, _ = run("grants")
    assert code == 0 and f"grant {grant.pk} {ROLE} active" in stdout
    code, stdout, _ = run("--json", "release", str(grant.pk))
    assert code == 0
    assert '"end_reason": "released"' in stdout
    code, stdout, _ = run("grants")
    assert stdout.strip() == "no active access"


def test_an_ended_grant_reads_why_and_when_it_ended(run, world):
    """A probe's finding: a released grant showed as "revoked", and an ended one "revoked until 16:00:57"."""
    access_request, grant = _approved(world)
    code, stdout, stderr = run("release", str(grant.pk))
    assert code == 0, stderr
    grant.refresh_from_db()
    ended_at = grant.ended_at.isoformat().replace("+00:00", "Z")
    assert stdout.strip() == f"grant {grant.pk} {ROLE} released, ended at {ended_at}"
    code, stdout, _ = run("grants", "--all")
    assert stdout.strip() == f"grant {grant.pk} {ROLE} released, ended at {ended_at}"
    code, stdout, _ = run("status", str(access_request.pk))
    assert f"; grant {grant.pk} released, ended at {ended_at}" in stdout


def test_output_options_work_after_the_command_too(run, world):
    """A probe's finding: ``accessgov status --json`` was a usage error."""
    access_request = request_services.access_request_submit(
        world.requester, role=world.role, duration=timedelta(hours=1), justification=REASON
    )
    code, stdout, stderr = run("status", str(access_request.pk), "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["id"] == access_request.pk
    code, stdout, _ = run("status", str(access_request.pk), "-q")
    assert (code, stdout.strip()) == (0, str(access_request.pk))
    code, _, stderr = run("--json", "status", "--quiet")
    assert code == cli.EXIT_USAGE and "cannot be used together" in stderr


def test_quiet_prints_the_grant_id_when_the_request_is_auto_approved(run, world):
    """A probe's finding: without --wait, --quiet printed the request id even though access was already active."""
    world.role.approvals_required = 0
    world.role.save(update_fields=["approvals_required"])
    code, stdout, stderr = run("--quiet", "request", ROLE, "--for", "30m", "--reason", REASON)
    assert code == 0, stderr
    grant = Grant.objects.get(access_request__requester=world.requester)
    assert stdout.strip() == str(grant.pk)
    assert f"Access granted: grant {grant.pk} {ROLE} active until" in stderr
    code, stdout, _ = run("request", ROLE, "--for", "30m", "--reason", REASON)
    assert code == cli.EXIT_REFUSED  # already holds it
    pending_role = world.role_two
    code, stdout, stderr = run("--quiet", "request", f"{pending_role.system.slug}/{pending_role.name}", "--for",
                               "30m", "--reason", REASON)  # fmt: skip
    assert code == 0, stderr
    assert stdout.strip() == str(AccessRequest.objects.get(role=pending_role).pk)  # pending: the request's id


def test_extend_with_wait_exits_zero_once_the_extension_is_approved(run, world):
    _, grant = _approved(world)
    before = grant.expires_at
    process = run("--quiet", "extend", str(grant.pk), "--for", "30m", "--reason", "The migration runs longer",
                  "--wait", "--timeout", "60s", "--poll-interval", "0.2", wait=False)  # fmt: skip
    line = process.stderr.readline()
    match = re.match(rf"Requested: request (\d+) \(extension of grant {grant.pk}\) {ROLE} pending", line)
    assert match, line
    _as_another_user(request_services.access_request_approve, world.approver, int(match.group(1)))
    stdout, stderr = _finish(process)
    assert process.returncode == cli.EXIT_OK, stderr
    assert stdout.strip() == str(grant.pk)
    grant.refresh_from_db()
    assert grant.expires_at == before + timedelta(minutes=30)


def test_extend_refusals_have_the_refused_exit_code(run, world):
    _, grant = _approved(world)
    code, _, stderr = run("extend", str(grant.pk), "--for", "4h", "--reason", "The migration runs longer")
    assert code == cli.EXIT_REFUSED and "Refused (policy_violation)" in stderr
    code, _, stderr = run("extend", "999999", "--for", "30m", "--reason", "The migration runs longer")
    assert code == cli.EXIT_REFUSED and "Refused (not_found)" in stderr


def test_wait_stops_before_the_token_expires_and_cancels_the_request(run, world):
    """A probe's finding: a token expiring during --wait left the request pending with nothing left to cancel it."""
    _, secret = token_services.api_token_create(
        world.requester,
        user=world.requester,
        name="short-lived",
        kind=ApiToken.Kind.PERSONAL,
        expires_at=timezone.now() + timedelta(seconds=cli.TOKEN_MARGIN_SECONDS + 3),
    )
    started = time.monotonic()
    code, _, stderr = run("request", ROLE, "--for", "30m", "--reason", REASON, "--wait", "--timeout", "60s",
                          "--poll-interval", "0.2", token=secret)  # fmt: skip
    assert code == cli.EXIT_TIMEOUT, stderr
    assert time.monotonic() - started < 20
    assert "the API token expires in less than 30 s; the request was cancelled" in stderr
    assert AccessRequest.objects.get(requester=world.requester).status == "cancelled"


def test_a_token_revoked_during_wait_says_how_to_cancel_the_pending_request(run, world):
    token, secret = make_token(world.requester, name="revoked soon")
    process = run("request", ROLE, "--for", "30m", "--reason", REASON, "--wait", "--timeout", "60s",
                  "--poll-interval", "0.2", token=secret, wait=False)  # fmt: skip
    request_id = _requested_id(process)
    _as_another_user(token_services.api_token_revoke, world.requester, token.pk)
    _, stderr = _finish(process)
    assert process.returncode == cli.EXIT_AUTH, stderr
    assert f"Request {request_id} may still be pending: with a fresh token, run `accessgov cancel {request_id}`" in (
        stderr
    )
    code, _, stderr = run("cancel", str(request_id))
    assert code == 0, stderr
    assert AccessRequest.objects.get(pk=request_id).status == "cancelled"


def test_refusals_and_bad_configuration_have_distinct_exit_codes(run, world):
    code, _, stderr = run("request", ROLE, "--for", "9h", "--reason", REASON)
    assert code == cli.EXIT_REFUSED
    assert "Refused (policy_violation)" in stderr
    code, _, stderr = run("status", "999999")
    assert code == cli.EXIT_REFUSED
    code, _, stderr = run("grants", token="agv_p_not-a-real-token")
    assert code == cli.EXIT_AUTH
    assert "Unknown token" in stderr
    code, _, stderr = run("grants", token=None)
    assert code == cli.EXIT_USAGE
    assert "ACCESSGOV_TOKEN" in stderr
    code, _, stderr = run("grants", ACCESSGOV_URL="http://127.0.0.1:9")
    assert code == cli.EXIT_UNAVAILABLE
    code, _, stderr = run("request", ROLE, "--for", "soon", "--reason", REASON)
    assert code == cli.EXIT_USAGE


def test_the_config_file_is_read_when_the_environment_is_silent(run, world, tmp_path):
    _, secret = make_token(world.requester, name="laptop")
    config = tmp_path / "config.toml"
    config.write_text(f'token = "{secret}"\n')
    code, stdout, stderr = run("grants", token=None, ACCESSGOV_CONFIG=str(config))
    assert code == 0, stderr
    assert stdout.strip() == "no active access"


# --- Answers a real portal never gives -----------------------------------------------------------


class FakePortal:
    """A tiny HTTP server on 127.0.0.1 answering canned JSON per (method, path); records what it received."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], tuple[int, dict, object, float]] = {}
        self.seen: list[tuple[str, str, str | None]] = []
        portal = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                portal.seen.append((self.command, self.path, self.headers.get("Authorization")))
                not_found = (404, {}, {"error": {"code": "not_found", "message": "Not found."}}, 0.0)
                status, headers, body, delay = portal.routes.get((self.command, self.path), not_found)
                time.sleep(delay)
                raw = json.dumps(body).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = answer

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, method: str, path: str, body: object, status: int = 200, delay: float = 0.0, **headers) -> None:
        self.routes[(method, f"/api/v1/{path}")] = (status, headers, body, delay)


@pytest.fixture
def fake_portal():
    portals: list[FakePortal] = []

    def start() -> FakePortal:
        portals.append(FakePortal())
        return portals[-1]

    yield start
    for portal in portals:
        portal.server.shutdown()
        portal.server.server_close()


FAKE_TOKEN = "agv_p_test-token"  # no portal knows it


def _cli(url: str, tmp_path, *args: str, token: str = FAKE_TOKEN) -> tuple[int, str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("ACCESSGOV_", "ACTIONS_"))}
    environment.update(
        HOME=str(tmp_path), ACCESSGOV_CONFIG=str(tmp_path / "none.toml"), ACCESSGOV_URL=url, ACCESSGOV_TOKEN=token
    )
    done = subprocess.run(
        [str(CONSOLE_SCRIPT), *args], env=environment, capture_output=True, text=True, timeout=60, check=False
    )
    return done.returncode, done.stdout, done.stderr


def _one_line_no_traceback(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if not line.startswith("Requested:")]
    assert len(lines) == 1, stderr
    return lines[0]


PENDING = {"id": 41, "status": "pending", "role": {"path": ROLE}, "grant": None, "decisions": []}
COMMANDS = {
    "grants": ("GET", "grants/?page_size=50&active=true"),
    "status": ("GET", "requests/?page_size=20"),
    "status 41": ("GET", "requests/41/"),
    "release 41": ("POST", "grants/41/release/"),
    "cancel 41": ("POST", "requests/41/cancel/"),
    f"request {ROLE} --for 30m --reason deploy-it-now": ("POST", "requests/"),
    "extend 41 --for 30m --reason deploy-it-now": ("POST", "grants/41/extend/"),
}


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_redirect_is_never_followed_so_the_token_stays_home(fake_portal, tmp_path, command, status):
    """A probe's finding: a 302 to another host received ``Authorization: Bearer <token>``, and a redirected POST
    came back as a GET whose answer crashed the client (KeyError 'id')."""
    portal, elsewhere = fake_portal(), fake_portal()
    method, path = COMMANDS[command]
    portal.answer(method, path, {}, status=status, Location=f"{elsewhere.url}/api/v1/{path}")
    elsewhere.answer("GET", path, {})
    code, stdout, stderr = _cli(portal.url, tmp_path, *command.split())
    assert code == cli.EXIT_ERROR, stderr
    line = _one_line_no_traceback(stderr)
    assert f"answered HTTP {status}, a redirect to {elsewhere.url}/api/v1/{path}" in line
    assert "Set ACCESSGOV_URL to the portal's real address (e.g. https://" in line
    assert elsewhere.seen == [] and stdout == ""


def test_login_never_follows_a_redirect_with_the_identity_token(fake_portal, tmp_path):
    portal, elsewhere = fake_portal(), fake_portal()
    portal.answer("POST", "oidc/token/", {}, status=302, Location=f"{elsewhere.url}/api/v1/oidc/token/")
    identity = tmp_path / "id_token"
    identity.write_text("eyJhbGciOiJSUzI1NiJ9.e30.c2ln")
    code, _, stderr = _cli(portal.url, tmp_path, "login", "--oidc", "--token-file", str(identity), "--print")
    assert code == cli.EXIT_ERROR
    assert "a redirect to" in _one_line_no_traceback(stderr)
    assert elsewhere.seen == []


@pytest.mark.parametrize("body", [{}, [], {"results": {}}, {"results": [{"id": "1"}]}, "text", None])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_an_answer_of_the_wrong_shape_is_one_line_not_a_traceback(fake_portal, tmp_path, command, body):
    """A probe's finding: a 200 with ``{}`` or ``[]`` crashed ``status`` and ``request`` with KeyError/TypeError."""
    portal = fake_portal()
    method, path = COMMANDS[command]
    portal.answer(method, path, body, status=201 if method == "POST" else 200)
    code, stdout, stderr = _cli(portal.url, tmp_path, *command.split())
    assert code == cli.EXIT_ERROR, stderr
    assert f"Unexpected answer from {portal.url}/api/v1/{path}: not " in _one_line_no_traceback(stderr)
    assert stdout == ""


def test_an_answer_of_the_wrong_shape_while_waiting_says_the_request_may_be_pending(fake_portal, tmp_path):
    portal = fake_portal()
    portal.answer("GET", "token/", {"expires_in_seconds": 3600})
    portal.answer("POST", "requests/", PENDING, status=201)
    portal.answer("GET", "requests/41/", [])
    code, _, stderr = _cli(portal.url, tmp_path, "request", ROLE, "--for", "30m", "--reason", REASON, "--wait",
                           "--poll-interval", "0.1")  # fmt: skip
    assert code == cli.EXIT_ERROR
    line = _one_line_no_traceback(stderr.replace("Waiting for approval…\n", ""))
    assert "Unexpected answer from" in line and "Request 41 may still be pending" in line


def test_each_call_while_waiting_is_bounded_by_the_time_left(fake_portal, tmp_path):
    """A probe's finding: the fixed 30 s per-call timeout let --wait --timeout overrun by up to 30 s."""
    portal = fake_portal()
    portal.answer("GET", "token/", {"expires_in_seconds": 3600})
    portal.answer("POST", "requests/", PENDING, status=201)
    portal.answer("GET", "requests/41/", PENDING, delay=20)
    portal.answer("POST", "requests/41/cancel/", {**PENDING, "status": "cancelled"})
    started = time.monotonic()
    code, _, stderr = _cli(portal.url, tmp_path, "request", ROLE, "--for", "30m", "--reason", REASON, "--wait",
                           "--timeout", "2s", "--poll-interval", "0.2")  # fmt: skip
    assert code == cli.EXIT_TIMEOUT, stderr
    assert time.monotonic() - started < 8
    assert "the request was cancelled" in stderr
    assert ("POST", "/api/v1/requests/41/cancel/") in [(m, p) for m, p, _ in portal.seen]


@pytest.mark.parametrize(
    ("status", "error", "expected"),
    [
        (400, {"code": "policy_violation", "message": "This identity token was already exchanged; ask again."}, 8),
        (401, {"code": "token_refused", "message": "The token's claims match no trust policy."}, 8),
        (403, {"code": "permission_denied", "message": "No."}, 8),
        (503, {"code": "issuer_unavailable", "message": "The issuer cannot be reached; try again."}, 9),
    ],
)
def test_login_maps_a_refused_identity_token_to_the_authentication_exit_code(
    fake_portal, tmp_path, status, error, expected
):
    """A probe's finding: a replayed identity token ("already exchanged", a 400) exited 7, not 8 as documented."""
    portal = fake_portal()
    portal.answer("POST", "oidc/token/", {"error": error}, status=status)
    identity = tmp_path / "id_token"
    identity.write_text("eyJhbGciOiJSUzI1NiJ9.e30.c2ln")
    code, _, stderr = _cli(portal.url, tmp_path, "login", "--oidc", "--token-file", str(identity), "--print")
    assert code == expected, stderr
    assert error["message"] in _one_line_no_traceback(stderr)


def test_a_token_sent_over_plain_http_to_another_host_is_warned_about_once(fake_portal, tmp_path, monkeypatch, capsys):
    portal = fake_portal()
    portal.answer("GET", "token/", {"expires_in_seconds": 3600})
    portal.answer("POST", "requests/", {**PENDING, "status": "approved", "grant": {"id": 7, "status": "active",
                  "active": True, "expires_at": "2030-01-01T00:00:00Z"}}, status=201)  # fmt: skip
    connect = http.client.socket.create_connection
    # portal.example is this machine's fake portal, reached by name as a remote portal would be.
    monkeypatch.setattr(
        http.client.socket, "create_connection", lambda address, *a, **k: connect(("127.0.0.1", address[1]), *a, **k)
    )
    monkeypatch.setenv("ACCESSGOV_TOKEN", FAKE_TOKEN)
    monkeypatch.setenv("ACCESSGOV_CONFIG", str(tmp_path / "none.toml"))
    remote = portal.url.replace("127.0.0.1", "portal.example")
    argv = ["--url", remote, "--quiet", "request", ROLE, "--for", "30m", "--reason", REASON, "--wait"]
    assert cli.main(argv) == cli.EXIT_OK
    captured = capsys.readouterr()
    assert captured.out.strip() == "7"
    assert captured.err.count("plain http://, so the token crosses the network unencrypted") == 1
    assert cli.main(["--url", portal.url, *argv[2:]]) == cli.EXIT_OK
    assert "unencrypted" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("url", "in_clear"),
    [
        ("http://portal.example/api/v1/x", True),
        ("http://10.0.0.5:8000/api/v1/x", True),
        ("https://portal.example/api/v1/x", False),
        ("http://127.0.0.1:8000/api/v1/x", False),
        ("http://localhost:8000/api/v1/x", False),
        ("http://[::1]:8000/api/v1/x", False),
    ],
)
def test_only_plain_http_to_another_host_counts_as_in_clear(url, in_clear):
    assert cli.sends_token_in_clear(url) is in_clear


def test_the_client_imports_without_django():
    code = "import sys, accessgov_cli.main; sys.exit('django' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.parametrize(
    ("text", "seconds"), [("1h", 3600), ("30m", 1800), ("1h30m", 5400), ("90", 90), ("2d", 172800)]
)
def test_durations_read_like_people_write_them(text, seconds):
    assert cli.parse_duration(text) == seconds
