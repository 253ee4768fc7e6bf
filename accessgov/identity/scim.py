"""SCIM 2.0 wire format (RFC 7643/7644), the subset identity providers use: reading and checking request
bodies, applying PATCH operations to a resource's current values, ``eq`` filters, and the resources'
JSON. No database writes here: ``accessgov.services.identity`` does those with what this returns.

Shaped after what Okta and Entra ID send (docs/IDENTITY.md): Okta replaces users with PUT and
(de)activates with ``PATCH {"op": "replace", "value": {"active": false}}``; Entra ID patches one path at
a time with capitalised operations and string booleans (``{"op": "Replace", "path": "active", "value":
"False"}``); group membership comes as ``add``/``remove`` on ``members`` or ``members[value eq "…"]``.
Attribute names are case-insensitive (RFC 7643 2.1). Core attributes this portal does not keep (title,
phone numbers, addresses, …) and schema extensions are accepted and ignored; ``roles``, ``entitlements``
and a user's ``groups`` are refused (rights are never set by provisioning; membership goes through
/Groups); any other attribute is refused with the name, so a client never believes it set something.
"""

import json
import re
from dataclasses import dataclass, field, replace
from typing import Any

from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from accessgov import inputs

SCHEMA_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
SCHEMA_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
SCHEMA_ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
SCHEMA_PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
SCHEMA_LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
SCHEMA_ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
CONTENT_TYPE = "application/scim+json"

MAX_OPERATIONS = 1000
MAX_MEMBERS = 50_000
MAX_COUNT = 200
DEFAULT_COUNT = 100

# Core User attributes (RFC 7643 4.1) this portal does not keep: accepted, ignored.
USER_IGNORED = {
    "id",
    "meta",
    "schemas",
    "displayname",
    "nickname",
    "profileurl",
    "title",
    "usertype",
    "preferredlanguage",
    "locale",
    "timezone",
    "password",
    "phonenumbers",
    "ims",
    "photos",
    "addresses",
    "x509certificates",
}
# Attributes that would carry rights or membership: refused outright (an empty "groups" list excepted).
USER_REFUSED = {"roles", "entitlements", "groups"}
GROUP_IGNORED = {"id", "meta", "schemas"}


class ScimError(Exception):
    """A refusal in SCIM's error format (RFC 7644 3.12): HTTP status, ``scimType`` and a detail."""

    def __init__(self, status: int, detail: str, scim_type: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.scim_type = status, detail, scim_type

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"schemas": [SCHEMA_ERROR], "status": str(self.status), "detail": self.detail}
        if self.scim_type:
            body["scimType"] = self.scim_type
        return body


def bad(detail: str, scim_type: str = "invalidValue") -> ScimError:
    return ScimError(400, detail, scim_type)


# --- Reading a body -------------------------------------------------------------------------------


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _walk_strings(value: Any) -> None:
    if isinstance(value, str):
        if (problem := inputs.text_problem(value)) is not None:
            raise bad(f"Text may not contain what a database cannot store: {problem}.", "invalidSyntax")
    elif isinstance(value, dict):
        for key, item in value.items():
            _walk_strings(key)
            _walk_strings(item)
    elif isinstance(value, list):
        for item in value:
            _walk_strings(item)


def load_body(raw: bytes) -> dict[str, Any]:
    """A request body as a JSON object. Refuses (400 invalidSyntax) anything else: not UTF-8, not JSON,
    NaN or Infinity, nested past Python's limit, not an object, or with a NUL character or an unpaired
    surrogate anywhere."""
    try:
        text = raw.decode("utf-8")
        body = json.loads(text, parse_constant=_no_constants, object_pairs_hook=inputs.json_object_once_per_key)
    except inputs.KeyTwice as error:
        raise bad(f"The body is not a JSON object SCIM can read: {error}.", "invalidSyntax") from error
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise bad(f"The body is not a JSON object: {error.__class__.__name__}.", "invalidSyntax") from error
    if not isinstance(body, dict):
        raise bad("The body must be a JSON object.", "invalidSyntax")
    try:
        _walk_strings(body)
    except RecursionError as error:
        raise bad("The body is nested too deeply.", "invalidSyntax") from error
    return body


def _lower_keys(body: dict[str, Any]) -> dict[str, Any]:
    return {key.lower(): value for key, value in body.items()}


def _text(value: Any, name: str, *, max_length: int, required: bool = False) -> str:
    if value is None:
        if required:
            raise bad(f"{name} is required.")
        return ""
    if not isinstance(value, str):
        raise bad(f"{name} must be a string.")
    value = value.strip()
    if required and not value:
        raise bad(f"{name} may not be empty.")
    if len(value) > max_length:
        raise bad(f"{name} is longer than {max_length} characters.")
    return value


