"""Property-based run of the API against its own OpenAPI schema (schemathesis + hypothesis): for
every operation, generated requests (valid and invalid) with a real token must never produce a 5xx,
and every answer must match the schema: documented status, content type, headers and body."""

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from accessgov.services import access_requests as request_services
from tests.support.api_helpers import make_token

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

schema = schemathesis.openapi.from_dict(SchemaGenerator().get_schema(request=None, public=True))
schema.app = get_wsgi_application()


@pytest.fixture(autouse=True)
def _keep_the_test_connection():
    """Schemathesis drives the real WSGI handler, which closes database connections at the end of each
    request; keep the test's connection (and its transaction) open, as Django's test client does."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def auth_headers(world):
    """A token for the requester, who also audits (so every endpoint has something to answer), with a
    pending request and some history to find."""
    from datetime import timedelta

    world.requester.groups.add(*world.auditor.groups.all())
    request_services.access_request_submit(
        world.requester, role=world.role, duration=timedelta(hours=1), justification="Schema run request"
    )
    # And an active grant: its answers carry the fields a pending request has not yet ("end_reason": "").
    granted = request_services.access_request_submit(
        world.requester, role=world.role_two, duration=timedelta(hours=1), justification="Schema run grant"
    )
    for approver in (world.approver, world.approver2):
        request_services.access_request_approve(approver, granted.pk)
    _, secret = make_token(world.requester, name="schemathesis")
    return {"Authorization": f"Bearer {secret}"}


@pytest.mark.django_db
@schema.parametrize()
@settings(
    max_examples=10,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_the_api_honours_its_schema(case, auth_headers):
    case.call_and_validate(headers=auth_headers, checks=CHECKS)


# --- The schema says what the API enforces ------------------------------------------------------------

OPENAPI = SchemaGenerator().get_schema(request=None, public=True)


def _operations():
    for path, item in OPENAPI["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def test_every_page_size_declares_its_bounds_and_every_list_has_one():
    """A probe's finding: page_size was any integer in the schema while the API refuses anything but 1 to 200."""
    lists = {p for p, m, _ in _operations() if m == "get" and not p.endswith("}/") and not p.endswith("/download/")}
    with_page_size = set()
    for path, _method, operation in _operations():
        for parameter in operation.get("parameters", []):
            if parameter["name"] == "page_size":
                with_page_size.add(path)
                assert parameter["schema"] == {"type": "integer", "minimum": 1, "maximum": 200}, path
    assert lists - {"/api/v1/token/"} <= with_page_size
    assert "/api/v1/decisions/" in with_page_size


def test_the_schema_says_what_bodies_must_hold():
    schemas = OPENAPI["components"]["schemas"]
    assert "exactly one of role_id and role" in schemas["AccessRequestCreateRequest"]["description"]
    assert schemas["DenyInputRequest"]["required"] == ["comment"]
    assert schemas["DenyInputRequest"]["properties"]["comment"]["minLength"] == 1
    assert set(schemas["ExtensionCreateRequest"]["required"]) == {"duration_seconds", "justification"}


def test_bodies_document_413_and_415_and_the_oidc_exchange_its_503():
    for path, method, operation in _operations():
        if method == "post":
            assert {"413", "415"} <= set(operation["responses"]), path
    exchange = OPENAPI["paths"]["/api/v1/oidc/token/"]["post"]["responses"]
    assert "issuer_unavailable" in exchange["503"]["description"]
