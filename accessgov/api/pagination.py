"""Keyset (cursor) pagination: constant cost per page however deep, stable under inserts."""

from rest_framework import exceptions
from rest_framework.pagination import CursorPagination


class KeysetPagination(CursorPagination):
    ordering = "-pk"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200

    def decode_cursor(self, request):
        try:
            return super().decode_cursor(request)
        except exceptions.NotFound as exc:
            raise exceptions.ValidationError(
                {"cursor": ["Invalid cursor: use the next/previous links as given."]}
            ) from exc
