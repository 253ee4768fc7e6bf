"""Keyset (cursor) pagination: constant cost per page however deep, stable under inserts."""

from rest_framework import exceptions
from rest_framework.pagination import CursorPagination

from accessgov import inputs

INVALID = {"cursor": ["Invalid cursor: use the next/previous links as given."]}
PAGE_SIZE_INVALID = {"page_size": ["page_size is one whole number from 1 to 200."]}


class KeysetPagination(CursorPagination):
    ordering = "-pk"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200

    def get_page_size(self, request):
        """``?page_size=`` once, 1 to 200; anything else is a 400 (DRF quietly served the default page for
        ``abc``, ``0`` or ``-1`` and 200 rows for ``100000``)."""
        given = request.query_params.getlist(self.page_size_query_param)
        if not given:
            return self.page_size
        size = inputs.parse_id(given[0]) if len(given) == 1 else None
        if size is None or not 1 <= size <= self.max_page_size:
            raise exceptions.ValidationError(PAGE_SIZE_INVALID)
        return size

    def decode_cursor(self, request):
        """DRF's cursor, refused with a 400 unless its position is what ``encode_cursor`` writes for the
        ``-pk`` ordering: an id (ASCII digits within bigint) or none. DRF itself checks only the offset
        and direction, so a hand-made position (``p=x``, a date, a NUL) reached the database as an id."""
        try:
            cursor = super().decode_cursor(request)
        except exceptions.NotFound as exc:
            raise exceptions.ValidationError(INVALID) from exc
        if cursor is not None and cursor.position is not None and inputs.parse_id(cursor.position) is None:
            raise exceptions.ValidationError(INVALID)
        return cursor
