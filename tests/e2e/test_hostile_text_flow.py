"""A real browser visits every page that shows hostile text (script tags, attribute break-outs,
javascript: URLs in every free-text field) as each persona: no dialog may open, no CSP violation may be
reported, and the text is visible as text."""

import pytest
from django.test import Client

from tests.conftest import verify_session
from tests.support import security_world
from tests.support.crawl import pages_by_persona
from tests.support.security_world import SCRIPT

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _signed_in_page(new_context, live_server, user):
    """A browser page carrying a verified session (sign-in itself is tested in test_sign_in_flow)."""
    from django.conf import settings

    client = verify_session(Client(), user)
    context = new_context()
    context.add_cookies(
        [
            {
                "name": settings.SESSION_COOKIE_NAME,
                "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
                "url": live_server.url,
            }
        ]
    )
    return context.new_page()


def test_no_page_runs_hostile_text_as_script(live_server, world, make_user, new_context):
    hostile = security_world.build(world, make_user)
    dialogs: list[str] = []
    visited = 0
    for persona, urls in pages_by_persona(world, hostile).items():
        user = hostile.admin if persona == "admin" else getattr(world, persona)
        page = _signed_in_page(new_context, live_server, user)
        page.on("dialog", lambda dialog: (dialogs.append(f"{dialog.page.url}: {dialog.message}"), dialog.dismiss()))
        for url in urls:
            response = page.goto(live_server.url + url, wait_until="load")
            assert response.status == 200, (persona, url, response.status)
            page.wait_for_timeout(50)  # let onerror handlers of broken images fire, were there any
            visited += 1
        if persona == "requester":
            page.goto(live_server.url + f"/requests/{hostile.pending.pk}/")
            assert page.get_by_text(f"=justification {SCRIPT}", exact=False).count() >= 1
    assert visited > 40
    assert dialogs == [], dialogs

    # The listener itself works: a dialog opened on purpose is seen.
    page.evaluate("() => setTimeout(() => alert('probe'), 0)")
    page.wait_for_timeout(200)
    assert dialogs == [f"{page.url}: probe"]
