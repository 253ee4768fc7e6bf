"""The API's JSON parser: DRF's, refusing nesting it cannot or need not follow. A body nested deeper
than the decoder's recursion limit (``[`` repeated 100,000 times) raised RecursionError, a 500; no API body nests
more than a few levels, so anything deeper than MAX_DEPTH is a 400 parse error. (A body over
``DATA_UPLOAD_MAX_MEMORY_SIZE`` is refused before parsing: a 413, see ``api.errors``.) An object with a key twice
(``{"role": "a", "role": "b"}``) is a 400 too: which one counts depends on the parser reading it."""

import codecs

from rest_framework import exceptions, parsers
from rest_framework.utils import json

from accessgov import inputs

MAX_DEPTH = 32
TOO_DEEP = f"JSON parse error - nested deeper than {MAX_DEPTH} levels"


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        """DRF's parse (strict: no NaN or Infinity), with each object's keys checked once."""
        encoding = parsers.get_encoding(parser_context or {})
        try:
            data = json.load(codecs.getreader(encoding)(stream), object_pairs_hook=inputs.json_object_once_per_key)
        except RecursionError as exc:
            raise exceptions.ParseError(TOO_DEEP) from exc
        except ValueError as exc:
            raise exceptions.ParseError(f"JSON parse error - {exc}") from exc
        if _too_deep(data):
            raise exceptions.ParseError(TOO_DEEP)
        return data


def _too_deep(value, enclosing: int = 0) -> bool:
    """Whether ``value`` nests deeper than MAX_DEPTH (never recursing further than that)."""
    if not isinstance(value, dict | list):
        return False
    if enclosing >= MAX_DEPTH:
        return True
    children = value.values() if isinstance(value, dict) else value
    return any(_too_deep(child, enclosing + 1) for child in children)
