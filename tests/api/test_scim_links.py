"""What the provider's SCIM token may do to a link made at sign-in (its owner linked their account on Account
security, or the account was created just in time): never re-point it (the externalId is the subject its owner
proved) nor set its e-mail address (on-call providers and account recovery go by it), yet a leaver is always
deactivated. Also a probe's other findings: a deactivation stuck at 409 on a userName it did not change, an update
recording a change it did not make, and userNames written wholly in Cyrillic or Greek letters that read as a
taken name. With abuse: another provider's token, replayed and combined operations."""

from datetime import UTC, datetime

import pytest
import time_machine
from django.test import Client
from django.urls import reverse

from accessgov.models import AccessEvent, ExternalIdentity, IdentityProvider, User
from accessgov.services import identity as identity_services
from tests.conftest import sign_in
from tests.support.identity_support import (
    ENTRA_DISABLE,
    OKTA_DEACTIVATE,
    Scim,
    make_identity_provider,
    make_scim_client,
    okta_user,
    sign_in_through,
)

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
PATCH_SCHEMA = ["urn:ietf:params:scim:api:messages:2.0:PatchOp"]
Type = AccessEvent.Type


@pytest.fixture(autouse=True)
def _fixed_clock(request):
    if "oidc_provider" in request.fixturenames:  # the provider process signs with the real clock
        yield
        return
    with time_machine.travel(T0, tick=True):
        yield


def _provider(slug: str, name: str) -> IdentityProvider:
    provider = IdentityProvider.objects.create(
        slug=slug, name=name, kind="okta", issuer=f"https://{slug}.example.com", client_id="c"
    )
    provider.account, secret = make_scim_client(provider)
    provider.scim = Scim(Client(), secret)
    return provider


@pytest.fixture
def okta():
    return _provider("okta", "Okta")


@pytest.fixture
def entra():
    return _provider("entra", "Entra ID")


def _self_link(provider: IdentityProvider, user: User, subject: str) -> ExternalIdentity:
    """``user`` links their own account, as the Account security page's link flow does after the provider's answer."""
    identity_services.sso_sign_in(provider, {"sub": subject}, link_user=user)
    return ExternalIdentity.objects.get(provider=provider, user=user)


def _patch(*operations: dict) -> dict:
    return {"schemas": PATCH_SCHEMA, "Operations": list(operations)}


def _signs_in_as(provider: IdentityProvider, subject: str) -> User | None:
    try:
        return identity_services.sso_sign_in(provider, {"sub": subject}).user
    except identity_services.SignInRefused:
        return None


REPOINTS = [
    _patch({"op": "replace", "path": "externalId", "value": "sub-mallory2"}),
    _patch({"op": "Replace", "path": "externalId", "value": "sub-mallory2"}),  # Entra ID's capitalised op
    _patch({"op": "replace", "value": {"externalId": "sub-mallory2"}}),  # Okta's form, no path
    _patch({"op": "add", "path": "externalId", "value": "sub-mallory2"}),
    _patch({"op": "replace", "path": "urn:ietf:params:scim:schemas:core:2.0:User:externalId", "value": "sub-mallory2"}),
    _patch({"op": "remove", "path": "externalId"}),  # unlinked now, re-pointed by the next call
    _patch({"op": "remove", "path": "externalId"}, {"op": "add", "path": "externalId", "value": "sub-mallory2"}),
]


# --- 1. A link its owner made is theirs -------------------------------------------------------------


