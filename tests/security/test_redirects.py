"""Redirects that follow user input stay on this site: ``next=`` at the password step, the OTP step,
step-up, the sign-in page of a signed-in user and the backup-codes link, and the decision form's
``back=``. Judged the way a browser reads a Location header (backslashes as slashes, tabs and newlines
dropped), so a test cannot pass on a technicality."""

import re
from html import unescape

import pytest
from django.test import Client
from django.urls import reverse
from django_otp.plugins.otp_totp.models import TOTPDevice

from accessgov.services import access_requests
from tests.conftest import PASSWORD, totp_code, verify_session

pytestmark = pytest.mark.django_db

HOST = "testserver"
# Each of these, followed literally by a browser, leaves the site.
OFF_SITE = [
    "https://evil.example/",
    "http://evil.example",
    "HTTPS://evil.example/",
    "http:evil.example",
    "//evil.example/",
    "///evil.example/",
    "/\\evil.example",
    "\\\\evil.example",
    "\\/evil.example",
    "/\t/evil.example",
    " //evil.example",
    "\x01//evil.example",
    "https://testserver@evil.example/",
    "https://evil.example\\@testserver/",
    "javascript:alert(1)",
    "JavaScript:alert(1)",
    "java\tscript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
]
# Encoded and header-splitting variants: harmless if passed on as they are, fatal if decoded once more.
ENCODED = [
    "%2F%2Fevil.example",
    "%2f%5cevil.example",
    "/%2F%2Fevil.example",
    "%0d%0aLocation:%20https://evil.example",
    "/accounts/security/\r\nLocation: https://evil.example",
]


def browser_target(location: str) -> tuple[str, str]:
    """(scheme, host) a browser on https://testserver/accounts/... goes to for ``location`` (WHATWG URL
    parsing, reduced to what matters here: control characters dropped, backslashes read as slashes,
    any number of leading slashes starting an authority, userinfo ignored)."""
    url = re.sub(r"[\t\n\r]", "", location).strip(" " + "".join(map(chr, range(32)))).replace("\\", "/")
    match = re.match(r"([a-zA-Z][a-zA-Z0-9+.-]*):(.*)", url, flags=re.S)
    if match:
        scheme, rest = match.group(1).lower(), match.group(2)
        if scheme not in ("http", "https"):
            return scheme, ""
        if scheme == "https" and not rest.startswith("//"):
            return scheme, HOST  # the page's own special scheme without "//": a relative reference
        return scheme, _host(rest.lstrip("/"))
    if url.startswith("//"):
        return "https", _host(url.lstrip("/"))
    return "https", HOST


def _host(rest: str) -> str:
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    return authority.rsplit("@", 1)[-1].split(":")[0].lower()


def lands_on_site(location: str) -> bool:
    scheme, host = browser_target(location)
    return scheme in ("http", "https") and host == HOST


def test_the_judge_recognises_off_site_locations():
    assert [url for url in OFF_SITE if lands_on_site(url)] == []
    assert lands_on_site("/accounts/security/") and lands_on_site("https:/grants/")
    assert lands_on_site("%2F%2Fevil.example")  # a relative path: /accounts/otp/%2F%2Fevil.example


def _fresh_code(user) -> str:
    device = TOTPDevice.objects.get(user=user)
    device.last_t = -1  # the same time step's code may be used again in this loop
    device.throttle_reset()
    device.save()
    return totp_code(device)


@pytest.mark.parametrize("evil", OFF_SITE + ENCODED)
def test_password_step_and_otp_step_never_redirect_off_site(requester, evil):
    client = Client()
    response = client.post(
        reverse("accounts:login") + "?" + _query(evil),
        {"username": requester.username, "password": PASSWORD, "next": evil},
    )
    assert response.status_code == 302 and lands_on_site(response["Location"]), response["Location"]
    response = client.post(
        reverse("accounts:otp") + "?" + _query(evil), {"otp_token": _fresh_code(requester), "next": evil}
    )
    assert response.status_code == 302
    assert lands_on_site(response["Location"]), response["Location"]
    # Signed in now: the sign-in page sends a verified user on, and still not off-site.
    response = client.get(reverse("accounts:login"), {"next": evil})
    assert lands_on_site(response["Location"]), response["Location"]


@pytest.mark.parametrize("evil", OFF_SITE + ENCODED)
def test_step_up_and_backup_codes_never_lead_off_site(requester, evil):
    client = verify_session(Client(), requester)
    response = client.post(
        reverse("accounts:step_up") + "?" + _query(evil), {"otp_token": _fresh_code(requester), "next": evil}
    )
    assert response.status_code == 302 and lands_on_site(response["Location"]), response["Location"]
    session = client.session
    session["new_backup_codes"] = ["1234-5678"]  # as right after enrolment, when the link is shown
    session.save()
    html = client.get(reverse("accounts:backup_codes"), {"next": evil}).content.decode()
    link = re.search(r'href="([^"]*)" id="codes-saved"', html)
    assert link, "the page has the continue link"
    assert lands_on_site(unescape(link.group(1))), link.group(1)


def test_a_safe_next_is_followed_through_both_steps(requester):
    client = Client()
    response = client.post(
        reverse("accounts:login"), {"username": requester.username, "password": PASSWORD, "next": "/grants/?x=1"}
    )
    response = client.post(response["Location"], {"otp_token": _fresh_code(requester), "next": "/grants/?x=1"})
    assert response["Location"] == "/grants/?x=1"


@pytest.mark.parametrize("evil", ["/\\evil.example", "//evil.example", "https://evil.example", "javascript:alert(1)"])
def test_the_decision_form_goes_back_only_to_this_site(world, evil):
    from datetime import timedelta

    access_request = access_requests.access_request_submit(
        world.requester, role=world.role, duration=timedelta(minutes=30), justification="Fix the nightly batch"
    )
    client = verify_session(Client(), world.approver)
    # Refused: the form stays on the request's page (issue 18) and goes back only to this site.
    refused = client.post(reverse("request_deny", args=[access_request.pk]), {"comment": "", "back": evil})
    assert refused.status_code == 400
    back = re.search(r'name="back" value="([^"]*)"', refused.content.decode()).group(1)
    assert lands_on_site(unescape(back)), back
    assert unescape(back) == reverse("request_detail", args=[access_request.pk])
    # Done: the redirect after the decision.
    response = client.post(reverse("request_approve", args=[access_request.pk]), {"comment": "ok", "back": evil})
    assert response.status_code == 302 and lands_on_site(response["Location"]), response["Location"]
    assert response["Location"] == reverse("request_detail", args=[access_request.pk])


def _query(value: str) -> str:
    from django.utils.http import urlencode

    return urlencode({"next": value})
