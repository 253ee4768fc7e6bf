"""POST /api/v1/grants/{id}/extend/ (the portal's extend form, through the API: the same service and rules)
and GET /api/v1/token/ (what the calling token is and until when). State through the services, the API over
HTTP with real tokens."""

from datetime import timedelta

import pytest
from django.utils import timezone
from guardian.shortcuts import assign_perm

from accessgov.models import AccessEvent, AccessRequest, ApiToken, Eligibility, Grant
from accessgov.services import access_requests as request_services
from accessgov.services import grants as grant_services
from tests.support.api_helpers import api_client, make_service_account, make_token, post_json

pytestmark = pytest.mark.django_db
V1 = "/api/v1"
WHY = "The migration needs another half hour"


def _error(response) -> dict:
    assert response["Content-Type"] == "application/json", response.content
    return response.json()["error"]


def _grant(world, role, user=None) -> Grant:
    """An active grant of ``role`` for ``user`` (the requester), approved by the role's approvers."""
    user = user or world.requester
    access_request = request_services.access_request_submit(
        user, role=role, duration=timedelta(hours=1), justification="Deploy the payments fix"
    )
    for approver in (world.approver, world.approver2)[: max(1, role.approvals_required)]:
        request_services.access_request_approve(approver, access_request.pk)
    return Grant.objects.get(access_request=access_request)


@pytest.fixture
def scene(world):
    world.grant = _grant(world, world.role)
    _, secret = make_token(world.requester, name="laptop")
    world.client = api_client(secret)
    return world


def _extend(client, grant_id, **body):
    return post_json(
        client, f"{V1}/grants/{grant_id}/extend/", {"duration_seconds": 1800, "justification": WHY, **body}
    )


def test_the_holder_asks_to_extend_and_gets_the_extension_request(scene):
    response = _extend(scene.client, scene.grant.pk, ticket="OPS-7")
    assert response.status_code == 201, response.content
    answer = response.json()
    extension = AccessRequest.objects.get(pk=answer["id"])
    assert (extension.kind, extension.extends_grant_id, extension.status) == ("extension", scene.grant.pk, "pending")
    assert answer["kind"] == "extension" and answer["extends_grant"] == scene.grant.pk
    assert answer["requested_duration_seconds"] == 1800 and answer["ticket"] == "OPS-7"
    assert answer["grant"] is None  # not approved yet
    event = AccessEvent.objects.get(access_request=extension, event_type="request.submitted")
    assert event.data["via"]["api_token_name"] == "laptop"


def test_an_approved_extension_answers_with_the_grants_new_end(scene):
    answer = _extend(scene.client, scene.grant.pk).json()
    request_services.access_request_approve(scene.approver, answer["id"])
    read = scene.client.get(f"{V1}/requests/{answer['id']}/").json()
    scene.grant.refresh_from_db()
    assert read["status"] == "approved"
    assert read["grant"]["id"] == scene.grant.pk and read["grant"]["active"] is True
    assert read["grant"]["expires_at"].replace("Z", "+00:00") == scene.grant.expires_at.isoformat()


def test_an_auto_approved_extension_answers_with_the_grants_new_end_at_once(scene):
    scene.role.approvals_required = 0
    scene.role.save(update_fields=["approvals_required"])
    before = scene.grant.expires_at
    response = _extend(scene.client, scene.grant.pk)
    assert response.status_code == 201, response.content
    scene.grant.refresh_from_db()
    assert scene.grant.expires_at == before + timedelta(minutes=30)
    answer = response.json()
    assert answer["status"] == "approved" and answer["grant"]["id"] == scene.grant.pk
    assert answer["grant"]["expires_at"].replace("Z", "+00:00") == scene.grant.expires_at.isoformat()


def test_another_persons_grant_is_invisible_or_forbidden(scene):
    _, outsider = make_token(scene.outsider, name="outsider")
    assert _extend(api_client(outsider), scene.grant.pk).status_code == 404
    # An approver sees the grant but does not hold it: a visible, forbidden action.
    _, approver = make_token(scene.approver, name="approver")
    response = _extend(api_client(approver), scene.grant.pk)
    assert response.status_code == 403 and _error(response)["code"] == "not_authorized"
    assert _extend(scene.client, 99_999_999).status_code == 404
    assert not AccessRequest.objects.filter(kind="extension").exists()


def test_an_ended_grant_cannot_be_extended(scene):
    grant_services.grant_release(scene.requester, scene.grant.pk)
    response = _extend(scene.client, scene.grant.pk)
    assert response.status_code == 409
    assert _error(response) == {"code": "conflict", "message": "Only active access can be extended."}