def _boolean(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):  # Entra ID sends "False"
        return value.strip().lower() == "true"
    raise bad(f"{name} must be true or false.")


_username = UnicodeUsernameValidator()


def _user_name(value: Any) -> str:
    """The userName as stored (NFKC, as Django stores usernames): full-width letters are the plain ones, so it meets "alice"'s
    account (409) instead of sitting beside it; a name mixing look-alike alphabets is refused."""
    name = inputs.normal_username(_text(value, "userName", max_length=150, required=True))
    try:
        _username(name)
    except ValidationError as error:
        raise bad("userName may contain only letters, digits and @ . + - _ (at most 150).") from error
    if problem := inputs.username_lookalike_problem(name):
        raise bad(f"userName is refused: {problem}.")
    return name


def _email(value: Any) -> str:
    email = _text(value, "emails.value", max_length=254)
    if email:
        try:
            validate_email(email)
        except ValidationError as error:
            raise bad("emails.value is not an e-mail address.") from error
    return email


def _primary_email(emails: Any) -> str:
    if emails is None:
        return ""
    if not isinstance(emails, list) or not all(isinstance(e, dict) for e in emails):
        raise bad("emails must be a list of objects.")
    if len(emails) > 20:
        raise bad("At most 20 e-mail addresses.")
    chosen = next((e for e in emails if _lower_keys(e).get("primary") is True), emails[0] if emails else None)
    return _email(_lower_keys(chosen).get("value")) if chosen else ""


def _check_attributes(body: dict[str, Any], known: set[str], ignored: set[str], refused: set[str]) -> None:
    for key, value in body.items():
        lowered = key.lower()
        if lowered == "groups" and value in ([], None):
            continue  # Okta sends "groups": [] with every user; membership itself goes through /Groups
        if lowered in refused:
            raise ScimError(400, f"{key} cannot be set by provisioning: rights are given in AccessGov.", "mutability")
        if lowered in known or lowered in ignored or lowered.startswith("urn:"):
            continue
        raise bad(f"Unknown attribute: {key}.", "invalidSyntax")


# --- Users ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UserValues:
    """The attributes of a user this portal keeps."""

    user_name: str
    external_id: str | None = None
    given_name: str = ""
    family_name: str = ""
    email: str = ""
    active: bool = True


USER_KNOWN = {"username", "externalid", "name", "emails", "active"}


def _name_part(name: Any, part: str) -> str:
    if name is None:
        return ""
    if not isinstance(name, dict):
        raise bad("name must be an object.")
    return _text(_lower_keys(name).get(part.lower()), f"name.{part}", max_length=150)


def user_from_resource(body: dict[str, Any]) -> UserValues:
    """The values of a User resource (POST, PUT). Missing optional attributes are empty (PUT replaces)."""
    _check_attributes(body, USER_KNOWN, USER_IGNORED, USER_REFUSED)
    data = _lower_keys(body)
    external_id = _text(data.get("externalid"), "externalId", max_length=255) or None
    return UserValues(
        user_name=_user_name(data.get("username")),
        external_id=external_id,
        given_name=_name_part(data.get("name"), "givenName"),
        family_name=_name_part(data.get("name"), "familyName"),
        email=_primary_email(data.get("emails")),
        active=_boolean(data["active"], "active") if "active" in data else True,
    )


_CORE_PREFIX = re.compile(r"^urn:ietf:params:scim:schemas:core:2\.0:(user|group):", re.IGNORECASE)
_EMAIL_PATH = re.compile(r'^emails\[(type eq "[^"]*"|primary eq true)\]\.value$', re.IGNORECASE)
_IGNORED_FILTERED_PATH = re.compile(r"^(phonenumbers|addresses|ims|photos|x509certificates)\[.*\](\.\w+)?$", re.I)


def _operations(body: dict[str, Any]) -> list[tuple[str, str, Any]]:
    data = _lower_keys(body)
    schemas = data.get("schemas")
    if schemas is not None and (not isinstance(schemas, list) or SCHEMA_PATCH not in schemas):
        raise bad(f"A PATCH body names the schema {SCHEMA_PATCH}.", "invalidSyntax")
    operations = data.get("operations")
    if not isinstance(operations, list) or not operations:
        raise bad("A PATCH body has a non-empty Operations list.", "invalidSyntax")
    if len(operations) > MAX_OPERATIONS:
        raise ScimError(413, f"At most {MAX_OPERATIONS} operations in one request.")
    parsed = []
    for operation in operations:
        if not isinstance(operation, dict):
            raise bad("Each operation is an object.", "invalidSyntax")
        op = _lower_keys(operation)
        verb = op.get("op")
        if not isinstance(verb, str) or verb.lower() not in ("add", "replace", "remove"):
            raise bad('op is "add", "replace" or "remove".', "invalidSyntax")
        path = op.get("path")
        if path is not None and (not isinstance(path, str) or len(path) > 300):
            raise bad("path must be a string of at most 300 characters.", "invalidPath")
        parsed.append((verb.lower(), _CORE_PREFIX.sub("", path.strip()) if path else "", op.get("value")))
    return parsed


