"""The chart palette (WCAG 2.2 SC 1.4.11, non-text contrast): every series colour the report charts use stands
at least 3:1 against the card the charts are drawn on, in the light and the dark colour scheme, and the colours
stay apart from each other, also as people with protanopia or deuteranopia see them.

The colours are the ``--series-N`` custom properties of static/css/accessgov.css (the one place browsers read
them; accessgov/charts.py draws ``series-N`` classes, at most ``MAX_SERIES`` of them); the charts sit in
panels whose background is ``--card``."""

import itertools
import math
import re
from pathlib import Path

import pytest

from accessgov.charts import MAX_SERIES

CSS = Path(__file__).resolve().parents[1] / "static" / "css" / "accessgov.css"
# Machado, Oliveira & Fernandes (2009), severity 1.0, on linear RGB.
PROTANOPIA = ((0.152286, 1.052583, -0.204868), (0.114503, 0.786281, 0.099216), (-0.003882, -0.048116, 1.051998))
DEUTERANOPIA = ((0.367322, 0.860646, -0.227968), (0.280085, 0.672501, 0.047413), (-0.011820, 0.042940, 0.968881))
MIN_CONTRAST = 3.0
MIN_DIFFERENCE = 20.0  # CIE76 ΔE*ab between any two series (a just-noticeable difference is about 2.3)


def _block(css: str, start: int) -> str:
    """The text between the brace at or after ``start`` and its matching closing brace."""
    opening = css.index("{", start)
    depth = 0
    for at in range(opening, len(css)):
        depth += {"{": 1, "}": -1}.get(css[at], 0)
        if depth == 0:
            return css[opening + 1 : at]
    raise AssertionError("unbalanced braces in accessgov.css")


def _properties(block: str) -> dict[str, str]:
    return {name: value.strip().lower() for name, value in re.findall(r"(--[\w-]+)\s*:\s*([^;]+);", block)}


def _css() -> tuple[str, str]:
    """The stylesheet without comments, split into what applies always and what only the dark scheme adds."""
    css = re.sub(r"/\*.*?\*/", "", CSS.read_text(encoding="utf-8"), flags=re.S)
    dark = _block(css, css.index("@media (prefers-color-scheme: dark)"))
    return css.replace(dark, ""), dark


def series_colours(scheme: str) -> tuple[str, list[str]]:
    """(the chart background, the fill of each series-N class) in ``scheme``, custom properties resolved."""
    always, dark = _css()
    properties = _properties(_block(always, always.index(":root")))
    sources = [always]
    if scheme == "dark":
        properties |= _properties(_block(dark, dark.index(":root")))
        sources.append(dark)
    fills: dict[int, str] = {}
    for source in sources:  # the dark scheme's own rules come last and win
        for n, body in re.findall(r"\.series-(\d+)\s*\{([^}]*)\}", source):
            fill = re.search(r"(?:^|;)\s*fill:\s*([^;]+)", body)
            background = re.search(r"background:\s*([^;]+)", body)
            assert fill and background and fill.group(1).strip() == background.group(1).strip(), (
                f".series-{n}: the legend's swatch (background) and the bars (fill) must be one colour: {body}"
            )
            fills[int(n)] = fill.group(1).strip()

    def resolved(value: str) -> str:
        name = re.fullmatch(r"var\((--[\w-]+)\)", value)
        return properties[name.group(1)] if name else value.lower()

    assert sorted(fills) == list(range(MAX_SERIES)), f"one colour per series (charts.MAX_SERIES): {sorted(fills)}"
    return properties["--card"], [resolved(fills[n]) for n in range(MAX_SERIES)]


def _linear(hex_colour: str) -> tuple[float, float, float]:
    assert re.fullmatch(r"#[0-9a-f]{6}", hex_colour), f"expected #rrggbb, got {hex_colour!r}"
    channels = (int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5))
    r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return r, g, b


def contrast(first: str, second: str) -> float:
    """WCAG 2 contrast ratio of two sRGB colours."""

    def luminance(colour: str) -> float:
        r, g, b = _linear(colour)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    high, low = sorted((luminance(first), luminance(second)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def _lab(rgb: tuple[float, float, float]) -> tuple[float, float, float]:
    r, g, b = (min(max(c, 0.0), 1.0) for c in rgb)
    x = (0.4124564 * r + 0.3575761 * g + 0.1804375 * b) / 0.95047
    y = 0.2126729 * r + 0.7151522 * g + 0.0721750 * b
    z = (0.0193339 * r + 0.1191920 * g + 0.9503041 * b) / 1.08883

    def f(t: float) -> float:
        return t ** (1 / 3) if t > (6 / 29) ** 3 else t / (3 * (6 / 29) ** 2) + 4 / 29

    return 116 * f(y) - 16, 500 * (f(x) - f(y)), 200 * (f(y) - f(z))


def _seen(colour: str, vision) -> tuple[float, float, float]:
    rgb = _linear(colour)
    if vision is not None:
        rgb = tuple(sum(row[i] * rgb[i] for i in range(3)) for row in vision)
    return _lab(rgb)


def difference(first: str, second: str, vision=None) -> float:
    """CIE76 colour difference, as seen with normal vision or through a simulation matrix."""
    return math.dist(_seen(first, vision), _seen(second, vision))


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_chart_colour_has_3_to_1_contrast_against_the_chart_background(scheme):
    background, palette = series_colours(scheme)
    low = {c: round(contrast(c, background), 2) for c in palette if contrast(c, background) < MIN_CONTRAST}
    assert low == {}, f"{scheme}: below {MIN_CONTRAST}:1 against {background}: {low}"


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize(
    "vision", [None, PROTANOPIA, DEUTERANOPIA], ids=["normal vision", "protanopia", "deuteranopia"]
)
def test_chart_colours_stay_distinguishable_from_each_other(scheme, vision):
    _, palette = series_colours(scheme)
    close = {
        (a, b): round(difference(a, b, vision), 1)
        for a, b in itertools.combinations(palette, 2)
        if difference(a, b, vision) < MIN_DIFFERENCE
    }
    assert close == {}, f"{scheme}: series closer than ΔE {MIN_DIFFERENCE}: {close}"


def test_the_colour_measures_agree_with_known_values():
    """The measures themselves: WCAG's black on white is 21:1, grey #767676 on white about 4.54:1; white and
    black are 100 apart in L*; pure red and green, far apart for most people, come close with deuteranopia."""
    assert contrast("#000000", "#ffffff") == pytest.approx(21.0)
    assert contrast("#767676", "#ffffff") == pytest.approx(4.54, abs=0.01)
    assert difference("#000000", "#ffffff") == pytest.approx(100.0, abs=0.01)
    assert difference("#ff0000", "#00ff00") > 150 > 3 * difference("#ff0000", "#00ff00", DEUTERANOPIA)
