"""A small, standards-shaped OpenID Connect provider for the tests, run as its own process on loopback
with its own SQLite database (people, authorization codes).

    python -m tests.support.oidc_provider --client-id portal --client-secret S --data DIR

prints one JSON line ``{"issuer": "http://127.0.0.1:<port>"}`` when it listens, then serves:

- ``/.well-known/openid-configuration`` (discovery) and ``/jwks`` (its RSA key, made at start);
- ``/authorize``: the code flow — GET shows a sign-in form (username, password), POST checks them and
  sends the browser back to ``redirect_uri`` with a single-use code; PKCE (S256) is required;
- ``/token``: client authentication (Basic or form), the code (once, within 60 s, same redirect_uri,
  the PKCE verifier), and an RS256-signed ID token with ``iss``, ``sub``, ``aud``, ``exp``, ``iat``,
  ``nonce``, profile claims and the person's ``amr``/``acr``;
- ``/_control/users`` (POST JSON: add a person) and ``/_control/next`` (POST JSON ``{"mode": …}``: how
  to spoil the next ID token, for the refusal tests — ``tamper``, ``wrong_nonce``, ``wrong_audience``,
  ``unknown_key``, ``wrong_issuer``, ``expired``, ``alg_none``, ``hs256``, ``extra_audience``).

Test code only: keys are made here at start and never leave the process except as the public JWKS.
"""

import argparse
import base64
import contextlib
import hashlib
import html
import json
import secrets
import sqlite3
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

CODE_LIFETIME = 60


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Provider:
    def __init__(self, data_dir: Path, client_id: str, client_secret: str) -> None:
        self.db_path = data_dir / "provider.sqlite3"
        self.client_id, self.client_secret = client_id, client_secret
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = secrets.token_hex(8)
        self.stranger_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.lock = threading.Lock()
        self.next_mode = "normal"
        self.issuer = ""
        with self.db() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS people (username TEXT PRIMARY KEY, password TEXT, sub TEXT, "
                "email TEXT, given_name TEXT, family_name TEXT, amr TEXT, acr TEXT)"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS codes (code TEXT PRIMARY KEY, client_id TEXT, redirect_uri TEXT, "
                "nonce TEXT, challenge TEXT, username TEXT, created REAL, used INTEGER DEFAULT 0)"
            )

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.db_path, isolation_level=None, timeout=10)

    def jwks(self) -> dict:
        public = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**public, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def discovery(self) -> dict:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "userinfo_endpoint": f"{self.issuer}/userinfo",
            "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": ["openid", "email", "profile"],
        }

    def take_mode(self) -> str:
        with self.lock:
            mode, self.next_mode = self.next_mode, "normal"
        return mode

    def id_token(self, person: dict, nonce: str) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": person["sub"],
            "aud": self.client_id,
            "exp": now + 300,
            "iat": now,
            "auth_time": now,
            "nonce": nonce,
            "email": person["email"],
            "email_verified": True,
            "preferred_username": person["username"],
            "given_name": person["given_name"],
            "family_name": person["family_name"],
        }
        if person["amr"]:
            claims["amr"] = json.loads(person["amr"])
        if person["acr"]:
            claims["acr"] = person["acr"]
        key, headers = self.key, {"kid": self.kid}
        mode = self.take_mode()
        if mode == "wrong_nonce":
            claims["nonce"] = "not-the-nonce-" + secrets.token_hex(4)
        elif mode == "wrong_audience":
            claims["aud"] = "another-client"
        elif mode == "extra_audience":
            claims["aud"] = [self.client_id, "another-client"]
        elif mode == "wrong_issuer":
            claims["iss"] = "https://issuer.invalid"
        elif mode == "expired":
            claims["exp"], claims["iat"] = now - 3600, now - 7200
        elif mode == "unknown_key":
            key, headers = self.stranger_key, {"kid": secrets.token_hex(8)}
        elif mode == "alg_none":
            return jwt.encode(claims, None, algorithm="none")
        elif mode == "hs256":
            return jwt.encode(claims, self.client_secret, algorithm="HS256", headers={"kid": self.kid})
        token = jwt.encode(claims, key, algorithm="RS256", headers=headers)
        if mode == "tamper":
            header, payload, signature = token.split(".")
            forged = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            forged["sub"] = "someone-else"
            token = ".".join([header, _b64url(json.dumps(forged).encode()), signature])
        return token


