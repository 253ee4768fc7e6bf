"""Streaming CSV exports: RFC 4180 quoting, UTF-8 with BOM, LF line ends, UTC ISO-8601 times,
formula-safe cells - the same cells whether rows come from the ORM (any database) or from PostgreSQL's
``COPY ... TO STDOUT`` (million-row exports), which does the same formatting and escaping in SQL.

An export takes the query parameters its filters read and no other: ``?grante=bob`` (a typo) is a 400
naming it, not every row in a file its reader believes filtered (``unknown_parameters``).

A cell a spreadsheet would evaluate (starting with = + - @, their full-width forms U+FF1D U+FF0B U+FF0D
U+FF20, a tab or a carriage return) is prefixed with a single quote, so it is shown as text. Every export is
itself an access event (who, what, which filters, how many rows), written before the first byte is sent.
"""

import csv
import json
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, date, datetime
from typing import Any

from django.db import connection, transaction
from django.http import HttpRequest, HttpResponse, QueryDict, StreamingHttpResponse
from django.http.response import HttpResponseBase

from accessgov import clock
from accessgov.models import AccessEvent
from accessgov.services.events import event_record

# OWASP's CSV-injection list, plus the full-width = + - @ (U+FF1D, U+FF0B, U+FF0D, U+FF20): Excel and
# LibreOffice start a formula at those too.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def safe_cell(value: Any) -> str:
    """One value as CSV text: datetimes in UTC ISO-8601, JSON for structures, None as empty,
    formulas neutralised."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    if isinstance(value, dict | list):
        value = json.dumps(value, ensure_ascii=False, sort_keys=True)
    text = str(value)
    if text.startswith(FORMULA_PREFIXES):
        return "'" + text
    return text


# The prefixes' character codes, for ``sql_safe``.
_FORMULA_CODES = ", ".join(str(ord(prefix)) for prefix in FORMULA_PREFIXES)


def sql_safe(expression: str) -> str:
    """The SQL twin of safe_cell for a text column (used inside COPY). The first character is tested by its
    code (``ascii``: the code point in a UTF-8 database, so the full-width prefixes too; 0 for an empty string,
    NULL for NULL), not by ``left(x, 1) IN (…)``, which builds a one-character string per cell: a million-row
    export spent ≈ 0.2 s on each such column."""
    return f"CASE WHEN ascii({expression}) IN ({_FORMULA_CODES}) THEN '''' || {expression} ELSE {expression} END"


def sql_safe_json(expression: str) -> str:
    """``sql_safe`` of a jsonb column's text. A JSON text can start with a formula prefix only when it is a
    negative number; anything else (an object, the usual case) is converted to text once, not twice."""
    return (
        f"CASE WHEN jsonb_typeof({expression}) = 'number' THEN {sql_safe(f'{expression}::text')} "
        f"ELSE {expression}::text END"
    )


def sql_utc_seconds(expression: str) -> str:
    """The SQL twin of safe_cell for a timestamp: UTC ISO-8601 to the second, with Z."""
    return f"""to_char({expression} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')"""


class _Echo:
    def write(self, value: str) -> str:
        return value


def csv_rows(header: list[str], rows: Iterable[Iterable[Any]]) -> Iterator[str]:
    writer = csv.writer(_Echo(), lineterminator="\n")
    yield "\ufeff" + writer.writerow(header)  # BOM: spreadsheets then read the file as UTF-8
    for row in rows:
        yield writer.writerow([safe_cell(v) for v in row])


def copy_rows(select_sql: str, params) -> Iterator[memoryview]:
    """Stream ``COPY (select_sql) TO STDOUT`` as CSV chunks from PostgreSQL (no rows in Python), in a
    read-only transaction of its own whose planner does not memoize lookups: an export reads most of the
    tables it joins, and a memoized lookup per row (the plan PostgreSQL 15 picks for the audit export's
    names) took 4.6 to 5.3 s where hash joins take 3.4 to 3.9 s for a million events."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET TRANSACTION READ ONLY")
        cursor.execute("SET LOCAL enable_memoize = off")
        with cursor.cursor.copy(f"COPY ({select_sql}) TO STDOUT WITH (FORMAT csv)", params) as copy:
            yield from copy


def _record_export(
    request: HttpRequest, report: str, filters: dict[str, Any], row_count: int | Callable[[], int]
) -> int:
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
    return count


# What one write to the client carries: PostgreSQL's COPY and the csv writer give one row at a time, and each
# piece passes Django's response iterator and the server's socket write on its own (a million-row export was
# a million writes).
BLOCK_BYTES = 64 * 1024


def in_blocks(pieces: Iterable[bytes | str]) -> Iterator[bytes]:
    """``pieces`` (text is UTF-8 encoded) joined into blocks of at least BLOCK_BYTES, the last one shorter;
    the same bytes, in order. The first piece (the header) goes out alone, at once: the download starts
    before the database has produced its first rows."""
    pieces = iter(pieces)
    for piece in pieces:
        first = piece.encode() if isinstance(piece, str) else bytes(piece)
        if first:
            yield first
            break
    block = bytearray()
    for piece in pieces:
        block += piece.encode() if isinstance(piece, str) else piece
        if len(block) >= BLOCK_BYTES:
            yield bytes(block)
            block.clear()
    if block:
        yield bytes(block)


def file_name(what: str, *, since: date | None = None, until: date | None = None) -> str:
    """Every export's file name: ``accessgov-<what>-<period>.csv``. With an Until filter the period is its UTC
    days (``2026-01-01_to_2026-03-31``, ``to_2026-03-31``). Without one the rows run up to the moment of the
    export, and the name says that moment, to the second and apart from any filter day: ``as_of_2026-03-05T141200Z``
    (``from_2026-01-01-as_of_…`` with a From filter), never a day ("to_<today>") that rows made later that day
    would not be in. Two files of the same list sort by their period or their moment."""
    if until:
        period = f"{since:%Y-%m-%d}_to_{until:%Y-%m-%d}" if since else f"to_{until:%Y-%m-%d}"
    else:
        as_of = f"as_of_{clock.now().astimezone(UTC):%Y-%m-%dT%H%M%SZ}"
        period = f"from_{since:%Y-%m-%d}-{as_of}" if since else as_of
    return f"accessgov-{what}-{period}.csv"


# Names echoed back at most (a query string may hold up to DATA_UPLOAD_MAX_NUMBER_FIELDS of them).
SHOWN_NAMES = 10
SHOWN_NAME_LENGTH = 50


def export_query(query: QueryDict, accepted: Iterable[str]) -> str:
    """A list page's query as its Export link's (``?…``, or "" when nothing is left): only the names the export
    takes. The page itself ignores a stray parameter (a bookmark's, a tracker's ``utm_source``, its paging
    cursor); the export would refuse it (``unknown_parameters``)."""
    kept = QueryDict(mutable=True)
    for name in set(accepted) & set(query):
        kept.setlist(name, query.getlist(name))
    return f"?{kept.urlencode()}" if kept else ""


def unknown_parameters(request: HttpRequest, accepted: Iterable[str]) -> HttpResponse | None:
    """A plain-text 400 naming the query parameters of ``request`` that are not in ``accepted`` (the export's
    filters and sort) and listing the accepted ones; None when there are none. ``stream_csv`` and
    ``stream_copy_csv`` ask before recording anything. The portal's HTML list pages stay tolerant (bookmarks
    and htmx add parameters); their Export links pass on only what the export takes (``export_query``)."""
    accepted = sorted(set(accepted))
    unknown = sorted(set(request.GET) - set(accepted))
    if not unknown:
        return None
    names = ", ".join(repr(name[:SHOWN_NAME_LENGTH]) for name in unknown[:SHOWN_NAMES])
    if len(unknown) > SHOWN_NAMES:
        names += f" and {len(unknown) - SHOWN_NAMES} more"
    takes = f"it takes {', '.join(accepted)}" if accepted else "it takes none"
    return HttpResponse(
        f"Unknown query parameter{'s' if len(unknown) > 1 else ''} for this export: {names}; {takes}. "
        "Nothing was exported.",
        status=400,
        content_type="text/plain; charset=utf-8",
    )


def _response(body: Iterable[bytes | str], filename: str, count: int) -> StreamingHttpResponse:
    response = StreamingHttpResponse(in_blocks(body), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["X-Row-Count"] = str(count)
    return response


def stream_csv(
    request: HttpRequest,
    *,
    filename: str,
    header: list[str],
    rows: Iterable[Iterable[Any]],
    report: str,
    filters: dict[str, Any],
    row_count: int | Callable[[], int],
    parameters: Iterable[str],
) -> HttpResponseBase:
    """Refuse query parameters not in ``parameters`` (``unknown_parameters``); else record the export (an
    access event), then stream the rows."""
    if refusal := unknown_parameters(request, parameters):
        return refusal
    count = _record_export(request, report, filters, row_count)
    return _response(csv_rows(header, rows), filename, count)


def stream_copy_csv(
    request: HttpRequest,
    *,
    filename: str,
    header: list[str],
    select_sql: str,
    params,
    report: str,
    filters: dict[str, Any],
    row_count: int | Callable[[], int],
    parameters: Iterable[str],
) -> HttpResponseBase:
    """Like stream_csv, with PostgreSQL producing the rows (formatting and escaping done in SQL)."""
    if refusal := unknown_parameters(request, parameters):
        return refusal
    count = _record_export(request, report, filters, row_count)

    def body() -> Iterator[bytes | str]:
        yield next(csv_rows(header, []))
        yield from copy_rows(select_sql, params)

    return _response(body(), filename, count)
