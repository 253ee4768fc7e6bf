"""A person makes a personal API token in the portal (after password + OTP), sees it once, uses it
against the API, reads the interactive API docs (vendored Swagger UI, no CSP violation), and
revokes the token."""

import json
import re
import urllib.error
import urllib.request

import pytest
from playwright.sync_api import expect

from accessgov.models import ApiToken
from accessgov.services.tokens import hash_secret
from tests.e2e.conftest import ARTIFACTS
from tests.support.browser import sign_in_browser

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _api_status(live_server, secret: str) -> int:
    url = live_server.url + "/api/v1/grants/"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {secret}"})  # noqa: S310 (the test server)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (the test server)
            json.loads(response.read())
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_person_makes_uses_reads_docs_and_revokes_a_token(live_server, world, new_context):
    ARTIFACTS.mkdir(exist_ok=True)
    page = new_context().new_page()
    sign_in_browser(page, live_server, world.requester)
    page.get_by_role("link", name=re.compile("requester|" + re.escape(world.requester.get_full_name()))).first.click()
    page.get_by_role("link", name="Manage API tokens").click()
    page.get_by_label("Name").fill("deploy job, payments repo")
    # Nothing is ticked in advance: the token gets exactly the scope ticked (issue 18, item 10).
    assert page.locator("input[name=scopes]:checked").count() == 0
    page.get_by_label("Read grants", exact=True).check()
    page.get_by_role("button", name="Create token").click()
    secret = page.locator("#new-token").inner_text().strip()
    expect(page.get_by_role("button", name="Copy")).to_be_visible()
    assert secret.startswith("agv_p_")
    token = ApiToken.objects.get(user=world.requester)
    assert token.scopes == ["grants:read"]
    assert token.key_hash == hash_secret(secret)
    assert _api_status(live_server, secret) == 200

    page.goto(live_server.url + "/accounts/tokens/")  # shown once: a new visit does not show it again
    expect(page.locator("#new-token")).to_have_count(0)
    assert secret not in page.content()

    page.goto(live_server.url + "/api/docs/")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("AccessGov API")
    expect(page.locator(".opblock-summary-path").first).to_be_visible()
    assert page.locator(".opblock-summary-path", has_text="/api/v1/requests/").count() >= 1
    page.screenshot(path=str(ARTIFACTS / "api-docs.png"), full_page=False)

    page.goto(live_server.url + "/accounts/tokens/")
    page.get_by_role("button", name="Revoke").click()
    page.get_by_role("button", name="Yes, revoke the token").click()
    expect(page.get_by_text("revoked", exact=True)).to_be_visible()
    assert _api_status(live_server, secret) == 401