def test_the_scim_token_cannot_repoint_a_link_its_owner_made_in_any_form(okta, make_user):
    alice = make_user("alice")
    identity = _self_link(okta, alice, "sub-alice")
    listed = okta.scim.get("Users").json()
    assert [r["id"] for r in listed["Resources"]] == [str(identity.scim_id)]  # the provider still sees her
    path = f"Users/{identity.scim_id}"
    for body in REPOINTS:
        answer = okta.scim.patch(path, body)
        assert answer.status_code == 400, (body, answer.content)
        assert answer.json()["scimType"] == "mutability" and "at sign-in" in answer.json()["detail"], body
    put = okta.scim.put(path, okta_user("alice", "sub-mallory2", email=alice.email))
    assert put.status_code == 400 and put.json()["scimType"] == "mutability"
    without = okta_user("alice", "x", email=alice.email)
    del without["externalId"]  # a PUT replaces: leaving it out would remove it
    assert okta.scim.put(path, without).status_code == 400
    identity.refresh_from_db()
    assert identity.subject == "sub-alice"
    assert not AccessEvent.objects.filter(event_type=Type.IDENTITY_USER_UPDATED).exists()
    assert _signs_in_as(okta, "sub-mallory2") is None
    assert _signs_in_as(okta, "sub-alice") == alice
    # What the provider created over SCIM is still its own to re-point and to give an address.
    created = okta.scim.post("Users", okta_user("joe@example.com", "00u1joe")).json()
    joe = f"Users/{created['id']}"
    answer = okta.scim.patch(joe, _patch({"op": "replace", "path": "externalId", "value": "00u2joe"}))
    assert answer.status_code == 200 and answer.json()["externalId"] == "00u2joe"
    emailed = okta.scim.patch(joe, _patch({"op": "replace", "path": 'emails[type eq "work"].value', "value": "j@x.io"}))
    assert emailed.status_code == 200 and User.objects.get(username="joe@example.com").email == "j@x.io"


def test_the_probe_end_to_end_a_repointed_subject_never_signs_in_as_the_owner(oidc_provider, make_user):
    """Through the real link flow and the provider process: alice links on Account security; the SCIM token's
    re-point is refused, and the provider's mallory2 finds no account."""
    idp = make_identity_provider(oidc_provider, slug="probeidp")
    _, secret = make_scim_client(idp)
    scim = Scim(Client(), secret)
    alice = make_user("alice")
    oidc_provider.add_person("alice.idp", "idp-pass-alice", sub="sub-alice-e2e")
    oidc_provider.add_person("mallory2", "idp-pass-mallory2", sub="sub-mallory2-e2e")
    client = sign_in(Client(), alice)
    start = client.post(reverse("sso:link", args=[idp.slug]))
    assert (
        sign_in_through(client, oidc_provider, idp.slug, "alice.idp", "idp-pass-alice", start=start).status_code == 302
    )
    identity = ExternalIdentity.objects.get(provider=idp, user=alice)
    answer = scim.patch(
        f"Users/{identity.scim_id}", _patch({"op": "replace", "path": "externalId", "value": "sub-mallory2-e2e"})
    )
    assert answer.status_code == 400 and answer.json()["scimType"] == "mutability"
    mallory = Client()
    refused = sign_in_through(mallory, oidc_provider, idp.slug, "mallory2", "idp-pass-mallory2")
    assert refused.status_code == 403 and "_auth_user_id" not in mallory.session


def test_a_just_in_time_account_keeps_the_subject_it_signed_in_with(okta):
    okta.jit_create_users = True
    okta.save(update_fields=["jit_create_users"])
    created = identity_services.sso_sign_in(okta, {"sub": "sub-jit", "preferred_username": "jitter"}).user
    identity = ExternalIdentity.objects.get(user=created)
    answer = okta.scim.patch(f"Users/{identity.scim_id}", REPOINTS[0])
    assert answer.status_code == 400 and answer.json()["scimType"] == "mutability"
    assert _signs_in_as(okta, "sub-jit") == created and _signs_in_as(okta, "sub-mallory2") != created


def test_an_account_the_provider_created_becomes_its_owners_once_they_link_it(okta, make_user):
    created = okta.scim.post("Users", {**okta_user("pat@example.com", "x"), "externalId": None}).json()
    identity = ExternalIdentity.objects.get(scim_id=created["id"])
    assert identity.subject is None and identity.provisioned_by_scim
    _self_link(okta, identity.user, "sub-pat")  # the owner proved both accounts
    answer = okta.scim.patch(f"Users/{identity.scim_id}", REPOINTS[0])
    assert answer.status_code == 400 and answer.json()["scimType"] == "mutability"
    assert _signs_in_as(okta, "sub-pat") == identity.user


