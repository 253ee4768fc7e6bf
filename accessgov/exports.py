"""Streaming CSV exports: RFC 4180 quoting, UTF-8, UTC ISO-8601 times, formula-safe cells.

A cell a spreadsheet would evaluate (starting with = + - @, a tab or a carriage return) is prefixed
with a single quote, so it is shown as text. Every export is itself an access event (who, what,
which filters, how many rows), written before the first byte is sent.
"""

import csv
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from django.db import transaction
from django.http import HttpRequest, StreamingHttpResponse

from accessgov.models import AccessEvent
from accessgov.services.events import event_record

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> str:
    """One value as CSV text: datetimes in UTC ISO-8601, None as empty, formulas neutralised."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    text = str(value)
    if text.startswith(FORMULA_PREFIXES):
        return "'" + text
    return text


class _Echo:
    def write(self, value: str) -> str:
        return value


def csv_rows(header: list[str], rows: Iterable[Iterable[Any]]) -> Iterator[str]:
    writer = csv.writer(_Echo(), lineterminator="\r\n")
    yield "\ufeff" + writer.writerow(header)  # BOM: spreadsheets then read the file as UTF-8
    for row in rows:
        yield writer.writerow([safe_cell(v) for v in row])


def stream_csv(
    request: HttpRequest,
    *,
    filename: str,
    header: list[str],
    rows: Iterable[Iterable[Any]],
    report: str,
    filters: dict[str, Any],
    row_count: int | Callable[[], int],
) -> StreamingHttpResponse:
    """Record the export (an access event), then stream the rows."""
    count = row_count() if callable(row_count) else row_count
    with transaction.atomic():
        event_record(
            AccessEvent.Type.EXPORT_CREATED,
            actor=request.user,
            client_address=getattr(request, "client_address", None),
            reason=f"CSV export of {report}",
            data={
                "report": report,
                "filters": {k: v for k, v in filters.items() if v not in ("", None)},
                "rows": count,
            },
        )
    response = StreamingHttpResponse(csv_rows(header, rows), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["X-Row-Count"] = str(count)
    return response
