"""API tokens: made in the portal after OTP (shown once, stored as a hash), revoked there; service
tokens made in the admin; the service refuses what nobody should be able to make."""

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from accessgov.exceptions import NotAuthorized, PolicyViolation, TransitionNotAllowed
from accessgov.models import ApiToken, ChangeRequest
from accessgov.services import tokens as services
from accessgov.services.tokens import hash_secret
from tests.conftest import verify_session
from tests.support.api_helpers import api_client, make_service_account, make_token

pytestmark = pytest.mark.django_db
SECRET = re.compile(r"agv_[ps]_[A-Za-z0-9_-]{43}")


def test_the_tokens_page_shows_a_new_secret_once_and_keeps_only_its_hash(make_user):
    user = make_user("dev")
    client = verify_session(Client(), user)
    response = client.post(
        "/accounts/tokens/", {"name": "gh actions", "lifetime_days": "7", "scopes": ["requests:read", "grants:read"]}
    )
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    secret = SECRET.search(response.content.decode()).group(0)
    token = ApiToken.objects.get(user=user)
    assert token.key_hash == hash_secret(secret)
    assert token.display_prefix == secret[:10]
    assert token.scopes == ["requests:read", "grants:read"]
    assert timedelta(days=6, hours=23) < token.expires_at - timezone.now() <= timedelta(days=7)
    assert secret[10:] not in str(list(ApiToken.objects.values()))
    again = client.get("/accounts/tokens/").content.decode()
    assert SECRET.search(again) is None
    assert "gh actions" in again


def test_the_tokens_page_refuses_a_form_without_name_or_scopes(make_user):
    client = verify_session(Client(), make_user("dev"))
    response = client.post("/accounts/tokens/", {"name": "", "lifetime_days": "7"})
    assert response.status_code == 400
    assert not ApiToken.objects.exists()


def test_the_tokens_page_needs_the_otp_step(make_user):
    client = Client()
    client.force_login(make_user("halfway"))
    response = client.get("/accounts/tokens/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/otp/")


def test_revoking_from_the_page_stops_the_token_and_others_tokens_are_invisible(make_user):
    owner, other = make_user("owner"), make_user("other")
    token, secret = make_token(owner)
    assert api_client(secret).get("/api/v1/grants/").status_code == 200
    assert verify_session(Client(), other).post(f"/accounts/tokens/{token.pk}/revoke/").status_code == 404
    response = verify_session(Client(), owner).post(f"/accounts/tokens/{token.pk}/revoke/", {"confirm": "yes"})
    assert response.status_code == 302
    assert api_client(secret).get("/api/v1/grants/").status_code == 401
    token.refresh_from_db()
    assert token.revoked_by == owner
    with pytest.raises(TransitionNotAllowed):
        services.api_token_revoke(owner, token.pk)


def test_an_admin_proposes_a_service_token_it_works_once_a_second_admin_approves(world, make_user):
    admin = make_user("root", is_staff=True, is_superuser=True)
    second = make_user("root2", is_staff=True, is_superuser=True)
    bot = make_service_account("deploy-bot")
    client = verify_session(Client(), admin)
    response = client.post(
        "/admin/accessgov/apitoken/add/",
        {
            "user": bot.pk,
            "name": "payments deploy",
            "expires_at_0": (timezone.now() + timedelta(days=30)).strftime("%Y-%m-%d"),
            "expires_at_1": "12:00:00",
            "scopes": ["requests:create", "requests:read", "grants:release"],
            "roles": [world.role.pk],
        },
    )
    assert response.status_code == 200, response.content[:2000]
    page = response.content.decode()
    secret = SECRET.search(page).group(0)
    assert secret.startswith("agv_s_")
    assert "does not work yet" in page
    assert not ApiToken.objects.filter(user=bot).exists()
    assert api_client(secret).get("/api/v1/requests/").status_code == 401
    change = ChangeRequest.objects.get(kind="service_token")
    assert secret not in str(change.changes) and secret not in str(change.payload)
    assert verify_session(Client(), admin).post(f"/changes/{change.pk}/approve/").status_code == 403
    assert not ApiToken.objects.filter(user=bot).exists()  # the proposer cannot approve their own
    assert verify_session(Client(), second).post(f"/changes/{change.pk}/approve/").status_code == 302
    token = ApiToken.objects.get(user=bot)
    assert token.kind == "service"
    assert list(token.roles.all()) == [world.role]
    assert token.created_by == admin
    assert api_client(secret).get("/api/v1/requests/").status_code == 200
    assert SECRET.search(client.get(f"/admin/accessgov/apitoken/{token.pk}/change/").content.decode()) is None


def test_the_service_refuses_tokens_nobody_should_make(world):
    soon = timezone.now() + timedelta(days=1)
    with pytest.raises(NotAuthorized):
        services.api_token_create(world.requester, user=world.approver, name="x", kind="personal", expires_at=soon)
    with pytest.raises(NotAuthorized):
        services.api_token_create(world.requester, user=world.requester, name="x", kind="service", expires_at=soon)
    with pytest.raises(NotAuthorized, match="four-eyes"):
        services.api_token_create(world.approver, user=world.approver, name="x", kind="service", expires_at=soon)
    with pytest.raises(PolicyViolation):
        services.api_token_create(
            world.requester, user=world.requester, name="x", kind="personal", expires_at=soon + timedelta(days=400)
        )
    with pytest.raises(PolicyViolation):
        services.api_token_create(
            world.requester, user=world.requester, name="x", kind="personal", expires_at=soon, scopes=["root"]
        )
    with pytest.raises(PolicyViolation):
        services.api_token_create(world.requester, user=world.requester, name=" ", kind="personal", expires_at=soon)


def test_token_changes_are_in_the_model_change_log(world):
    from auditlog.models import LogEntry

    token, _ = make_token(world.requester)
    services.api_token_revoke(world.requester, token.pk)
    entries = LogEntry.objects.get_for_object(token)
    assert entries.count() == 2
    assert all("key_hash" not in (entry.changes or {}) for entry in entries)
