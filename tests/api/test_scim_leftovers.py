"""SCIM leftovers of the identity probe:

- a provider's ``GET /Users?filter=userName eq "x"`` finds the account a link made at sign-in represents under that
  userName (the link has no userName of the provider's yet; SCIM shows the account's username): Okta looks a person
  up that way before it creates one, and without it tried to create and got 409;
- look-alike userNames are refused both ways round (a Latin "alice" when a Cyrillic one exists, as well as the
  Cyrillic one when the Latin exists) and when both are created at once (PostgreSQL, two connections);
- /Schemas says truthfully which externalIds and addresses the provider may not change.
"""

import threading
from datetime import UTC, datetime

import pytest
import time_machine
from django.db import connection, transaction
from django.test import Client

from accessgov.exceptions import PolicyViolation
from accessgov.identity.scim import UserValues
from accessgov.models import ExternalIdentity, IdentityProvider, User
from accessgov.services import identity as identity_services
from tests.support.identity_support import Scim, make_scim_client, okta_user

T0 = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
CYRILLIC_ALICE = "\u0430\u04cf\u0456\u0441\u0435"  # a, palochka, i, es, ie: reads "alice"
PATCH_SCHEMA = ["urn:ietf:params:scim:api:messages:2.0:PatchOp"]
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"


def _provider(slug: str, name: str) -> IdentityProvider:
    provider = IdentityProvider.objects.create(
        slug=slug, name=name, kind="okta", issuer=f"https://{slug}.example.com", client_id="c"
    )
    provider.account, secret = make_scim_client(provider)
    provider.scim = Scim(Client(), secret)
    return provider


@pytest.fixture
def okta(db):
    with time_machine.travel(T0, tick=True):
        yield _provider("okta", "Okta")


def _self_link(provider: IdentityProvider, user: User, subject: str) -> ExternalIdentity:
    """``user`` links their own account, as the Account security page's link flow does after the provider's answer."""
    identity_services.sso_sign_in(provider, {"sub": subject}, link_user=user)
    return ExternalIdentity.objects.get(provider=provider, user=user)


def _found(provider: IdentityProvider, user_name: str) -> list[dict]:
    answer = provider.scim.get(f'Users?filter=userName eq "{user_name}"')
    assert answer.status_code == 200, answer.content
    return answer.json()["Resources"]


# --- 1. userName eq finds what /Users shows ---------------------------------------------------------------


@pytest.mark.django_db
def test_a_provider_finds_a_self_linked_account_by_the_user_name_it_is_shown(okta, make_user):
    alice = make_user("alice", device=False)
    identity = _self_link(okta, alice, "sub-alice")
    shown = okta.scim.get(f"Users/{identity.scim_id}").json()["userName"]
    assert shown == "alice"

    for asked in ("alice", "ALICE"):  # userName is compared case-insensitively (RFC 7643 4.1.1)
        found = _found(okta, asked)
        assert [r["id"] for r in found] == [str(identity.scim_id)], asked
        assert found[0]["userName"] == shown
    # So Okta's lookup before a create finds the person, and it updates them instead of creating (409).
    assert _found(okta, "bob") == []

    # Once the provider sends its own userName, that is what it is shown, and what it finds the person by.
    renamed = okta.scim.put(
        f"Users/{identity.scim_id}", okta_user("alice@corp.example", "sub-alice", email="alice@example.com")
    )
    assert renamed.status_code == 200, renamed.content
    assert renamed.json()["userName"] == "alice@corp.example"
    assert [r["id"] for r in _found(okta, "alice@corp.example")] == [str(identity.scim_id)]
    assert _found(okta, "alice") == []


@pytest.mark.django_db
def test_another_providers_self_link_is_not_found_by_this_ones_filter(okta, make_user):
    entra = _provider("entra", "Entra ID")
    alice = make_user("alice", device=False)
    _self_link(entra, alice, "oid-alice")
    assert _found(okta, "alice") == []
    assert len(_found(entra, "alice")) == 1


@pytest.mark.django_db
def test_every_links_shown_user_name_finds_it():
    """The property SCIM shows (``scim_user_name``) and the filter (``with_scim_user_name``) agree, for every kind of
    link: provisioned, linked by its owner, created at first sign-in with and without the username claim."""
    provider = IdentityProvider.objects.create(
        slug="kc", name="Keycloak", issuer="https://kc.example.com", client_id="c", jit_create_users=True
    )
    owner = User.objects.create(username="owner")
    _self_link(provider, owner, "sub-owner")
    identity_services.sso_sign_in(provider, {"sub": "sub-jit", "preferred_username": "jit.person"})
    identity_services.sso_sign_in(provider, {"sub": "sub-nameless"})
    provisioned = User.objects.create(username="prov")
    ExternalIdentity.objects.create(
        provider=provider, user=provisioned, subject="p1", user_name="prov@corp", provisioned_by_scim=True
    )

    links = list(ExternalIdentity.objects.filter(provider=provider).select_related("user"))
    assert {link.scim_user_name for link in links} == {"owner", "jit.person", "kc-user", "prov@corp"}
    for link in links:
        matches = ExternalIdentity.objects.filter(provider=provider).with_scim_user_name(link.scim_user_name.upper())
        assert list(matches) == [link], link.scim_user_name


# --- 2. Look-alike userNames, both ways round ---------------------------------------------------------------


