"""Property-based fuzz of the SCIM endpoint: any JSON (and any bytes) posted, put or patched answers a
SCIM response below 500, and a refused call leaves nothing half-written."""

import json

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accessgov.models import AccessEvent, ExternalIdentity, IdentityGroup, IdentityProvider, User
from tests.support.identity_support import OKTA_DEACTIVATE, Scim, make_scim_client, okta_user

pytestmark = pytest.mark.django_db

texts = st.text(max_size=40)  # any code point, NUL and lone surrogates' neighbours included
keys = (
    st.sampled_from(
        [
            "userName",
            "externalId",
            "active",
            "name",
            "emails",
            "givenName",
            "value",
            "members",
            "displayName",
            "Operations",
            "op",
            "path",
            "schemas",
            "roles",
            "groups",
            "is_staff",
            "urn:x:y",
        ]
    )
    | texts
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5),
    max_leaves=20,
)
patch_operations = st.fixed_dictionaries(
    {
        "schemas": st.just(["urn:ietf:params:scim:api:messages:2.0:PatchOp"]),
        "Operations": st.lists(
            st.fixed_dictionaries(
                {
                    "op": st.sampled_from(["add", "replace", "remove", "Replace", "x"]),
                    "path": st.sampled_from(
                        [
                            "active",
                            "userName",
                            "name.givenName",
                            "members",
                            'emails[type eq "work"].value',
                            "roles",
                            "x[",
                            "",
                        ]
                    )
                    | texts,
                    "value": json_values,
                }
            ),
            max_size=4,
        ),
    }
)


@pytest.fixture
def scim_world():
    provider = IdentityProvider.objects.create(
        slug="okta", name="Okta", issuer="https://example.okta.com", client_id="c"
    )
    _, secret = make_scim_client(provider)
    scim = Scim(Client(), secret)
    user = scim.post("Users", okta_user("base@example.com", "00ubase")).json()
    group = scim.post("Groups", {"displayName": "base", "members": [{"value": user["id"]}]}).json()
    return scim, user, group


def _counts():
    return (
        User.objects.count(),
        ExternalIdentity.objects.count(),
        IdentityGroup.objects.count(),
        AccessEvent.objects.count(),
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=json_values)
def test_any_json_posted_as_a_user_or_group_answers_below_500_and_writes_all_or_nothing(scim_world, body):
    scim, _, _ = scim_world
    for resource in ("Users", "Groups"):
        before = _counts()
        answer = scim.post(resource, json.dumps(body))
        assert answer.status_code < 500 and answer["Content-Type"] == "application/scim+json"
        if answer.status_code != 201:
            assert _counts() == before


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=patch_operations | json_values)
def test_any_patch_of_a_user_or_group_answers_below_500_and_changes_nothing_when_refused(scim_world, body):
    scim, user, group = scim_world
    for path in (f"Users/{user['id']}", f"Groups/{group['id']}"):
        before = (_counts(), scim.get(path).content)
        answer = scim.patch(path, json.dumps(body))
        assert answer.status_code < 500
        if answer.status_code >= 400:
            assert (_counts(), scim.get(path).content) == before
    assert scim.patch(f"Users/{user['id']}", OKTA_DEACTIVATE).status_code in (200, 404)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200), query=st.text(max_size=60))
def test_any_bytes_and_any_filter_answer_below_500(scim_world, raw, query):
    scim, _, _ = scim_world
    assert (
        scim.client.post("/scim/v2/Users", data=raw, content_type="application/scim+json", **scim.headers).status_code
        < 500
    )
    assert (
        scim.client.get("/scim/v2/Users", {"filter": query, "startIndex": query[:5]}, **scim.headers).status_code < 500
    )
