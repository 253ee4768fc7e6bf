"""Security headers beyond the crawl (tests/security/test_crawl.py checks them on every response of every
URL for every persona): CSV downloads that stream, 500 pages with their reference, a failure before any
view, plain HTTP, static files and the enrolment page reached through a real sign-in."""

import re

import pytest
from django.db import OperationalError
from django.test import Client
from django.urls import get_resolver, reverse

from accessgov.views import errors
from tests.support.crawl import hardening_problems, persona_client

pytestmark = pytest.mark.django_db

SESSION_PERSONAS = ["requester", "approver", "owner", "auditor", "admin"]


def test_csv_downloads_stream_with_the_security_headers(world, hostile):
    client = persona_client("auditor", world, hostile)
    for name in ("audit_export", "report_access_export", "report_approvals_export", "report_denied_export"):
        response = client.get(reverse(name), secure=True)
        assert response.status_code == 200 and response.streaming, name
        assert response["Content-Type"].startswith("text/csv"), name
        assert hardening_problems(response, name) == []
    response = client.get(reverse("review_export", args=[hostile.campaign_id]), secure=True)
    assert response.streaming and hardening_problems(response, "review_export") == []


def test_the_real_500_handler_is_installed():
    assert get_resolver().resolve_error_handler(500) is errors.server_error


@pytest.mark.parametrize("persona", SESSION_PERSONAS)
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
    # The pages' framing and content rules too: whitenoise answers before their middleware (the HTTP probe).
    assert response["X-Frame-Options"] == "DENY" and response["X-Content-Type-Options"] == "nosniff"
    assert (
        "default-src 'none'" in response["Content-Security-Policy"] and "sandbox" in response["Content-Security-Policy"]
    )


def test_enrolment_page_has_no_inline_script(client, newcomer):
    from tests.conftest import PASSWORD

    client.post(reverse("accounts:login"), {"username": newcomer.username, "password": PASSWORD})
    response = client.get(reverse("accounts:enrol"), secure=True)
    assert response.status_code == 200
    assert hardening_problems(response, "enrol") == []


def test_head_answers_like_get_on_pages_and_never_runs_an_export(world):
    """RFC 9110: a page that answers GET answers HEAD (the HTTP probe: 405 on every page). An export, a
    download or a sign-in hand-off does work and writes evidence, so it stays GET only."""
    from accessgov.models import AccessEvent
    from tests.conftest import sign_in

    client = sign_in(Client(), world.auditor)
    for name in ("home", "my_requests", "grants_list", "live_access", "audit_trail", "report_access"):
        url = reverse(name)
        got, head = client.get(url), client.head(url)
        assert head.status_code == got.status_code == 200, name
        assert head.content == b"" and head["Content-Type"] == got["Content-Type"], name
    assert Client().head(reverse("accounts:login")).status_code == 200
    exported = AccessEvent.objects.filter(event_type="export.created").count()
    for name in ("grants_export", "audit_export"):
        assert client.head(reverse(name)).status_code == 405, name
    assert AccessEvent.objects.filter(event_type="export.created").count() == exported
