"""Everyday UX leftovers of a review, in Chromium: an admin's menu fits one line at 1280 px (less used pages under
"More", a <details> reachable by keyboard and listed in the phone menu); on a phone, Tab goes through the header
in the order it reads; screen readers get a name for every control, image and chart, the landmarks, a working
skip link, badges as words, and no duplicate ids or empty landmarks on the main pages of an approver and an
auditor. (The chart colours' contrast is tests/test_chart_contrast.py.)"""

import itertools
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import expect

from accessgov.models import Eligibility
from accessgov.services import access_requests as ar
from accessgov.services import changes
from accessgov.services import grants as gs
from tests.conftest import verify_session

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WIDE = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
H = timedelta(hours=1)


def _signed_in(browser, live_server, user, **options):
    from django.conf import settings

    client = verify_session(Client(), user)
    context = browser.new_context(**({"viewport": WIDE} | options))
    context.set_default_timeout(15_000)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
    context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": live_server.url}])
    return context


def _focused(page) -> dict:
    return page.evaluate(
        """() => { const e = document.activeElement; const r = e.getBoundingClientRect();
            return {text: (e.textContent || '').trim().replace(/\\s+/g, ' '), tag: e.tagName,
                    inHeader: e.closest('header') !== null,
                    top: r.top, bottom: r.bottom, left: r.left, right: r.right}; }"""
    )


def _reads_before(first: dict, second: dict) -> bool:
    """``first`` comes before ``second`` in reading order: on an earlier row, or further left on the same row."""
    same_row = abs((first["top"] + first["bottom"]) / 2 - (second["top"] + second["bottom"]) / 2) < 8
    return (same_row and second["left"] >= first["right"] - 1) or second["top"] >= first["bottom"] - 1


# --- 1. The widest menu on one line ----------------------------------------------------------------------


@pytest.fixture
def busiest_admin(world, admins):
    """An admin (a superuser, so an auditor too) who approves a role, with a request in the queue, a policy change
    waiting for them and their inbox badge: every item of the menu and every count on it."""
    from guardian.shortcuts import assign_perm

    assign_perm("accessgov.approve_role", admins[0], world.role)
    ar.access_request_submit(world.requester, role=world.role, duration=H, justification="Investigating INC-5")
    changes.change_propose_user_rights(admins[1], user=world.outsider, make_superuser=True)
    return admins[0]


def test_an_admins_menu_fits_one_line_at_1280_px_and_every_page_stays_reachable(live_server, busiest_admin, browser):
    context = _signed_in(browser, live_server, busiest_admin)
    page = context.new_page()
    page.goto(live_server.url + reverse("home"))
    items = page.locator(".mainnav > ul > li")
    tops = {round(box["y"]) for box in (items.nth(i).bounding_box() for i in range(items.count()))}
    header = page.locator("header.topbar").bounding_box()
    link = page.locator(".mainnav a").first.bounding_box()
    assert len(tops) == 1 and header["height"] < 2 * link["height"], (tops, header, link)  # was 82 px, two rows
    assert page.locator("#queue-count .count").is_visible()
    more = page.locator("details.navmore")
    expect(more.locator("summary .count")).to_have_text(re.compile(r"^1"))  # the pending change, seen while closed

    # "More" by keyboard: Enter opens it, Tab goes through its links, Escape closes it back onto its summary.
    every_page = set(page.locator(".mainnav a").evaluate_all("links => links.map(a => a.getAttribute('href'))"))
    assert {reverse("changes"), reverse("live_access"), reverse("audit_trail"), reverse("approvals")} <= every_page
    more.locator("summary").focus()
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    assert _focused(page)["text"] == "Break-glass follow-ups"
    hidden = [a for a in more.locator("a").all() if not a.is_visible()]
    summary = more.locator("summary").bounding_box()
    assert hidden == [] and more.locator(".navmore-panel").bounding_box()["y"] >= summary["y"] + summary["height"]
    page.keyboard.press("Escape")
    assert not more.evaluate("m => m.open") and _focused(page)["text"].startswith("More")

    # On a phone every page is in the menu's list, "More" included.
    page.set_viewport_size(PHONE)
    page.reload()
    page.locator(".navmenu > summary").click()
    shown = set(page.locator(".mainnav a:visible").evaluate_all("links => links.map(a => a.getAttribute('href'))"))
    assert shown == every_page, every_page - shown
    context.close()