@pytest.mark.django_db
def test_a_latin_name_reading_as_a_taken_cyrillic_one_is_refused(okta):
    created = okta.scim.post("Users", okta_user(CYRILLIC_ALICE, "ext-1", email="a1@example.com"))
    assert created.status_code == 201, created.content  # nobody is called alice yet: a genuine name

    answer = okta.scim.post("Users", okta_user("alice", "ext-2", email="a2@example.com"))
    assert answer.status_code == 400 and answer.json()["scimType"] == "invalidValue"
    assert f"it reads as {CYRILLIC_ALICE}, another person's name written in Cyrillic letters" in answer.json()["detail"]
    assert okta.scim.post("Users", okta_user("ALICE", "ext-3", email="a3@example.com")).status_code == 400
    # A rename to it is refused the same way; a Latin name that only looks close is not.
    joe = okta.scim.post("Users", okta_user("joe", "ext-joe", email="joe@example.com")).json()
    rename = okta.scim.patch(
        f"Users/{joe['id']}",
        {"schemas": PATCH_SCHEMA, "Operations": [{"op": "replace", "path": "userName", "value": "alice"}]},
    )
    assert rename.status_code == 400 and "reads as" in rename.json()["detail"]
    assert okta.scim.post("Users", okta_user("alicia", "ext-4", email="a4@example.com")).status_code == 201
    assert not User.objects.filter(username__iexact="alice").exists()


@pytest.mark.django_db
def test_a_greek_name_and_a_latin_one_that_read_alike_cannot_both_be_made(okta):
    assert okta.scim.post("Users", okta_user("\u0392\u039f\u0392", "ext-1", email="b1@example.com")).status_code == 201
    assert okta.scim.post("Users", okta_user("bob", "ext-2", email="b2@example.com")).status_code == 400


@pytest.mark.django_db
def test_just_in_time_creation_does_not_use_a_latin_name_reading_as_a_taken_cyrillic_one(okta):
    okta.jit_create_users = True
    okta.save(update_fields=["jit_create_users"])
    assert okta.scim.post("Users", okta_user(CYRILLIC_ALICE, "ext-1", email="a1@example.com")).status_code == 201

    created = identity_services.sso_sign_in(okta, {"sub": "sub-x", "preferred_username": "alice"}).user

    assert created.username == "okta-user"


# --- 3. Two look-alikes created at once ----------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("first", "second"), [("alice", CYRILLIC_ALICE), (CYRILLIC_ALICE, "alice")])
def test_two_look_alike_names_created_at_once_are_decided_one_after_the_other(first, second):
    """The first create has checked and written its name but not committed when the second checks. Without a lock
    the second cannot see the first and both commit; with it, the second waits for the first's commit, then sees it.
    """
    provider = IdentityProvider.objects.create(
        slug="okta", name="Okta", issuer="https://okta.example.com", client_id="c"
    )
    actor, _ = make_scim_client(provider)
    written, second_done = threading.Event(), threading.Event()
    outcomes: dict[str, object] = {}

    def create_first() -> None:
        try:
            with transaction.atomic():
                identity_services.scim_user_create(actor, provider, UserValues(user_name=first, external_id="e1"))
                written.set()
                second_done.wait(timeout=3)  # hold the commit while the second create runs (or waits)
            outcomes["first"] = "created"
        except BaseException as error:
            outcomes["first"] = error
            written.set()
        finally:
            connection.close()

    def create_second() -> None:
        try:
            written.wait(timeout=10)
            identity_services.scim_user_create(actor, provider, UserValues(user_name=second, external_id="e2"))
            outcomes["second"] = "created"
        except BaseException as error:
            outcomes["second"] = error
        finally:
            second_done.set()
            connection.close()

    threads = [threading.Thread(target=create_first), threading.Thread(target=create_second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)

    assert outcomes["first"] == "created"
    assert isinstance(outcomes["second"], PolicyViolation), outcomes
    assert "another person's name" in str(outcomes["second"])
    assert list(User.objects.filter(username__in=[first, second]).values_list("username", flat=True)) == [first]


# --- 4. /Schemas tells the truth about externalId -----------------------------------------------------------


@pytest.mark.django_db
def test_the_schema_says_which_external_ids_and_addresses_the_provider_may_not_change(okta, make_user):
    for path in ("Schemas", f"Schemas/{USER_SCHEMA}"):
        answer = okta.scim.get(path)
        assert answer.status_code == 200
    user_schema = okta.scim.get(f"Schemas/{USER_SCHEMA}").json()
    attributes = {a["name"]: a for a in user_schema["attributes"]}
    external_id = attributes["externalId"]
    # Discovery stays what clients parse: RFC 7643 mutability values only (there is no per-resource form), ...
    assert {a.get("mutability", "readWrite") for a in attributes.values()} <= {
        "readOnly",
        "readWrite",
        "immutable",
        "writeOnly",
    }
    assert external_id["mutability"] == "readWrite" and external_id["type"] == "string"
    # ... and the description says when readWrite does not hold, as the refusal itself does.
    assert "linked at sign-in" in external_id["description"]
    assert '400, scimType "mutability"' in external_id["description"]
    assert "linked at sign-in" in attributes["emails"]["description"]

    alice = make_user("alice", device=False)
    identity = _self_link(okta, alice, "sub-alice")
    refused = okta.scim.patch(
        f"Users/{identity.scim_id}",
        {"schemas": PATCH_SCHEMA, "Operations": [{"op": "replace", "path": "externalId", "value": "other"}]},
    )
    assert refused.status_code == 400 and refused.json()["scimType"] == "mutability"
