"""What an access event's hash covers and how it is computed: the ledger's one hashing function.

``hash = sha256(prev_hash + "|" + canonical JSON of the event's HASHED_FIELDS)``. The canonical JSON is
the text of ``json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
default=str)``, times as UTC ISO-8601 with microseconds. Every existing ledger was hashed over exactly
that text, so it never changes; it is produced here through the public ``json.JSONEncoder`` API (one
encoder built once, reused), not through the json module's private C hooks.
"""

import hashlib
import json
from datetime import UTC, datetime
from functools import lru_cache
from operator import itemgetter
from typing import Any

# The hash an empty chain starts from.
GENESIS = "0" * 64

HASHED_FIELDS = (
    "sequence",
    "occurred_at",
    "event_type",
    "actor_id",
    "actor_label",
    "client_address",
    "reason",
    "access_request_id",
    "grant_id",
    "role_id",
    "data",
)
_hashed_values = itemgetter(*HASHED_FIELDS)
# ``sequence`` sorts last among the hashed fields, so an event's canonical JSON is the JSON of the rest, then
# its sequence (``canonical_head`` / ``canonical_with_sequence``): everything but the place in the chain can
# be written before the ledger lock is taken.
if max(HASHED_FIELDS) != "sequence":  # pragma: no cover - a guard for whoever adds a hashed field
    raise ImportError("canonical_head needs 'sequence' to sort last among HASHED_FIELDS")
_unsequenced_fields = tuple(name for name in HASHED_FIELDS if name != "sequence")

# ``JSONEncoder.encode`` gives exactly the text of ``json.dumps`` with the same options (``json.dumps``
# is a JSONEncoder(...).encode); building the encoder once saves its construction per event.
canonical_json = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode
# The compact JSON of event data as COPY writes it to the ``data`` column (raises TypeError on a value JSON
# cannot hold, as ``json.dumps`` does; PostgreSQL stores jsonb, so key order does not matter there).
compact_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def json_string(value: str) -> str:
    """A string as a JSON string literal, escaped exactly as ``canonical_json`` escapes strings."""
    return compact_json(value)


@lru_cache(maxsize=16)
def utc_isoformat(value: datetime) -> str:
    """An event time in canonical form (cached: the events of one bulk write share theirs; equal instants
    have the same text whatever their time zone)."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def canonical_content(values: dict[str, Any]) -> dict[str, Any]:
    """What the hash covers, from field values (a saved row's ``values()``, or a bulk writer's plain dict
    keyed by field name): every hashed field, in a canonical form that survives the database."""
    content = dict(zip(HASHED_FIELDS, _hashed_values(values), strict=True))
    content["occurred_at"] = utc_isoformat(content["occurred_at"])
    return content


# ``canonical_head`` spells out the canonical JSON of these fields, in this (sorted) order.
_HEAD_FIELDS = (
    "access_request_id",
    "actor_id",
    "actor_label",
    "client_address",
    "data",
    "event_type",
    "grant_id",
    "occurred_at",
    "reason",
    "role_id",
)
if tuple(sorted(_unsequenced_fields)) != _HEAD_FIELDS:  # pragma: no cover - a guard for whoever adds a hashed field
    raise ImportError("canonical_head spells out the hashed fields: add the new one there")
# Event data's canonical JSON alone (nested in an event's, it is the same text). It is also what the bulk
# path stores (the data column is jsonb: key order does not matter there), so it is encoded once. Unlike
# ``canonical_json`` it raises TypeError on a value JSON cannot hold, as the ORM's save does.
canonical_data_json = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


def _value_json(value: Any) -> str:
    """A hashed field's value in canonical JSON (ids and empty references without the encoder)."""
    if type(value) is int:
        return str(value)
    if value is None:
        return "null"
    return canonical_json(value)


def canonical_head(values: dict[str, Any], data_json: str | None = None) -> str:
    """The canonical JSON of an event's content without its sequence, and without the closing brace:
    ``canonical_with_sequence`` completes it to exactly ``canonical_json(canonical_content(values))``.
    Spelled out field by field (2.9 against 7.0 µs an event with its data's JSON, which a caller that
    stores the data too passes as ``data_json``: ``canonical_data_json`` of it);
    ``tests/services/test_audit_chain.py`` holds it equal to the one function over any content."""
    value, text = _value_json, canonical_json
    data = canonical_data_json(values["data"]) if data_json is None else data_json
    return (
        f'{{"access_request_id":{value(values["access_request_id"])},"actor_id":{value(values["actor_id"])},'
        f'"actor_label":{text(values["actor_label"])},"client_address":{value(values["client_address"])},'
        f'"data":{data},"event_type":{text(values["event_type"])},"grant_id":{value(values["grant_id"])},'
        f'"occurred_at":{text(utc_isoformat(values["occurred_at"]))},"reason":{text(values["reason"])},'
        f'"role_id":{value(values["role_id"])}'
    )


def canonical_with_sequence(head: str, sequence: int) -> str:
    """An event's canonical JSON from its ``canonical_head`` and its sequence (the last key)."""
    return f'{head},"sequence":{int(sequence)}}}'


def event_content(event) -> dict[str, Any]:
    """``canonical_content`` of a model instance."""
    return canonical_content({name: getattr(event, name) for name in HASHED_FIELDS})


def hash_canonical(text: str, prev_hash: str) -> str:
    """The hash of an event given its canonical text (for a caller that also needs the text: the evidence
    pack writes it)."""
    return hashlib.sha256(f"{prev_hash}|{text}".encode()).hexdigest()


def hash_content(content: dict[str, Any], prev_hash: str) -> str:
    """The ledger's one hashing function: sha256 over prev_hash and the canonical JSON of ``content``."""
    return hash_canonical(canonical_json(content), prev_hash)
