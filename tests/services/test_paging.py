"""Issue 16: one keyset paging (``accessgov/paging.py``) for reports, the grant list and the audit pages.
Walking every page gives every row once, in order, for unique, non-unique and nullable keys; an
unreadable cursor starts over instead of failing."""

from datetime import UTC, datetime, timedelta

import pytest

from accessgov import paging
from accessgov.models import User

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def people(make_user):
    """Seven accounts: last_login ties (two at T0), NULLs (two never signed in), and distinct times."""
    logins = [T0, T0, None, T0 + timedelta(hours=1), None, T0 - timedelta(days=1), T0 + timedelta(minutes=5)]
    users = []
    for n, login in enumerate(logins):
        user = make_user(f"pager{n}", device=False)
        User.objects.filter(pk=user.pk).update(last_login=login)
        users.append(user)
    return User.objects.filter(username__startswith="pager")


def walk(rows, keyset: paging.Keyset, size: int, *, ids_first: bool = False) -> tuple[list[int], list[bool]]:
    rows = rows.order_by(*keyset.order_by())
    seen, firsts, cursor = [], [], None
    while True:
        page = paging.keyset_page(rows, keyset, cursor=cursor, size=size, ids_first=ids_first)
        seen += [row.pk for row in page.rows]
        firsts.append(page.is_first)
        if page.next_cursor is None:
            return seen, firsts
        cursor = str(page.next_cursor)


# Every key shape (unique integer, text, nullable datetime), in both directions, fetched both ways.
EVERY_KEYSET = [
    pytest.param(
        paging.Keyset(field, kind, descending=descending, nullable=nullable, unique=unique),
        ids_first,
        id=f"{name}-{'desc' if descending else 'asc'}-{'ids-first' if ids_first else 'one-query'}",
    )
    for name, field, kind, nullable, unique in (
        ("unique-int", "pk", "int", False, True),
        ("text", "username", "text", False, False),
        ("nullable-datetime", "last_login", "datetime", True, False),
    )
    for descending in (True, False)
    for ids_first in (False, True)
]


@pytest.mark.parametrize(("keyset", "ids_first"), EVERY_KEYSET)
def test_walking_every_page_gives_every_row_once_in_the_keys_order(people, keyset, ids_first):
    expected = [row.pk for row in people.order_by(*keyset.order_by())]
    for size in (1, 2, 3, 7, 50):
        seen, firsts = walk(people, keyset, size, ids_first=ids_first)
        assert seen == expected
        assert firsts[0] is True and not any(firsts[1:])


@pytest.mark.parametrize(("keyset", "ids_first"), EVERY_KEYSET)
def test_going_back_from_any_page_shows_the_page_that_ends_just_before_it(people, keyset, ids_first):
    rows = people.order_by(*keyset.order_by())
    expected = [row.pk for row in rows]
    for size in (1, 2, 3):
        forward, cursor = [], None
        while True:  # every page going forward, with its rows and its "back" cursor
            page = paging.keyset_page(rows, keyset, cursor=cursor, size=size, ids_first=ids_first)
            assert (page.prev_cursor is None) == page.is_first
            forward.append(page)
            if page.next_cursor is None:
                break
            cursor = str(page.next_cursor)
        for number, page in enumerate(forward[1:], start=1):
            back = paging.keyset_page(
                rows, keyset, cursor=None, size=size, ids_first=ids_first, back=str(page.prev_cursor)
            )
            start = size * number  # the page's first row: every page before it is full
            assert [r.pk for r in back.rows] == expected[start - size : start], (size, number)
            assert back.is_first == (number == 1)
            assert back.next_cursor is not None
            # "Next" from the page gone back to is the page we came from.
            again = paging.keyset_page(rows, keyset, cursor=str(back.next_cursor), size=size, ids_first=ids_first)
            assert [r.pk for r in again.rows] == [r.pk for r in page.rows]


def test_going_back_with_fewer_than_a_page_before_gives_the_full_first_page(people):
    keyset = paging.Keyset("pk", unique=True)
    rows = people.order_by(*keyset.order_by())
    second = rows[1]  # one row before it: the first page (3 rows) rather than a page of one
    page = paging.keyset_page(rows, keyset, cursor=None, size=3, back=str(second.pk))
    assert page.is_first and page.prev_cursor is None
    assert [r.pk for r in page.rows] == [r.pk for r in rows[:3]]


@pytest.mark.parametrize("back", ["garbage", "W10", "-3", "99999999999999999999", "\x00"])
def test_an_unreadable_back_cursor_gives_the_first_page(people, back):
    for keyset in (paging.Keyset("pk", unique=True), paging.Keyset("last_login", "datetime", nullable=True)):
        rows = people.order_by(*keyset.order_by())
        page = paging.keyset_page(rows, keyset, cursor=None, size=3, back=back)
        assert page.is_first and [r.pk for r in page.rows] == [r.pk for r in rows[:3]]


def test_a_unique_integer_key_travels_as_the_plain_number(people):
    keyset = paging.Keyset("pk", unique=True)
    page = paging.keyset_page(people.order_by(*keyset.order_by()), keyset, cursor=None, size=2)
    assert page.next_cursor == page.rows[-1].pk


@pytest.mark.parametrize("cursor", ["", "garbage", "W10", "WzEsIDJd!", "0", "-3", "99999999999999999999"])
def test_an_unreadable_cursor_gives_the_first_page(people, cursor):
    for keyset in (paging.Keyset("pk", unique=True), paging.Keyset("last_login", "datetime", nullable=True)):
        rows = people.order_by(*keyset.order_by())
        page = paging.keyset_page(rows, keyset, cursor=cursor, size=3)
        assert page.is_first and [r.pk for r in page.rows] == [r.pk for r in rows[:3]]


@pytest.mark.parametrize(
    "text", ["\x00", "a\x00b", "\ud800", "x\udfff"], ids=["nul", "inner-nul", "surrogate", "low-surrogate"]
)
def test_a_text_cursor_the_database_cannot_compare_starts_over(people, text):
    """A hand-made cursor with a NUL or a lone surrogate (PostgreSQL refuses the one, UTF-8 has no form for the
    other) is unreadable: the first page, not a database error."""
    keyset = paging.Keyset("username", "text")
    rows = people.order_by(*keyset.order_by())
    page = paging.keyset_page(rows, keyset, cursor=paging.encode_cursor(text, 1, "text"), size=2)
    assert page.is_first and [r.pk for r in page.rows] == [r.pk for r in rows[:2]]
    # An ordinary (even empty) text key still pages on.
    assert paging.decode_cursor(paging.encode_cursor("", 5, "text"), "text") == ("", 5)
    assert paging.decode_cursor(paging.encode_cursor("zoë", 5, "text"), "text") == ("zoë", 5)


def test_a_null_cursor_on_a_key_without_nulls_starts_over(people):
    keyset = paging.Keyset("username", "text")
    rows = people.order_by(*keyset.order_by())
    page = paging.keyset_page(rows, keyset, cursor=paging.encode_cursor(None, 1, "text"), size=2)
    assert page.is_first and [r.pk for r in page.rows] == [r.pk for r in rows[:2]]
