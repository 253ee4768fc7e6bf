"""SCIM provisioning from the identity provider: joiners, movers and leavers with requests shaped like
Okta's and Entra ID's documented SCIM calls (PATCH included), the leaver's access ended through the same
deactivation as an admin's, the mover's group eligibility and dependent grants ended, and abuse: wrong,
revoked and misplaced tokens, another provider's ids, huge, malformed and NUL-laden bodies, attempts to
make someone staff or to touch a service account."""

import json
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.contrib.auth.models import Group
from django.test import Client
from django.utils import timezone

from accessgov.exceptions import PolicyViolation
from accessgov.models import (
    AccessEvent,
    AccessRequest,
    ApiToken,
    Eligibility,
    ExternalIdentity,
    Grant,
    IdentityGroup,
    IdentityProvider,
    OutboxItem,
    User,
)
from accessgov.services import access_requests as ar
from accessgov.services import tokens as token_services
from tests.conftest import sign_in
from tests.support.identity_support import (
    ENTRA_DISABLE,
    OKTA_DEACTIVATE,
    Scim,
    entra_user,
    make_scim_client,
    okta_user,
)

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
PATCH_SCHEMA = ["urn:ietf:params:scim:api:messages:2.0:PatchOp"]


@pytest.fixture(autouse=True)
def _fixed_clock():
    with time_machine.travel(T0, tick=True):
        yield


@pytest.fixture
def okta():
    provider = IdentityProvider.objects.create(
        slug="okta", name="Okta", kind="okta", issuer="https://example.okta.com", client_id="0oa1"
    )
    account, secret = make_scim_client(provider)
    provider.account = account
    provider.scim = Scim(Client(), secret)
    return provider


@pytest.fixture
def entra():
    provider = IdentityProvider.objects.create(
        slug="entra", name="Entra ID", kind="entra", issuer="https://login.microsoftonline.com/t/v2.0", client_id="app"
    )
    account, secret = make_scim_client(provider)
    provider.account = account
    provider.scim = Scim(Client(), secret)
    return provider


def _create(provider, body) -> dict:
    response = provider.scim.post("Users", body)
    assert response.status_code == 201, response.content
    assert response["Content-Type"] == "application/scim+json"
    return response.json()


def _link(world_user, provider) -> ExternalIdentity:
    """An existing account the provider manages (as if provisioned earlier)."""
    return ExternalIdentity.objects.create(
        provider=provider, user=world_user, subject=f"ext-{world_user.username}", user_name=world_user.username
    )


# --- Joiners and updates, as Okta and Entra ID send them ------------------------------------------


def test_okta_creates_reads_updates_and_deactivates_a_user(okta):
    created = _create(okta, okta_user("ada@example.com", "00u1ada"))
    assert created["userName"] == "ada@example.com" and created["active"] is True
    assert created["externalId"] == "00u1ada" and created["meta"]["location"].endswith(
        f"/scim/v2/Users/{created['id']}"
    )
    user = User.objects.get(username="ada@example.com")
    assert not user.has_usable_password() and user.first_name == "Ada" and not user.is_staff
    assert ExternalIdentity.objects.get(user=user).subject == "00u1ada"  # the OIDC subject Okta will sign in with
    found = okta.scim.get('Users?filter=userName eq "ADA@example.com"&startIndex=1&count=100').json()
    assert found["totalResults"] == 1 and found["Resources"][0]["id"] == created["id"]
    assert okta.scim.get('Users?filter=userName eq "nobody@example.com"').json()["totalResults"] == 0
    put = okta.scim.put(f"Users/{created['id']}", okta_user("ada@example.com", "00u1ada", given="Augusta"))
    assert put.status_code == 200 and put.json()["name"]["givenName"] == "Augusta"
    user.refresh_from_db()
    assert user.first_name == "Augusta"
    deactivated = okta.scim.patch(f"Users/{created['id']}", OKTA_DEACTIVATE)
    assert deactivated.status_code == 200 and deactivated.json()["active"] is False
    user.refresh_from_db()
    assert not user.is_active
    event = AccessEvent.objects.get(event_type=AccessEvent.Type.USER_DEACTIVATED)
    assert event.actor == okta.account and event.data["idp"] == "okta"
    assert event.data["via"]["api_token_kind"] == "service" and event.data["via"]["scim"] == "okta"
    types = list(AccessEvent.objects.values_list("event_type", flat=True))
    assert types.count(AccessEvent.Type.IDENTITY_USER_CREATED) == 1
    assert types.count(AccessEvent.Type.IDENTITY_USER_UPDATED) == 1


