"""The API by persona and by token: own vs others' objects, scopes, roles, expired and revoked
tokens, sessions (never enough), self-approval, step-up and mass assignment. State is made through
the services, the API is driven over HTTP with real tokens."""

import base64
from datetime import timedelta

import pytest
import time_machine
from django.test import Client
from django.utils import timezone
from guardian.shortcuts import assign_perm

from accessgov.models import AccessEvent, AccessRequest, ApiToken, Grant
from accessgov.services import access_requests as request_services
from accessgov.services import tokens as token_services
from tests.conftest import totp_code, verify_session
from tests.support.api_helpers import api_client, make_service_account, make_token, post_json

pytestmark = pytest.mark.django_db
V1 = "/api/v1"


@pytest.fixture
def scene(world):
    """A pending request on the 1-approval role and an active grant on the 2-approval role, both
    the requester's; a full-scope personal token per persona."""
    world.pending = request_services.access_request_submit(
        world.requester, role=world.role, duration=timedelta(hours=1), justification="Deploy the payments fix"
    )
    granted = request_services.access_request_submit(
        world.requester, role=world.role_two, duration=timedelta(hours=1), justification="Rotate the admin keys"
    )
    request_services.access_request_approve(world.approver, granted.pk)
    request_services.access_request_approve(world.approver2, granted.pk)
    world.grant = Grant.objects.get(access_request=granted)
    world.clients = {}
    for persona in ("requester", "approver", "approver2", "owner", "auditor", "outsider"):
        _, secret = make_token(getattr(world, persona), name=f"{persona}-laptop")
        world.clients[persona] = api_client(secret)
    return world


def _error(response) -> dict:
    assert response["Content-Type"] == "application/json", response.content
    return response.json()["error"]


# --- Who sees what ---------------------------------------------------------------------------------

READ_MATRIX = {
    # persona: (request detail, grant detail, events)
    "requester": (200, 200, 403),
    "approver": (200, 200, 403),
    "approver2": (200, 200, 403),
    "owner": (200, 200, 403),
    "auditor": (200, 200, 200),
    "outsider": (404, 404, 403),
}


@pytest.mark.parametrize("persona", list(READ_MATRIX))
def test_reads_follow_the_same_visibility_as_the_pages(scene, persona):
    client = scene.clients[persona]
    expected_request, expected_grant, expected_events = READ_MATRIX[persona]
    assert client.get(f"{V1}/requests/{scene.pending.pk}/").status_code == expected_request
    assert client.get(f"{V1}/grants/{scene.grant.pk}/").status_code == expected_grant
    assert client.get(f"{V1}/events/").status_code == expected_events


@pytest.mark.parametrize("persona", list(READ_MATRIX))
def test_my_lists_hold_only_my_own_requests_and_grants(scene, persona):
    client = scene.clients[persona]
    requests = client.get(f"{V1}/requests/").json()["results"]
    grants = client.get(f"{V1}/grants/").json()["results"]
    assert {r["requester"] for r in requests} <= {persona}
    assert {g["user"] for g in grants} <= {persona}
    assert bool(requests) == (persona == "requester")


def test_the_decision_queue_holds_what_i_may_decide_and_never_my_own(scene):
    assign_perm("accessgov.approve_role", scene.requester, scene.role)
    approver_queue = scene.clients["approver"].get(f"{V1}/decisions/").json()
    assert [r["id"] for r in approver_queue] == [scene.pending.pk]
    assert scene.clients["requester"].get(f"{V1}/decisions/").json() == []
    assert scene.clients["outsider"].get(f"{V1}/decisions/").json() == []


