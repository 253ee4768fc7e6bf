"""Helpers for the API tests: tokens made through the service, and a client that sends them."""

from datetime import timedelta

from django.test import Client
from django.utils import timezone

from accessgov.models import ApiToken
from accessgov.services import tokens as token_services


def make_token(user, *, scopes=None, roles=None, kind=ApiToken.Kind.PERSONAL, days=30, actor=None, name="ci"):
    """A token for ``user`` (personal by default, all scopes) and its secret."""
    if kind == ApiToken.Kind.SERVICE and actor is None:
        actor = type(user).objects.filter(is_staff=True).first() or _admin()
    token, secret = token_services.api_token_create(
        actor or user,
        user=user,
        name=name,
        kind=kind,
        expires_at=timezone.now() + timedelta(days=days),
        scopes=scopes,
        roles=roles,
    )
    return token, secret


def _admin():
    from tests.factories import UserFactory

    return UserFactory(username="tokenadmin", is_staff=True, is_superuser=True)


def api_client(secret: str | None) -> Client:
    """A Django test client that sends ``Authorization: Bearer <secret>`` (no session)."""
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    return Client(headers=headers)


def post_json(client: Client, url: str, body: dict | None = None):
    return client.post(url, body or {}, content_type="application/json")