def test_entra_provisions_and_patches_with_its_own_shapes(entra):
    created = _create(entra, entra_user("grace@contoso.com", "8b1f-oid"))
    path = f"Users/{created['id']}"
    patch = {
        "schemas": PATCH_SCHEMA,
        "Operations": [
            {"op": "Replace", "path": "name.givenName", "value": "Amazing Grace"},
            {"op": "Replace", "path": 'emails[type eq "work"].value', "value": "grace.hopper@contoso.com"},
            {
                "op": "Add",
                "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
                "value": "X",
            },
            {"op": "Replace", "path": "title", "value": "Rear Admiral"},
        ],
    }
    answer = entra.scim.patch(path, patch)
    assert answer.status_code == 200, answer.content
    user = User.objects.get(username="grace@contoso.com")
    assert (user.first_name, user.email) == ("Amazing Grace", "grace.hopper@contoso.com")
    assert entra.scim.get('Users?filter=externalId eq "8b1f-oid"').json()["totalResults"] == 1
    assert entra.scim.patch(path, ENTRA_DISABLE).json()["active"] is False
    user.refresh_from_db()
    assert user.is_active is False
    enable = {"schemas": PATCH_SCHEMA, "Operations": [{"op": "Replace", "path": "active", "value": "True"}]}
    assert entra.scim.patch(path, enable).json()["active"] is True  # its own deactivation: it may undo it
    assert AccessEvent.objects.filter(event_type=AccessEvent.Type.USER_REACTIVATED).count() == 1


def test_the_provider_reactivates_only_what_it_deactivated(okta, world, make_user):
    identity = _link(world.requester, okta)
    from accessgov.services import users as user_services

    user_services.user_deactivate(
        make_user("root", is_staff=True, is_superuser=True), world.requester.pk, reason="incident"
    )
    # Okta's PUT carries active: true every time.
    body = okta_user(world.requester.username, identity.subject, email="requester@example.com")
    answer = okta.scim.put(f"Users/{identity.scim_id}", body)
    assert answer.status_code == 200 and answer.json()["active"] is False
    world.requester.refresh_from_db()
    assert world.requester.is_active is False


def test_discovery_endpoints_answer_scim(okta):
    config = okta.scim.get("ServiceProviderConfig").json()
    assert config["patch"]["supported"] is True and config["bulk"]["supported"] is False
    assert {r["id"] for r in okta.scim.get("ResourceTypes").json()["Resources"]} == {"User", "Group"}
    assert okta.scim.get("Schemas").json()["totalResults"] == 2
    # Each by its id (RFC 7644 4), and any other path is a SCIM 404 — never the portal's sign-in page.
    user_schema = okta.scim.get("Schemas/urn:ietf:params:scim:schemas:core:2.0:User")
    assert user_schema.status_code == 200 and user_schema.json()["name"] == "User"
    assert okta.scim.get("ResourceTypes/Group").json()["endpoint"] == "/Groups"
    for path in ("Schemas/urn:nope", "ResourceTypes/Device", "Users/", "Nope", "Users/x/y", "Bulk"):
        answer = okta.scim.get(path)
        assert answer.status_code == 404, path
        assert answer.json()["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"], path
    assert okta.scim.post("Bulk", {}).status_code == 404
    # Without the token, an unknown path is refused like a known one (no sign-in redirect, no oracle).
    assert Client().get("/scim/v2/Nope").status_code == Client().get("/scim/v2/Users").status_code == 401


# --- Leavers ---------------------------------------------------------------------------------------


