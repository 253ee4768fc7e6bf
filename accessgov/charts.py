"""Server-rendered charts: inline SVG computed from numbers, with no JavaScript and no external assets.

One primitive, ``column_chart``: columns per category (weeks, buckets), one series or several
stacked. Every chart carries a ``<title>`` and a ``<desc>`` (its accessible name, through
``aria-labelledby``, and its description, through ``aria-describedby``), a visible one-line summary,
and the same numbers as a table in a ``<details>`` element, so nothing is only in the picture.
The image holds two drawings of the numbers (``LAYOUTS``): a wide one, shown by default, and a narrow
one that a phone shows instead (accessgov.css), so its axis text is not scaled down to a few pixels.
Colours come from the ``series-N`` classes in accessgov.css (its ``--series-N`` properties, one per
series up to ``MAX_SERIES``, each 3:1 against the card in both colour schemes, checked by
tests/test_chart_contrast.py): the CSP forbids inline styles, and presentation attributes stay to
geometry (and the narrow drawing's ``display="none"``, for pages without the portal's stylesheet).
Text (system names, labels) goes through the template engine, so it is escaped like any page text.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from django.template.loader import render_to_string
from django.utils.safestring import SafeString

MAX_SERIES = 6  # more series than this and the smallest ones are summed as "Other"


@dataclass(frozen=True)
class Layout:
    """One drawing of a chart: its viewBox, the margins around the plot (room for the axis text) and how many
    x labels it shows at most (the rest are in the table and the bar tooltips). ``name`` is its CSS class."""

    name: str
    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int
    max_labels: int


# The wide drawing is the one pages show by default (and the evidence pack's self-contained summary). A phone shows
# the narrow one instead (accessgov.css): drawn about as wide as the phone's column, so its 14 px text stays 11 to
# 17 px (320 to 640 px screens), where the wide one was shrunk to 7 px. Its margins hold that text: the longest
# tick ("1 h 30 min", about 76 units) on the left, half of a centred week label ("30 Mar") past the last column;
# four x labels at most keep 56 units between them.
WIDE = Layout("wide", 600, 220, left=68, right=10, top=12, bottom=32, max_labels=10)
NARROW = Layout("narrow", 330, 240, left=84, right=22, top=12, bottom=34, max_labels=4)
LAYOUTS = (WIDE, NARROW)
COUNT_STEPS = (1, 2, 5)
DURATION_STEPS = (
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 4 * 3600, 6 * 3600, 12 * 3600, 86400,
)  # fmt: skip


@dataclass(frozen=True)
class Series:
    """One named row of values, aligned with the chart's categories (None: no value)."""

    name: str
    values: Sequence[float | None]


def format_count(value: float) -> str:
    return f"{value:,.0f}"