class Handler(BaseHTTPRequestHandler):
    provider: Provider

    def log_message(self, format, *args):  # quiet: tests read their own output
        return

    def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, body: dict) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")

    def _form(self) -> dict[str, str]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode()
        if self.headers.get("Content-Type", "").startswith("application/json"):
            return json.loads(raw or "{}")
        return {k: v[0] for k, v in parse_qs(raw).items()}

    def do_GET(self):
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if parts.path == "/.well-known/openid-configuration":
            return self._json(200, self.provider.discovery())
        if parts.path == "/jwks":
            return self._json(200, self.provider.jwks())
        if parts.path == "/authorize":
            problem = self._authorize_problem(query)
            if problem:
                return self._send(400, problem.encode(), "text/plain")
            hidden = "".join(
                f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">' for k, v in query.items()
            )
            page = (
                "<!doctype html><html><head><title>Test IdP sign-in</title></head><body>"
                "<h1>Test identity provider</h1>"
                f'<form method="post" action="/authorize">{hidden}'
                '<label>Username <input name="username" autocomplete="username"></label>'
                '<label>Password <input name="password" type="password"></label>'
                '<button type="submit">Sign in to the IdP</button></form></body></html>'
            )
            return self._send(200, page.encode(), "text/html; charset=utf-8")
        return self._send(404, b"not found", "text/plain")

    def _authorize_problem(self, query: dict) -> str:
        if query.get("client_id") != self.provider.client_id:
            return "unknown client"
        if query.get("response_type") != "code":
            return "only the code flow"
        if not query.get("redirect_uri") or not query.get("state") or not query.get("nonce"):
            return "redirect_uri, state and nonce are required"
        if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            return "PKCE with S256 is required"
        if "openid" not in query.get("scope", "").split():
            return "scope must include openid"
        return ""

    def do_POST(self):
        parts = urlsplit(self.path)
        form = self._form()
        if parts.path == "/_control/users":
            with self.provider.db() as db:
                db.execute(
                    "INSERT OR REPLACE INTO people VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        form["username"],
                        form["password"],
                        form["sub"],
                        form.get("email", ""),
                        form.get("given_name", ""),
                        form.get("family_name", ""),
                        json.dumps(form["amr"]) if form.get("amr") else "",
                        form.get("acr", ""),
                    ),
                )
            return self._json(200, {"ok": True})
        if parts.path == "/_control/next":
            with self.provider.lock:
                self.provider.next_mode = form["mode"]
            return self._json(200, {"ok": True})
        if parts.path == "/authorize":
            return self._authorize_post(form)
        if parts.path == "/token":
            return self._token(form)
        return self._send(404, b"not found", "text/plain")

    def _authorize_post(self, form: dict) -> None:
        problem = self._authorize_problem(form)
        if problem:
            return self._send(400, problem.encode(), "text/plain")
        with self.provider.db() as db:
            row = db.execute("SELECT password FROM people WHERE username = ?", (form.get("username", ""),)).fetchone()
            if row is None or not secrets.compare_digest(row[0], form.get("password", "")):
                return self._send(401, b"wrong username or password", "text/plain")
            code = secrets.token_urlsafe(24)
            db.execute(
                "INSERT INTO codes (code, client_id, redirect_uri, nonce, challenge, username, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    code,
                    form["client_id"],
                    form["redirect_uri"],
                    form["nonce"],
                    form["code_challenge"],
                    form["username"],
                    time.time(),
                ),
            )
        target = form["redirect_uri"] + ("&" if "?" in form["redirect_uri"] else "?")
        return self._send(
            302, b"", "text/plain", {"Location": target + urlencode({"code": code, "state": form["state"]})}
        )

    def _client_authenticated(self, form: dict) -> bool:
        header = self.headers.get("Authorization", "")
        if header.startswith("Basic "):
            client_id, _, secret = base64.b64decode(header[6:]).decode().partition(":")
        else:
            client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        return client_id == self.provider.client_id and secrets.compare_digest(secret, self.provider.client_secret)

    def _token(self, form: dict) -> None:
        if not self._client_authenticated(form):
            return self._json(401, {"error": "invalid_client"})
        if form.get("grant_type") != "authorization_code":
            return self._json(400, {"error": "unsupported_grant_type"})
        with self.provider.db() as db:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute(
                "SELECT redirect_uri, nonce, challenge, username, created, used FROM codes WHERE code = ?",
                (form.get("code", ""),),
            ).fetchone()
            if row is None or row[5] or time.time() - row[4] > CODE_LIFETIME:
                db.execute("COMMIT")
                return self._json(400, {"error": "invalid_grant"})
            db.execute("UPDATE codes SET used = 1 WHERE code = ?", (form["code"],))
            db.execute("COMMIT")
            redirect_uri, nonce, challenge, username = row[:4]
            verifier = form.get("code_verifier", "")
            if (
                form.get("redirect_uri") != redirect_uri
                or _b64url(hashlib.sha256(verifier.encode()).digest()) != challenge
            ):
                return self._json(400, {"error": "invalid_grant"})
            db.row_factory = sqlite3.Row
            person = dict(db.execute("SELECT * FROM people WHERE username = ?", (username,)).fetchone())
        return self._json(
            200,
            {
                "access_token": secrets.token_urlsafe(24),
                "token_type": "Bearer",
                "expires_in": 300,
                "id_token": self.provider.id_token(person, nonce),
            },
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--client-secret", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    provider = Provider(Path(args.data), args.client_id, args.client_secret)
    Handler.provider = provider
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    provider.issuer = f"http://127.0.0.1:{server.server_address[1]}"
    print(json.dumps({"issuer": provider.issuer}), flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    sys.exit(0)


if __name__ == "__main__":
    main()
