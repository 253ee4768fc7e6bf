"""Spreadsheets (Excel, LibreOffice) also start a formula at the full-width = + - @ (U+FF1D, U+FF0B,
U+FF0D, U+FF20): a CSV cell starting with one is neutralised like one starting with = + - @, in the Python
path (``exports.safe_cell``) and in the PostgreSQL COPY path (``exports.sql_safe``) alike."""

import pytest
from django.db import connection

from accessgov import exports

FULL_WIDTH = ["\uff1d", "\uff0b", "\uff0d", "\uff20"]  # full-width = + - @
HOSTILE = [f'{prefix}HYPERLINK("http://evil.example","x")' for prefix in FULL_WIDTH] + ["\uff1dcmd|' /C calc'!A0"]
HARMLESS = ["x\uff1d1", " \uff1d1", "\uff10", "\uff21\uff1d", "'\uff1dx", "\uff5e"]  # not first, or not a prefix


@pytest.mark.parametrize("text", HOSTILE)
def test_a_cell_starting_with_a_full_width_formula_sign_is_shown_as_text(text):
    assert exports.safe_cell(text) == "'" + text


@pytest.mark.parametrize("text", HARMLESS)
def test_a_full_width_sign_elsewhere_or_another_full_width_character_is_left_alone(text):
    assert exports.safe_cell(text) == text


def test_every_full_width_sign_is_a_formula_prefix():
    assert set(FULL_WIDTH) <= set(exports.FORMULA_PREFIXES)


def test_the_csv_writer_neutralises_full_width_formulas_in_every_column():
    body = "".join(exports.csv_rows(["a", "b"], [["\uff1d1+1", "\uff20SUM(A1)"]]))
    assert body == "\ufeffa,b\n'\uff1d1+1,'\uff20SUM(A1)\n"


@pytest.mark.postgres
@pytest.mark.django_db
@pytest.mark.parametrize("text", [*HOSTILE, *HARMLESS])
def test_the_sql_path_neutralises_full_width_formulas_as_the_python_path_does(text):
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {exports.sql_safe('v')} FROM (SELECT %s::text AS v) AS t", [text])  # noqa: S608
        cell = cursor.fetchone()[0]
    assert cell == exports.safe_cell(text)
    assert cell == ("'" + text if text in HOSTILE else text)