def test_a_leaver_loses_sessions_grants_requests_and_tokens_at_once(okta, world):
    identity = _link(world.requester, okta)
    portal = sign_in(Client(), world.requester)
    assert portal.get("/").status_code == 200
    grant_request = ar.access_request_submit(
        world.requester, role=world.role, duration=timedelta(hours=1), justification="Fix the ledger"
    )
    ar.access_request_approve(world.approver, grant_request.pk)
    grant = Grant.objects.get(access_request=grant_request)
    pending = ar.access_request_submit(
        world.requester, role=world.role_two, duration=timedelta(hours=1), justification="Migrate the schema"
    )
    _, token = token_services.api_token_create(
        world.requester,
        user=world.requester,
        name="laptop",
        kind="personal",
        expires_at=timezone.now() + timedelta(days=7),
    )
    answer = okta.scim.patch(f"Users/{identity.scim_id}", OKTA_DEACTIVATE)
    assert answer.status_code == 200
    grant.refresh_from_db()
    assert grant.status == Grant.Status.REVOKED and grant.end_reason == Grant.EndReason.REVOKED
    assert OutboxItem.objects.filter(grant=grant, action=OutboxItem.Action.REMOVE).exists()
    assert AccessRequest.objects.get(pk=pending.pk).status == AccessRequest.Status.CANCELLED
    assert ApiToken.objects.get(user=world.requester).revoked_at is not None
    assert portal.get("/")["Location"].startswith("/accounts/login/")  # the session ended
    api = Client().get("/api/v1/requests/", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert api.status_code == 401
    revoked = AccessEvent.objects.get(event_type=AccessEvent.Type.GRANT_REVOKED, grant=grant)
    assert revoked.actor_label == "system:deactivation" and "Deactivated by Okta" in revoked.reason


def test_a_deleted_user_is_deactivated_unlinked_and_kept(okta, world):
    identity = _link(world.requester, okta)
    assert okta.scim.delete(f"Users/{identity.scim_id}").status_code == 204
    world.requester.refresh_from_db()
    assert world.requester.is_active is False
    assert not ExternalIdentity.objects.filter(pk=identity.pk).exists()
    assert okta.scim.get(f"Users/{identity.scim_id}").status_code == 404
    assert AccessEvent.objects.filter(event_type=AccessEvent.Type.IDENTITY_UNLINKED).count() == 1


# --- Groups and movers -----------------------------------------------------------------------------


def _group_with_eligibility(provider, world, members: list[str]) -> dict:
    body = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
        "displayName": "payments-engineers",
        "members": [{"value": m} for m in members],
    }
    group = provider.scim.post("Groups", body)
    assert group.status_code == 201, group.content
    portal_group = IdentityGroup.objects.get(scim_id=group.json()["id"]).group
    Eligibility.objects.create(role=world.role, group=portal_group, starts_at=T0 - timedelta(days=1))
    return group.json()


def test_okta_group_push_creates_a_rightless_group_named_after_the_provider(okta, world):
    ada = _create(okta, okta_user("ada@example.com", "00u1"))
    group = _group_with_eligibility(okta, world, [ada["id"]])
    assert group["displayName"] == "payments-engineers" and group["members"][0]["value"] == ada["id"]
    portal_group = Group.objects.get(identity_group__scim_id=group["id"])
    assert portal_group.name == "okta: payments-engineers" and not portal_group.permissions.exists()
    assert okta.scim.get(f"Users/{ada['id']}").json()["groups"][0]["display"] == "payments-engineers"
    rename = {
        "schemas": PATCH_SCHEMA,
        "Operations": [{"op": "replace", "value": {"id": group["id"], "displayName": "payments"}}],
    }
    assert okta.scim.patch(f"Groups/{group['id']}", rename).status_code == 204
    portal_group.refresh_from_db()
    assert portal_group.name == "okta: payments"
    excluded = okta.scim.get('Groups?filter=displayName eq "payments"&excludedAttributes=members').json()
    assert excluded["totalResults"] == 1 and "members" not in excluded["Resources"][0]


