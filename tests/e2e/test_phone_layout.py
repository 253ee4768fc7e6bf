"""Phones (issue 18, item 9): every main page at 390x844 fits the screen (no sideways scrolling, even
with long hostile text in the data), the navigation is a "Menu" that opens without JavaScript, tables
reflow into labelled cards, and tap targets are at least 44 px high. A screenshot of each page is kept
in test-results/phone/ for a person to look at."""

import re
from datetime import date

import pytest
from django.test import Client
from django.urls import reverse

from accessgov.models import EvidencePack
from tests.conftest import verify_session
from tests.e2e.conftest import ARTIFACTS
from tests.support import security_world

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PHONE = {"width": 390, "height": 844}
SHOTS = ARTIFACTS / "phone"


def _ready_pack() -> EvidencePack:
    """A built pack's page (its control table): the summary as the builder writes it, with long text."""
    long = security_world.payload("control test") * 2
    controls = [
        {
            "id": "SOC2 CC6.1",
            "tests": [[f"Every grant had an approval {long}", "pass: 12 of 12"], ["Break-glass", "pass"]],
        },
        {"id": "ISO A.5.18", "tests": [[f"Reviews closed {long}", "no_verdict_yet: 1 row not counted"]]},
    ]
    return EvidencePack.objects.create(
        since=date(2026, 1, 1),
        until=date(2026, 3, 31),
        status=EvidencePack.Status.READY,
        summary={"controls": controls},
    )


def _finding(world, hostile) -> None:
    """An open finding with long text (its table made the activity page 514 px wide on a phone)."""
    from django.utils import timezone

    from accessgov.models import ActivityFinding

    ActivityFinding.objects.create(
        system=world.system,
        grant=hostile.approved.grant,
        kind=ActivityFinding.Kind.DDL,
        principal="requester",
        first_seen_at=timezone.now(),
        last_seen_at=timezone.now(),
        detail=security_world.payload("finding detail"),
        example_command="ALTER TABLE",
    )


def _pages(world, hostile) -> dict[str, list[str]]:
    grant = hostile.approved.grant.pk
    _finding(world, hostile)
    return {
        "requester": [
            reverse("home"),
            reverse("request_new"),
            reverse("my_requests"),
            reverse("request_detail", args=[hostile.pending.pk]),
            reverse("my_access"),
            reverse("grant_detail", args=[grant]),
            reverse("system_list"),
            reverse("break_glass"),
            reverse("accounts:security"),
        ],
        "approver": [
            reverse("approvals"),
            reverse("grants_list"),
            reverse("request_detail", args=[hostile.pending.pk]),
        ],
        "owner": [
            reverse("system_detail", args=[world.system.slug]),
            reverse("reviews"),
            reverse("review_detail", args=[hostile.campaign_id]),
            reverse("provisioning"),
        ],
        "auditor": [
            reverse("audit_trail"),
            reverse("model_changes"),
            reverse("reports"),
            reverse("report_access"),
            reverse("report_approvals"),
            reverse("report_denied"),
            reverse("break_glass_follow_ups"),
            reverse("live_access"),
            reverse("activity"),
            reverse("grant_detail", args=[hostile.approved.grant.pk]),
            reverse("evidence"),
            reverse("evidence_detail", args=[_ready_pack().pk]),
        ],
        "admin": [reverse("changes")],
    }


def _phone_page(browser, live_server, user):
    from django.conf import settings

    client = verify_session(Client(), user)
    context = browser.new_context(viewport=PHONE, device_scale_factor=1, is_mobile=True, has_touch=True)
    context.set_default_timeout(15_000)
    context.add_cookies(
        [
            {
                "name": settings.SESSION_COOKIE_NAME,
                "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
                "url": live_server.url,
            }
        ]
    )
    return context


SMALL_TARGETS = """() => Array.from(document.querySelectorAll(
    'main .button, main button, .topbar summary, .topbar .mainnav a, .topbar .account a, .topbar button, '
    + 'main select, main textarea, main input:not([type=hidden]):not([type=checkbox]):not([type=radio])'))
  .filter(el => el.getClientRects().length && getComputedStyle(el).visibility !== 'hidden')
  .map(el => [el, el.getBoundingClientRect()])
  .filter(([el, box]) => box.height < 44)
  .map(([el, box]) => el.tagName + '.' + el.className + ' "' + (el.textContent || el.name || '').trim().slice(0, 30)
       + '" ' + Math.round(box.height) + 'px')"""


