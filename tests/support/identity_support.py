"""Test support for identity providers: the OIDC provider process (tests/support/oidc_provider.py), an
IdentityProvider row pointing at it, a sign-in through it with Django's test client, and SCIM calls."""

import json
import secrets
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests

from accessgov.models import ApiToken, IdentityProvider, User
from accessgov.services import tokens as token_services

ROOT = Path(__file__).resolve().parents[2]
CLIENT_ID = "accessgov-portal"


class RunningProvider:
    def __init__(self, issuer: str, client_secret: str, process: subprocess.Popen) -> None:
        self.issuer, self.client_secret, self.process = issuer, client_secret, process

    def add_person(self, username: str, password: str, *, sub: str | None = None, amr=None, acr: str = "", **claims):
        person = {
            "username": username,
            "password": password,
            "sub": sub or f"sub-{username}",
            "email": claims.get("email", f"{username}@example.com"),
            "given_name": claims.get("given_name", username.title()),
            "family_name": claims.get("family_name", "Tester"),
            "amr": amr or ["pwd"],
            "acr": acr,
        }
        requests.post(f"{self.issuer}/_control/users", json=person, timeout=5).raise_for_status()
        return person

    def spoil_next(self, mode: str) -> None:
        requests.post(f"{self.issuer}/_control/next", json={"mode": mode}, timeout=5).raise_for_status()


@pytest.fixture(scope="session")
def oidc_provider(tmp_path_factory):
    """The provider process, once per test session (its own SQLite database under a tmp dir)."""
    secret = secrets.token_urlsafe(24)
    data = tmp_path_factory.mktemp("oidc-provider")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.oidc_provider",
            "--client-id",
            CLIENT_ID,
            # One argument with "=": a secret starting with "-" (1 in 64) read as an option made the
            # provider exit ("expected one argument") and every OIDC test error (seen in CI).
            f"--client-secret={secret}",
            "--data",
            str(data),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline()
    issuer = json.loads(line)["issuer"]
    yield RunningProvider(issuer, secret, process)
    process.terminate()
    process.wait(timeout=10)


def make_identity_provider(oidc_provider: RunningProvider, slug: str = "testidp", **fields) -> IdentityProvider:
    """An IdentityProvider at the provider process (created directly: its four-eyes path has its own test)."""
    values = {
        "name": "Test IdP",
        "is_enabled": True,
        "issuer": oidc_provider.issuer,
        "client_id": CLIENT_ID,
        "client_secret": oidc_provider.client_secret,
        **fields,
    }
    return IdentityProvider.objects.create(slug=slug, **values)


def sign_in_through(client, oidc_provider: RunningProvider, slug: str, username: str, password: str, *, start=None):
    """A browser's trip with Django's test client: the portal's start (or ``start``, a response that
    already redirects to the provider), the provider's form, and back to the callback. Returns the
    callback's response."""
    start = start or client.get(f"/sso/{slug}/start/")
    assert start.status_code == 302, start.content
    authorize = urlsplit(start["Location"])
    assert f"{authorize.scheme}://{authorize.netloc}" == oidc_provider.issuer
    query = dict(parse_qsl(authorize.query))
    form = requests.get(start["Location"], timeout=5)
    assert form.status_code == 200, form.text
    answer = requests.post(
        f"{oidc_provider.issuer}/authorize",
        data={**query, "username": username, "password": password},
        allow_redirects=False,
        timeout=5,
    )
    assert answer.status_code == 302, answer.text
    back = urlsplit(answer.headers["Location"])
    return client.get(f"{back.path}?{back.query}")


# --- SCIM -----------------------------------------------------------------------------------------


def make_scim_client(provider: IdentityProvider, *, username: str | None = None) -> tuple[User, str]:
    """A service account bound to ``provider`` as its SCIM client, and a working scim:provision token
    (made as the approved four-eyes change would: the draft's payload, applied)."""
    from django.utils import timezone

    account = User(username=username or f"scim-{provider.slug}", is_service_account=True)
    account.set_unusable_password()
    account.save()
    provider.scim_service_account = account
    provider.scim_enabled = True
    provider.save(update_fields=["scim_service_account", "scim_enabled"])
    draft = token_services.service_token_draft(
        user=account,
        name=f"{provider.name} SCIM",
        expires_at=timezone.now() + timedelta(days=90),
        scopes=[ApiToken.Scope.SCIM_PROVISION],
        role_ids=[],
    )
    from django.db import transaction

    with transaction.atomic():
        token_services.service_token_create_from(draft.payload, created_by=None)
    return account, draft.secret


class Scim:
    """SCIM calls with Django's test client, as an IdP's provisioning client makes them."""

    def __init__(self, client, secret: str) -> None:
        self.client, self.headers = client, {"HTTP_AUTHORIZATION": f"Bearer {secret}"}

    def _send(self, method: str, path: str, body=None, **extra):
        data = body if isinstance(body, (str, bytes)) or body is None else json.dumps(body)
        return getattr(self.client, method)(
            f"/scim/v2/{path}", data=data, content_type="application/scim+json", **self.headers, **extra
        )

    def get(self, path: str, **extra):
        return self.client.get(f"/scim/v2/{path}", **self.headers, **extra)

    def post(self, path: str, body, **extra):
        return self._send("post", path, body, **extra)

    def put(self, path: str, body, **extra):
        return self._send("put", path, body, **extra)

    def patch(self, path: str, body, **extra):
        return self._send("patch", path, body, **extra)

    def delete(self, path: str, **extra):
        return self.client.delete(f"/scim/v2/{path}", **self.headers, **extra)


def okta_user(user_name: str, external_id: str, *, given="Ada", family="Lovelace", active=True, email=None) -> dict:
    """A user as Okta's SCIM 2.0 client POSTs (and PUTs) it (Okta's SCIM guide)."""
    return {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": user_name,
        "name": {"givenName": given, "familyName": family},
        "emails": [{"primary": True, "value": email or user_name, "type": "work"}],
        "displayName": f"{given} {family}",
        "locale": "en-US",
        "externalId": external_id,
        "groups": [],
        "password": "an-ignored-password-1",
        "active": active,
    }


def entra_user(user_name: str, external_id: str, *, given="Grace", family="Hopper") -> dict:
    """A user as Microsoft Entra ID's provisioning service POSTs it (its SCIM reference)."""
    return {
        "schemas": [
            "urn:ietf:params:scim:schemas:core:2.0:User",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
        ],
        "externalId": external_id,
        "userName": user_name,
        "active": True,
        "addresses": [{"primary": True, "type": "work", "formatted": "1 Main St"}],
        "displayName": f"{given} {family}",
        "emails": [{"primary": True, "type": "work", "value": user_name}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": f"{given} {family}", "familyName": family, "givenName": given},
        "title": "Engineer",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Payments"},
    }


OKTA_DEACTIVATE = {
    "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
    "Operations": [{"op": "replace", "value": {"active": False}}],
}
ENTRA_DISABLE = {
    "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
    "Operations": [{"op": "Replace", "path": "active", "value": "False"}],
}