def test_a_mover_loses_the_group_eligibility_and_the_grants_that_depended_on_it(okta, world, make_user):
    mover, stayer = world.requester, make_user("stayer")
    Eligibility.objects.filter(user=mover).delete()  # only the group makes them eligible
    mover_link, stayer_link = _link(mover, okta), _link(stayer, okta)
    Eligibility.objects.create(role=world.role, user=stayer, starts_at=T0 - timedelta(days=1))  # their own, too
    group = _group_with_eligibility(okta, world, [str(mover_link.scim_id), str(stayer_link.scim_id)])
    grants = {}
    for person in (mover, stayer):
        request = ar.access_request_submit(
            person, role=world.role, duration=timedelta(hours=1), justification="On call for payments"
        )
        ar.access_request_approve(world.approver, request.pk)
        grants[person.username] = Grant.objects.get(access_request=request)
    Eligibility.objects.create(
        role=world.role_two,
        group=Group.objects.get(identity_group__scim_id=group["id"]),
        starts_at=T0 - timedelta(days=1),
    )
    pending = ar.access_request_submit(
        mover, role=world.role_two, duration=timedelta(hours=1), justification="Schema work"
    )
    okta_remove = {
        "schemas": PATCH_SCHEMA,
        "Operations": [{"op": "remove", "path": f'members[value eq "{mover_link.scim_id}"]'}],
    }
    okta_remove_stayer = {
        "schemas": PATCH_SCHEMA,
        "Operations": [{"op": "remove", "path": f'members[value eq "{stayer_link.scim_id}"]'}],
    }
    assert okta.scim.patch(f"Groups/{group['id']}", okta_remove).status_code == 204
    assert okta.scim.patch(f"Groups/{group['id']}", okta_remove_stayer).status_code == 204
    moved = Grant.objects.get(pk=grants[mover.username].pk)
    assert moved.status == Grant.Status.REVOKED
    assert OutboxItem.objects.filter(grant=moved, action=OutboxItem.Action.REMOVE).exists()
    assert (
        "removed from okta: payments-engineers by Okta"
        in AccessEvent.objects.get(grant=moved, event_type="grant.revoked").reason
    )
    assert Grant.objects.get(pk=grants[stayer.username].pk).status == Grant.Status.ACTIVE  # own eligibility covers it
    assert AccessRequest.objects.get(pk=pending.pk).status == AccessRequest.Status.CANCELLED
    left = AccessEvent.objects.filter(event_type=AccessEvent.Type.IDENTITY_GROUP_LEFT)
    assert left.count() == 2 and {e.actor_id for e in left} == {okta.account.pk}


def test_entra_membership_operations_add_remove_and_replace(entra, world, make_user):
    links = [_link(make_user(f"member{i}"), entra) for i in range(3)]
    ids = [str(link.scim_id) for link in links]
    group = entra.scim.post(
        "Groups",
        {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "SRE", "externalId": "g-1"},
    ).json()
    path = f"Groups/{group['id']}"
    add = {
        "schemas": PATCH_SCHEMA,
        "Operations": [{"op": "Add", "path": "members", "value": [{"value": ids[0]}, {"value": ids[1]}]}],
    }
    assert entra.scim.patch(path, add).status_code == 204
    remove = {
        "schemas": PATCH_SCHEMA,
        "Operations": [{"op": "Remove", "path": "members", "value": [{"value": ids[0]}]}],
    }
    assert entra.scim.patch(path, remove).status_code == 204
    members = {m["value"] for m in entra.scim.get(path).json()["members"]}
    assert members == {ids[1]}
    put = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
        "displayName": "SRE",
        "members": [{"value": ids[2]}],
    }
    assert {m["value"] for m in entra.scim.put(path, put).json()["members"]} == {ids[2]}
    assert entra.scim.get('Groups?filter=externalId eq "g-1"').json()["totalResults"] == 0  # PUT cleared it
    assert entra.scim.delete(path).status_code == 204
    kept = Group.objects.get(name__startswith="entra: SRE (removed")
    assert not kept.user_set.exists()
    assert entra.scim.get(path).status_code == 404


# --- Abuse ------------------------------------------------------------------------------------------