def test_the_scim_token_cannot_change_a_self_linked_persons_email_address(okta, make_user):
    """On-call rules trust an address the provider's SCIM account set, and a recovery link goes to the address: for
    another person's address an admin needs a second admin, so the SCIM token gets no shortcut."""
    admin = make_user("root", is_staff=True, is_superuser=True, email="root@example.com")
    identity = _self_link(okta, admin, "sub-root")
    path = f"Users/{identity.scim_id}"
    for body in (
        _patch({"op": "replace", "path": 'emails[type eq "work"].value', "value": "oncall@example.com"}),
        _patch({"op": "replace", "path": "emails", "value": [{"value": "oncall@example.com", "primary": True}]}),
        _patch({"op": "replace", "value": {"emails": [{"value": "oncall@example.com", "primary": True}]}}),
        _patch({"op": "remove", "path": "emails"}),
    ):
        answer = okta.scim.patch(path, body)
        assert answer.status_code == 400 and answer.json()["scimType"] == "mutability", body
    put = okta.scim.put(path, okta_user("root", "sub-root", email="oncall@example.com"))
    assert put.status_code == 400 and "four-eyes" in put.json()["detail"]
    admin.refresh_from_db()
    assert admin.email == "root@example.com"
    # Names still follow the provider, and an address differing only in case is no change (nothing refused).
    renamed = okta.scim.put(path, okta_user("root", "sub-root", given="Rita", email="ROOT@example.com"))
    assert renamed.status_code == 200, renamed.content
    admin.refresh_from_db()
    assert (admin.first_name, admin.email) == ("Rita", "root@example.com")


# --- The leaver promise -----------------------------------------------------------------------------


OKTA_DEACTIVATE_AND_REPOINT = _patch({"op": "replace", "value": {"active": False, "externalId": "sub-mallory2"}})
ENTRA_DISABLE_AND_REPOINT = _patch(
    {"op": "Replace", "path": "active", "value": "False"},
    {"op": "Replace", "path": "externalId", "value": "sub-mallory2"},
)


@pytest.mark.parametrize("body", [OKTA_DEACTIVATE_AND_REPOINT, ENTRA_DISABLE_AND_REPOINT])
def test_a_self_linked_leaver_is_deactivated_by_patch_and_delete_and_never_repointed(okta, make_user, body):
    """The provider says they left: that always goes through; the re-point carried along is left out."""
    alice = make_user("alice")
    identity = _self_link(okta, alice, "sub-alice")
    answer = okta.scim.patch(f"Users/{identity.scim_id}", body)
    assert answer.status_code == 200 and answer.json()["active"] is False
    assert answer.json()["externalId"] == "sub-alice"
    alice.refresh_from_db()
    identity.refresh_from_db()
    assert not alice.is_active and identity.subject == "sub-alice" and identity.deactivated_by_idp
    assert AccessEvent.objects.get(event_type=Type.USER_DEACTIVATED).data["idp"] == "okta"
    bob = make_user("bob")
    other = _self_link(okta, bob, "sub-bob")
    assert okta.scim.delete(f"Users/{other.scim_id}").status_code == 204
    bob.refresh_from_db()
    assert not bob.is_active and not ExternalIdentity.objects.filter(pk=other.pk).exists()


def test_a_leaver_is_deactivated_even_when_the_same_request_asks_for_what_is_refused(okta, make_user):
    alice = make_user("alice", email="alice@example.com")
    identity = _self_link(okta, alice, "sub-alice")
    put = okta.scim.put(
        f"Users/{identity.scim_id}", okta_user("alice", "sub-mallory2", email="oncall@example.com", active=False)
    )
    assert put.status_code == 200 and put.json()["active"] is False
    identity.refresh_from_db()
    alice.refresh_from_db()
    assert not alice.is_active and identity.subject == "sub-alice" and alice.email == "alice@example.com"
    # Reactivating (the provider deactivated her) does not carry a re-point along: the whole request is refused.
    back = okta.scim.patch(
        f"Users/{identity.scim_id}",
        _patch({"op": "replace", "value": {"active": True, "externalId": "sub-mallory2"}}),
    )
    assert back.status_code == 400 and back.json()["scimType"] == "mutability"
    alice.refresh_from_db()
    identity.refresh_from_db()
    assert not alice.is_active and identity.subject == "sub-alice"


