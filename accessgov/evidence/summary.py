"""The pack's readable summary for the audit file: ``summary/summary.html`` (one self-contained page,
inline SVG charts from accessgov.charts) and ``summary/summary.pdf`` (ReportLab: pure Python with
small C accelerators, no system libraries or browser; charts drawn with its own graphics module).

Both are rendered from one dict (``summary_data``), built from the control map and the counts the
builder collected, so the two documents say the same thing.
"""

import io
from datetime import date
from xml.sax.saxutils import escape

from django.template.loader import render_to_string

from accessgov import charts


def _chart_html(data: dict) -> list[str]:
    weeks = data["charts"]["grants_per_week"]
    lag = data["charts"]["lag_buckets"]
    total = sum(n for _, n in weeks)
    return [
        charts.column_chart(
            chart_id="chart-grants",
            title="Grants started per week",
            summary=f"{charts.plural(total, 'grant')} started in the period.",
            category_label="Week of",
            categories=[label for label, _ in weeks],
            series=[charts.Series("Grants", [n for _, n in weeks])],
        ),
        charts.column_chart(
            chart_id="chart-lag",
            title="Revocation lag: end of access to confirmed removal",
            summary=f"{sum(n for _, n in lag)} confirmed removals in the period, by lag.",
            category_label="Lag",
            categories=[label for label, _ in lag],
            series=[charts.Series("Removals", [n for _, n in lag])],
        ),
    ]


def render_html(data: dict) -> bytes:
    return render_to_string("accessgov/evidence/summary.html", {"s": data, "charts": _chart_html(data)}).encode()


def week_label(week: date) -> str:
    return charts.week_label(week)


# --- PDF ----------------------------------------------------------------------------------------------


def _text(value) -> str:
    """Plain text for a ReportLab paragraph (its mini-markup must not see user text as tags)."""
    return escape(str(value if value is not None else ""))


def _bar_chart(title: str, rows: list[tuple[str, int]]):
    from reportlab.graphics.charts.barcharts import VerticalBarChart
    from reportlab.graphics.shapes import Drawing, String
    from reportlab.lib import colors

    drawing = Drawing(480, 190)
    drawing.add(String(0, 176, title, fontName="Helvetica-Bold", fontSize=10))
    chart = VerticalBarChart()
    chart.x, chart.y, chart.width, chart.height = 40, 30, 430, 130
    values = [n for _, n in rows] or [0]
    chart.data = [values]
    chart.bars[0].fillColor = colors.HexColor("#0072b2")
    chart.valueAxis.valueMin = 0
    top = max(max(values), 1)
    chart.valueAxis.valueStep = max(1, -(-top // 4))
    chart.valueAxis.valueMax = chart.valueAxis.valueStep * (-(-top // chart.valueAxis.valueStep))
    labels = [label for label, _ in rows] or [""]
    every = max(1, len(labels) // 10)
    chart.categoryAxis.categoryNames = [label if i % every == 0 else "" for i, label in enumerate(labels)]
    chart.categoryAxis.labels.fontSize = 7
    chart.valueAxis.labels.fontSize = 7
    drawing.add(chart)
    return drawing


def render_pdf(data: dict) -> bytes:
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    styles = getSampleStyleSheet()
    small = styles["BodyText"].clone("small", fontSize=8, leading=10)
    out = io.BytesIO()
    doc = SimpleDocTemplate(
        out,
        pagesize=A4,
        leftMargin=15 * mm,
        rightMargin=15 * mm,
        topMargin=15 * mm,
        bottomMargin=15 * mm,
        title=f"AccessGov evidence pack #{data['pack_id']}",
        author="AccessGov",
        invariant=1,
    )
    story: list = [
        Paragraph(
            _text(f"Evidence pack #{data['pack_id']}: {data['since']} to {data['until']} (UTC)"), styles["Title"]
        ),
        Paragraph(
            _text(f"Scope: {data['scope_label']}. Built {data['built_at']} by {data['built_by']}."), styles["BodyText"]
        ),
        Paragraph(
            _text(
                f"Ledger: events #{data['ledger']['first_sequence']} to #{data['ledger']['last_sequence']} "
                f"({data['ledger']['events']:,}), {data['ledger_status']}. Head at build: "
                f"#{data['ledger']['head_sequence']} {data['ledger']['head_hash'][:16]}..."
            ),
            styles["BodyText"],
        ),
        Paragraph(
            _text(f"Sample seed: {data['sample_seed']} ({data['sample_size']} items per population)."),
            styles["BodyText"],
        ),
        Spacer(1, 4 * mm),
        Paragraph("Control map", styles["Heading2"]),
    ]
    rows = [["Control", "Test", "Result", "Status"]]
    for control in data["controls"]:
        for index, test in enumerate(control["tests"]):
            rows.append(
                [
                    Paragraph(_text(f"{control['framework']} {control['id']}") if index == 0 else "", small),
                    Paragraph(_text(test["description"]), small),
                    Paragraph(_text(test["result"]), small),
                    Paragraph(_text(test["status"].replace("_", " ")), small),
                ]
            )
    table = Table(rows, colWidths=[28 * mm, 92 * mm, 40 * mm, 20 * mm], repeatRows=1)
    table.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", 8),
                ("LINEBELOW", (0, 0), (-1, 0), 0.5, colors.grey),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ]
        )
    )
    story += [table, Spacer(1, 4 * mm), Paragraph("Populations", styles["Heading2"])]
    population_rows = [["File", "Rows", "Exceptions"]] + [
        [p["file"], f"{p['rows']:,}", f"{p['exceptions']:,}"] for p in data["populations"]
    ]
    story += [Table(population_rows, colWidths=[90 * mm, 30 * mm, 30 * mm]), Spacer(1, 4 * mm)]
    story.append(_bar_chart("Grants started per week", data["charts"]["grants_per_week"]))
    story.append(_bar_chart("Revocation lag: end of access to confirmed removal", data["charts"]["lag_buckets"]))
    story += [Paragraph("Auditor sample", styles["Heading2"])]
    for name, entry in data["sample"].items():
        story.append(
            Paragraph(_text(f"{name} ({entry['population_size']:,}): {', '.join(entry['ids']) or 'no items'}"), small)
        )
    story += [
        Spacer(1, 4 * mm),
        Paragraph(
            _text(
                "Verify this pack offline: python3 verify_evidence_pack.py PACK.zip --public-key KEY.pem "
                f"(key fingerprint {data['key_fingerprint']}). See README.txt in the pack."
            ),
            small,
        ),
    ]
    doc.build(story)
    return out.getvalue()
