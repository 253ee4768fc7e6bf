"""``accessgov``: ask for production access from a terminal or a CI job, wait for it, release it.

Standard library only (no Django), so it runs anywhere Python 3.11 runs. Configuration, first found
wins: ``--url``; the environment (``ACCESSGOV_URL``, ``ACCESSGOV_TOKEN``); the config file
(``ACCESSGOV_CONFIG``, default ``~/.config/accessgov/config.toml``) with ``url = "…"`` and
``token = "…"``. It never prompts. Progress goes to stderr; the result to stdout (``--json`` for
the API's JSON, ``--quiet`` for just the id). It never follows a redirect (the token would go wherever
it points) and checks every answer's shape before reading it. Exit codes are the EXIT_* constants below.
"""

import argparse
import http.client
import ipaddress
import json
import os
import re
import sys
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__version__ = "0.1.0"

EXIT_OK = 0
EXIT_ERROR = 1  # an unexpected answer from the server
EXIT_USAGE = 2  # bad arguments or missing configuration
EXIT_DENIED = 3
EXIT_LAPSED = 4  # nobody decided before the request's deadline
EXIT_CANCELLED = 5
EXIT_TIMEOUT = 6  # --wait gave up (the pending request is cancelled unless --keep-pending)
EXIT_REFUSED = 7  # the API refused: policy, permission, conflict, not found (400/403/404/409)
EXIT_AUTH = 8  # no token, or an unknown, expired or revoked token (401)
EXIT_UNAVAILABLE = 9  # the server could not be reached, or answered 5xx / 429
EXIT_ENDED = 10  # the grant ended (revoked or expired) before it could be used

DURATION = re.compile(r"([0-9]{1,9})([smhd])", re.ASCII)
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# The longest duration the portal takes (accessgov.inputs.MAX_DURATION; this client imports no Django).
MAX_DURATION_SECONDS = 366 * 86400


# --wait stops this long before the API token expires, so the token can still cancel the request.
TOKEN_MARGIN_SECONDS = 30


class CliError(Exception):
    """One line for stderr and the exit code; ``status`` is the HTTP status when the API answered one."""

    def __init__(self, message: str, exit_code: int, *, status: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.status = status


def parse_duration(text: str) -> int:
    """'1h', '30m', '1h30m', '90s', '2d' → seconds; ASCII digits only, at most 366 days."""
    compact = text.replace(" ", "").lower()
    if re.fullmatch(r"[0-9]{1,9}", compact, re.ASCII):
        seconds = int(compact)
    else:
        parts = DURATION.findall(compact)
        if not parts or "".join(f"{n}{u}" for n, u in parts) != compact:
            raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 1h, 30m or 1h30m")
        seconds = sum(int(n) * UNITS[u] for n, u in parts)
    if seconds > MAX_DURATION_SECONDS:
        raise argparse.ArgumentTypeError(f"{text!r} is longer than 366 days")
    return seconds


# --- Configuration and HTTP ----------------------------------------------------------------------


def config_path() -> Path:
    return Path(os.environ.get("ACCESSGOV_CONFIG") or Path.home() / ".config" / "accessgov" / "config.toml")


def load_config(url_override: str | None, *, need_token: bool = True) -> tuple[str, str]:
    path = config_path()
    file_config: dict = {}
    if path.is_file():
        try:
            file_config = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise CliError(f"Cannot read {path}: {exc}", EXIT_USAGE) from exc
    url = url_override or os.environ.get("ACCESSGOV_URL") or file_config.get("url")
    token = os.environ.get("ACCESSGOV_TOKEN") or file_config.get("token")
    if not url:
        raise CliError(f"Set ACCESSGOV_URL (or url in {path}) to the portal's address.", EXIT_USAGE)
    if not token and need_token:
        raise CliError(
            f"Set ACCESSGOV_TOKEN (or token in {path}) to an API token (portal: Account → API tokens).", EXIT_USAGE
        )
    return str(url).rstrip("/"), str(token or "").strip()


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: urllib would send the Authorization header to wherever it points
    (another host included). A 3xx then surfaces as an HTTPError, refused by ``_http_error``."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


# Every call this client makes, to the portal and to the CI's token service, goes through this opener.
OPENER = urllib.request.build_opener(_RefuseRedirects)


def _printable(text: object, limit: int = 200) -> str:
    """``text`` for a terminal line: control characters (an escape sequence from a server) shown escaped."""
    value = str(text)[:limit]
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in value)