def test_the_catalogue_shows_only_roles_i_may_use_decide_or_own(scene):
    for persona in ("requester", "approver", "owner", "auditor"):
        paths = {r["path"] for r in scene.clients[persona].get(f"{V1}/roles/").json()["results"]}
        assert paths == {"payments-db/read-write", "payments-db/admin"}, persona
    assert scene.clients["outsider"].get(f"{V1}/roles/").json()["results"] == []
    assert scene.clients["outsider"].get(f"{V1}/systems/").json()["results"] == []
    assert scene.clients["outsider"].get(f"{V1}/roles/{scene.role.pk}/").status_code == 404
    eligible = scene.clients["requester"].get(f"{V1}/roles/?eligible=true").json()["results"]
    assert all(r["eligible"] for r in eligible) and len(eligible) == 2
    mine = scene.clients["requester"].get(f"{V1}/eligibility/").json()["results"]
    assert {e["user"] for e in mine} == {"requester"}
    assert scene.clients["outsider"].get(f"{V1}/eligibility/").json()["results"] == []


# --- Who may do what -------------------------------------------------------------------------------

APPROVE_MATRIX = {"requester": 403, "owner": 403, "auditor": 403, "outsider": 404, "approver": 200}


@pytest.mark.parametrize("persona", list(APPROVE_MATRIX))
def test_approving_through_the_api(scene, persona):
    response = post_json(scene.clients[persona], f"{V1}/requests/{scene.pending.pk}/approve/", {"comment": "ok"})
    assert response.status_code == APPROVE_MATRIX[persona], response.content
    scene.pending.refresh_from_db()
    assert scene.pending.status == ("approved" if persona == "approver" else "pending")


@pytest.mark.parametrize(("persona", "expected"), [("approver", 403), ("outsider", 404), ("requester", 200)])
def test_cancelling_through_the_api(scene, persona, expected):
    response = post_json(scene.clients[persona], f"{V1}/requests/{scene.pending.pk}/cancel/")
    assert response.status_code == expected
    if expected == 200:
        assert response.json()["status"] == "cancelled"
        again = post_json(scene.clients[persona], f"{V1}/requests/{scene.pending.pk}/cancel/")
        assert again.status_code == 409
        assert _error(again)["code"] == "conflict"


@pytest.mark.parametrize(("persona", "expected"), [("approver", 403), ("outsider", 404), ("requester", 200)])
def test_releasing_through_the_api(scene, persona, expected):
    response = post_json(scene.clients[persona], f"{V1}/grants/{scene.grant.pk}/release/")
    assert response.status_code == expected
    scene.grant.refresh_from_db()
    assert (scene.grant.end_reason == "released") == (expected == 200)


def test_a_token_never_approves_its_own_users_request_even_for_an_approver(scene):
    assign_perm("accessgov.approve_role", scene.requester, scene.role)
    response = post_json(scene.clients["requester"], f"{V1}/requests/{scene.pending.pk}/approve/", {"comment": "me"})
    assert response.status_code == 403
    assert _error(response) == {"code": "not_authorized", "message": "You cannot decide your own request."}
    assert not scene.pending.decisions.exists()


def test_denying_needs_a_comment_and_records_it(scene):
    url = f"{V1}/requests/{scene.pending.pk}/deny/"
    for body in ({}, {"comment": ""}, {"comment": "   "}):
        refused = post_json(scene.clients["approver"], url, body)
        assert refused.status_code == 400, body
        assert _error(refused)["code"] == "invalid"
        assert _error(refused)["fields"] == {"comment": ["Say why you deny the request: the requester will read it."]}
    scene.pending.refresh_from_db()
    assert scene.pending.status == "pending"
    response = post_json(scene.clients["approver"], url, {"comment": "Use the read-only role"})
    assert response.status_code == 200
    assert response.json()["status"] == "denied"
    assert response.json()["decisions"][0]["comment"] == "Use the read-only role"


# --- Step-up ---------------------------------------------------------------------------------------


@pytest.fixture
def step_up_scene(scene):
    scene.role.step_up_required = True
    scene.role.save(update_fields=["step_up_required"])
    return scene


