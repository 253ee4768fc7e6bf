"""In Chromium: a person signs in through the company's identity provider (a real OIDC provider process
on loopback), then passes the portal's TOTP step, and lands on their home page; ID tokens that are
tampered with, carry the wrong nonce or audience, or are signed with an unknown key sign nobody in."""

import re

import pytest
from django_otp.plugins.otp_totp.models import TOTPDevice

from accessgov.models import ExternalIdentity, User
from tests.conftest import add_totp_device, totp_code
from tests.e2e.conftest import ARTIFACTS
from tests.support.identity_support import make_identity_provider, oidc_provider  # noqa: F401 (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _person(oidc_provider, idp, username):  # noqa: F811
    claims = oidc_provider.add_person(username, f"idp-{username}-pw", given_name="Ada")
    user = User(username=username, email=claims["email"], first_name="Ada")
    user.set_unusable_password()
    user.save()
    ExternalIdentity.objects.create(provider=idp, user=user, subject=claims["sub"], user_name=username)
    add_totp_device(user)
    return user


def _through_the_provider(page, live_server, username):
    page.goto(live_server.url + "/accounts/login/")
    page.get_by_role("link", name="Sign in with Test IdP").click()
    page.wait_for_url(re.compile(r"http://127\.0\.0\.1:\d+/authorize\?"))
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(f"idp-{username}-pw")
    page.get_by_role("button", name="Sign in to the IdP").click()


def test_a_person_signs_in_through_the_provider_passes_totp_and_lands_home(live_server, oidc_provider, new_context):  # noqa: F811
    idp = make_identity_provider(oidc_provider)
    user = _person(oidc_provider, idp, "ada")
    page = new_context().new_page()
    _through_the_provider(page, live_server, "ada")
    page.wait_for_url(re.compile(r"/accounts/otp/"))
    page.get_by_label("Code").fill(totp_code(TOTPDevice.objects.get(user=user)))
    page.get_by_role("button", name="Verify").click()
    page.wait_for_url(live_server.url + "/")
    assert page.get_by_role("heading", name="Welcome, Ada").is_visible()
    page.screenshot(path=str(ARTIFACTS / "sso-home.png"), full_page=True)


@pytest.mark.parametrize("mode", ["tamper", "wrong_nonce", "wrong_audience", "unknown_key"])
def test_a_spoilt_id_token_is_refused_in_the_browser(live_server, oidc_provider, new_context, mode):  # noqa: F811
    idp = make_identity_provider(oidc_provider)
    _person(oidc_provider, idp, f"eve-{mode}")
    page = new_context().new_page()
    oidc_provider.spoil_next(mode)
    _through_the_provider(page, live_server, f"eve-{mode}")
    page.wait_for_url(re.compile(r"/sso/testidp/callback/"))
    assert page.get_by_text("could not verify Test IdP's answer").is_visible()
    page.goto(live_server.url + "/")
    page.wait_for_url(re.compile(r"/accounts/login/"))  # nobody was signed in
