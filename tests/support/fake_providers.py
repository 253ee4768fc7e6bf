"""A local HTTP server (loopback, a thread of the test) that implements the provider endpoints AccessGov
calls, with the documented paths and payloads: PagerDuty REST v2 (users, on-calls, incidents), Jira REST
v2 (issue), GitHub REST (GET /repos/{owner}/{repo}/issues/{number}), Slack Web API (chat.postMessage, chat.update, chat.postEphemeral, views.open) and an OIDC
issuer (discovery, JWKS) plus GitHub Actions' ID-token request endpoint. Tests set ``state`` and read
``calls``; our client code is never patched."""

import base64
import datetime
import ipaddress
import json
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from jwt.algorithms import RSAAlgorithm

PD_KEY = "pd-test-key"
JIRA_USER, JIRA_TOKEN = "bot@example.com", "jira-test-token"
SLACK_BOT_TOKEN = "xoxb-test-token"
ACTIONS_REQUEST_TOKEN = "actions-request-token"
GITHUB_TOKEN = "github_pat_test-token"
GITHUB_NOT_FOUND = {
    "message": "Not Found",
    "documentation_url": "https://docs.github.com/rest/issues/issues#get-an-issue",
    "status": "404",
}


@dataclass
class State:
    pd_users: list = field(default_factory=list)
    pd_oncalls: list = field(default_factory=list)
    pd_incidents: dict = field(default_factory=dict)
    pd_fail: int = 0  # answer this HTTP status to every PagerDuty call (0: answer normally)
    jira_issues: dict = field(default_factory=dict)
    jira_fail: int = 0
    # "owner/repo#number" → {"title", "state", "state_reason", "labels", "assignees", "pull_request"}
    github_issues: dict = field(default_factory=dict)
    github_fail: int = 0
    slack_fail: bool = False
    jwks: list = field(default_factory=list)
    actions_token: str = ""
    calls: list = field(default_factory=list)


class Signer:
    """An RSA key of the test's OIDC issuer: its JWK and RS256 tokens signed with it."""

    def __init__(self, kid: str) -> None:
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwk(self) -> dict:
        data = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        return {**data, "kid": self.kid, "use": "sig", "alg": "RS256"}

    def token(self, claims: dict) -> str:
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})

    def token_of_any_claims(self, claims: dict) -> str:
        """Signed claims that PyJWT's encoder would refuse to make (e.g. an issuer that is not a string)."""
        return jwt.PyJWS().encode(json.dumps(claims).encode(), self.key, algorithm="RS256", headers={"kid": self.kid})