def test_step_up_role_refuses_a_decision_without_a_code(step_up_scene):
    scene = step_up_scene
    response = post_json(scene.clients["approver"], f"{V1}/requests/{scene.pending.pk}/approve/", {"comment": "ok"})
    assert response.status_code == 403
    assert _error(response)["code"] == "step_up_required"
    assert not scene.pending.decisions.exists()


def test_step_up_role_refuses_a_wrong_code(step_up_scene):
    scene = step_up_scene
    url = f"{V1}/requests/{scene.pending.pk}/approve/"
    device = scene.approver.totpdevice_set.get()
    wrong = f"{(int(totp_code(device)) + 1) % 1_000_000:06d}"
    response = post_json(scene.clients["approver"], url, {"otp_code": wrong})
    assert response.status_code == 403
    assert _error(response)["code"] == "not_authorized"
    assert not scene.pending.decisions.exists()


def test_step_up_code_works_once_and_the_decision_records_when(step_up_scene, make_user):
    scene = step_up_scene
    from accessgov.models import Eligibility

    colleague = make_user("colleague")
    Eligibility.objects.create(role=scene.role, user=colleague)
    other = request_services.access_request_submit(
        colleague, role=scene.role, duration=timedelta(hours=1), justification="Same fix, other shard"
    )
    code = totp_code(scene.approver.totpdevice_set.get())
    response = post_json(scene.clients["approver"], f"{V1}/requests/{scene.pending.pk}/approve/", {"otp_code": code})
    assert response.status_code == 200, response.content
    assert response.json()["decisions"][0]["step_up_at"] is not None
    event = AccessEvent.objects.get(access_request=scene.pending, event_type="decision.approve")
    assert event.data["step_up_at"] is not None
    replay = post_json(scene.clients["approver"], f"{V1}/requests/{other.pk}/approve/", {"otp_code": code})
    assert replay.status_code == 403
    assert not other.decisions.exists()


# --- Tokens ----------------------------------------------------------------------------------------


def test_a_token_without_the_scope_is_refused_before_anything_happens(scene):
    _, secret = make_token(scene.requester, scopes=["requests:read"])
    client = api_client(secret)
    assert client.get(f"{V1}/requests/").status_code == 200
    response = post_json(client, f"{V1}/requests/{scene.pending.pk}/cancel/")
    assert response.status_code == 403
    assert _error(response) == {
        "code": "permission_denied",
        "message": "This token does not have the requests:cancel scope.",
    }
    assert client.get(f"{V1}/grants/").status_code == 403


@pytest.mark.parametrize(
    ("make", "code"),
    [
        ("expired", "token_expired"),
        ("revoked", "token_revoked"),
        ("unknown", "token_invalid"),
        ("not_ours", "token_invalid"),
        ("inactive_user", "user_inactive"),
    ],
)
def test_unusable_tokens_are_refused_with_the_reason(scene, make, code):
    token, secret = make_token(scene.requester, days=1)
    if make == "revoked":
        token_services.api_token_revoke(scene.requester, token.pk)
    elif make == "unknown":
        secret = secret[:-4] + "AAAA"
    elif make == "not_ours":
        secret = "ghp_" + secret
    elif make == "inactive_user":
        scene.requester.is_active = False
        scene.requester.save(update_fields=["is_active"])
    traveller = time_machine.travel(timezone.now() + timedelta(days=2)) if make == "expired" else None
    if traveller:
        traveller.start()
    try:
        response = api_client(secret).get(f"{V1}/requests/")
    finally:
        if traveller:
            traveller.stop()
    assert response.status_code == 401
    assert _error(response)["code"] == code
    assert response["WWW-Authenticate"] == 'Bearer realm="accessgov"'


def test_no_token_or_a_malformed_header_is_401(scene):
    assert _error(Client().get(f"{V1}/requests/"))["code"] == "not_authenticated"
    bad = Client(headers={"Authorization": "Bearer two words"}).get(f"{V1}/requests/")
    assert bad.status_code == 401
    basic = Client(headers={"Authorization": "Basic dXNlcjpwYXNz"}).get(f"{V1}/requests/")
    assert basic.status_code == 401


