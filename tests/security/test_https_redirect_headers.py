"""The HTTP→HTTPS redirect is a response like any other: with production's SECURE_SSL_REDIRECT on, a plain-http
request's 301 carries the pages' Content-Security-Policy, framing, no-store and the rest (Django's
SecurityMiddleware answered it before the header middlewares wrapped it, so it had none of them). HSTS is the
one header a plain-http answer leaves out (browsers ignore it there; Django sends it on HTTPS only)."""

import pytest
from django.test import Client

from tests.support.crawl import hardening_problems

pytestmark = pytest.mark.django_db

PATHS = [
    "/",
    "/accounts/login/?next=/grants/",
    "/api/v1/token/",
    "/admin/",
    "/static/css/accessgov.css",
    "/no-such-page/",
]


def _problems_but_hsts(response, where: str) -> list[str]:
    return [problem for problem in hardening_problems(response, where) if "Strict-Transport-Security" not in problem]


@pytest.fixture
def production_redirect(settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.WHITENOISE_USE_FINDERS = True
    settings.WHITENOISE_AUTOREFRESH = True


@pytest.mark.usefixtures("production_redirect")
@pytest.mark.parametrize("path", PATHS)
def test_the_https_redirect_carries_every_security_header(path):
    response = Client().get(path)
    assert response.status_code == 301
    assert response["Location"] == f"https://testserver{path}"
    assert _problems_but_hsts(response, path) == []
    assert "Strict-Transport-Security" not in response
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"


@pytest.mark.usefixtures("production_redirect")
def test_the_https_redirect_of_a_request_with_a_session_is_not_stored(world):
    client = Client()
    client.force_login(world.requester)
    response = client.get("/grants/")
    assert response.status_code == 301 and response["Location"] == "https://testserver/grants/"
    assert response["Cache-Control"] == "no-store" and _problems_but_hsts(response, "signed in") == []


@pytest.mark.usefixtures("production_redirect")
def test_https_requests_are_not_redirected_and_keep_their_headers():
    response = Client().get("/accounts/login/", secure=True)
    assert response.status_code == 200
    assert hardening_problems(response, "login over https") == []


@pytest.mark.usefixtures("production_redirect")
def test_the_health_check_is_exempt_from_the_redirect_and_keeps_the_headers():
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert _problems_but_hsts(response, "healthz") == []


@pytest.mark.usefixtures("production_redirect")
def test_a_static_file_keeps_its_cache_lifetime_and_own_policy_for_a_signed_in_browser(world):
    """The header middlewares now wrap whitenoise too: a static file is the same for everyone, so it keeps its
    cache lifetime even for a request with a session cookie, and its sandboxing policy, not the pages'."""
    client = Client()
    client.force_login(world.requester)
    response = client.get("/static/css/accessgov.css", secure=True)
    assert response.status_code == 200
    assert "max-age" in response["Cache-Control"] and "no-store" not in response["Cache-Control"]
    assert "sandbox" in response["Content-Security-Policy"]
    assert response["X-Frame-Options"] == "DENY" and response["X-Content-Type-Options"] == "nosniff"
