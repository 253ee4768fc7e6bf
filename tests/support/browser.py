"""Browser (Playwright) helpers shared by the end-to-end tests."""

import re

from django_otp.plugins.otp_totp.models import TOTPDevice

from accessgov.otp import base32_secret
from tests.conftest import PASSWORD
from tests.support.totp_reference import totp


def sign_in_browser(page, live_server, user) -> None:
    """Password, then a code from an independent authenticator, through the real pages."""
    secret = base32_secret(TOTPDevice.objects.get(user=user, confirmed=True))
    page.goto(live_server.url + "/accounts/login/")
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(re.compile(r"/accounts/otp/"))
    page.get_by_label("Code").fill(totp(secret))
    page.get_by_role("button", name="Verify").click()
    page.wait_for_url(live_server.url + "/")