def sends_token_in_clear(url: str) -> bool:
    """Plain http:// to a host that is not this machine: the token would cross the network unencrypted."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() != "http":
        return False
    host = (parts.hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


@dataclass(frozen=True)
class Shape:
    """What an answer must look like for a command to use it (``what`` names it in the error line)."""

    what: str
    check: Callable[[Any], bool]


class Api:
    """A tiny JSON client for /api/v1/ with the token in the Authorization header. It never follows
    redirects and checks each answer's shape before a command reads it."""

    def __init__(self, base_url: str, token: str, timeout: float = 30.0) -> None:
        self.base_url = base_url
        self.token = token
        self.timeout = timeout
        self._warned_in_clear = False

    def call(
        self,
        method: str,
        path: str,
        body: dict | None = None,
        *,
        expect: Shape | None = None,
        deadline: float | None = None,
    ) -> Any:
        """The decoded answer. ``deadline`` (time.monotonic()) bounds the call by the time left (at least 1 s)."""
        url = f"{self.base_url}/api/v1/{path.lstrip('/')}"
        if not self._warned_in_clear and sends_token_in_clear(url):
            self._warned_in_clear = True
            say(
                f"accessgov: warning: {_printable(self.base_url)} is plain http://, so the token crosses the "
                "network unencrypted; set ACCESSGOV_URL to the portal's https:// address."
            )
        timeout = self.timeout if deadline is None else max(1.0, min(self.timeout, deadline - time.monotonic()))
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 (the configured portal URL)
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Accept", "application/json")
        request.add_header("User-Agent", f"accessgov-cli/{__version__}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with OPENER.open(request, timeout=timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise _http_error(exc, url) from exc
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            raise CliError(f"Cannot reach {self.base_url}: {_printable(reason)}", EXIT_UNAVAILABLE) from exc
        try:
            answer = json.loads(raw or b"{}")
        except (ValueError, RecursionError) as exc:
            raise _unexpected(url, "JSON") from exc
        if expect is not None and not expect.check(answer):
            raise _unexpected(url, expect.what)
        return answer


def _unexpected(url: str, what: str) -> CliError:
    return CliError(
        f"Unexpected answer from {_printable(url)}: not {what} (is ACCESSGOV_URL the portal's address?)", EXIT_ERROR
    )


def _http_error(exc: urllib.error.HTTPError, url: str) -> CliError:
    if 300 <= exc.code < 400:
        location = _printable(exc.headers.get("Location") or "nowhere")
        return CliError(
            f"{_printable(url)} answered HTTP {exc.code}, a redirect to {location}; the token is never sent "
            "after a redirect. Set ACCESSGOV_URL to the portal's real address (e.g. https://accessgov.example.com).",
            EXIT_ERROR,
            status=exc.code,
        )
    try:
        error = json.loads(exc.read() or b"{}").get("error", {})
        message, code = str(error.get("message") or ""), str(error.get("code") or "")
    except (ValueError, RecursionError, AttributeError, OSError, http.client.HTTPException):
        message, code = "", ""
    message = _printable(message or f"HTTP {exc.code}", 1000)
    code = _printable(code, 50)
    if exc.code == 401:
        return CliError(f"Authentication failed: {message}", EXIT_AUTH, status=401)
    if exc.code == 429 or exc.code >= 500:
        return CliError(f"The server is unavailable (HTTP {exc.code}): {message}", EXIT_UNAVAILABLE, status=exc.code)
    if exc.code in (400, 403, 404, 409):
        return CliError(f"Refused ({code or exc.code}): {message}", EXIT_REFUSED, status=exc.code)
    return CliError(f"Unexpected answer HTTP {exc.code} from {_printable(url)}: {message}", EXIT_ERROR, status=exc.code)


# --- Answers' shapes -----------------------------------------------------------------------------


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_grant_ref(value: object) -> bool:
    return (
        isinstance(value, dict)
        and _is_id(value.get("id"))
        and isinstance(value.get("status"), str)
        and isinstance(value.get("active"), bool)
    )


def _has_role(value: dict) -> bool:
    role = value.get("role")
    return isinstance(role, dict) and isinstance(role.get("path"), str)


def _is_grant(value: object) -> bool:
    return isinstance(value, dict) and _is_grant_ref(value) and _has_role(value)


def _is_request(value: object) -> bool:
    return (
        isinstance(value, dict)
        and _is_id(value.get("id"))
        and isinstance(value.get("status"), str)
        and _has_role(value)
        and (value.get("grant") is None or _is_grant_ref(value["grant"]))
        and isinstance(value.get("decisions", []), list)
    )


def _page_of(item: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda page: (
        isinstance(page, dict) and isinstance(page.get("results"), list) and all(item(r) for r in page["results"])
    )


REQUEST = Shape("an access request", _is_request)
GRANT = Shape("a grant", _is_grant)
REQUESTS_PAGE = Shape("a page of access requests", _page_of(_is_request))
GRANTS_PAGE = Shape("a page of grants", _page_of(_is_grant))
TOKEN = Shape(
    "a description of the token",
    lambda t: isinstance(t, dict) and _is_id(t.get("expires_in_seconds")) and t["expires_in_seconds"] >= 0,
)
OIDC_TOKEN = Shape(
    "a token exchange's answer",
    lambda a: (
        isinstance(a, dict)
        and all(isinstance(a.get(k), str) and a[k] for k in ("token", "expires_at", "service_account", "trust_policy"))
        and isinstance(a.get("roles", []), list)
    ),
)


# --- Output --------------------------------------------------------------------------------------


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _grant_state(grant: dict) -> str:
    """What a grant is now, in words: "active until …", "scheduled from … until …", or why and when it
    ended ("released, ended at …": a released grant's status is revoked, its end reason says more)."""
    if grant.get("active"):
        return f"active until {grant.get('expires_at')}"
    status = _printable(grant.get("status"), 30)
    if status == "scheduled":
        return f"scheduled from {grant.get('starts_at')} until {grant.get('expires_at')}"
    reason = _printable(grant.get("end_reason") or status, 30)
    return f"{reason}, ended at {grant.get('ended_at') or grant.get('expires_at')}"


def _grant_line(grant: dict, role: dict | None = None) -> str:
    path = _printable((role or grant.get("role") or {}).get("path", ""))
    return f"grant {grant['id']} {path} {_grant_state(grant)}".replace("  ", " ")


def _request_line(access_request: dict) -> str:
    line = f"request {access_request['id']}"
    if _is_id(access_request.get("extends_grant")):
        line += f" (extension of grant {access_request['extends_grant']})"
    line += f" {_printable(access_request['role']['path'])} {_printable(access_request['status'], 30)}"
    grant = access_request.get("grant")
    if grant:
        line += f"; grant {grant['id']} {_grant_state(grant)}"
    return line


def emit(args: argparse.Namespace, payload, text: str, quiet_id=None) -> None:
    if args.json:
        print(json.dumps(payload, indent=2))
    elif args.quiet:
        if quiet_id is not None:
            print(quiet_id)
    else:
        print(text)


# --- Commands ------------------------------------------------------------------------------------


def _denial(access_request: dict) -> str:
    decisions = [d for d in access_request.get("decisions", []) if isinstance(d, dict)]
    comments = [d.get("comment") for d in decisions if d.get("outcome") == "deny"]
    return f": {_printable(comments[-1], 1000)}" if comments and comments[-1] else ""


def _outcome(access_request: dict) -> int | None:
    """The exit code the request's state means, or None while it is still worth waiting."""
    status = access_request["status"]
    if status == "denied":
        raise CliError(f"Request {access_request['id']} was denied{_denial(access_request)}", EXIT_DENIED)
    if status == "lapsed":
        raise CliError(f"Request {access_request['id']} lapsed: nobody decided in time.", EXIT_LAPSED)
    if status == "cancelled":
        raise CliError(f"Request {access_request['id']} was cancelled.", EXIT_CANCELLED)
    grant = access_request.get("grant")
    if status == "approved" and grant:
        if grant["active"]:
            return EXIT_OK
        if grant["status"] in ("expired", "revoked"):
            raise CliError(f"Grant {grant['id']} ended ({_grant_state(grant)}) before it was used.", EXIT_ENDED)
    return None


def _token_expires_in(api: Api) -> int | None:
    """Seconds until the token expires, from the server's clock (GET /api/v1/token/), or None when the
    portal cannot say (an older portal without that endpoint)."""
    try:
        return api.call("GET", "token/", expect=TOKEN)["expires_in_seconds"]
    except CliError as error:
        if error.status in (404, 405):
            return None
        raise


def _role_body(role: str) -> dict:
    return {"role_id": int(role)} if re.fullmatch(r"[0-9]{1,18}", role, re.ASCII) else {"role": role}


def cmd_request(api: Api, args: argparse.Namespace) -> int:
    body: dict = {**_role_body(args.role), "duration_seconds": args.duration, "justification": args.reason}
    if args.ticket:
        body["ticket"] = args.ticket
    token_expires_in = _token_expires_in(api) if args.wait else None
    return _follow(api, args, api.call("POST", "requests/", body, expect=REQUEST), token_expires_in)


def cmd_extend(api: Api, args: argparse.Namespace) -> int:
    body: dict = {"duration_seconds": args.duration, "justification": args.reason}
    if args.ticket:
        body["ticket"] = args.ticket
    token_expires_in = _token_expires_in(api) if args.wait else None
    return _follow(api, args, api.call("POST", f"grants/{args.id}/extend/", body, expect=REQUEST), token_expires_in)


def _follow(api: Api, args: argparse.Namespace, access_request: dict, token_expires_in: int | None) -> int:
    """After a request (or an extension) is made: report it, and with --wait wait for its grant to be
    active. ``--quiet`` prints the grant's id once the request is approved, else the request's id."""
    say(f"Requested: {_request_line(access_request)}")
    if not args.wait:
        grant = access_request["grant"] if access_request["status"] == "approved" else None
        if grant:
            say(f"Access granted: {_grant_line(grant, access_request['role'])}")
        emit(args, access_request, _request_line(access_request), grant["id"] if grant else access_request["id"])
        return EXIT_OK if access_request["status"] in ("pending", "approved") else EXIT_ERROR
    started = time.monotonic()
    deadline = started + args.timeout
    # Stop while the token can still cancel the request: after it expires nothing could.
    token_deadline = None if token_expires_in is None else started + token_expires_in - TOKEN_MARGIN_SECONDS
    stop_at = deadline if token_deadline is None else min(deadline, token_deadline)
    announced = set()
    while True:
        if _outcome(access_request) == EXIT_OK:
            grant = access_request["grant"]
            say(f"Access granted: {_grant_line(grant, access_request['role'])}")
            emit(args, access_request, _request_line(access_request), grant["id"])
            return EXIT_OK
        state = access_request["status"] if not access_request.get("grant") else "scheduled"
        if state not in announced:
            announced.add(state)
            say("Waiting for approval…" if state == "pending" else "Approved; waiting for the scheduled start…")
        if time.monotonic() >= stop_at:
            token_first = token_deadline is not None and token_deadline < deadline
            return _stop_waiting(api, args, access_request, token_expires=token_first)
        time.sleep(min(args.poll_interval, max(0.0, stop_at - time.monotonic())))
        try:
            access_request = api.call("GET", f"requests/{access_request['id']}/", expect=REQUEST, deadline=stop_at)
        except CliError as error:
            if error.exit_code == EXIT_UNAVAILABLE:
                say(f"{error} (retrying)")
                continue
            raise _still_pending(error, access_request) from error


def _still_pending(error: CliError, access_request: dict) -> CliError:
    """A failure while waiting: the request is left as it was, so say how to end it."""
    request_id = access_request["id"]
    if error.exit_code == EXIT_AUTH:
        advice = f"with a fresh token, run `accessgov cancel {request_id}` (or leave it to lapse)"
    else:
        advice = f"see `accessgov status {request_id}`; `accessgov cancel {request_id}` withdraws it"
    return CliError(
        f"{error}. Request {request_id} may still be pending: {advice}.", error.exit_code, status=error.status
    )


def _stop_waiting(api: Api, args: argparse.Namespace, access_request: dict, *, token_expires: bool) -> int:
    """--wait ends without access (its timeout, or the token about to expire): cancel the still-pending
    request unless --keep-pending, and exit EXIT_TIMEOUT."""
    request_id = access_request["id"]
    if token_expires:
        message = (
            f"Stopped waiting for request {request_id}: the API token expires in less than {TOKEN_MARGIN_SECONDS} s"
        )
    else:
        message = f"Timed out after {args.timeout} s waiting for request {request_id}"
    if access_request["status"] == "pending" and not args.keep_pending:
        try:
            api.call("POST", f"requests/{request_id}/cancel/", {}, expect=REQUEST)
            message += "; the request was cancelled"
        except CliError as error:
            message += f"; cancelling it failed ({error})"
    elif access_request["status"] == "pending":
        message += f"; request {request_id} is still pending (--keep-pending)"
    if token_expires:
        message += "; get a fresh token and ask again"
    raise CliError(message + ".", EXIT_TIMEOUT)


def cmd_cancel(api: Api, args: argparse.Namespace) -> int:
    access_request = api.call("POST", f"requests/{args.id}/cancel/", {}, expect=REQUEST)
    say(f"Cancelled: request {access_request['id']}")
    emit(args, access_request, _request_line(access_request), access_request["id"])
    return EXIT_OK


def cmd_status(api: Api, args: argparse.Namespace) -> int:
    if args.id is not None:
        access_request = api.call("GET", f"requests/{args.id}/", expect=REQUEST)
        emit(args, access_request, _request_line(access_request), access_request["id"])
        return EXIT_OK
    page = api.call("GET", "requests/?page_size=20", expect=REQUESTS_PAGE)
    lines = [_request_line(r) for r in page["results"]] or ["no requests"]
    emit(args, page["results"], "\n".join(lines))
    return EXIT_OK


def cmd_grants(api: Api, args: argparse.Namespace) -> int:
    page = api.call("GET", "grants/?page_size=50" + ("" if args.all else "&active=true"), expect=GRANTS_PAGE)
    lines = [_grant_line(g) for g in page["results"]] or ["no active access" if not args.all else "no grants"]
    emit(args, page["results"], "\n".join(lines))
    return EXIT_OK


def cmd_release(api: Api, args: argparse.Namespace) -> int:
    grant = api.call("POST", f"grants/{args.id}/release/", {}, expect=GRANT)
    say(f"Released: grant {grant['id']}")
    emit(args, grant, _grant_line(grant), grant["id"])
    return EXIT_OK


# --- Keyless sign-in for CI jobs ------------------------------------------------------------------


def _identity_token(audience: str, token_file: str | None) -> str:
    """The CI job's OIDC identity token: a file (--token-file), ACCESSGOV_OIDC_TOKEN (GitLab's
    ``id_tokens:``), or GitHub Actions' token service (``permissions: id-token: write``)."""
    if token_file:
        try:
            return Path(token_file).read_text().strip()
        except OSError as exc:
            raise CliError(f"Cannot read {token_file}: {exc}", EXIT_USAGE) from exc
    if os.environ.get("ACCESSGOV_OIDC_TOKEN"):
        return os.environ["ACCESSGOV_OIDC_TOKEN"].strip()
    request_url = os.environ.get("ACTIONS_ID_TOKEN_REQUEST_URL")
    request_token = os.environ.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
    if not request_url or not request_token:
        raise CliError(
            "No identity token: run in GitHub Actions with `permissions: id-token: write`, or set "
            "ACCESSGOV_OIDC_TOKEN (GitLab: id_tokens), or pass --token-file.",
            EXIT_USAGE,
        )
    separator = "&" if "?" in request_url else "?"
    url = f"{request_url}{separator}{urllib.parse.urlencode({'audience': audience})}"
    request = urllib.request.Request(url)  # noqa: S310 (the CI's own token service)
    request.add_header("Authorization", f"bearer {request_token}")
    request.add_header("Accept", "application/json")
    try:
        with OPENER.open(request, timeout=30) as response:
            value = json.loads(response.read()).get("value")
    except (
        urllib.error.URLError,
        TimeoutError,
        ConnectionError,
        http.client.HTTPException,
        ValueError,
        RecursionError,
        AttributeError,
    ) as exc:
        raise CliError(f"The CI's token service did not give an identity token: {exc}", EXIT_UNAVAILABLE) from exc
    if not isinstance(value, str) or not value:
        raise CliError("The CI's token service answered without a token.", EXIT_UNAVAILABLE)
    return value


def cmd_login(base_url: str, args: argparse.Namespace) -> int:
    if not args.oidc:
        raise CliError("Only `accessgov login --oidc` exists: people make API tokens in the portal.", EXIT_USAGE)
    identity = _identity_token(args.audience or base_url, args.token_file)
    api = Api(base_url, identity)
    try:
        answer = api.call("POST", "oidc/token/", {}, expect=OIDC_TOKEN)
    except CliError as error:
        if error.status is not None and 400 <= error.status < 500 and error.status != 429:
            # Any refusal of the identity token (untrusted, replayed, a policy that cannot issue) is
            # an authentication failure, as docs/API.md says: 8.
            raise CliError(f"AccessGov refused the identity token: {error}", EXIT_AUTH, status=error.status) from error
        raise
    token = answer["token"]
    if os.environ.get("GITHUB_ACTIONS") == "true":
        print(f"::add-mask::{token}", flush=True)  # the token never shows in the job's log
    if args.print_token:
        print(token)
    else:
        path = config_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as config:
            config.write(f"url = {json.dumps(base_url)}\ntoken = {json.dumps(token)}\n")
        say(f"Saved a token to {path}")
    roles = ", ".join(_printable(role) for role in answer.get("roles", []))
    say(
        f"Signed in as {_printable(answer['service_account'])} (trust policy {_printable(answer['trust_policy'])}) "
        f"until {_printable(answer['expires_at'])}; roles: {roles}"
    )
    return EXIT_OK


def _output_options(parser: argparse.ArgumentParser, default) -> None:
    """--json and --quiet, accepted before the command and after it (``accessgov status --json``)."""
    parser.add_argument("--json", action="store_true", default=default, help="print the API's JSON")
    parser.add_argument(
        "-q", "--quiet", action="store_true", default=default, help="print only the id (the grant's once approved)"
    )


def _wait_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--for", dest="duration", type=parse_duration, required=True, help="e.g. 1h, 30m")
    parser.add_argument("--reason", required=True, help="why (at least 10 characters)")
    parser.add_argument("--ticket", default="", help="ticket reference, when the role needs one")
    parser.add_argument("--wait", action="store_true", help="wait until the grant is active (exit 0)")
    parser.add_argument("--timeout", type=parse_duration, default=600, help="how long --wait waits (default 10m)")
    parser.add_argument("--poll-interval", type=float, default=3.0, help=argparse.SUPPRESS)
    parser.add_argument(
        "--keep-pending", action="store_true", help="on timeout, leave the request pending instead of cancelling it"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="accessgov",
        description="Request, wait for, inspect, extend and release temporary production access.",
        epilog="Exit codes: 0 ok, 1 unexpected answer (a redirect, not JSON, not the expected shape), "
        "2 usage/configuration, 3 denied, 4 lapsed, 5 cancelled, 6 timed out (or the token about to expire), "
        "7 refused by the API, 8 authentication failed, 9 server unavailable, 10 grant ended before use.",
    )
    parser.add_argument("--version", action="version", version=f"accessgov {__version__}")
    parser.add_argument("--url", help="the portal's address (default: ACCESSGOV_URL or the config file)")
    _output_options(parser, default=False)
    # After the command too; SUPPRESS: an option not given there keeps what was given before the command.
    output = argparse.ArgumentParser(add_help=False)
    _output_options(output, default=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True)

    request = commands.add_parser("request", parents=[output], help="request access to a role")
    request.add_argument("role", metavar="ROLE", help='role id, or "system-slug/role-name"')
    _wait_options(request)
    request.set_defaults(handler=cmd_request)

    extend = commands.add_parser("extend", parents=[output], help="ask for more time on my active grant")
    extend.add_argument("id", type=int, metavar="GRANT_ID", help="grant id")
    _wait_options(extend)
    extend.set_defaults(handler=cmd_extend)

    status = commands.add_parser("status", parents=[output], help="one request, or my recent requests")
    status.add_argument("id", nargs="?", type=int, metavar="ID")
    status.set_defaults(handler=cmd_status)

    grants = commands.add_parser("grants", parents=[output], help="my active access (--all: every grant)")
    grants.add_argument("--all", action="store_true")
    grants.set_defaults(handler=cmd_grants)

    release = commands.add_parser("release", parents=[output], help="give a grant back early")
    release.add_argument("id", type=int, metavar="ID", help="grant id")
    release.set_defaults(handler=cmd_release)

    cancel = commands.add_parser("cancel", parents=[output], help="withdraw my pending request")
    cancel.add_argument("id", type=int, metavar="ID", help="request id")
    cancel.set_defaults(handler=cmd_cancel)

    login = commands.add_parser("login", help="CI: trade the job's OIDC identity token for a short-lived token")
    login.add_argument("--oidc", action="store_true", required=True, help="use the CI's OIDC identity token")
    login.add_argument("--audience", help="the audience to ask the CI for (default: the portal's URL)")
    login.add_argument("--token-file", help="read the identity token from this file")
    login.add_argument(
        "--print", dest="print_token", action="store_true", help="print the token instead of saving it to the config"
    )
    login.set_defaults(handler=cmd_login, login=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.json and args.quiet:
        parser.error("--json and --quiet cannot be used together")
    try:
        if getattr(args, "login", False):
            url, _ = load_config(args.url, need_token=False)
            return args.handler(url, args)
        url, token = load_config(args.url)
        return args.handler(Api(url, token), args)
    except CliError as error:
        say(f"accessgov: {error}")
        return error.exit_code
    except KeyboardInterrupt:
        say("accessgov: interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
