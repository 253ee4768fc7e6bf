"""The CSV exports' SQL cells (``exports.sql_safe``, ``sql_safe_json``: the million-row COPY path) neutralise
exactly what the Python path (``exports.safe_cell``) neutralises, for any text and any JSON value; the body
is sent in blocks (``exports.in_blocks``) holding the same bytes."""

import json
from datetime import UTC, date, datetime

import pytest
import time_machine
from django.db import connection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accessgov import exports

# PostgreSQL text holds no NUL character; everything else, astral planes and lone prefixes included.
TEXT = st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]), max_size=12)
EDGES = ["", "=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "'=x", " =x", "é=", "😀=x", "x=", "=", "\n=x"]


def sql_cell(expression: str, value, cast: str = "text"):
    """``expression`` over ``v`` (the value, bound once as ``cast``), as PostgreSQL computes it."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {expression} FROM (SELECT %s::{cast} AS v) AS t", [value])  # noqa: S608 - test SQL
        return cursor.fetchone()[0]


@pytest.mark.postgres
@pytest.mark.django_db
@pytest.mark.parametrize("text", [*EDGES, *(prefix + "cmd" for prefix in exports.FORMULA_PREFIXES)])
def test_sql_safe_matches_safe_cell_on_edges(text):
    assert sql_cell(exports.sql_safe("v"), text) == exports.safe_cell(text)


@pytest.mark.postgres
@pytest.mark.django_db
def test_sql_safe_keeps_null_as_null_and_neutralises_every_prefix():
    assert sql_cell(exports.sql_safe("v"), None) is None
    for prefix in exports.FORMULA_PREFIXES:
        assert sql_cell(exports.sql_safe("v"), prefix + "x") == "'" + prefix + "x"


@pytest.mark.postgres
@pytest.mark.django_db
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXT)
def test_sql_safe_matches_safe_cell(text):
    assert sql_cell(exports.sql_safe("v"), text) == exports.safe_cell(text)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.floats(allow_nan=False, allow_infinity=False) | TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(TEXT, children, max_size=3),
    max_leaves=6,
)


@pytest.mark.postgres
@pytest.mark.django_db
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=JSON)
def test_sql_safe_json_neutralises_as_sql_safe_of_the_text(value):
    """For any JSON value: the cell is the value's text, prefixed exactly when that text starts with a formula
    prefix (a negative number), as ``sql_safe`` of the text does."""
    document = json.dumps(value)
    cell = sql_cell(exports.sql_safe_json("v"), document, "jsonb")
    assert cell == sql_cell(exports.sql_safe("v::text"), document, "jsonb")
    text = sql_cell("v::text", document, "jsonb")
    assert cell == ("'" + text if text.startswith(exports.FORMULA_PREFIXES) else text)


@pytest.mark.postgres
@pytest.mark.django_db
@pytest.mark.parametrize("document", ["-1", "-0.5", "{}", '"=cmd"', "[-1]", "null", "true", '{"a": "=b"}'])
def test_sql_safe_json_edges(document):
    text = sql_cell("v::text", document, "jsonb")
    expected = "'" + text if text.startswith("-") else text
    assert sql_cell(exports.sql_safe_json("v"), document, "jsonb") == expected


PIECES = st.lists(st.one_of(st.binary(max_size=3000), TEXT), max_size=60)


@settings(max_examples=100, deadline=None)
@given(pieces=PIECES, block=st.sampled_from([1, 7, 1024, exports.BLOCK_BYTES]))
def test_in_blocks_sends_the_same_bytes_in_full_blocks(pieces, block):
    expected = b"".join(p.encode() if isinstance(p, str) else p for p in pieces)
    original = exports.BLOCK_BYTES
    exports.BLOCK_BYTES = block
    try:
        blocks = list(exports.in_blocks(iter(pieces)))
    finally:
        exports.BLOCK_BYTES = original
    assert b"".join(blocks) == expected
    assert all(blocks)  # none empty
    first = next((p.encode() if isinstance(p, str) else p for p in pieces if p), b"")
    if first:  # the first piece alone, at once; then full blocks, then the rest
        assert blocks[0] == first
        assert all(len(b) >= block for b in blocks[1:-1])


def test_in_blocks_joins_many_rows_into_few_writes():
    row = b"1,2026-01-01T00:00:00Z,request.submitted,user1\n"
    blocks = list(exports.in_blocks(memoryview(row) for _ in range(100_000)))  # COPY gives memoryviews
    assert sum(map(len, blocks)) == 100_000 * len(row)
    assert len(blocks) <= 100_000 * len(row) // exports.BLOCK_BYTES + 2  # 73 writes, not 100,000
    assert blocks[0] == row  # the first row went out at once


def test_every_export_file_is_named_by_what_it_holds_and_its_days():
    with time_machine.travel(datetime(2027, 3, 1, 12, 0, tzinfo=UTC), tick=False):
        assert exports.file_name("grants") == "accessgov-grants-as_of_2027-03-01T120000Z.csv"
        assert exports.file_name("audit-trail", since=date(2027, 1, 1), until=date(2027, 1, 31)) == (
            "accessgov-audit-trail-2027-01-01_to_2027-01-31.csv"
        )
        assert exports.file_name("access-history", since=date(2027, 2, 1)) == (
            "accessgov-access-history-from_2027-02-01-as_of_2027-03-01T120000Z.csv"
        )
        assert exports.file_name("activity", until=date(2027, 2, 14)) == "accessgov-activity-to_2027-02-14.csv"
