"""Helpers for the API tests: tokens made through the service, and a client that sends them."""

from datetime import timedelta

from django.test import Client
from django.utils import timezone

from accessgov.models import ApiToken
from accessgov.services import changes as change_services
from accessgov.services import tokens as token_services


def make_token(user, *, scopes=None, roles=None, kind=ApiToken.Kind.PERSONAL, days=30, actor=None, name="ci"):
    """A token for ``user`` (personal by default, all scopes) and its secret. A service token goes the
    way it must: proposed by one admin and approved by another (``user`` must be a service account)."""
    if kind == ApiToken.Kind.SERVICE:
        proposer = actor or _admin("tokenadmin")
        change, secret = change_services.change_propose_service_token(
            proposer,
            user=user,
            name=name,
            expires_at=timezone.now() + timedelta(days=days),
            scopes=list(ApiToken.Scope.values) if scopes is None else scopes,
            roles=roles,
        )
        change_services.change_approve(_admin("tokenadmin2"), change.pk)
        return ApiToken.objects.get(key_hash=token_services.hash_secret(secret)), secret
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


def make_service_account(username: str = "ci-bot"):
    """A pure service account (no password, no authenticator), as an approved change would create it."""
    from accessgov.models import User

    user = User(username=username, is_service_account=True)
    user.set_unusable_password()
    user.save()
    return user


def _admin(username: str):
    from accessgov.models import User
    from tests.support.factories import UserFactory

    return User.objects.filter(username=username).first() or UserFactory(
        username=username, is_staff=True, is_superuser=True
    )


def api_client(secret: str | None) -> Client:
    """A Django test client that sends ``Authorization: Bearer <secret>`` (no session)."""
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    return Client(headers=headers)


def post_json(client: Client, url: str, body: dict | None = None):
    return client.post(url, body or {}, content_type="application/json")
