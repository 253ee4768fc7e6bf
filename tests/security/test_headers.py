"""Security headers on every response: a crawl of every URL pattern (read from the resolver, so new views
and the REST API are covered as they land) as every persona, over pages, redirects, refusals, 404s,
500s, CSV downloads and JSON - plus no inline script in any HTML the portal serves."""

import re

import pytest
from django.db import OperationalError
from django.test import Client
from django.urls import get_resolver, reverse

from accessgov.views import errors
from tests.support.crawl import URLS, hardening_problems, persona_client, real_object_urls

pytestmark = pytest.mark.django_db

SESSION_PERSONAS = ["anonymous", "password-only", "requester", "approver", "owner", "auditor", "admin"]


def crawl(client: Client, urls, method: str = "get") -> list[str]:
    problems = []
    for url in urls:
        response = getattr(client, method)(url, secure=True)
        problems += hardening_problems(response, f"{method.upper()} {url} -> {response.status_code}")
    return problems


@pytest.mark.parametrize("persona", SESSION_PERSONAS)
def test_every_url_answers_with_the_security_headers_for_every_persona(persona, world, hostile):
    client = persona_client(persona, world, hostile)
    urls = [url for url, name in URLS if name != "accounts:logout"] + real_object_urls(world, hostile)
    problems = crawl(client, urls)
    assert problems == [], "\n".join(problems[:40])


@pytest.mark.parametrize("persona", ["requester", "approver", "auditor"])
def test_posts_redirects_and_refusals_carry_the_security_headers(persona, world, hostile):
    client = persona_client(persona, world, hostile)
    urls = [url for url, name in URLS if name and name != "accounts:logout" and not name.startswith("admin:")]
    problems = crawl(client, urls, method="post")
    assert problems == [], "\n".join(problems[:40])


def test_the_crawl_sees_every_kind_of_response(world, hostile):
    """Guard against a crawl that only ever saw redirects: the statuses and types it must meet."""
    seen_status, seen_type = set(), set()
    for persona in ("anonymous", "requester", "auditor"):
        client = persona_client(persona, world, hostile)
        for url in [u for u, name in URLS if name != "accounts:logout"] + real_object_urls(world, hostile):
            response = client.get(url, secure=True)
            seen_status.add(response.status_code)
            seen_type.add(response.get("Content-Type", "").split(";")[0])
    assert {200, 302, 401, 403, 404, 405} <= seen_status
    assert {"text/html", "text/csv", "application/json"} <= seen_type


def test_csv_downloads_stream_with_the_security_headers(world, hostile):
    client = persona_client("auditor", world, hostile)
    for name in ("audit_export", "report_access_export", "report_approvals_export", "report_denied_export"):
        response = client.get(reverse(name), secure=True)
        assert response.status_code == 200 and response.streaming, name
        assert response["Content-Type"].startswith("text/csv"), name
        assert hardening_problems(response, name) == []
    response = client.get(reverse("review_export", args=[hostile.campaign_id]), secure=True)
    assert response.streaming and hardening_problems(response, "review_export") == []


def test_api_answers_carry_the_security_headers_for_every_token_holder(world, hostile):
    from tests.support.api_helpers import api_client, make_token

    api_urls = [url for url, name in URLS if (name or "").startswith("api:")]
    api_urls += [url for url in real_object_urls(world, hostile) if url.startswith("/api/")]
    assert len(api_urls) > 10
    problems = crawl(Client(), api_urls)  # no token at all
    for persona in ("requester", "approver", "owner", "auditor", "admin"):
        user = hostile.admin if persona == "admin" else getattr(world, persona)
        _, secret = make_token(user)
        client = api_client(secret)
        problems += crawl(client, api_urls)
        problems += crawl(client, [reverse("api:request_approve", args=[hostile.pending.pk])], method="post")
    assert problems == [], "\n".join(problems[:40])


def test_the_real_500_handler_is_installed():
    assert get_resolver().resolve_error_handler(500) is errors.server_error


@pytest.mark.parametrize("persona", SESSION_PERSONAS[2:])
def test_a_500_page_carries_the_security_headers_and_a_reference(persona, world, hostile, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("selector bug")

    monkeypatch.setattr("accessgov.selectors.my_requests", broken)
    client = persona_client(persona, world, hostile)
    response = client.get(reverse("my_requests"), secure=True)
    assert response.status_code == 500
    assert hardening_problems(response, "500") == []
    reference = response[errors.REFERENCE_HEADER]
    assert re.fullmatch(r"[0-9a-f]{12}", reference)
    assert reference in response.content.decode()


def test_a_failure_before_any_view_still_gets_the_headers(world, hostile, monkeypatch):
    """The session store is unreachable: the error comes from middleware, not from a view."""

    def unreachable(self):
        raise OperationalError("could not connect to server")

    client = persona_client("requester", world, hostile)
    monkeypatch.setattr("django.contrib.sessions.backends.db.SessionStore.load", unreachable)
    response = client.get(reverse("home"), secure=True)
    assert response.status_code == 503
    assert hardening_problems(response, "503 from middleware") == []


def test_plain_http_gets_no_hsts_but_everything_else(client):
    response = client.get(reverse("accounts:login"))
    assert "Strict-Transport-Security" not in response
    assert response["X-Frame-Options"] == "DENY" and "no-store" in response["Cache-Control"]


def test_static_files_keep_their_cache_lifetime():
    from django.test import override_settings

    with override_settings(WHITENOISE_USE_FINDERS=True, WHITENOISE_AUTOREFRESH=True):
        response = Client().get("/static/css/accessgov.css", secure=True)
    assert response.status_code == 200
    assert "no-store" not in response.get("Cache-Control", "")


def test_enrolment_page_has_no_inline_script(client, newcomer):
    from tests.conftest import PASSWORD

    client.post(reverse("accounts:login"), {"username": newcomer.username, "password": PASSWORD})
    response = client.get(reverse("accounts:enrol"), secure=True)
    assert response.status_code == 200
    assert hardening_problems(response, "enrol") == []
