"""A query parameter nobody reads is a 400 naming it, on the API and on the CSV exports: an auditor who
types ``?grante=bob`` gets a refusal, not every row in a list or file they believe filtered. The portal's
HTML list pages stay tolerant (bookmarks and htmx add parameters)."""

import csv
import html
import io
import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.test import Client
from django.urls import resolve, reverse
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIRequestFactory

from accessgov.models import AccessEvent, AccessRequest, Grant
from accessgov.services import access_requests as request_services
from tests.conftest import verify_session
from tests.support.api_helpers import api_client, make_token, post_json

pytestmark = pytest.mark.django_db
V1 = "/api/v1"

LISTS = {
    f"{V1}/requests/": ["cursor", "page_size", "status"],
    f"{V1}/grants/": ["active", "cursor", "page_size", "status"],
    f"{V1}/decisions/": ["page_size"],
    f"{V1}/systems/": ["cursor", "page_size"],
    f"{V1}/roles/": ["cursor", "eligible", "page_size", "system"],
    f"{V1}/eligibility/": ["cursor", "page_size"],
    f"{V1}/events/": ["access_request", "cursor", "event_type", "grant", "page_size"],
    f"{V1}/evidence-packs/": ["cursor", "page_size"],
}


@pytest.fixture(autouse=True)
def _fixed_clock():
    with time_machine.travel(datetime(2027, 3, 1, 12, 0, tzinfo=UTC), tick=True):
        yield


@pytest.fixture
def scene(world):
    """A pending request and an active grant of the requester; a full-scope token for the requester, who
    also audits (so every list answers 200 without the typo)."""
    world.requester.groups.add(*world.auditor.groups.all())
    world.pending = request_services.access_request_submit(
        world.requester, role=world.role, duration=timedelta(hours=1), justification="Deploy the payments fix"
    )
    granted = request_services.access_request_submit(
        world.requester, role=world.role_two, duration=timedelta(hours=1), justification="Rotate the admin keys"
    )
    request_services.access_request_approve(world.approver, granted.pk)
    request_services.access_request_approve(world.approver2, granted.pk)
    world.grant = Grant.objects.get(access_request=granted)
    _, secret = make_token(world.requester, name="laptop")
    world.api = api_client(secret)
    return world


def _error(response) -> dict:
    assert response["Content-Type"] == "application/json", response.content
    return response.json()["error"]


# --- API ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", list(LISTS))
def test_every_api_list_refuses_a_misspelt_filter_naming_it_and_what_it_takes(scene, path):
    assert scene.api.get(path).status_code == 200
    response = scene.api.get(path, {"grante": "bob"})
    assert response.status_code == 400
    error = _error(response)
    assert error["code"] == "invalid"
    assert list(error["fields"]) == ["grante"]
    assert f"takes {', '.join(LISTS[path])}." in error["message"]


def test_the_typo_of_the_brief_is_refused_and_a_real_filter_still_filters(scene):
    mistyped = scene.api.get(f"{V1}/requests/", {"stauts": "approved"})
    assert mistyped.status_code == 400 and "stauts" in _error(mistyped)["fields"]
    pending = scene.api.get(f"{V1}/requests/", {"status": "pending"}).json()["results"]
    assert [r["id"] for r in pending] == [scene.pending.pk]


def test_the_command_line_clients_queries_and_the_next_links_are_accepted(scene):
    """What accessgov_cli sends (``requests/?page_size=20``, ``grants/?page_size=50&active=true``), and the
    ``next`` link a list gives (cursor, page_size and the filters), as the CLI follows it."""
    assert scene.api.get(f"{V1}/requests/?page_size=20").status_code == 200
    grants = scene.api.get(f"{V1}/grants/?page_size=50&active=true")
    assert grants.status_code == 200 and [g["id"] for g in grants.json()["results"]] == [scene.grant.pk]
    page = scene.api.get(f"{V1}/requests/", {"page_size": 1}).json()
    assert page["next"] and "cursor=" in page["next"]
    following = scene.api.get(page["next"])
    assert following.status_code == 200 and following.json()["results"]


def test_an_object_or_an_action_refuses_parameters_too_and_changes_nothing(scene):
    detail = scene.api.get(f"{V1}/grants/{scene.grant.pk}/", {"expand": "user"})
    assert detail.status_code == 400 and "this operation takes none" in _error(detail)["message"]
    cancel = post_json(scene.api, f"{V1}/requests/{scene.pending.pk}/cancel/?force=1")
    assert cancel.status_code == 400 and list(_error(cancel)["fields"]) == ["force"]
    assert AccessRequest.objects.get(pk=scene.pending.pk).status == AccessRequest.Status.PENDING
    assert scene.api.get(f"{V1}/token/", {"x": "1"}).status_code == 400


def test_who_may_not_call_or_calls_a_wrong_method_or_path_gets_that_answer_first(scene):
    assert api_client(None).get(f"{V1}/grants/", {"grante": "bob"}).status_code == 401
    assert api_client("agv_p_nonsense").get(f"{V1}/grants/", {"grante": "bob"}).status_code == 401
    assert scene.api.delete(f"{V1}/grants/?grante=bob").status_code == 405
    assert scene.api.options(f"{V1}/grants/?grante=bob").status_code == 405
    assert scene.api.get(f"{V1}/nothing-here/", {"grante": "bob"}).status_code == 404
    signed_nothing = Client().post(f"{V1}/activity/?grante=bob", b"{}", content_type="application/json")
    assert signed_nothing.status_code == 401