def test_every_main_page_fits_a_phone_with_a_menu_reflowing_tables_and_44px_targets(
    live_server, world, make_user, browser
):
    hostile = security_world.build(world, make_user)
    SHOTS.mkdir(parents=True, exist_ok=True)
    overflowing, small, visited = [], [], 0
    for persona, urls in _pages(world, hostile).items():
        user = hostile.admin if persona == "admin" else getattr(world, persona)
        context = _phone_page(browser, live_server, user)
        page = context.new_page()
        for url in urls:
            response = page.goto(live_server.url + url, wait_until="load")
            assert response.status == 200, (persona, url, response.status)
            visited += 1
            width = page.evaluate("() => document.documentElement.scrollWidth")
            name = re.sub(r"[^a-z0-9]+", "-", f"{persona}{url}".lower()).strip("-")
            page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
            if width > PHONE["width"]:
                wide = page.evaluate(
                    """() => Array.from(document.querySelectorAll('body *'))
                        .filter(el => el.getBoundingClientRect().right > 391)
                        .filter(el => !el.parentElement.closest('.table-wrap') || el.closest('.table-wrap') === null)
                        .slice(0, 3).map(el => el.tagName + '.' + el.className + ' ' + getComputedStyle(el).position
                             + ' in ' + el.parentElement.tagName + '.' + el.parentElement.className + ' '
                             + getComputedStyle(el.parentElement).overflowX)"""
                )
                overflowing.append((persona, url, width, wide))
            small += [(persona, url, target) for target in page.evaluate(SMALL_TARGETS)]
        context.close()
    assert visited >= 25
    assert overflowing == [], overflowing
    assert small == [], small[:20]


def test_the_phone_menu_opens_and_closes_without_javascript_and_tables_reflow(live_server, world, browser):
    from datetime import timedelta

    from django.conf import settings

    from accessgov.services import access_requests as ar

    ar.access_request_submit(
        world.requester, role=world.role, duration=timedelta(hours=1), justification="Investigating INC-12"
    )
    client = verify_session(Client(), world.auditor)
    context = browser.new_context(viewport=PHONE, java_script_enabled=False)
    context.add_cookies(
        [
            {
                "name": settings.SESSION_COOKIE_NAME,
                "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
                "url": live_server.url,
            }
        ]
    )
    page = context.new_page()
    page.goto(live_server.url + reverse("audit_trail"))
    menu = page.locator(".navmenu > summary")
    audit_link = page.locator(".mainnav a", has_text="Audit")
    assert menu.is_visible() and not audit_link.is_visible()
    closed_height = page.locator(".topbar").bounding_box()["height"]
    assert closed_height < 140, closed_height  # not a 420 px stack of links
    menu.click()
    assert audit_link.is_visible() and audit_link.bounding_box()["height"] >= 44
    page.screenshot(path=str(SHOTS / "menu-open.png"))
    audit_link.click()
    page.wait_for_url(re.compile(r"/audit/$"))
    # A reflowed table: the column headings are read from each cell's label.
    cell = page.locator("table.reflow tbody td[data-label='Event']").first
    label = page.evaluate("(el) => getComputedStyle(el, '::before').content", cell.element_handle())
    assert label == '"Event"'
    assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
    # On a wide screen the same markup is a plain bar of links with no Menu button.
    page.set_viewport_size({"width": 1366, "height": 900})
    page.reload()
    assert (
        not page.locator(".navmenu > summary").is_visible()
        and page.locator(".mainnav a", has_text="Audit").is_visible()
    )
    page.screenshot(path=str(SHOTS / "desktop-audit.png"))
    # The probe of the phone test finds small targets where they are (desktop links are ~30 px high).
    assert any("Audit" in target for target in page.evaluate(SMALL_TARGETS))
    context.close()