def user_apply_patch(current: UserValues, body: dict[str, Any]) -> UserValues:
    """The user's values after the PATCH operations in ``body`` (RFC 7644 3.5.2), applied in order."""
    values = current
    for verb, path, value in _operations(body):
        if not path:
            if verb == "remove":
                raise bad("A remove operation needs a path.", "noTarget")
            if not isinstance(value, dict):
                raise bad("Without a path the value is an object of attributes.", "invalidValue")
            _check_attributes(value, USER_KNOWN | {"name.givenname", "name.familyname"}, USER_IGNORED, USER_REFUSED)
            for key, item in value.items():
                values = _user_set(values, verb, key, item)
        else:
            values = _user_set(values, verb, path, value)
    return values


def _user_set(values: UserValues, verb: str, path: str, value: Any) -> UserValues:
    lowered = _CORE_PREFIX.sub("", path).lower()
    removing = verb == "remove"
    if lowered == "groups" and value in ([], None) and not removing:
        return values  # an empty list, as Okta sends it: nothing asked
    if lowered in USER_REFUSED or lowered.split("[")[0].split(".")[0] in USER_REFUSED:
        raise ScimError(400, f"{path} cannot be set by provisioning: rights are given in AccessGov.", "mutability")
    if lowered == "username":
        if removing:
            raise ScimError(400, "userName is required.", "mutability")
        return replace(values, user_name=_user_name(value))
    if lowered == "active":
        if removing:
            raise ScimError(400, "active cannot be removed.", "mutability")
        return replace(values, active=_boolean(value, "active"))
    if lowered == "externalid":
        return replace(values, external_id=None if removing else (_text(value, "externalId", max_length=255) or None))
    if lowered == "name":
        if removing:
            return replace(values, given_name="", family_name="")
        if not isinstance(value, dict):
            raise bad("name must be an object.")
        return replace(
            values,
            given_name=_name_part(value, "givenName") if "givenname" in _lower_keys(value) else values.given_name,
            family_name=_name_part(value, "familyName") if "familyname" in _lower_keys(value) else values.family_name,
        )
    if lowered in ("name.givenname", "name.familyname"):
        text = "" if removing else _text(value, path, max_length=150)
        return replace(values, **({"given_name": text} if lowered.endswith("givenname") else {"family_name": text}))
    if lowered == "emails":
        return replace(values, email="" if removing else _primary_email(value))
    if _EMAIL_PATH.match(lowered):
        return replace(values, email="" if removing else _email(value))
    if lowered.startswith("urn:") or lowered in USER_IGNORED or lowered.startswith("name."):
        return values
    if _IGNORED_FILTERED_PATH.match(lowered):
        return values
    raise ScimError(400, f"Unknown or unsupported path: {path}.", "invalidPath")


# --- Groups ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupValues:
    display_name: str
    external_id: str | None = None
    members: frozenset[str] | None = None  # None: not given (PATCH/excluded), else the whole set


@dataclass
class GroupChange:
    """What a group PATCH asks for: a new name or externalId, members added/removed, or a whole new set."""

    display_name: str | None = None
    external_id: str | None = None
    external_id_given: bool = False
    replace_members: set[str] | None = None
    add: set[str] = field(default_factory=set)
    remove: set[str] = field(default_factory=set)
    remove_all: bool = False


GROUP_KNOWN = {"displayname", "externalid", "members"}
_MEMBER_FILTER = re.compile(r'^members\[\s*value\s+eq\s+"([^"]{1,100})"\s*\]$', re.IGNORECASE)


def _display_name(value: Any) -> str:
    return _text(value, "displayName", max_length=100, required=True)


def _member_ids(value: Any) -> set[str]:
    if value is None:
        return set()
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise bad("members must be a list of objects with a value.")
    if len(value) > MAX_MEMBERS:
        raise ScimError(413, f"At most {MAX_MEMBERS} members in one request.")
    ids = set()
    for member in value:
        if not isinstance(member, dict):
            raise bad("Each member is an object with a value.")
        member_id = _lower_keys(member).get("value")
        if not isinstance(member_id, str) or not member_id or len(member_id) > 100:
            raise bad("Each member has a value: the id of a user.")
        ids.add(member_id)
    return ids