def format_seconds(value: float | None) -> str:
    """A duration in seconds as people read it: "0.4 s", "12 s", "3 min 5 s", "2 h 10 min", "1 d 3 h"."""
    if value is None:
        return "—"
    if value < 10:
        return f"{value:.1f} s"
    seconds = round(value)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        minutes, rest = divmod(seconds, 60)
        return f"{minutes} min {rest} s" if rest and minutes < 10 else f"{minutes} min"
    if seconds < 86400:
        hours, rest = divmod(seconds // 60, 60)
        return f"{hours} h {rest} min" if rest else f"{hours} h"
    days, rest = divmod(seconds // 3600, 24)
    return f"{days} d {rest} h" if rest else f"{days} d"


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def week_label(week: date) -> str:
    return f"{week:%d %b}"


def weeks_between(first: date, last: date, *, limit: int = 52) -> list[date]:
    """Mondays from ``first``'s week to ``last``'s week (both included), at most the last ``limit``."""
    start = first - timedelta(days=first.weekday())
    end = last - timedelta(days=last.weekday())
    count = (end - start).days // 7 + 1
    weeks = [start + timedelta(weeks=i) for i in range(max(count, 0))]
    return weeks[-limit:]


def _scale(top_value: float, steps: Sequence[float]) -> tuple[float, float]:
    """(axis maximum, tick step): about four ticks, on a step a person would choose."""
    if top_value <= 0:
        return float(steps[0]), float(steps[0])
    raw = top_value / 4
    if steps is DURATION_STEPS:
        step = next((s for s in steps if s >= raw), 86400 * math.ceil(raw / 86400))
    else:
        magnitude = 10 ** math.floor(math.log10(raw)) if raw >= 1 else 1
        step = next((m * magnitude for m in (*steps, 10) if m * magnitude >= raw), raw)
    return step * math.ceil(top_value / step), float(step)


def _fold_series(series: list[Series]) -> list[Series]:
    if len(series) <= MAX_SERIES:
        return series
    ranked = sorted(series, key=lambda s: -sum(v or 0 for v in s.values))
    kept, rest = ranked[: MAX_SERIES - 1], ranked[MAX_SERIES - 1 :]
    other = [sum(s.values[i] or 0 for s in rest) for i in range(len(series[0].values))]
    return [*kept, Series(f"Other ({len(rest)} more)", other)]


def column_chart(
    *,
    chart_id: str,
    title: str,
    summary: str,
    category_label: str,
    categories: Sequence[str],
    series: Sequence[Series],
    format_value: Callable[[float], str] = format_count,
    durations: bool = False,
    empty_text: str = "Nothing to chart for these filters.",
) -> SafeString:
    """Render columns (stacked when there are several series) as an accessible inline SVG figure.

    ``summary`` is the sentence a reader should take away; it is shown under the chart and is the
    SVG's description. ``durations`` picks axis steps in seconds, minutes and hours.
    """
    folded = _fold_series(list(series))
    totals = [sum(s.values[i] or 0 for s in folded) for i in range(len(categories))]
    context: dict = {
        "id": chart_id,
        "title": title,
        "summary": summary,
        "empty": not categories or not any(v is not None and v > 0 for s in folded for v in s.values),
        "empty_text": empty_text,
        "width": WIDE.width,
        "height": WIDE.height,
        "category_label": category_label,
        "legend": [s.name for s in folded] if len(folded) > 1 else [],
        "series_names": [s.name for s in folded],
        "show_total": len(folded) > 1,
        "table": [
            {
                "category": category,
                "cells": [format_value(v) if (v := s.values[i]) is not None else "—" for s in folded],
                "total": format_value(totals[i]),
            }
            for i, category in enumerate(categories)
        ],
    }
    if context["empty"]:
        return render_to_string("accessgov/reports/_chart.html", {"chart": context})
    top, step = _scale(max(totals), DURATION_STEPS if durations else COUNT_STEPS)
    context["layouts"] = [_draw(layout, categories, folded, top, step, format_value) for layout in LAYOUTS]
    return render_to_string("accessgov/reports/_chart.html", {"chart": context})


def _draw(
    layout: Layout,
    categories: Sequence[str],
    folded: list[Series],
    top: float,
    step: float,
    format_value: Callable[[float], str],
) -> dict:
    """The geometry of one drawing: columns, y ticks and x labels in ``layout``'s coordinates."""
    plot_w = layout.width - layout.left - layout.right
    plot_h = layout.height - layout.top - layout.bottom
    band = plot_w / len(categories)
    bar_w = min(band * 0.72, 56)

    def y_of(value: float) -> float:
        return layout.top + plot_h - plot_h * value / top

    bars = []
    for i, category in enumerate(categories):
        x = layout.left + band * i + (band - bar_w) / 2
        stacked = 0.0
        for index, s in enumerate(folded):
            value = s.values[i]
            if not value or value <= 0:
                continue
            y_top, y_bottom = y_of(stacked + value), y_of(stacked)
            stacked += value
            name = f" · {s.name}" if len(folded) > 1 else ""
            bars.append(
                {
                    "series": index,
                    "x": f"{x:.1f}",
                    "y": f"{y_top:.1f}",
                    "width": f"{bar_w:.1f}",
                    "height": f"{max(y_bottom - y_top, 0.5):.1f}",
                    "label": f"{category}{name}: {format_value(value)}",
                }
            )
    every = math.ceil(len(categories) / layout.max_labels)
    ticks = []
    tick = 0.0
    while tick <= top + 1e-9:
        ticks.append({"y": f"{y_of(tick):.1f}", "label": format_value(tick) if tick else "0"})
        tick += step
    return {
        "name": layout.name,
        "width": layout.width,
        "height": layout.height,
        "bars": bars,
        "ticks": ticks,
        "x_labels": [
            {"x": f"{layout.left + band * i + band / 2:.1f}", "text": category}
            for i, category in enumerate(categories)
            if i % every == 0
        ],
        "left": layout.left,
        "right": layout.width - layout.right,
        "baseline": f"{layout.top + plot_h:.1f}",
        "tick_x": layout.left - 6,
        "label_y": layout.height - 12,
    }