# --- 2. A deactivation is never stuck on a userName it does not change ------------------------------


@pytest.mark.parametrize("body", [OKTA_DEACTIVATE, ENTRA_DISABLE])
def test_a_deactivation_never_fails_on_the_uniqueness_of_a_username_it_does_not_change(okta, make_user, body):
    adam = make_user("adam")
    okta.jit_create_users = True
    okta.save(update_fields=["jit_create_users"])
    numbered = identity_services.sso_sign_in(okta, {"sub": "sub-evil1", "preferred_username": "adam"}).user
    assert numbered.username == "adam-2" and ExternalIdentity.objects.get(user=numbered).user_name == "adam"
    identity = _self_link(okta, adam, "sub-adam")
    assert identity.user_name == ""
    answer = okta.scim.patch(f"Users/{identity.scim_id}", body)
    assert answer.status_code == 200, answer.content
    adam.refresh_from_db()
    assert not adam.is_active and User.objects.get(pk=numbered.pk).is_active


def test_a_put_with_the_name_it_already_shows_updates_a_self_linked_account(okta, make_user):
    adam = make_user("adam", email="adam@example.com")
    okta.jit_create_users = True
    okta.save(update_fields=["jit_create_users"])
    identity_services.sso_sign_in(okta, {"sub": "sub-evil1", "preferred_username": "adam"})
    identity = _self_link(okta, adam, "sub-adam")
    put = okta.scim.put(f"Users/{identity.scim_id}", okta_user("adam", "sub-adam", given="Adam", email=adam.email))
    assert put.status_code == 200, put.content
    # A real rename to the name another of the provider's people has is still refused.
    renamed = okta.scim.patch(
        f"Users/{identity.scim_id}", _patch({"op": "replace", "path": "userName", "value": "ADAM"})
    )
    assert renamed.status_code == 409 and renamed.json()["scimType"] == "uniqueness"


def test_an_update_records_only_what_changed_and_a_replay_records_nothing(okta, make_user):
    alice = make_user("alice", first_name="Alice")
    identity = _self_link(okta, alice, "sub-alice")
    body = _patch({"op": "replace", "path": "name.givenName", "value": "Alicia"})
    assert okta.scim.patch(f"Users/{identity.scim_id}", body).status_code == 200
    event = AccessEvent.objects.get(event_type=Type.IDENTITY_USER_UPDATED)
    assert event.data["changes"] == {"first_name": {"old": "Alice", "new": "Alicia"}}
    identity.refresh_from_db()
    assert identity.user_name == ""  # the provider sent no userName: none is stored for it
    for replay in (body, _patch({"op": "replace", "path": "externalId", "value": "sub-alice"})):
        assert okta.scim.patch(f"Users/{identity.scim_id}", replay).status_code == 200
    assert AccessEvent.objects.filter(event_type=Type.IDENTITY_USER_UPDATED).count() == 1


# --- 3. Names written wholly in look-alike letters ---------------------------------------------------


def test_a_whole_script_look_alike_of_a_taken_name_is_refused(okta, entra, make_user):
    make_user("alice", device=False)
    make_user("bob", device=False)
    cyrillic_alice = "\u0430\u04cf\u0456\u0441\u0435"  # a, palochka, i, es, ie: reads "alice"
    answer = okta.scim.post("Users", okta_user(cyrillic_alice, "ext-1", email="a1@example.com"))
    assert answer.status_code == 400 and answer.json()["scimType"] == "invalidValue"
    assert "Cyrillic letters read as alice" in answer.json()["detail"]
    upper = "\u0410\u04c0\u0406\u0421\u0415"  # capital letters, compared case-insensitively
    assert okta.scim.post("Users", okta_user(upper, "ext-2", email="a2@example.com")).status_code == 400
    greek_bob = "\u0392\u039f\u0392"  # Greek capital beta, omicron, beta
    assert okta.scim.post("Users", okta_user(greek_bob, "ext-3", email="b@example.com")).status_code == 400
    # Another provider's userName counts too (the name people see in lists).
    assert entra.scim.post("Users", okta_user("paypal", "ext-4", email="p@example.com")).status_code == 201
    paypal = "\u0440\u0430\u0443\u0440\u0430\u04cf"
    assert okta.scim.post("Users", okta_user(paypal, "ext-5", email="p2@example.com")).status_code == 400
    # A rename to one is refused the same way.
    joe = okta.scim.post("Users", okta_user("joe", "ext-joe", email="joe@example.com")).json()
    rename = okta.scim.patch(
        f"Users/{joe['id']}", _patch({"op": "replace", "path": "userName", "value": cyrillic_alice})
    )
    assert rename.status_code == 400
    # A genuine name in one alphabet that reads as nobody's stays welcome.
    ivan = okta.scim.post("Users", okta_user("\u0438\u0432\u0430\u043d", "ext-ivan", email="ivan@example.com"))
    assert ivan.status_code == 201
    ola = okta.scim.post("Users", okta_user("\u043e\u043b\u0430", "ext-ola", email="ola@example.com"))  # "ола"
    assert ola.status_code == 201
    assert not User.objects.filter(username__in=[cyrillic_alice, upper, greek_bob, paypal]).exists()