def group_from_resource(body: dict[str, Any]) -> GroupValues:
    _check_attributes(body, GROUP_KNOWN, GROUP_IGNORED, set())
    data = _lower_keys(body)
    return GroupValues(
        display_name=_display_name(data.get("displayname")),
        external_id=_text(data.get("externalid"), "externalId", max_length=255) or None,
        members=frozenset(_member_ids(data.get("members"))),
    )


def group_patch(body: dict[str, Any]) -> GroupChange:
    """A group PATCH as one change; membership operations are applied in order into add/remove sets."""
    change = GroupChange()
    for verb, path, value in _operations(body):
        lowered = path.lower()
        if not path:
            if verb == "remove" or not isinstance(value, dict):
                raise bad("Without a path the value is an object of attributes.", "invalidValue")
            _check_attributes(value, GROUP_KNOWN, GROUP_IGNORED, set())
            for key, item in value.items():
                _group_set(change, verb, key.lower(), item)
            continue
        match = _MEMBER_FILTER.match(path)
        if match:
            if verb != "remove":
                raise bad("Only remove takes a filtered members path.", "invalidPath")
            _members_remove(change, {match.group(1)})
            continue
        _group_set(change, verb, lowered, value)
    return change


def _members_remove(change: GroupChange, ids: set[str]) -> None:
    change.add -= ids
    if change.replace_members is not None:
        change.replace_members -= ids
    else:
        change.remove |= ids


def _group_set(change: GroupChange, verb: str, lowered: str, value: Any) -> None:
    if lowered == "members":
        if verb == "remove":
            if value is None:
                change.remove_all, change.replace_members = True, set()
                change.add, change.remove = set(), set()
            else:
                _members_remove(change, _member_ids(value))
        elif verb == "replace":
            change.replace_members, change.add, change.remove = _member_ids(value), set(), set()
        else:
            ids = _member_ids(value)
            if change.replace_members is not None:
                change.replace_members |= ids
            else:
                change.add |= ids
                change.remove -= ids
        return
    if lowered == "displayname":
        if verb == "remove":
            raise ScimError(400, "displayName is required.", "mutability")
        change.display_name = _display_name(value)
        return
    if lowered == "externalid":
        change.external_id = None if verb == "remove" else (_text(value, "externalId", max_length=255) or None)
        change.external_id_given = True
        return
    if lowered in GROUP_IGNORED:
        return
    raise ScimError(400, f"Unknown or unsupported path: {lowered}.", "invalidPath")


# --- Filters and pages ----------------------------------------------------------------------------

_FILTER = re.compile(r'^\s*([A-Za-z][\w.:]*)\s+eq\s+"((?:[^"\\]|\\.){0,300})"\s*$', re.IGNORECASE)
USER_FILTERS = {"username": "user_name", "externalid": "external_id", "id": "id", "emails.value": "email"}
GROUP_FILTERS = {"displayname": "display_name", "externalid": "external_id", "id": "id"}


def parse_filter(text: str | None, allowed: dict[str, str]) -> tuple[str, str] | None:
    """``attr eq "value"`` for an allowed attribute → (what, value); None without a filter. Anything
    else is refused (400 invalidFilter): this portal answers only the equality filters IdPs send."""
    if text is None or not text.strip():
        return None
    match = _FILTER.match(text) if len(text) <= 400 else None
    if not match:
        raise ScimError(400, 'Only filters of the form attribute eq "value" are supported.', "invalidFilter")
    attribute = _CORE_PREFIX.sub("", match.group(1)).lower()
    if attribute not in allowed:
        raise ScimError(400, f"Filtering on {match.group(1)} is not supported.", "invalidFilter")
    try:
        value = json.loads(f'"{match.group(2)}"')
    except ValueError as error:
        raise ScimError(400, "The filter value is not a valid string.", "invalidFilter") from error
    if (problem := inputs.text_problem(value)) is not None:
        raise ScimError(400, f"The filter value cannot be searched for: {problem}.", "invalidFilter")
    return allowed[attribute], value


def page(query) -> tuple[int, int]:
    """(startIndex, count) from the query string: 1-based start, count at most MAX_COUNT (RFC 7644 3.4.2.4)."""
    try:
        start = int(query.get("startIndex", 1))
        count = int(query.get("count", DEFAULT_COUNT))
    except (TypeError, ValueError) as error:
        raise bad("startIndex and count are whole numbers.") from error
    if start > 10**9 or count > 10**9:
        raise bad("startIndex or count is too large.")
    return max(start, 1), min(max(count, 0), MAX_COUNT)
