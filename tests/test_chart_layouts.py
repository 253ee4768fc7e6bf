"""A chart is one image holding two drawings of the same numbers: the wide one pages show by default (and the
evidence pack's self-contained summary, which has no portal stylesheet), and a narrow one a phone shows instead,
so that its axis text is not shrunk to 7 px (accessgov.css swaps them; tests/e2e/test_phone_cards_and_charts.py
measures it in Chromium). Here: the markup, and the narrow drawing's room for its text at any number of columns."""

import itertools
import re
import xml.etree.ElementTree as ET
from datetime import date, timedelta

import pytest

from accessgov import charts

SVG = "{http://www.w3.org/2000/svg}"
WEEK_LABEL_HALF_WIDTH = 25  # "30 Mar" at 14 px is 49 units wide


def _image(html: str) -> ET.Element:
    return ET.fromstring(re.search(r"<svg class=\"chart-svg\".*</svg>", html, re.S).group(0))  # noqa: S314 (our own markup)


def _weeks(count: int) -> list[str]:
    return [charts.week_label(date(2025, 1, 6) + timedelta(weeks=i)) for i in range(count)]


def _chart(categories: list[str], *series: charts.Series, **options) -> ET.Element:
    return _image(
        charts.column_chart(
            chart_id="c",
            title="T",
            summary="S",
            category_label="Week of",
            categories=categories,
            series=series,
            **options,
        )
    )


def _drawings(image: ET.Element) -> dict[str, ET.Element]:
    return {svg.get("class").split()[-1]: svg for svg in image.findall(f"{SVG}svg")}


def test_a_chart_is_one_named_image_with_a_wide_drawing_shown_and_a_narrow_one_hidden_without_the_stylesheet():
    html = charts.column_chart(
        chart_id="c",
        title="Grants <per> week",
        summary="Four grants.",
        category_label="Week of",
        categories=_weeks(3),
        series=[charts.Series("A", [1, 2, 3]), charts.Series("B", [0, 1, None])],
    )
    image = _image(html)
    assert (image.get("role"), image.get("width"), image.get("height")) == ("img", "600", "220")
    assert image.get("viewBox") is None  # each drawing scales itself to the image's box
    assert image.find(f"{SVG}title").text == "Grants <per> week" and "&lt;per&gt;" in html
    drawings = _drawings(image)
    assert list(drawings) == ["chart-wide", "chart-narrow"]
    wide, narrow = drawings.values()
    assert (wide.get("viewBox"), wide.get("display")) == ("0 0 600 220", None)
    assert (narrow.get("viewBox"), narrow.get("display")) == (
        f"0 0 {charts.NARROW.width} {charts.NARROW.height}",
        "none",
    )
    for drawing in (wide, narrow):
        assert drawing.get("aria-hidden") == "true"  # the image is named once, by its title and summary
        assert (drawing.get("width"), drawing.get("height")) == ("100%", "100%")
        bars = [rect.find(f"{SVG}title").text for rect in drawing.iter(f"{SVG}rect")]
        assert bars == ["06 Jan · A: 1", "13 Jan · A: 2", "13 Jan · B: 1", "20 Jan · A: 3"]
    assert "style=" not in html  # the CSP allows no inline styles


@pytest.mark.parametrize("count", [1, 2, 5, 6, 7, 13, 14, 21, 26, 52, 53])
def test_the_narrow_drawing_keeps_its_week_labels_apart_and_inside_it(count):
    narrow = _drawings(_chart(_weeks(count), charts.Series("Grants", [i + 1 for i in range(count)])))["chart-narrow"]
    xs = [float(text.get("x")) for text in narrow.find(f"{SVG}g[@class='chart-labels']")]
    assert 1 <= len(xs) <= charts.NARROW.max_labels
    assert all(b - a >= 2 * WEEK_LABEL_HALF_WIDTH + 5 for a, b in itertools.pairwise(xs)), xs
    assert xs[0] - WEEK_LABEL_HALF_WIDTH >= 0 and xs[-1] + WEEK_LABEL_HALF_WIDTH <= charts.NARROW.width, xs


def test_the_narrow_drawing_leaves_room_left_of_the_plot_for_the_longest_duration_tick():
    chart = _chart(
        _weeks(4), charts.Series("Median", [900, 4000, 5400, 60]), format_value=charts.format_seconds, durations=True
    )
    narrow = _drawings(chart)["chart-narrow"]
    ticks = {text.text: float(text.get("x")) for text in narrow.iter(f"{SVG}text") if text.get("class") == "chart-tick"}
    assert ticks["1 h 30 min"] >= 76  # its width at 14 px, right-aligned there: nothing cut off at the left edge


def test_an_empty_chart_draws_nothing():
    html = charts.column_chart(
        chart_id="c",
        title="T",
        summary="S",
        category_label="Week of",
        categories=_weeks(2),
        series=[charts.Series("A", [0, None])],
    )
    assert "<svg" not in html and "Nothing to chart for these filters." in html
