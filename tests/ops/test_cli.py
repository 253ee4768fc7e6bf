"""The ``accessgov`` console script end to end: a real subprocess against a live test server, with
a real API token; approvals and denials come from another user, through the services, while the
client waits."""

import os
import re
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import OperationalError

from accessgov.models import AccessRequest, Grant
from accessgov.services import access_requests as request_services
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


def test_status_grants_and_release_work_end_to_end(run, world):
    access_request = request_services.access_request_submit(
        world.requester, role=world.role, duration=timedelta(hours=1), justification=REASON
    )
    request_services.access_request_approve(world.approver, access_request.pk)
    grant = Grant.objects.get(access_request=access_request)
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


def test_the_client_imports_without_django():
    code = "import sys, accessgov_cli.main; sys.exit('django' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.parametrize(
    ("text", "seconds"), [("1h", 3600), ("30m", 1800), ("1h30m", 5400), ("90", 90), ("2d", 172800)]
)
def test_durations_read_like_people_write_them(text, seconds):
    assert cli.parse_duration(text) == seconds