def test_the_activity_ingest_takes_its_system_and_batch_id_and_nothing_else(scene):
    path = f"{V1}/activity/"
    known = scene.api.post(f"{path}?system=payments-db&batch_id=b1", b"", content_type="application/x-ndjson")
    # Past the query check to the handler, which wants a service token's scope.
    assert known.status_code == 403 and _error(known)["code"] == "permission_denied"
    unknown = scene.api.post(f"{path}?system=payments-db&sytem=x", b"", content_type="application/x-ndjson")
    assert unknown.status_code == 400 and list(_error(unknown)["fields"]) == ["sytem"]


def test_many_or_long_unknown_names_are_echoed_bounded(scene):
    query = "&".join(f"junk{i}=1" for i in range(30)) + "&" + "n" * 5000 + "=1"
    error = _error(scene.api.get(f"{V1}/grants/?{query}"))
    assert len(error["fields"]) == 11  # ten names and a count of the rest
    assert all(len(name) <= 50 for name in error["fields"])
    assert "21 more" in error["fields"]["…"][0]


def test_the_schema_documents_exactly_the_query_parameters_each_operation_accepts():
    """One declaration: what a view reads is what the schema lists and what the check accepts."""
    schema = SchemaGenerator().get_schema(request=None, public=True)
    factory = APIRequestFactory()
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            documented = sorted(p["name"] for p in operation.get("parameters", []) if p["in"] == "query")
            url = path.replace("{id}", "1")
            match = resolve(url)
            view = match.func.view_class(**match.func.view_initkwargs)
            view.request = view.initialize_request(factory.generic(method.upper(), url))
            view.format_kwarg = None
            assert view.accepted_query_parameters(method.upper()) == documented, (method, path)
    assert {
        path: sorted(p["name"] for p in item["get"].get("parameters", []) if p["in"] == "query")
        for path, item in schema["paths"].items()
        if path in LISTS
    } == LISTS


# --- CSV exports ----------------------------------------------------------------------------------

EXPORTS = {
    "my_requests_export": "requester",
    "grants_export": "auditor",
    "audit_export": "auditor",
    "report_access_export": "auditor",
    "report_approvals_export": "auditor",
    "report_break_glass_export": "auditor",
    "report_denied_export": "auditor",
    "activity_export": "auditor",
}


@pytest.mark.parametrize("name", list(EXPORTS))
def test_every_export_refuses_a_misspelt_filter_in_plain_text_and_records_nothing(scene, name):
    client = verify_session(Client(), getattr(scene, EXPORTS[name]))
    assert client.get(reverse(name)).status_code == 200
    exports_before = AccessEvent.objects.filter(event_type=AccessEvent.Type.EXPORT_CREATED).count()
    response = client.get(reverse(name), {"grante": "bob", "since": "2020-01-01"})
    assert response.status_code == 400
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    text = response.content.decode()
    assert "Unknown query parameter for this export: 'grante'; it takes " in text
    assert "since" in text.split("it takes ")[1]  # the accepted ones are listed
    assert AccessEvent.objects.filter(event_type=AccessEvent.Type.EXPORT_CREATED).count() == exports_before


def test_a_review_export_takes_no_parameters(scene):
    from accessgov.services import reviews as review_services

    campaign = review_services.review_campaign_create(
        scene.auditor, name="Q1 review", systems=[scene.system], due_at=datetime(2027, 3, 15, tzinfo=UTC)
    )
    client = verify_session(Client(), scene.auditor)
    assert client.get(reverse("review_export", args=[campaign.pk])).status_code == 200
    refused = client.get(reverse("review_export", args=[campaign.pk]), {"since": "2027-01-01"})
    assert refused.status_code == 400 and "'since'; it takes none." in refused.content.decode()


def test_an_export_with_its_own_filters_and_sort_is_exported(scene):
    client = verify_session(Client(), scene.auditor)
    response = client.get(reverse("grants_export"), {"q": "admin", "sort": "-from", "status": "active"})
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode().lstrip("\ufeff"))))
    assert [int(r["grant_id"]) for r in rows] == [scene.grant.pk]


def test_the_html_list_pages_stay_tolerant_of_parameters_they_do_not_read(scene):
    client = verify_session(Client(), scene.auditor)
    for name in ("grants_list", "report_access", "audit_trail"):
        assert client.get(reverse(name), {"utm_source": "mail", "grante": "bob"}).status_code == 200, name


# Each list page with an Export link, and who opens it.
PAGES_WITH_EXPORT = {
    "my_requests": "requester",
    "grants_list": "auditor",
    "audit_trail": "auditor",
    "report_access": "auditor",
    "report_approvals": "auditor",
    "report_break_glass": "auditor",
    "report_denied": "auditor",
}


@pytest.mark.parametrize("name", list(PAGES_WITH_EXPORT))
def test_a_pages_export_link_carries_its_filters_and_not_a_stray_parameter_the_page_ignored(scene, name):
    """The review's finding: a page opened from a link with ``?utm_source=mail`` offered an Export whose answer was
    the 400 above. The link keeps what the export takes (the page's filters) and drops the rest."""
    client = verify_session(Client(), getattr(scene, PAGES_WITH_EXPORT[name]))
    page = client.get(reverse(name), {"utm_source": "mail", "since": "2020-01-01"})
    assert page.status_code == 200
    links = re.findall(r'href="([^"]*)"[^>]*>Export CSV<', page.content.decode())
    assert len(links) == 1, links
    link = html.unescape(links[0])
    assert "since=2020-01-01" in link and "utm_source" not in link
    assert client.get(link).status_code == 200
