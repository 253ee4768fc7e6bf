"""Phones, measured: at 390 px wide a table's cards never let a cell's label run into another cell (a label that
wraps to two lines made its cell taller, not the next row's content hidden under it), and a report chart's axis
text stays readable (its computed size times the scale the SVG is drawn at is at least 11 px; the SVG used to
shrink 13 px text to about 7 px). Screenshots for a person to look at go to test-results/phone-cards/."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accessgov.models import Eligibility
from accessgov.services import access_requests as ar
from accessgov.services import grants as gs
from tests.conftest import verify_session
from tests.e2e.conftest import ARTIFACTS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PHONE = {"width": 390, "height": 844}
SHOTS = ARTIFACTS / "phone-cards"
MIN_TEXT_PX = 11
H = timedelta(hours=1)


@pytest.fixture
def reported_world(world, make_user):
    """A row on every list and report page: decided, denied and pending requests, grants and a break-glass use."""
    since = datetime(2020, 1, 1, tzinfo=UTC)
    Eligibility.objects.create(role=world.role_two, user=world.approver, starts_at=since)
    world.role_two.break_glass_allowed = True
    world.role_two.save(update_fields=["break_glass_allowed"])
    people = [world.requester] + [make_user(f"engineer{n}") for n in range(3)]
    for person in people[1:]:
        Eligibility.objects.create(role=world.role, user=person, starts_at=since)
    for number, person in enumerate(people[:3]):
        decided = ar.access_request_submit(
            person, role=world.role, duration=H, justification=f"Investigating INC-{number}"
        )
        ar.access_request_approve(world.approver, decided.pk, comment="ok")
    denied = ar.access_request_submit(people[3], role=world.role, duration=H, justification="Curious about the data")
    ar.access_request_deny(world.approver, denied.pk, comment="Not needed for this ticket")
    ar.access_request_submit(world.requester, role=world.role_two, duration=H, justification="Investigating INC-6")
    gs.break_glass_activate(
        world.approver,
        role=world.role_two,
        justification="INC-8: payouts stuck",
        duration=timedelta(minutes=30),
        step_up_at=timezone.now(),
    )
    return world


def _pages() -> dict[str, list[str]]:
    return {
        "auditor": [
            reverse("reports"),
            reverse("report_access"),
            reverse("report_approvals"),
            reverse("report_break_glass"),
            reverse("report_denied"),
            reverse("report_right_sizing"),
            reverse("audit_trail"),
        ],
        "approver": [reverse("approvals"), reverse("grants_list")],
        "requester": [reverse("my_requests")],
    }


def _signed_in(browser, live_server, user, **options):
    client = verify_session(Client(), user)
    context = browser.new_context(viewport=PHONE, device_scale_factor=1, is_mobile=True, has_touch=True, **options)
    context.set_default_timeout(15_000)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
    context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": live_server.url}])
    return context


def _boxes(cdp) -> tuple[list[dict], list[dict]]:
    """(every labelled cell's ::before box, every cell's box) in the page's reflowed tables, read from the layout
    itself in one DevTools snapshot (a pseudo-element has no DOM box to ask for)."""
    snapshot = cdp.send("DOMSnapshot.captureSnapshot", {"computedStyles": []})
    text, document = snapshot["strings"], snapshot["documents"][0]
    nodes, layout = document["nodes"], document["layout"]
    parents = nodes["parentIndex"]
    names = [text[i].lower() if i >= 0 else "" for i in nodes["nodeName"]]
    attributes = [
        {text[a]: text[b] for a, b in zip(pairs[0::2], pairs[1::2], strict=True)} for pairs in nodes["attributes"]
    ]
    pseudo = {index: text[value] for index, value in zip(*nodes["pseudoType"].values(), strict=True)}
    boxes: dict[int, dict] = {}
    for index, (x, y, width, height) in zip(layout["nodeIndex"], layout["bounds"], strict=True):
        boxes.setdefault(index, {"left": x, "right": x + width, "top": y, "bottom": y + height})

    def reflowed_table(index: int) -> int:
        while index >= 0 and not (names[index] == "table" and "reflow" in attributes[index].get("class", "").split()):
            index = parents[index]
        return index

    labels, cells = [], []
    for index, name in enumerate(names):
        if name in ("td", "th") and index in boxes and (table := reflowed_table(index)) >= 0:
            cells.append({**boxes[index], "table": table, "id": index})
        elif pseudo.get(index) == "before" and index in boxes and names[parents[index]] == "td":
            cell = parents[index]
            if (label := attributes[cell].get("data-label")) and (table := reflowed_table(cell)) >= 0:
                labels.append({**boxes[index], "table": table, "id": cell, "text": label})
    return labels, cells


def _overlaps(labels: list[dict], cells: list[dict]) -> list[str]:
    found = []
    for label in labels:
        for cell in cells:
            if cell["table"] != label["table"] or cell["id"] == label["id"]:
                continue
            width = min(label["right"], cell["right"]) - max(label["left"], cell["left"])
            height = min(label["bottom"], cell["bottom"]) - max(label["top"], cell["top"])
            if width > 0.5 and height > 0.5:
                found.append(f"label {label['text']!r} runs {height:.0f} px into another cell")
                break
    return found


CHART_TEXT = """() => Array.from(document.querySelectorAll('svg.chart-svg')).map(svg => {
    const outer = svg.getBoundingClientRect();
    const texts = Array.from(svg.querySelectorAll('text')).filter(t => t.getBoundingClientRect().width > 0);
    const sizes = texts.map(t => parseFloat(getComputedStyle(t).fontSize) * t.getScreenCTM().a);
    const outside = texts.map(t => [t.textContent, t.getBoundingClientRect()])
        .filter(([, r]) => r.left < outer.left - 1 || r.right > outer.right + 1 || r.top < outer.top - 1
                           || r.bottom > outer.bottom + 1).map(([text]) => text);
    const labels = Array.from(svg.querySelectorAll('.chart-labels text'))
        .map(t => t.getBoundingClientRect()).filter(r => r.width > 0);
    const crowded = labels.slice(1).filter((r, i) => r.left < labels[i].right + 2).length;
    return {id: svg.getAttribute('aria-labelledby'), texts: texts.length, smallest: Math.min(...sizes),
            outside, crowded, width: outer.width, height: outer.height};
  })"""


def test_phone_cards_keep_labels_in_their_cells_and_chart_text_stays_readable(live_server, reported_world, browser):
    SHOTS.mkdir(parents=True, exist_ok=True)
    overlapping, unreadable, charts, labelled = [], [], 0, 0
    for persona, urls in _pages().items():
        context = _signed_in(browser, live_server, getattr(reported_world, persona))
        page = context.new_page()
        cdp = context.new_cdp_session(page)
        for url in urls:
            assert page.goto(live_server.url + url).status == 200, url
            name = re.sub(r"[^a-z0-9]+", "-", f"{persona}{url}".lower()).strip("-")
            page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
            labels, cells = _boxes(cdp)
            labelled += len(labels)
            overlapping += [(url, problem) for problem in _overlaps(labels, cells)]
            for chart in page.evaluate(CHART_TEXT):
                charts += 1
                if chart["texts"] == 0 or chart["smallest"] < MIN_TEXT_PX or chart["outside"] or chart["crowded"]:
                    unreadable.append((url, chart))
        context.close()
    assert labelled > 50 and charts >= 3, (labelled, charts)
    assert overlapping == [], "\n".join(f"{url}: {problem}" for url, problem in overlapping)
    assert unreadable == [], unreadable


def test_a_dark_phone_gets_readable_chart_text_and_a_wide_screen_the_chart_as_before(
    live_server, reported_world, browser
):
    """The access report dark on a phone, then light on a wide screen: there the chart keeps its 600 x 220
    proportions and 13 px text scaled with it, as it always had."""
    context = _signed_in(browser, live_server, reported_world.auditor, color_scheme="dark")
    page = context.new_page()
    page.goto(live_server.url + reverse("report_access"))
    page.screenshot(path=str(SHOTS / "dark-auditor-reports-access.png"), full_page=True)
    phone = page.evaluate(CHART_TEXT)
    page.set_viewport_size({"width": 1280, "height": 900})
    page.emulate_media(color_scheme="light")
    page.screenshot(path=str(SHOTS / "desktop-auditor-reports-access.png"), full_page=True)
    desktop = page.evaluate(CHART_TEXT)
    context.close()
    assert phone and all(chart["smallest"] >= MIN_TEXT_PX for chart in phone), phone
    assert desktop and all(
        abs(chart["height"] - chart["width"] * 220 / 600) < 1
        and abs(chart["smallest"] - 13 * chart["width"] / 600) < 0.05
        for chart in desktop
    ), desktop