def test_a_password_only_session_can_never_use_the_api(scene):
    client = Client()
    client.force_login(scene.requester)
    for url in (f"{V1}/requests/", "/api/schema/"):
        response = client.get(url)
        assert response.status_code == 401, url
        assert _error(response)["code"] == "not_authenticated"
    assert post_json(client, f"{V1}/requests/{scene.pending.pk}/cancel/").status_code == 401


def test_a_verified_session_reads_the_schema_but_the_api_wants_a_token(scene):
    client = verify_session(Client(), scene.requester)
    assert client.get("/api/schema/").status_code == 200
    assert client.get(f"{V1}/requests/").status_code == 401
    assert post_json(client, f"{V1}/requests/{scene.pending.pk}/cancel/").status_code == 401


def test_a_service_token_limited_to_roles_sees_and_acts_only_on_them(scene):
    bot = make_service_account("deploy-bot")
    assign_perm("accessgov.approve_system", bot, scene.role.system)
    _, secret = make_token(
        bot,
        kind=ApiToken.Kind.SERVICE,
        scopes=["requests:read", "decisions:read", "decisions:decide", "grants:read", "catalog:read"],
        roles=[scene.role_two],
        name="deploy-bot",
    )
    client = api_client(secret)
    assert client.get(f"{V1}/decisions/").json() == []  # the pending request is on the other role
    assert client.get(f"{V1}/requests/{scene.pending.pk}/").status_code == 404
    assert post_json(client, f"{V1}/requests/{scene.pending.pk}/approve/").status_code == 404
    assert client.get(f"{V1}/grants/{scene.grant.pk}/").status_code == 200
    assert [r["path"] for r in client.get(f"{V1}/roles/").json()["results"]] == ["payments-db/admin"]
    assert secret.startswith("agv_s_")


def test_a_service_token_requests_access_within_its_roles_and_events_name_the_token(scene):
    bot = make_service_account("ci-bot")
    from accessgov.models import Eligibility

    Eligibility.objects.create(role=scene.role, user=bot)
    Eligibility.objects.create(role=scene.role_two, user=bot)
    token, secret = make_token(
        bot, kind=ApiToken.Kind.SERVICE, scopes=["requests:create", "requests:read"], roles=[scene.role], name="gh"
    )
    client = api_client(secret)
    refused = post_json(
        client,
        f"{V1}/requests/",
        {"role_id": scene.role_two.pk, "duration_seconds": 600, "justification": "deploy build x"},
    )
    assert refused.status_code == 400
    assert _error(refused)["code"] == "policy_violation"
    created = post_json(
        client,
        f"{V1}/requests/",
        {"role": "payments-db/read-write", "duration_seconds": 600, "justification": "deploy build 42"},
    )
    assert created.status_code == 201, created.content
    event = AccessEvent.objects.get(access_request_id=created.json()["id"], event_type="request.submitted")
    assert event.actor == bot
    assert event.data["via"] == {"api_token_id": token.pk, "api_token_name": "gh", "api_token_kind": "service"}


def test_every_event_a_token_causes_names_the_token(scene):
    token = ApiToken.objects.get(user=scene.approver)
    post_json(scene.clients["approver"], f"{V1}/requests/{scene.pending.pk}/approve/", {"comment": "ship it"})
    events = AccessEvent.objects.filter(access_request=scene.pending).exclude(event_type="request.submitted")
    assert {e.event_type for e in events} >= {"decision.approve", "request.approved", "grant.activated"}
    assert {e.data["via"]["api_token_id"] for e in events} == {token.pk}
    decisions = events.filter(event_type__in=["decision.approve", "request.approved"])
    assert {e.client_address for e in decisions} == {"127.0.0.1"}
    assert {e.actor for e in decisions} == {scene.approver}


