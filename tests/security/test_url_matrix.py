"""A crawl of every URL pattern (read from the resolver, so new views are covered automatically) as
anonymous, password-only (with and without a device) and OTP-verified visitors."""

import pytest
from django.test import Client

from accessgov import middleware
from tests.conftest import verify_session
from tests.support.crawl import URLS

# The declared matrix: who may reach what without the full two factors.
EXPECTED_PUBLIC = {
    "accounts:login",
    "healthz",
    "metrics",
    "sso:start",
    "sso:callback",
    "slack_interactivity",
    "jira_webhook",
    "github_webhook",
}
# Public, but authenticated by the provider's signature: without one, refused (401), never served.
EXPECTED_PROVIDER_SIGNED = {"slack_interactivity", "jira_webhook", "github_webhook"}
EXPECTED_HALF_AUTHENTICATED = {"accounts:otp", "accounts:enrol", "accounts:enrol_qr", "accounts:logout"}
# The REST API: token-authenticated; the session never counts (JSON 401, never a redirect), except that
# the schema also serves a session that passed the OTP step. Its own persona-by-token matrix is in
# tests/api/test_api_matrix.py.
EXPECTED_TOKEN_NAMESPACE = "api"
EXPECTED_SESSION_SCHEMA = {"api:schema"}
# SCIM (an identity provider's provisioning client): its own token, SCIM errors, never a session.
EXPECTED_SCIM_NAMESPACE = "scim"


def _is_api(name: str | None) -> bool:
    return (name or "").startswith((f"{EXPECTED_TOKEN_NAMESPACE}:", f"{EXPECTED_SCIM_NAMESPACE}:"))


def _assert_api_refuses(response, url):
    assert response.status_code == 401, (url, response.status_code)
    assert response["WWW-Authenticate"].startswith("Bearer"), url
    if url.startswith("/scim/"):
        assert response["Content-Type"] == "application/scim+json", url
        assert response.json()["status"] == "401", url
        return
    assert response["Content-Type"] == "application/json", url
    assert response.json()["error"]["code"] == "not_authenticated", url


def test_the_crawl_covers_every_portal_view():
    names = {name for _, name in URLS}
    assert {"home", "accounts:security", "accounts:backup_codes", "admin:index"} <= names
    assert {"accounts:tokens", "accounts:token_revoke", "api_docs", "api:schema", "api:request_list"} <= names
    assert len(URLS) > 40  # admin + portal: a collapsed resolver walk would show here


def test_middleware_exemptions_match_the_declared_matrix():
    assert middleware.PUBLIC_VIEWS == EXPECTED_PUBLIC
    assert middleware.HALF_AUTHENTICATED_VIEWS == EXPECTED_HALF_AUTHENTICATED
    assert middleware.API_NAMESPACE == EXPECTED_TOKEN_NAMESPACE
    assert middleware.SCIM_NAMESPACE == EXPECTED_SCIM_NAMESPACE


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["get", "post"])
def test_anonymous_is_sent_to_sign_in_everywhere_but_public_views(client, method):
    for url, name in [*URLS, ("/no-such-page/", None)]:
        response = getattr(client, method)(url)
        if name in EXPECTED_PROVIDER_SIGNED:
            assert response.status_code == (405 if method == "get" else 401), (url, response.status_code)
            continue
        if name in EXPECTED_PUBLIC:
            assert response.status_code in (200, 404, 405, 503), (url, response.status_code)
            continue
        if _is_api(name):
            _assert_api_refuses(response, url)
            continue
        assert response.status_code == 302, (method, url, response.status_code)
        assert response["Location"].startswith("/accounts/login/"), (method, url, response["Location"])


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["get", "post"])
def test_password_only_session_is_sent_to_the_otp_step(client, make_user, method):
    user = make_user("halfway")
    client.force_login(user)
    for url, name in [*URLS, ("/no-such-page/", None)]:
        if name in EXPECTED_PUBLIC or name in EXPECTED_HALF_AUTHENTICATED:
            continue
        response = getattr(client, method)(url)
        if _is_api(name):
            _assert_api_refuses(response, url)
            continue
        assert response.status_code == 302, (method, url, response.status_code)
        assert response["Location"].startswith("/accounts/otp/"), (method, url, response["Location"])


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["get", "post"])
def test_password_only_session_without_device_is_sent_to_enrolment(client, make_user, method):
    user = make_user("nodevice", device=False)
    client.force_login(user)
    for url, name in URLS:
        if name in EXPECTED_PUBLIC or name in EXPECTED_HALF_AUTHENTICATED:
            continue
        response = getattr(client, method)(url)
        if _is_api(name):
            _assert_api_refuses(response, url)
            continue
        assert response["Location"].startswith("/accounts/enrol/"), (method, url, response["Location"])


@pytest.mark.django_db
@pytest.mark.parametrize("staff", [False, True], ids=["member", "staff"])
def test_verified_session_reaches_views_without_errors(make_user, staff):
    user = make_user("member" if not staff else "root", is_staff=staff, is_superuser=staff)
    client = verify_session(Client(), user)
    for url, name in URLS:
        if name == "accounts:logout":
            continue
        response = client.get(url)
        assert response.status_code < 500, (url, response.status_code)
        if _is_api(name):
            if name in EXPECTED_SESSION_SCHEMA:
                assert response.status_code == 200, (url, response.status_code)
            else:
                _assert_api_refuses(response, url)
            continue
        location = response.get("Location", "")
        assert not location.startswith(("/accounts/otp/", "/accounts/enrol/")), (url, location)
        if staff and name and name.startswith("admin:") and response.status_code == 302:
            assert not location.startswith("/admin/login/"), (url, location)


@pytest.mark.django_db
def test_verified_post_with_empty_body_never_errors(make_user):
    user = make_user("poster")
    for url, name in URLS:
        if name is None or name.startswith("admin:"):
            continue
        client = verify_session(Client(), user)
        response = client.post(url, {})
        assert response.status_code < 500, (url, response.status_code)


@pytest.mark.django_db
def test_unknown_url_is_404_for_a_verified_user(make_user):
    client = verify_session(Client(), make_user("visitor"))
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert "Not found" in response.content.decode()
