"""A new user signs in, enrols TOTP from the page, saves backup codes, signs out, and signs in again."""

import re

import pytest

from tests.conftest import PASSWORD
from tests.e2e.conftest import ARTIFACTS
from tests.support.totp_reference import time_step, totp, wait_for_next_step

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_new_user_enrols_totp_saves_backup_codes_and_signs_in_again(live_server, make_user, new_context):
    make_user("newbie", device=False, first_name="Nina")
    page = new_context().new_page()

    page.goto(live_server.url + "/accounts/security/")
    assert "/accounts/login/" in page.url
    page.get_by_label("Username").fill("newbie")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Continue").click()

    page.wait_for_url(re.compile(r"/accounts/enrol/"))
    assert page.get_by_role("img", name=re.compile("QR code")).is_visible()
    qr_box = page.locator("img.qr").bounding_box()
    assert qr_box and qr_box["width"] > 100  # the SVG really loaded and rendered
    secret = page.locator("#totp-secret").inner_text().strip()
    assert re.fullmatch(r"[A-Z2-7]{32}", secret)
    enrol_step = time_step()
    page.get_by_label("Code").fill(totp(secret))
    page.screenshot(path=str(ARTIFACTS / "enrol.png"), full_page=True)
    page.get_by_role("button", name="Confirm and continue").click()

    page.wait_for_url(re.compile(r"/accounts/backup-codes/"))
    codes = page.locator("#backup-codes code").all_inner_texts()
    assert len(codes) == 10
    assert all(re.fullmatch(r"[a-z2-7]{8}", c) for c in codes)
    page.get_by_role("link", name="I have saved these codes").click()
    page.wait_for_url(re.compile(r"/accounts/security/"))
    assert page.get_by_role("heading", name="Account security").is_visible()

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/accounts/login/"))
    assert page.get_by_text("You have signed out.").is_visible()

    page.get_by_label("Username").fill("newbie")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(re.compile(r"/accounts/otp/"))
    wait_for_next_step(enrol_step)  # a real authenticator shows a new code; the used one is refused
    page.get_by_label("Code").fill(totp(secret))
    page.get_by_role("button", name="Verify").click()
    page.wait_for_url(live_server.url + "/")
    assert page.get_by_role("heading", name="Welcome, Nina").is_visible()
    page.screenshot(path=str(ARTIFACTS / "home.png"), full_page=True)