def test_last_use_is_recorded(scene):
    token = ApiToken.objects.get(user=scene.outsider)
    scene.clients["outsider"].get(f"{V1}/requests/")
    token.refresh_from_db()
    assert token.last_used_at is not None
    assert token.last_used_address == "127.0.0.1"


# --- Bodies can only say what a caller may say ------------------------------------------------------


def test_request_bodies_cannot_set_server_owned_fields(scene):
    body = {
        "role_id": scene.role.pk,
        "duration_seconds": 600,
        "justification": "Deploy the hotfix now",
        "status": "approved",
        "requester": "approver",
        "expires_at": "2099-01-01T00:00:00Z",
        "approver": "approver",
    }
    AccessRequest.objects.filter(requester=scene.requester, role=scene.role).update(status="cancelled")
    response = post_json(scene.clients["requester"], f"{V1}/requests/", body)
    assert response.status_code == 400
    assert set(_error(response)["fields"]) == {"status", "requester", "expires_at", "approver"}
    assert AccessRequest.objects.filter(requester=scene.requester, status="pending").count() == 0


@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("requests/{pending}/approve/", {"approver": "approver2", "comment": "ok"}),
        ("requests/{pending}/approve/", {"status": "approved"}),
        ("requests/{pending}/cancel/", {"status": "approved"}),
        ("grants/{grant}/release/", {"expires_at": "2099-01-01T00:00:00Z"}),
    ],
)
def test_action_bodies_cannot_set_server_owned_fields(scene, url, body):
    client = scene.clients["approver" if "approve" in url else "requester"]
    response = post_json(client, f"{V1}/" + url.format(pending=scene.pending.pk, grant=scene.grant.pk), body)
    assert response.status_code == 400
    assert _error(response)["code"] == "invalid"
    scene.pending.refresh_from_db()
    scene.grant.refresh_from_db()
    assert scene.pending.status == "pending"
    assert scene.grant.status == "active"


def test_bad_input_is_a_clear_400(scene):
    client = scene.clients["requester"]
    for body in ({}, {"role_id": "x"}, [], {"role_id": 1, "role": "a/b", "duration_seconds": 60, "justification": "x"}):
        response = post_json(client, f"{V1}/requests/", body)
        assert response.status_code == 400, body
        assert _error(response)["message"]
    raw = client.post(f"{V1}/requests/", "{not json", content_type="application/json")
    assert raw.status_code == 400
    assert _error(raw)["code"] == "parse_error"
    too_long = post_json(
        client, f"{V1}/requests/", {"role_id": scene.role.pk, "duration_seconds": 86400, "justification": "a long one"}
    )
    assert too_long.status_code in (400, 409)
    assert client.get(f"{V1}/requests/?status=nope").status_code == 400
    assert client.get(f"{V1}/events/?cursor=garbage").status_code in (400, 403)


def test_unknown_api_paths_are_a_json_404_with_a_token(scene):
    response = scene.clients["requester"].get(f"{V1}/nothing-here/")
    assert response.status_code == 404
    assert _error(response)["code"] == "not_found"


# --- Paging and throttling ---------------------------------------------------------------------------


def test_events_are_paged_by_cursor(scene):
    client = scene.clients["auditor"]
    seen, url = [], f"{V1}/events/?page_size=2"
    while url:
        page = client.get(url).json()
        assert len(page["results"]) <= 2
        seen += [e["id"] for e in page["results"]]
        url = page["next"]
    assert seen == sorted(AccessEvent.objects.values_list("pk", flat=True), reverse=True)
    assert _error(client.get(f"{V1}/events/?cursor=garbage"))["code"] == "invalid"