class _Handler(BaseHTTPRequestHandler):
    server: "FakeProviders._Server"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _json(self, status: int, body) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _body(self) -> dict:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if "json" in (self.headers.get("Content-Type") or ""):
            return json.loads(raw or b"{}")
        return {k: v[0] for k, v in parse_qs(raw.decode()).items()}

    def do_GET(self) -> None:
        self._route("GET", {})

    def do_POST(self) -> None:
        self._route("POST", self._body())

    def _route(self, method: str, body: dict) -> None:
        state: State = self.server.state
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        path = parts.path
        state.calls.append((method, path, query, body, dict(self.headers)))
        if path.startswith("/pd/"):
            return self._pagerduty(state, path.removeprefix("/pd"), query)
        if path.startswith("/jira/"):
            return self._jira(state, path.removeprefix("/jira"))
        if path.startswith("/github/"):
            return self._github(state, method, path.removeprefix("/github"))
        if path.startswith("/slack/api/"):
            return self._slack(state, path.removeprefix("/slack/api/"), body)
        if path.startswith("/oidc"):
            return self._oidc(state, path.removeprefix("/oidc"), query)
        self._json(404, {"error": "no such endpoint"})

    # PagerDuty REST API v2: "Authorization: Token token=<key>", classic pagination.
    def _pagerduty(self, state: State, path: str, query: dict) -> None:
        if self.headers.get("Authorization") != f"Token token={PD_KEY}":
            return self._json(401, {"error": {"message": "Unauthorized", "code": 2006}})
        if state.pd_fail:
            return self._json(state.pd_fail, {"error": {"message": "Service unavailable", "code": 2001}})
        limit, offset = int(query.get("limit", ["25"])[0]), int(query.get("offset", ["0"])[0])

        def page(name: str, items: list) -> None:
            chunk = items[offset : offset + limit]
            self._json(200, {name: chunk, "limit": limit, "offset": offset, "more": offset + limit < len(items)})

        if path == "/users":
            q = query.get("query", [""])[0].lower()
            return page("users", [u for u in state.pd_users if q in u["email"].lower()])
        if path == "/oncalls":
            users = set(query.get("user_ids[]", []))
            policies = set(query.get("escalation_policy_ids[]", []))
            return page(
                "oncalls",
                [
                    o
                    for o in state.pd_oncalls
                    if (not users or o["user"]["id"] in users)
                    and (not policies or o["escalation_policy"]["id"] in policies)
                ],
            )
        if path == "/incidents":
            statuses = set(query.get("statuses[]", []))
            services = set(query.get("service_ids[]", []))
            return page(
                "incidents",
                [
                    i
                    for i in state.pd_incidents.values()
                    if (not statuses or i["status"] in statuses) and (not services or i["service"]["id"] in services)
                ],
            )
        if path.startswith("/incidents/"):
            incident = state.pd_incidents.get(path.removeprefix("/incidents/"))
            if incident is None:
                return self._json(404, {"error": {"message": "Not Found", "code": 2100}})
            return self._json(200, {"incident": incident})
        return self._json(404, {"error": {"message": "Not Found"}})

    # Jira REST API v2: basic auth with the API user's email and token.
    def _jira(self, state: State, path: str) -> None:
        expected = "Basic " + base64.b64encode(f"{JIRA_USER}:{JIRA_TOKEN}".encode()).decode()
        if self.headers.get("Authorization") != expected:
            return self._json(401, {"errorMessages": ["You are not authenticated."]})
        if state.jira_fail:
            return self._json(state.jira_fail, {"errorMessages": ["Unavailable"]})
        if path.startswith("/rest/api/2/issue/"):
            key = path.removeprefix("/rest/api/2/issue/")
            issue = state.jira_issues.get(key)
            if issue is None:
                return self._json(
                    404, {"errorMessages": ["Issue does not exist or you do not have permission to see it."]}
                )
            category = "done" if issue["status"] in ("Done", "Closed") else "indeterminate"
            return self._json(
                200,
                {
                    "key": key,
                    "fields": {
                        "summary": issue["summary"],
                        "status": {"name": issue["status"], "statusCategory": {"key": category}},
                        "assignee": {"emailAddress": issue.get("assignee", "")} if issue.get("assignee") else None,
                        "project": {"key": key.split("-")[0]},
                        "issuetype": {"name": issue.get("type", "Task")},
                    },
                },
            )
        return self._json(404, {"errorMessages": ["Not found"]})

    # GitHub REST API (2022-11-28): "Authorization: Bearer <token>"; owner and repository names are
    # case-insensitive; an issue the token cannot see, or of an unknown repository, is 404 Not Found.
    def _github(self, state: State, method: str, path: str) -> None:
        if self.headers.get("Authorization") != f"Bearer {GITHUB_TOKEN}":
            return self._json(401, {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"})
        if state.github_fail:
            return self._json(state.github_fail, {"message": "Service unavailable"})
        parts = path.strip("/").split("/")
        if method != "GET" or len(parts) != 5 or parts[0] != "repos" or parts[3] != "issues" or not parts[4].isdigit():
            return self._json(404, GITHUB_NOT_FOUND)
        owner, repo, number = parts[1], parts[2], int(parts[4])
        found = {key.lower(): (key, issue) for key, issue in state.github_issues.items()}.get(
            f"{owner}/{repo}#{number}".lower()
        )
        if found is None:
            return self._json(404, GITHUB_NOT_FOUND)
        key, issue = found
        full_name = key.split("#")[0]
        api = self.server.base_url + "/github"
        body = {
            "id": 1000 + number,
            "node_id": f"I_kwDO{number}",
            "url": f"{api}/repos/{full_name}/issues/{number}",
            "repository_url": f"{api}/repos/{full_name}",
            "html_url": f"https://github.com/{full_name}/issues/{number}",
            "number": number,
            "state": issue.get("state", "open"),
            "state_reason": issue.get("state_reason"),
            "title": issue["title"],
            "body": "",
            "user": {"login": "reporter", "id": 1, "type": "User"},
            "labels": [
                {"id": i, "name": name, "color": "ededed", "default": False}
                for i, name in enumerate(issue.get("labels", []))
            ],
            "assignee": {"login": issue["assignees"][0], "id": 2} if issue.get("assignees") else None,
            "assignees": [{"login": login, "id": 2 + i} for i, login in enumerate(issue.get("assignees", []))],
            "locked": False,
            "comments": 0,
            "created_at": "2026-06-01T09:00:00Z",
            "updated_at": "2026-06-01T09:30:00Z",
            "closed_at": "2026-06-01T10:00:00Z" if issue.get("state") == "closed" else None,
        }
        if issue.get("pull_request"):
            body["pull_request"] = {"url": f"{api}/repos/{full_name}/pulls/{number}"}
        return self._json(200, body)

    # Slack Web API: "Authorization: Bearer xoxb-…"; answers {"ok": …}.
    def _slack(self, state: State, method: str, body: dict) -> None:
        if self.headers.get("Authorization") != f"Bearer {SLACK_BOT_TOKEN}":
            return self._json(200, {"ok": False, "error": "invalid_auth"})
        if state.slack_fail:
            return self._json(503, {"ok": False, "error": "service_unavailable"})
        if method == "chat.postMessage":
            return self._json(200, {"ok": True, "channel": body["channel"], "ts": f"{time.time():.6f}"})
        if method in ("chat.update", "chat.postEphemeral"):
            return self._json(200, {"ok": True, "channel": body.get("channel"), "ts": body.get("ts", "1")})
        if method == "views.open":
            return self._json(200, {"ok": True, "view": {"id": "V1", **body.get("view", {})}})
        return self._json(200, {"ok": False, "error": "unknown_method"})

    # An OIDC issuer at <base>/oidc, and GitHub Actions' ID-token request URL.
    def _oidc(self, state: State, path: str, query: dict) -> None:
        issuer = self.server.base_url + "/oidc"
        if path == "/.well-known/openid-configuration":
            return self._json(
                200,
                {"issuer": issuer, "jwks_uri": issuer + "/jwks", "id_token_signing_alg_values_supported": ["RS256"]},
            )
        if path == "/jwks":
            return self._json(200, {"keys": state.jwks})
        if path == "/actions-token":
            if self.headers.get("Authorization") != f"bearer {ACTIONS_REQUEST_TOKEN}":
                return self._json(401, {"message": "bad request token"})
            return self._json(200, {"value": state.actions_token, "count": len(query.get("audience", []))})
        return self._json(404, {})


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A throw-away certificate for 127.0.0.1 (made per test run, never stored in the repository)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake providers")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=3650))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class FakeProviders:
    """Start with ``with FakeProviders() as fake:``; ``fake.url`` is https://127.0.0.1:<port>, served with a
    certificate made for the run (``fake.ca_file`` trusts it, as INTEGRATIONS_CA_FILE would a private CA)."""

    class _Server(ThreadingHTTPServer):
        daemon_threads = True
        state: State
        base_url: str

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory()
        cert, key = _self_signed(Path(self._tmp.name))
        self.ca_file = str(cert)
        self.server = self._Server(("127.0.0.1", 0), _Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.server.state = State()
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        self.server.base_url = self.url
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def state(self) -> State:
        return self.server.state

    def calls_to(self, prefix: str) -> list:
        return [c for c in self.state.calls if c[1].startswith(prefix)]

    def __enter__(self) -> "FakeProviders":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._tmp.cleanup()