# --- 2. The phone header's Tab order ---------------------------------------------------------------------


def test_on_a_phone_tab_goes_through_the_header_in_reading_order(live_server, world, browser):
    context = _signed_in(browser, live_server, world.auditor, viewport=PHONE, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.goto(live_server.url + reverse("home"))
    page.keyboard.press("Tab")
    assert _focused(page)["text"] == "Skip to content"
    stops = []
    for _ in range(10):
        page.keyboard.press("Tab")
        stop = _focused(page)
        if not stop["inHeader"]:
            break
        stops.append(stop)
    assert [s["text"] for s in stops] == ["AccessGov", "Menu: all pages", world.auditor.username, "Sign out"]
    out_of_order = [(a["text"], b["text"]) for a, b in itertools.pairwise(stops) if not _reads_before(a, b)]
    assert out_of_order == [], out_of_order  # "Menu" was on the second row and focused before the first row's links
    # Opened from the keyboard, the menu's links come next, under its button; Escape closes it again.
    page.locator(".navmenu > summary").focus()
    page.keyboard.press("Enter")
    button = _focused(page)
    page.keyboard.press("Tab")
    first = _focused(page)
    assert first["text"] == "Home" and first["top"] >= button["bottom"] - 1, first
    page.keyboard.press("Escape")
    assert _focused(page)["text"] == "Menu: all pages"
    assert not page.locator(".mainnav a", has_text="Home").is_visible()
    context.close()


# --- 4. Screen readers -----------------------------------------------------------------------------------

# Roles of form controls (Chromium's accessibility tree) that need a name a screen reader can say.
CONTROLS = {"textbox", "searchbox", "combobox", "listbox", "checkbox", "radio", "spinbutton", "slider", "switch"}
CONTROLS |= {"button", "link"}


@pytest.fixture
def busy_world(world):
    """Something on each page: a request in the approver's queue, a decided request and its grant, a break-glass
    use (its badge and a chart on the access report), a role the approver may request."""
    since = datetime(2020, 1, 1, tzinfo=UTC)
    Eligibility.objects.create(role=world.role_two, user=world.approver, starts_at=since)
    Eligibility.objects.create(role=world.role_two, user=world.approver2, starts_at=since)
    world.role_two.break_glass_allowed = True
    world.role_two.save(update_fields=["break_glass_allowed"])
    decided = ar.access_request_submit(
        world.requester, role=world.role, duration=H, justification="Investigating INC-7"
    )
    ar.access_request_approve(world.approver, decided.pk, comment="ok")
    ar.access_request_submit(world.requester, role=world.role_two, duration=H, justification="Investigating INC-6")
    gs.break_glass_activate(
        world.approver2,
        role=world.role_two,
        justification="INC-8: payouts stuck",
        duration=timedelta(minutes=30),
        step_up_at=timezone.now(),
    )
    return world


def _screen_reader_problems(page, cdp) -> list[str]:
    problems = []
    nodes = [(n.get("role", {}).get("value"), n) for n in cdp.send("Accessibility.getFullAXTree")["nodes"]]
    nodes = [(role, node) for role, node in nodes if not node.get("ignored")]
    roles = [role for role, _ in nodes]

    def name(node) -> str:
        return str(node.get("name", {}).get("value", "")).strip()

    for landmark in ("banner", "main", "contentinfo"):
        if roles.count(landmark) != 1:
            problems.append(f"{roles.count(landmark)} {landmark} landmarks")
    if not any(r == "navigation" and name(n) == "Main" for r, n in nodes):
        problems.append("no navigation landmark named Main")
    problems += [
        f"{r} without a name: {n.get('backendDOMNodeId')}"
        for r, n in nodes
        if (r in CONTROLS or r in ("image", "img")) and not name(n)
    ]
    problems += page.evaluate(
        """() => {
          const found = [];
          const spoken = el => Array.from(el.childNodes).map(c => c.nodeType === 3 ? c.textContent
              : (c.nodeType === 1 && c.getAttribute('aria-hidden') !== 'true' ? spoken(c) : '')).join('');
          document.querySelectorAll('svg').forEach(svg => {
            if (!svg.closest('[aria-hidden="true"]') && !(svg.getAttribute('role') === 'img'
                && (svg.getAttribute('aria-labelledby') || svg.getAttribute('aria-label'))))
              found.push('an svg that is neither hidden nor a named image');
          });
          const ids = {};
          document.querySelectorAll('[id]').forEach(el => { ids[el.id] = (ids[el.id] || 0) + 1; });
          Object.entries(ids).filter(([, n]) => n > 1).forEach(([id]) => found.push('duplicate id ' + id));
          document.querySelectorAll('nav, [role=navigation]').forEach(nav => {
            if (!nav.querySelector('a[href], button, summary'))
              found.push('an empty navigation landmark: ' + nav.getAttribute('aria-label'));
          });
          // A badge says its state in words (not only by colour, not as an abbreviation), or is a number.
          document.querySelectorAll('.status, .badge, .risk').forEach(badge => {
            const text = spoken(badge).trim();
            if (!/[A-Za-z]{4,}/.test(text) && !/^[0-9]+$/.test(text)) found.push('badge read as "' + text + '"');
          });
          if (location.pathname.startsWith('/reports/'))
            document.querySelectorAll('table').forEach(table => {
              if (!table.querySelector('caption') && !table.getAttribute('aria-labelledby')
                  && !table.getAttribute('aria-label')) found.push('a table without a name');
            });
          return found;
        }"""
    )
    # A chart: an image named by its title (not the title and its whole summary run together), described by
    # its summary, with the numbers as a table.
    for figure in page.locator("figure.chart:has(svg)").all():
        title = figure.locator("figcaption").inner_text().strip()
        summary = figure.locator(".chart-summary").inner_text().strip()
        chart = figure.get_by_role("img", name=title, exact=True)
        if chart.count() != 1:
            problems.append(f"chart not named {title!r}: {figure.locator('svg').get_attribute('aria-labelledby')}")
            continue
        expect(chart).to_have_accessible_description(summary)
        if figure.locator("details table").count() != 1:
            problems.append(f"chart {title!r} without its numbers as a table")
    # The skip link: the first Tab stop, and Enter on it moves focus to the main content.
    page.keyboard.press("Tab")
    skip = page.evaluate(
        "() => [document.activeElement.textContent.trim(), document.activeElement.getAttribute('href')]"
    )
    page.keyboard.press("Enter")
    if skip != ["Skip to content", "#main"] or page.evaluate("() => document.activeElement.id") != "main":
        problems.append(f"skip link: {skip}")
    return problems


def test_main_pages_name_every_control_image_and_landmark_for_screen_readers(live_server, busy_world, browser):
    w = busy_world
    pages = {
        w.approver: [reverse("home"), reverse("request_new"), reverse("approvals")],
        w.auditor: [
            reverse("home"),
            reverse("reports"),
            reverse("report_access"),
            reverse("report_approvals"),
            reverse("report_right_sizing"),
        ],
    }
    problems: dict[str, list[str]] = {}
    charts = 0
    for user, urls in pages.items():
        context = _signed_in(browser, live_server, user)
        page = context.new_page()
        cdp = context.new_cdp_session(page)
        for url in urls:
            response = page.goto(live_server.url + url)
            assert response is not None and response.status == 200, (user.username, url)
            charts += page.locator("figure.chart svg").count()
            if found := _screen_reader_problems(page, cdp):
                problems[f"{user.username} {url}"] = found
        context.close()
    assert charts >= 1  # the access report drew its chart: the chart checks ran
    assert problems == {}, "\n".join(f"{where}: {problem}" for where, found in problems.items() for problem in found)