def test_break_glass_access_cannot_be_extended(scene):
    scene.role_two.break_glass_allowed = True
    scene.role_two.save(update_fields=["break_glass_allowed"])
    grant = grant_services.break_glass_activate(
        scene.requester,
        role=scene.role_two,
        justification="Prod is down, INC-9",
        duration=timedelta(minutes=30),
        step_up_at=timezone.now(),
    )
    response = _extend(scene.client, grant.pk)
    assert response.status_code == 400
    assert _error(response)["code"] == "policy_violation" and "Break-glass" in _error(response)["message"]


def test_an_extension_past_the_roles_maximum_is_refused(scene):
    # The role allows 4 h; the grant has about 1 h left, so at most about 3 h more.
    response = _extend(scene.client, scene.grant.pk, duration_seconds=4 * 3600)
    assert response.status_code == 400
    assert _error(response)["code"] == "policy_violation"
    assert "can be extended by" in _error(response)["message"]
    assert not AccessRequest.objects.filter(kind="extension").exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"duration_seconds": "1800"}, "duration_seconds"),
        ({"duration_seconds": 59}, "duration_seconds"),
        ({"justification": "x" * 2001}, "justification"),
        ({"ticket": "T" * 101}, "ticket"),
        ({"expires_at": "2099-01-01T00:00:00Z"}, "expires_at"),
        ({"status": "approved"}, "status"),
    ],
)
def test_extension_bodies_say_only_what_a_requester_may_say(scene, body, field):
    response = _extend(scene.client, scene.grant.pk, **body)
    assert response.status_code == 400, response.content
    assert _error(response)["code"] == "invalid" and field in _error(response)["fields"]
    assert not AccessRequest.objects.filter(kind="extension").exists()


def test_a_key_twice_or_a_huge_body_is_refused_before_anything_happens(scene, settings):
    url = f"{V1}/grants/{scene.grant.pk}/extend/"
    twice = f'{{"duration_seconds": 600, "duration_seconds": 7200, "justification": "{WHY}"}}'
    response = scene.client.post(url, twice, content_type="application/json")
    assert response.status_code == 400 and _error(response)["code"] == "parse_error"
    huge = '{"duration_seconds": 600, "justification": "' + "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1) + '"}'
    response = scene.client.post(url, huge, content_type="application/json")
    assert response.status_code == 413 and _error(response)["code"] == "too_large"
    response = scene.client.post(url, "duration_seconds=600", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415 and _error(response)["code"] == "unsupported_media_type"
    assert not AccessRequest.objects.filter(kind="extension").exists()


@pytest.mark.parametrize(
    "scopes", [["requests:read", "grants:read", "grants:release"], ["requests:read", "grants:read", "catalog:read"]]
)
def test_a_token_without_the_request_scope_cannot_extend(scene, scopes):
    """Another token holding everything but ``requests:create`` (a release-only token, a read-only token)."""
    _, secret = make_token(scene.requester, scopes=scopes, name="narrow")
    response = _extend(api_client(secret), scene.grant.pk)
    assert response.status_code == 403
    assert _error(response) == {
        "code": "permission_denied",
        "message": "This token does not have the requests:create scope.",
    }
    assert not AccessRequest.objects.filter(kind="extension").exists()


def test_a_service_token_limited_to_roles_extends_only_grants_of_those_roles(scene):
    bot = make_service_account("deploy-bot")
    for role in (scene.role, scene.role_two):
        Eligibility.objects.create(role=role, user=bot)
    assign_perm("accessgov.approve_role", scene.approver2, scene.role)
    own = _grant(scene, scene.role, user=bot)
    other = _grant(scene, scene.role_two, user=bot)
    _, secret = make_token(
        bot, kind=ApiToken.Kind.SERVICE, scopes=["requests:create", "requests:read"], roles=[scene.role], name="gh"
    )
    client = api_client(secret)
    assert _extend(client, other.pk).status_code == 404
    assert _extend(client, own.pk).status_code == 201


def test_the_token_describes_itself_with_its_expiry_from_the_servers_clock(scene):
    token, secret = make_token(scene.requester, scopes=["grants:read"], days=2, name="short")
    response = api_client(secret).get(f"{V1}/token/")
    assert response.status_code == 200, response.content
    answer = response.json()
    assert answer["id"] == token.pk and answer["name"] == "short" and answer["kind"] == "personal"
    assert answer["user"] == "requester" and answer["scopes"] == ["grants:read"] and answer["roles"] == []
    assert 2 * 86400 - 60 <= answer["expires_in_seconds"] <= 2 * 86400
    assert answer["expires_at"].replace("Z", "+00:00") == token.expires_at.isoformat()
    assert api_client(None).get(f"{V1}/token/").status_code == 401
    assert post_json(api_client(secret), f"{V1}/token/").status_code == 405