def test_just_in_time_creation_does_not_use_a_look_alike_of_a_taken_name(okta, make_user):
    make_user("alice", device=False)
    okta.jit_create_users = True
    okta.save(update_fields=["jit_create_users"])
    cyrillic_alice = "\u0430\u04cf\u0456\u0441\u0435"
    created = identity_services.sso_sign_in(okta, {"sub": "sub-x", "preferred_username": cyrillic_alice}).user
    assert created.username == "okta-user"
    ivan = identity_services.sso_sign_in(okta, {"sub": "sub-ivan", "preferred_username": "\u0438\u0432\u0430\u043d"})
    assert ivan.user.username == "\u0438\u0432\u0430\u043d"


# --- Abuse ------------------------------------------------------------------------------------------


def test_neither_another_providers_token_nor_this_ones_repoints_a_self_made_link(okta, entra, make_user):
    alice = make_user("alice")
    identity = _self_link(okta, alice, "sub-alice")
    path = f"Users/{identity.scim_id}"
    for answer in (
        entra.scim.patch(path, REPOINTS[0]),
        entra.scim.patch(path, OKTA_DEACTIVATE),
        entra.scim.put(path, okta_user("alice", "sub-mallory2", email="alice@example.com")),
        entra.scim.delete(path),
        entra.scim.get(path),
    ):
        assert answer.status_code == 404
    assert entra.scim.get("Users").json()["totalResults"] == 0
    alice.refresh_from_db()
    identity.refresh_from_db()
    assert alice.is_active and identity.subject == "sub-alice"
    assert not AccessEvent.objects.filter(event_type__in=[Type.IDENTITY_USER_UPDATED, Type.USER_DEACTIVATED]).exists()
    # Nor with this provider's own token, which answers the same refusal for the same call.
    assert okta.scim.patch(path, REPOINTS[0]).status_code == 400
    identity.refresh_from_db()
    assert identity.subject == "sub-alice"


def test_replayed_patches_change_nothing_twice(okta, make_user):
    alice = make_user("alice")
    identity = _self_link(okta, alice, "sub-alice")
    path = f"Users/{identity.scim_id}"
    for _ in range(2):
        assert okta.scim.patch(path, REPOINTS[0]).status_code == 400
    for _ in range(3):
        answer = okta.scim.patch(path, OKTA_DEACTIVATE)
        assert answer.status_code == 200 and answer.json()["active"] is False
    assert AccessEvent.objects.filter(event_type=Type.USER_DEACTIVATED).count() == 1
    assert not AccessEvent.objects.filter(event_type=Type.IDENTITY_USER_UPDATED).exists()
    assert okta.scim.delete(path).status_code == 204
    assert okta.scim.delete(path).status_code == 404
    # Deleted and unlinked: the provider cannot bring the link back by creating "alice" again.
    again = okta.scim.post("Users", okta_user("alice", "sub-mallory2", email="x@example.com"))
    assert again.status_code == 409
    assert not ExternalIdentity.objects.filter(user=alice).exists() and _signs_in_as(okta, "sub-mallory2") is None
