"""Keyset (cursor) pagination: constant cost per page however deep, stable under inserts."""

from drf_spectacular.utils import OpenApiParameter
from rest_framework import exceptions
from rest_framework.pagination import CursorPagination

from accessgov import inputs

INVALID = {"cursor": ["Invalid cursor: use the next/previous links as given."]}
PAGE_SIZE_INVALID = {"page_size": ["page_size is one whole number from 1 to 200."]}
MAX_PAGE_SIZE = 200
PAGE_SIZE_SCHEMA = {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE}
PAGE_SIZE_PARAMETER = OpenApiParameter(
    "page_size", PAGE_SIZE_SCHEMA, description="How many, from 1 to 200 (anything else is a 400)."
)


class KeysetPagination(CursorPagination):
    ordering = "-pk"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE

    def get_page_size(self, request, default: int | None = None):
        """``?page_size=`` once, 1 to 200; anything else is a 400 (DRF quietly served the default page for
        ``abc``, ``0`` or ``-1`` and 200 rows for ``100000``). Without it: ``default`` (else 50)."""
        given = request.query_params.getlist(self.page_size_query_param)
        if not given:
            return default or self.page_size
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

    def get_schema_operation_parameters(self, view):
        """DRF's cursor and page_size parameters, with page_size's bounds (the schema said any integer)."""
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"] = dict(PAGE_SIZE_SCHEMA)
                parameter["description"] = PAGE_SIZE_PARAMETER.description
        return parameters
