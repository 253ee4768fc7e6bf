"""The OpenAPI schema lists the 405 every /api/v1/ path gives a method it does not offer, in the API's one
error format with its Allow header, as it lists the other refusals; and the API answers so."""

from datetime import timedelta

import jsonschema
import pytest
from drf_spectacular.generators import SchemaGenerator

from accessgov.services import access_requests as request_services
from tests.support.api_helpers import api_client, make_token

OPENAPI = SchemaGenerator().get_schema(request=None, public=True)
METHODS = ("get", "put", "patch", "post", "delete")


def _operations():
    for path, item in OPENAPI["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def test_every_operation_documents_405_with_the_error_body_and_allow():
    operations = list(_operations())
    assert operations
    for path, method, operation in operations:
        answer = operation["responses"].get("405")
        assert answer, (method, path)
        assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
        assert "method_not_allowed" in answer["description"]
        assert answer["headers"]["Allow"]["schema"] == {"type": "string"}


def _error_schema() -> dict:
    return {"$ref": "#/components/schemas/Error", "components": OPENAPI["components"]}


@pytest.mark.django_db
def test_each_path_answers_a_method_it_does_not_offer_as_its_schema_says(world):
    pending = request_services.access_request_submit(
        world.requester, role=world.role, duration=timedelta(hours=1), justification="Deploy the payments fix"
    )
    _, secret = make_token(world.requester, name="laptop")
    client = api_client(secret)
    checked = 0
    for path, item in OPENAPI["paths"].items():
        offered = {m for m in item if m in METHODS}
        url = path.replace("{id}", str(pending.pk))
        for method in sorted(set(METHODS) - offered):
            response = client.generic(method.upper(), url, b"{}", content_type="application/json")
            if response.status_code == 401:  # /oidc/token/ and /activity/ want their own credentials first
                continue
            assert response.status_code == 405, (method, path, response.content)
            assert response["Content-Type"] == "application/json"
            documented = item[sorted(offered)[0]]["responses"]["405"]
            jsonschema.validate(response.json(), {**_error_schema()})
            assert response.json()["error"]["code"] == "method_not_allowed"
            assert set(response["Allow"].replace(" ", "").split(",")) >= {m.upper() for m in offered}
            assert "Allow" in documented["headers"]
            checked += 1
    assert checked > 40