def test_scim_refuses_missing_wrong_revoked_expired_and_misplaced_tokens(okta, world, make_user):
    client = Client()
    assert client.get("/scim/v2/Users").status_code == 401
    wrong = client.get("/scim/v2/Users", HTTP_AUTHORIZATION="Bearer agv_s_" + "x" * 43)
    assert wrong.status_code == 401 and wrong.json()["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
    assert client.get("/scim/v2/Users", HTTP_AUTHORIZATION="Basic YTpi").status_code == 401
    token = ApiToken.objects.get(user=okta.account)
    with time_machine.travel(T0 + timedelta(days=91)):
        assert okta.scim.get("Users").status_code == 401  # expired
    token_services.api_token_revoke(make_user("root", is_staff=True), token.pk)
    assert okta.scim.get("Users").status_code == 401  # revoked
    _, personal = token_services.api_token_create(
        world.requester,
        user=world.requester,
        name="mine",
        kind="personal",
        expires_at=timezone.now() + timedelta(days=1),
    )
    assert Client().get("/scim/v2/Users", HTTP_AUTHORIZATION=f"Bearer {personal}").status_code == 403


def test_a_scim_token_does_nothing_else_and_nobody_else_gets_the_scope(okta, world):
    answer = okta.scim.client.get("/api/v1/requests/", **okta.scim.headers)
    assert answer.status_code == 403
    with pytest.raises(PolicyViolation):
        token_services.api_token_create(
            world.requester,
            user=world.requester,
            name="sneaky",
            kind="personal",
            expires_at=timezone.now() + timedelta(days=1),
            scopes=[ApiToken.Scope.SCIM_PROVISION],
        )
    with pytest.raises(PolicyViolation):
        token_services.service_token_draft(
            user=okta.account,
            name="wide",
            expires_at=timezone.now() + timedelta(days=1),
            scopes=[ApiToken.Scope.SCIM_PROVISION, ApiToken.Scope.DECISIONS_DECIDE],
            role_ids=[],
        )
    okta.scim_enabled = False
    okta.save()
    assert okta.scim.get("Users").status_code == 403  # SCIM switched off: the token provisions nothing


def test_another_providers_ids_look_like_ids_that_do_not_exist(okta, entra):
    theirs = _create(entra, entra_user("zoe@contoso.com", "oid-zoe"))
    group = entra.scim.post("Groups", {"displayName": "Theirs"}).json()
    for method in ("get", "delete"):
        assert getattr(okta.scim, method)(f"Users/{theirs['id']}").status_code == 404
    assert okta.scim.patch(f"Users/{theirs['id']}", OKTA_DEACTIVATE).status_code == 404
    assert okta.scim.put(f"Users/{theirs['id']}", okta_user("zoe@contoso.com", "x")).status_code == 404
    assert okta.scim.get(f"Groups/{group['id']}").status_code == 404
    assert okta.scim.get("Users/not-a-uuid").status_code == 404
    as_member = okta.scim.post("Groups", {"displayName": "Mine", "members": [{"value": theirs["id"]}]})
    assert as_member.status_code == 400 and not Group.objects.filter(name="okta: Mine").exists()
    assert okta.scim.get('Users?filter=userName eq "zoe@contoso.com"').json()["totalResults"] == 0
    assert User.objects.get(username="zoe@contoso.com").is_active


def test_provisioning_never_makes_anyone_staff_or_gives_rights(okta):
    for extra in (
        {"roles": [{"value": "admin"}]},
        {"entitlements": [{"value": "superuser"}]},
        {"groups": [{"value": "1"}]},
    ):
        answer = okta.scim.post("Users", {**okta_user("eve@example.com", "00ueve"), **extra})
        assert answer.status_code == 400 and answer.json()["scimType"] == "mutability", extra
    unknown = okta.scim.post("Users", {**okta_user("eve@example.com", "00ueve"), "isStaff": True, "is_superuser": True})
    assert unknown.status_code == 400 and "isStaff" in unknown.json()["detail"]
    created = _create(okta, okta_user("eve@example.com", "00ueve"))
    for operation in (
        {"op": "add", "path": "roles", "value": [{"value": "admin"}]},
        {"op": "replace", "value": {"isStaff": True}},
        {"op": "replace", "path": "is_staff", "value": True},
        {"op": "add", "path": "groups", "value": [{"value": "x"}]},
    ):
        answer = okta.scim.patch(f"Users/{created['id']}", {"schemas": PATCH_SCHEMA, "Operations": [operation]})
        assert answer.status_code == 400, operation
    eve = User.objects.get(username="eve@example.com")
    assert not (eve.is_staff or eve.is_superuser) and not eve.groups.exists() and not eve.user_permissions.exists()


def test_provisioning_never_takes_over_a_local_or_service_account(okta, make_user):
    make_user("admin@example.com", is_staff=True)
    machine = User(username="deploy-bot", is_service_account=True)
    machine.set_unusable_password()
    machine.save()
    for name in ("admin@example.com", "deploy-bot", okta.account.username):
        answer = okta.scim.post("Users", okta_user(name, f"ext-{name}", email="someone@example.com"))
        assert answer.status_code == 409 and answer.json()["scimType"] == "uniqueness", name
    assert not ExternalIdentity.objects.exists()
    assert okta.scim.get(f"Users/{machine.pk}").status_code == 404
    assert User.objects.get(username="deploy-bot").is_active and User.objects.get(username="admin@example.com").is_staff


def test_a_rename_never_takes_another_accounts_name(okta, make_user):
    """A probe's finding: POST refused another account's name, but PATCH and PUT took it — SCIM, its filter
    and the ledger then showed a second person under that name. A rename to its own name in another case,
    or to a free name, still works."""
    make_user("carol", device=False)
    joe = _create(okta, okta_user("joe@example.com", "00u1joe"))
    rename = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"]}
    for name in ("carol", "CAROL", okta.account.username):
        patched = okta.scim.patch(
            f"Users/{joe['id']}", {**rename, "Operations": [{"op": "replace", "path": "userName", "value": name}]}
        )
        assert patched.status_code == 409 and patched.json()["scimType"] == "uniqueness", name
        put = okta.scim.put(f"Users/{joe['id']}", okta_user(name, "00u1joe", email="joe@example.com"))
        assert put.status_code == 409 and "another AccessGov account" in put.json()["detail"], name
    assert ExternalIdentity.objects.get().user_name == "joe@example.com"
    assert okta.scim.get('Users?filter=userName eq "carol"').json()["totalResults"] == 0
    assert not AccessEvent.objects.filter(event_type=AccessEvent.Type.IDENTITY_USER_UPDATED).exists()
    assert okta.scim.put(f"Users/{joe['id']}", okta_user("Joe@example.com", "00u1joe")).status_code == 200
    assert okta.scim.put(f"Users/{joe['id']}", okta_user("joseph@example.com", "00u1joe")).status_code == 200
    assert ExternalIdentity.objects.get().user_name == "joseph@example.com"


def test_an_identity_whose_provider_name_is_another_accounts_still_syncs_and_leaves(okta, make_user):
    """The review's finding on the check above: a JIT account numbered beside a taken name (``john-2`` for the
    provider's ``john``) has kept that provider name; its every update — its leaver's deactivation above all — was
    refused with 409. Only a change of the name is checked."""
    make_user("john", device=False)
    numbered = make_user("john-2", device=False)
    identity = ExternalIdentity.objects.create(provider=okta, user=numbered, subject="00u1john", user_name="john")
    patched = okta.scim.patch(f"Users/{identity.scim_id}", OKTA_DEACTIVATE)
    assert patched.status_code == 200 and patched.json()["active"] is False
    numbered.refresh_from_db()
    assert not numbered.is_active and User.objects.get(username="john").is_active


def test_a_look_alike_username_neither_sits_beside_an_account_nor_passes_for_one(okta, make_user):
    make_user("alice", device=False)
    fullwidth = "\uff41\uff4c\uff49\uff43\uff45"  # "alice" in full-width letters
    answer = okta.scim.post("Users", okta_user(fullwidth, "ext-fw", email="fw@example.com"))
    assert answer.status_code == 409 and answer.json()["scimType"] == "uniqueness"
    mixed = "\u0430dam"  # a Cyrillic a, then Latin letters
    answer = okta.scim.post("Users", okta_user(mixed, "ext-mixed", email="mixed@example.com"))
    assert answer.status_code == 400 and "Cyrillic and Latin" in answer.json()["detail"]
    # A full-width name nobody has is stored as Django stores usernames; a name in one alphabet is kept as it is.
    created = okta.scim.post("Users", okta_user("\uff42\uff4f\uff42", "ext-bob", email="bob@example.com"))
    assert created.status_code == 201 and created.json()["userName"] == "bob"
    russian = okta.scim.post("Users", okta_user("\u0438\u0432\u0430\u043d", "ext-ivan", email="ivan@example.com"))
    assert russian.status_code == 201
    assert not User.objects.filter(username__in=[fullwidth, mixed]).exists()


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"{not json", "application/scim+json", 400),
        (b"\xff\xfe\x00", "application/scim+json", 400),
        (b"[1, 2, 3]", "application/scim+json", 400),
        (b'{"userName": NaN}', "application/scim+json", 400),
        (
            json.dumps({**okta_user("nul@example.com", "n"), "name": {"givenName": "A\x00B"}}).encode(),
            "application/scim+json",
            400,
        ),
        (b"[" * 100_000 + b"]" * 100_000, "application/scim+json", 400),
        # An unpaired surrogate (valid JSON, no UTF-8): was a 500 when it reached PostgreSQL.
        (b'{"userName": "sur1@example.com", "externalId": "\\ud800"}', "application/scim+json", 400),
        (b'{"userName": "sur2@example.com", "name": {"givenName": "\\udfffx"}}', "application/scim+json", 400),
        (b'{"userName": "' + b"a" * 2_000_000 + b'"}', "application/scim+json", 413),
        (json.dumps(okta_user("form@example.com", "f")).encode(), "text/plain", 415),
        (
            json.dumps({**okta_user("x@example.com", "x"), "userName": "bad name with spaces"}).encode(),
            "application/scim+json",
            400,
        ),
        (json.dumps({**okta_user("x@example.com", "x"), "active": "maybe"}).encode(), "application/scim+json", 400),
        # A key twice: which one counts depends on the parser (a probe's finding on the API).
        (b'{"userName": "twice@example.com", "userName": "adam"}', "application/scim+json", 400),
        (
            json.dumps({**okta_user("x@example.com", "x"), "emails": [{"value": "not-an-email"}]}).encode(),
            "application/scim+json",
            400,
        ),
    ],
)
def test_malformed_huge_and_nul_bodies_are_refused_with_a_scim_error(okta, body, content_type, status):
    answer = okta.scim.client.post("/scim/v2/Users", data=body, content_type=content_type, **okta.scim.headers)
    assert answer.status_code == status
    assert answer.json()["status"] == str(status)
    assert not ExternalIdentity.objects.exists()


