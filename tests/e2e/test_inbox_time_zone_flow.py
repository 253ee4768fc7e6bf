"""Issue 18 in a browser: a person in Berlin signs in for the first time since the time zone setting
exists; the portal takes the zone from the browser (no inline script: CSP violations fail the test) and
shows times in CET with UTC on hover; the inbox badge leads to why their access was revoked."""

import re
from datetime import timedelta

import pytest
from playwright.sync_api import expect

from accessgov.models import Grant
from accessgov.services import access_requests as ar
from accessgov.services import grants as gs
from tests.support.browser import sign_in_browser

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_berlin_browser_sets_the_zone_and_the_inbox_says_why_access_was_revoked(live_server, world, browser):
    access_request = ar.access_request_submit(
        world.requester, role=world.role, duration=timedelta(hours=2), justification="Quarter-end reconciliation"
    )
    ar.access_request_approve(world.approver, access_request.pk)
    grant = Grant.objects.get(access_request=access_request)
    gs.grant_revoke(world.approver, grant.pk, reason="Reconciliation finished early")

    context = browser.new_context(viewport={"width": 1280, "height": 860}, timezone_id="Europe/Berlin")
    violations: list[str] = []
    context.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        with page.expect_response(lambda response: "/accounts/time-zone/" in response.url) as saved:
            sign_in_browser(page, live_server, world.requester)
        assert saved.value.status == 204
        world.requester.refresh_from_db()
        assert world.requester.time_zone == "Europe/Berlin"

        inbox_link = page.get_by_role("link", name=re.compile(r"^Inbox"))
        expect(inbox_link.locator(".count")).to_be_visible()
        inbox_link.click()
        page.wait_for_url(re.compile(r"/inbox/$"))
        page.get_by_role("link", name=f"Your access to {world.role} was revoked").click()
        expect(page.get_by_text("Reconciliation finished early")).to_be_visible()
        when = page.locator("dd time").first
        expect(when).to_contain_text(re.compile(r"CES?T"))
        assert (when.get_attribute("title") or "").endswith(" UTC")
        assert (when.get_attribute("datetime") or "").endswith("Z")
    finally:
        context.close()
    assert violations == [], violations
