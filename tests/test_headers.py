"""Security headers and no inline script on the pages built so far."""

import re

import pytest
from django.urls import reverse

PAGES = ["home", "accounts:security", "accounts:backup_codes", "accounts:password_change", "accounts:step_up"]


def _assert_hardened(response):
    csp = response["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    html = response.content.decode()
    # Every <script> loads a file from 'self'; no inline script and no inline event handlers.
    for tag in re.findall(r"<script[^>]*>", html):
        assert 'src="/static/' in tag, tag
    assert not re.search(r"<script[^>]*>\s*[^<\s]", html)
    assert not re.search(r"\son[a-z]+=", html)


@pytest.mark.django_db
def test_sign_in_page_is_hardened(client):
    _assert_hardened(client.get(reverse("accounts:login")))


@pytest.mark.django_db
@pytest.mark.parametrize("name", PAGES)
def test_signed_in_pages_are_hardened(verified_client, name):
    response = verified_client.get(reverse(name))
    assert response.status_code == 200
    _assert_hardened(response)


@pytest.mark.django_db
def test_enrolment_page_is_hardened(client, newcomer):
    from tests.conftest import PASSWORD

    client.post(reverse("accounts:login"), {"username": newcomer.username, "password": PASSWORD})
    _assert_hardened(client.get(reverse("accounts:enrol")))


@pytest.mark.django_db
def test_user_text_is_escaped(client, make_user):
    from tests.conftest import verify_session

    user = make_user("xss", first_name="<script>alert(1)</script>", last_name="<img src=x onerror=alert(2)>")
    html = verify_session(client, user).get(reverse("home")).content.decode()
    assert "<script>alert(1)" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html