@pytest.mark.parametrize(
    "query",
    [
        'filter=userName sw "a"',
        'filter=userName eq "x" or userName pr',
        'filter=password eq "x"',
        'filter=userName eq "\\u0000"',
        'filter=userName eq "\\ud800"',
        'filter=externalId eq "\\udfff"',
        "startIndex=abc",
        "count=1e9",
    ],
)
def test_unsupported_filters_and_bad_pages_are_refused(okta, query):
    answer = okta.scim.get(f"Users?{query}")
    assert answer.status_code == 400 and answer.json()["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]


def test_bad_patch_operations_are_refused_and_change_nothing(okta):
    created = _create(okta, okta_user("pat@example.com", "00upat"))
    path = f"Users/{created['id']}"
    for body in (
        {"schemas": PATCH_SCHEMA, "Operations": []},
        {"schemas": PATCH_SCHEMA, "Operations": [{"op": "explode", "path": "active"}]},
        {"schemas": PATCH_SCHEMA, "Operations": [{"op": "remove", "path": "userName"}]},
        {"schemas": PATCH_SCHEMA, "Operations": [{"op": "replace", "path": "name", "value": [1]}]},
        {"schemas": PATCH_SCHEMA, "Operations": [{"op": "replace", "path": "emails", "value": "x@example.com"}]},
        {
            "schemas": PATCH_SCHEMA,
            "Operations": [
                {"op": "replace", "path": "active", "value": False},
                {"op": "replace", "path": "nonsense", "value": 1},
            ],
        },
        {"schemas": ["wrong"], "Operations": [{"op": "replace", "path": "active", "value": False}]},
        {"schemas": PATCH_SCHEMA, "Operations": [{"op": "replace", "path": "active", "value": False}] * 1001},
    ):
        assert okta.scim.patch(path, body).status_code in (400, 413), body
    assert User.objects.get(username="pat@example.com").is_active  # the half-valid PATCH changed nothing
    assert okta.scim.client.options(f"/scim/v2/{path}", **okta.scim.headers).status_code == 405


def test_the_scim_token_is_a_four_eyed_service_token_shown_once_to_its_proposer(make_user):
    from accessgov.models import ChangeRequest
    from accessgov.services import changes as change_services

    first = make_user("admin1", is_staff=True, is_superuser=True)
    second = make_user("admin2", is_staff=True, is_superuser=True)
    account = User(username="okta-scim", is_service_account=True)
    account.set_unusable_password()
    account.save()
    IdentityProvider.objects.create(
        slug="okta",
        name="Okta",
        issuer="https://example.okta.com",
        client_id="c",
        scim_enabled=True,
        scim_service_account=account,
    )
    change, secret = change_services.change_propose_service_token(
        first,
        user=account,
        name="Okta SCIM",
        expires_at=timezone.now() + timedelta(days=30),
        scopes=[ApiToken.Scope.SCIM_PROVISION],
    )
    scim = Scim(Client(), secret)
    assert scim.get("Users").status_code == 401  # not approved yet: the proposer alone cannot use it
    assert secret not in json.dumps(change.payload) and secret not in json.dumps(change.changes)
    change_services.change_approve(second, change.pk)
    assert ChangeRequest.objects.get(pk=change.pk).status == ChangeRequest.Status.APPLIED
    assert scim.get("Users").status_code == 200
    assert secret not in "".join(str(e.data) for e in AccessEvent.objects.all())
