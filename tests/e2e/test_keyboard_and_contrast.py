"""Keyboard, focus and contrast (an accessibility probe's findings, WCAG 2.2 AA): focus stays where the person
was after a card is replaced, the live page's refresh can be paused and keeps focus, typed text is readable in
dark mode, every focus stop on a phone is visible, the focus ring survives forced colours, the wide-screen menu
does not depend on a 2025 CSS feature."""

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse

from accessgov.models import Grant
from accessgov.services import access_requests as ar
from tests.conftest import verify_session

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PHONE = {"width": 390, "height": 844}


def _signed_in(browser, live_server, user, **options):
    from django.conf import settings

    client = verify_session(Client(), user)
    context = browser.new_context(**({"viewport": {"width": 1280, "height": 860}} | options))
    context.set_default_timeout(15_000)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
    context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": live_server.url}])
    return context


def _contrast(first: str, second: str) -> float:
    """WCAG contrast ratio of two computed colours ("rgb(r, g, b)")."""

    def luminance(css: str) -> float:
        channels = [int(float(c)) / 255 for c in css[css.index("(") + 1 : css.index(")")].split(",")[:3]]
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    high, low = sorted((luminance(first), luminance(second)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_deciding_in_the_queue_leaves_focus_on_the_decided_card(live_server, world, browser):
    first = ar.access_request_submit(
        world.requester, role=world.role, duration=timedelta(hours=1), justification="Investigating INC-1"
    )
    context = _signed_in(browser, live_server, world.approver)
    page = context.new_page()
    page.goto(live_server.url + reverse("approvals"))
    card = f"#request-{first.pk}"
    page.locator(f"{card} textarea[name=comment]").focus()
    page.keyboard.type("Looks right")
    page.locator(f"{card} button", has_text="Approve").focus()
    page.keyboard.press("Enter")
    page.locator(f"{card} .message").wait_for()
    # Not the page itself (where the next Tab would start again at "Skip to content"): the card's message.
    assert page.evaluate(f"() => document.activeElement.closest('{card}') !== null")
    assert "Approved" in page.evaluate("() => document.activeElement.textContent")
    context.close()


def test_the_live_page_can_be_paused_and_a_refresh_keeps_the_focused_link(live_server, world, browser):
    request = ar.access_request_submit(
        world.requester, role=world.role, duration=timedelta(hours=1), justification="Investigating INC-2"
    )
    ar.access_request_approve(world.approver, request.pk, comment="")
    grant = Grant.objects.get(access_request=request)
    context = _signed_in(browser, live_server, world.auditor)
    page = context.new_page()
    page.goto(live_server.url + reverse("live_access"))
    link = f"#live-grant-{grant.pk}"
    page.locator(link).focus()
    refresh = (
        "() => new Promise(done => { document.body.addEventListener('htmx:afterSettle', () => done(true), {once: true});"
        " htmx.ajax('GET', location.pathname, {source: '#live-access', target: '#live-access', swap: 'innerHTML'}); })"
    )
    page.evaluate(refresh)  # what the 10-second poll does
    assert page.evaluate("() => document.activeElement.id") == f"live-grant-{grant.pk}"
    pause = page.get_by_role("button", name="Pause updates")
    pause.click()
    assert page.get_by_role("button", name="Resume updates").is_visible()
    requests = []
    page.on("request", lambda r: requests.append(r.url) if "/live/" in r.url else None)
    page.evaluate(
        "() => htmx.ajax('GET', location.pathname, {source: '#live-access', target: '#live-access', swap: 'innerHTML'})"
        ".catch(() => null)"
    )
    page.wait_for_timeout(300)
    assert requests == []  # held while paused
    context.close()


def test_typed_text_is_readable_in_dark_mode(live_server, browser):
    context = browser.new_context(color_scheme="dark")
    page = context.new_page()
    page.goto(live_server.url + reverse("accounts:login"))
    colours = page.evaluate(
        "() => { const s = getComputedStyle(document.querySelector('#id_username'));"
        " return [s.color, s.backgroundColor]; }"
    )
    assert _contrast(*colours) >= 4.5, colours
    context.close()


def test_every_focus_stop_on_a_phone_list_is_visible(live_server, world, browser):
    for role in (world.role, world.role_two):
        ar.access_request_submit(
            world.requester, role=role, duration=timedelta(hours=1), justification="Investigating INC-3"
        )
    context = _signed_in(browser, live_server, world.requester, viewport=PHONE, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.goto(live_server.url + reverse("my_requests"))
    invisible = []
    for _ in range(40):
        page.keyboard.press("Tab")
        # Seen: the focused element is what the screen shows at its centre (a clipped one is not hit).
        seen = page.evaluate(
            "() => { const e = document.activeElement; const r = e.getBoundingClientRect();"
            " const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);"
            " return [e.tagName + ' ' + (e.textContent || '').trim().slice(0, 30),"
            " r.width >= 2 && r.height >= 2 && hit !== null && (e.contains(hit) || hit.contains(e))]; }"
        )
        if not seen[1]:
            invisible.append(seen[0])
    assert invisible == [], invisible  # the hidden heading row's sort links were focus stops nobody could see
    context.close()


def test_the_focus_ring_survives_forced_colours(live_server, browser):
    context = browser.new_context(forced_colors="active")
    page = context.new_page()
    page.goto(live_server.url + reverse("accounts:login"))
    page.keyboard.press("Tab")  # the skip link
    style = page.evaluate(
        "() => { const s = getComputedStyle(document.activeElement); return [s.outlineStyle, s.outlineWidth]; }"
    )
    assert style[0] != "none" and style[1] != "0px", style  # box-shadow, the ring elsewhere, is not drawn there
    context.close()


def test_the_menu_is_open_on_wide_screens_and_closed_on_phones(live_server, world, browser):
    for options in ({}, {"viewport": PHONE}):
        context = _signed_in(browser, live_server, world.requester, **options)
        page = context.new_page()
        page.goto(live_server.url + reverse("home"))
        page.wait_for_load_state("load")
        assert page.evaluate("() => document.querySelector('details.navmenu').open") == (not options)
        context.close()


def test_a_warning_before_the_idle_timeout_lets_the_person_stay_signed_in(live_server, world, browser, settings):
    from datetime import timedelta as td

    settings.SESSION_IDLE_TIMEOUT = td(seconds=8)  # the warning comes at about half of it when under 4 minutes
    context = _signed_in(browser, live_server, world.requester)
    page = context.new_page()
    page.goto(live_server.url + reverse("request_new"))
    page.locator("#id_justification").focus()
    page.keyboard.type("Investigating INC-7")
    dialog = page.get_by_role("alertdialog", name="Still there?")
    dialog.wait_for(state="visible", timeout=7_000)
    assert page.evaluate("() => document.activeElement.textContent") == "Stay signed in"
    page.keyboard.press("Enter")
    dialog.wait_for(state="hidden", timeout=3_000)
    # Back where they were typing (a review: focus fell to the page once the box hid).
    assert page.evaluate("() => document.activeElement.id") == "id_justification"
    page.wait_for_timeout(5_000)  # past the first timeout: the POST restarted the server's idle clock
    page.reload()
    assert page.url == live_server.url + reverse("request_new")  # still signed in
    page.locator("#id_justification").fill("Investigating INC-8")
    page.locator("#id_justification").focus()
    # Left alone, the box then says the session ended, and how to keep what was typed.
    page.get_by_role("button", name="Sign in again").wait_for(timeout=12_000)
    assert "Send your form as usual: what you typed is kept" in dialog.text_content()
    page.get_by_role("button", name="Sign in again").click()
    page.wait_for_url("**/accounts/login/**")
    context.close()