@pytest.mark.parametrize("path", ["events", "requests", "grants", "roles", "systems", "eligibility"])
@pytest.mark.parametrize(
    "query",
    [
        "p=x",
        "p=2026-02-30",
        "r=1&p=x",
        "o=1&p=%00",
        "p=0001-01-01T00:00:00+14:00",
        "p=-1",
        "p=99999999999999999999",
        "p=%C2%B2",
    ],
)
def test_a_hand_made_cursor_position_is_a_400_not_a_database_error(scene, path, query):
    """DRF checks a cursor's offset and direction but not its position, which the -pk ordering compares with an
    id: anything but an id written in ASCII digits is refused by name."""
    cursor = base64.b64encode(query.encode()).decode()
    response = scene.clients["auditor"].get(f"{V1}/{path}/", {"cursor": cursor})
    assert response.status_code == 400, (query, response.content[:300])
    assert _error(response)["code"] == "invalid"
    assert "cursor" in response.content.decode()


@pytest.mark.parametrize("path", ["events", "requests", "grants", "roles", "systems", "eligibility"])
def test_a_page_size_is_one_number_from_1_to_200_or_a_400_that_says_so(scene, path):
    """A probe's finding: ``abc``, ``0``, ``-1``, ``null`` or two values served the default page, 100000 quietly
    200 rows."""
    client = scene.clients["auditor"]
    for query in ("abc", "0", "-1", "null", "", "1.5", "201", "100000", "\u00b2", "1&page_size=2"):
        response = client.get(f"{V1}/{path}/?page_size={query}")
        assert response.status_code == 400, (path, query)
        assert _error(response)["code"] == "invalid" and "1 to 200" in response.content.decode()
    for size in ("1", "200"):
        assert client.get(f"{V1}/{path}/?page_size={size}").status_code == 200


def test_each_token_is_throttled(scene, settings):
    settings.API_THROTTLE_RATE = "3/min"
    client = scene.clients["outsider"]
    with time_machine.travel(timezone.now(), tick=False):  # counted per minute: all in one window
        statuses = [client.get(f"{V1}/requests/").status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        assert scene.clients["auditor"].get(f"{V1}/requests/").status_code == 200


@pytest.mark.parametrize(
    ("path", "parameter", "value"),
    [
        ("requests", "status", "bogus"),
        ("grants", "status", "bogus"),
        ("grants", "active", "maybe"),
        ("roles", "eligible", "maybe"),
        ("events", "access_request", "x"),
        ("events", "grant", "1.5"),
    ],
)
def test_a_bad_filter_value_is_invalid_input_naming_the_parameter(scene, path, parameter, value):
    """A probe's finding: bad filter values answered ``policy_violation`` (reserved for a role's policy) while a
    bad page_size or cursor answered ``invalid`` with ``fields``; now they all say which parameter is wrong."""
    response = scene.clients["auditor"].get(f"{V1}/{path}/", {parameter: value})
    assert response.status_code == 400
    error = _error(response)
    assert error["code"] == "invalid"
    assert list(error["fields"]) == [parameter]


def test_the_decision_queue_checks_page_size_as_every_list_does(scene, make_user):
    """A probe's finding: ``/decisions/`` ignored ``?page_size=abc`` and ``?page_size=1``."""
    from accessgov.models import Eligibility

    colleague = make_user("colleague")
    Eligibility.objects.create(role=scene.role, user=colleague)
    request_services.access_request_submit(
        colleague, role=scene.role, duration=timedelta(hours=1), justification="Same fix, other shard"
    )
    client = scene.clients["approver"]
    for query in ("abc", "0", "-1", "", "201", "1&page_size=2"):
        response = client.get(f"{V1}/decisions/?page_size={query}")
        assert response.status_code == 400, query
        assert _error(response)["code"] == "invalid" and list(_error(response)["fields"]) == ["page_size"]
    assert len(client.get(f"{V1}/decisions/").json()) == 2
    assert [r["id"] for r in client.get(f"{V1}/decisions/?page_size=1").json()] == [scene.pending.pk]
    assert len(client.get(f"{V1}/decisions/?page_size=200").json()) == 2
