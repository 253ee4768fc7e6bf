"""``accessgov``: ask for production access from a terminal or a CI job, wait for it, release it.

Standard library only (no Django), so it runs anywhere Python 3.11 runs. Configuration, first found
wins: ``--url``; the environment (``ACCESSGOV_URL``, ``ACCESSGOV_TOKEN``); the config file
(``ACCESSGOV_CONFIG``, default ``~/.config/accessgov/config.toml``) with ``url = "…"`` and
``token = "…"``. It never prompts. Progress goes to stderr; the result to stdout (``--json`` for
the API's JSON, ``--quiet`` for just the id). Exit codes are the EXIT_* constants below.
"""

import argparse
import json
import os
import re
import sys
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

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


class CliError(Exception):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


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


class Api:
    """A tiny JSON client for /api/v1/ with the token in the Authorization header."""

    def __init__(self, base_url: str, token: str, timeout: float = 30.0) -> None:
        self.base_url = base_url
        self.token = token
        self.timeout = timeout

    def call(self, method: str, path: str, body: dict | None = None) -> dict | list:
        url = f"{self.base_url}/api/v1/{path.lstrip('/')}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 (the configured portal URL)
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Accept", "application/json")
        request.add_header("User-Agent", f"accessgov-cli/{__version__}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raise _http_error(exc) from exc
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CliError(f"Cannot reach {self.base_url}: {reason}", EXIT_UNAVAILABLE) from exc
        except json.JSONDecodeError as exc:
            raise CliError(f"{url} did not answer JSON (is ACCESSGOV_URL the portal?)", EXIT_ERROR) from exc


def _http_error(exc: urllib.error.HTTPError) -> CliError:
    try:
        error = json.loads(exc.read() or b"{}").get("error", {})
    except (json.JSONDecodeError, AttributeError):
        error = {}
    message = error.get("message") or f"HTTP {exc.code}"
    code = error.get("code", "")
    if exc.code == 401:
        return CliError(f"Authentication failed: {message}", EXIT_AUTH)
    if exc.code == 429 or exc.code >= 500:
        return CliError(f"The server is unavailable (HTTP {exc.code}): {message}", EXIT_UNAVAILABLE)
    if exc.code in (400, 403, 404, 409):
        return CliError(f"Refused ({code or exc.code}): {message}", EXIT_REFUSED)
    return CliError(f"Unexpected answer HTTP {exc.code}: {message}", EXIT_ERROR)


# --- Output --------------------------------------------------------------------------------------


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _grant_line(grant: dict) -> str:
    role = grant.get("role", {}).get("path", "")
    state = "active" if grant.get("active") else grant.get("status")
    return f"grant {grant['id']} {role} {state} until {grant.get('expires_at')}".replace("  ", " ")


def _request_line(access_request: dict) -> str:
    line = f"request {access_request['id']} {access_request['role']['path']} {access_request['status']}"
    grant = access_request.get("grant")
    if grant:
        line += f"; grant {grant['id']} {'active' if grant['active'] else grant['status']} until {grant['expires_at']}"
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
    comments = [d["comment"] for d in access_request.get("decisions", []) if d.get("outcome") == "deny"]
    return f": {comments[-1]}" if comments and comments[-1] else ""


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
            raise CliError(f"Grant {grant['id']} ended ({grant['status']}) before it was used.", EXIT_ENDED)
    return None


def cmd_request(api: Api, args: argparse.Namespace) -> int:
    body: dict = {"duration_seconds": args.duration, "justification": args.reason}
    if re.fullmatch(r"[0-9]{1,18}", args.role, re.ASCII):
        body["role_id"] = int(args.role)
    else:
        body["role"] = args.role
    if args.ticket:
        body["ticket"] = args.ticket
    access_request = api.call("POST", "requests/", body)
    say(f"Requested: {_request_line(access_request)}")
    if not args.wait:
        emit(args, access_request, _request_line(access_request), access_request["id"])
        return EXIT_OK if access_request["status"] in ("pending", "approved") else EXIT_ERROR
    deadline = time.monotonic() + args.timeout
    announced = set()
    while True:
        if _outcome(access_request) == EXIT_OK:
            grant = access_request["grant"]
            say(f"Access granted: {_grant_line({**grant, 'role': access_request['role']})}")
            emit(args, access_request, _request_line(access_request), grant["id"])
            return EXIT_OK
        state = access_request["status"] if not access_request.get("grant") else "scheduled"
        if state not in announced:
            announced.add(state)
            say("Waiting for approval…" if state == "pending" else "Approved; waiting for the scheduled start…")
        if time.monotonic() >= deadline:
            return _timed_out(api, args, access_request)
        time.sleep(min(args.poll_interval, max(0.0, deadline - time.monotonic())))
        try:
            access_request = api.call("GET", f"requests/{access_request['id']}/")
        except CliError as error:
            if error.exit_code != EXIT_UNAVAILABLE:
                raise
            say(f"{error} (retrying)")


def _timed_out(api: Api, args: argparse.Namespace, access_request: dict) -> int:
    message = f"Timed out after {args.timeout} s waiting for request {access_request['id']}"
    if access_request["status"] == "pending" and not args.keep_pending:
        try:
            api.call("POST", f"requests/{access_request['id']}/cancel/", {})
            message += "; the request was cancelled"
        except CliError as error:
            message += f"; cancelling it failed ({error})"
    raise CliError(message + ".", EXIT_TIMEOUT)


def cmd_status(api: Api, args: argparse.Namespace) -> int:
    if args.id is not None:
        access_request = api.call("GET", f"requests/{args.id}/")
        emit(args, access_request, _request_line(access_request), access_request["id"])
        return EXIT_OK
    page = api.call("GET", "requests/?page_size=20")
    lines = [_request_line(r) for r in page["results"]] or ["no requests"]
    emit(args, page["results"], "\n".join(lines))
    return EXIT_OK


def cmd_grants(api: Api, args: argparse.Namespace) -> int:
    page = api.call("GET", "grants/?page_size=50" + ("" if args.all else "&active=true"))
    lines = [_grant_line(g) for g in page["results"]] or ["no active access" if not args.all else "no grants"]
    emit(args, page["results"], "\n".join(lines))
    return EXIT_OK


def cmd_release(api: Api, args: argparse.Namespace) -> int:
    grant = api.call("POST", f"grants/{args.id}/release/", {})
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
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            value = json.loads(response.read()).get("value")
    except (urllib.error.URLError, TimeoutError, ConnectionError, json.JSONDecodeError, AttributeError) as exc:
        raise CliError(f"The CI's token service did not give an identity token: {exc}", EXIT_UNAVAILABLE) from exc
    if not isinstance(value, str) or not value:
        raise CliError("The CI's token service answered without a token.", EXIT_UNAVAILABLE)
    return value


def cmd_login(base_url: str, args: argparse.Namespace) -> int:
    if not args.oidc:
        raise CliError("Only `accessgov login --oidc` exists: people make API tokens in the portal.", EXIT_USAGE)
    identity = _identity_token(args.audience or base_url, args.token_file)
    api = Api(base_url, identity)
    answer = api.call("POST", "oidc/token/", {})
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
    roles = ", ".join(answer.get("roles", []))
    say(
        f"Signed in as {answer['service_account']} (trust policy {answer['trust_policy']}) until "
        f"{answer['expires_at']}; roles: {roles}"
    )
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="accessgov",
        description="Request, wait for, inspect and release temporary production access.",
        epilog="Exit codes: 0 ok, 1 unexpected answer, 2 usage/configuration, 3 denied, 4 lapsed, "
        "5 cancelled, 6 timed out, 7 refused by the API, 8 authentication failed, 9 server unavailable, "
        "10 grant ended before use.",
    )
    parser.add_argument("--version", action="version", version=f"accessgov {__version__}")
    parser.add_argument("--url", help="the portal's address (default: ACCESSGOV_URL or the config file)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the API's JSON")
    output.add_argument("-q", "--quiet", action="store_true", help="print only the id (grant id once active)")
    commands = parser.add_subparsers(dest="command", required=True)

    request = commands.add_parser("request", help="request access to a role")
    request.add_argument("role", metavar="ROLE", help='role id, or "system-slug/role-name"')
    request.add_argument("--for", dest="duration", type=parse_duration, required=True, help="e.g. 1h, 30m")
    request.add_argument("--reason", required=True, help="why (at least 10 characters)")
    request.add_argument("--ticket", default="", help="ticket reference, when the role needs one")
    request.add_argument("--wait", action="store_true", help="wait until the grant is active (exit 0)")
    request.add_argument("--timeout", type=parse_duration, default=600, help="how long --wait waits (default 10m)")
    request.add_argument("--poll-interval", type=float, default=3.0, help=argparse.SUPPRESS)
    request.add_argument(
        "--keep-pending", action="store_true", help="on timeout, leave the request pending instead of cancelling it"
    )
    request.set_defaults(handler=cmd_request)

    status = commands.add_parser("status", help="one request, or my recent requests")
    status.add_argument("id", nargs="?", type=int, metavar="ID")
    status.set_defaults(handler=cmd_status)

    grants = commands.add_parser("grants", help="my active access (--all: every grant)")
    grants.add_argument("--all", action="store_true")
    grants.set_defaults(handler=cmd_grants)

    release = commands.add_parser("release", help="give a grant back early")
    release.add_argument("id", type=int, metavar="ID", help="grant id")
    release.set_defaults(handler=cmd_release)

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
    args = build_parser().parse_args(argv)
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
