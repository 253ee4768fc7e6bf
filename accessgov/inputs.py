"""What typed input the portal accepts, in one place: durations, ids, dates and day filters.

Python's ``str.isdigit()``, ``int()`` and regex ``\\d`` accept any Unicode digit (superscript two,
fullwidth or Arabic-Indic digits), and
``timedelta``/``date`` arithmetic overflows on numbers and years people can type. Every form, filter and
API field that reads a number, a duration or a date goes through the helpers here: ASCII digits only,
and bounded, so bad input is a form error (400), never an exception (500).
"""

import math
import re
import unicodedata
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import django_filters
from django import forms
from django.core.exceptions import ValidationError
from django.forms.fields import InvalidJSONInput

# The longest duration anything in the portal is asked for (requests, approvals, extensions, API).
MAX_DURATION = timedelta(days=366)
DURATION_MAX_LENGTH = 32  # "1d 23h 59min" and friends; anything longer is not a duration
# Dates people may type into a form or a filter: beyond these, nothing exists and date arithmetic
# (the day after, a grace period, a due date plus a week) stays far from Python's year 9999.
MIN_DATE = date(2000, 1, 1)
MAX_DATE = date(2999, 12, 31)
# Database ids are 64-bit signed integers (PostgreSQL bigint).
MAX_ID = 2**63 - 1

_NUMBER = re.compile(r"[0-9]{1,19}", re.ASCII)
_DURATION = re.compile(
    r"\s*(?:(?P<d>[0-9]{1,7})\s*d)?\s*(?:(?P<h>[0-9]{1,7})\s*h)?\s*(?:(?P<m>[0-9]{1,9})\s*m(?:in)?)?\s*",
    re.ASCII | re.IGNORECASE,
)


def parse_duration(text: str | None) -> timedelta | None:
    """'90m', '1h30m', '2h', '1d', or a bare number of minutes → timedelta; None if it is not a
    duration written in ASCII digits or is longer than MAX_DURATION."""
    text = (text or "").strip()
    if not text or len(text) > DURATION_MAX_LENGTH:
        return None
    if re.fullmatch(r"[0-9]{1,9}", text, re.ASCII):
        duration = timedelta(minutes=int(text))
    else:
        match = _DURATION.fullmatch(text)
        if not match or not any(match.groupdict().values()):
            return None
        parts = {k: int(v) if v else 0 for k, v in match.groupdict().items()}
        duration = timedelta(days=parts["d"], hours=parts["h"], minutes=parts["m"])
    return duration if duration <= MAX_DURATION else None


def parse_id(text: str | None) -> int | None:
    """A database id from a query string or form value: ASCII digits, 1 … MAX_ID; else None."""
    if not text or not _NUMBER.fullmatch(text):
        return None
    value = int(text)
    return value if 1 <= value <= MAX_ID else None


def ascii_digits(text: str | None) -> bool:
    """One or more ASCII digits (``str.isdigit`` also says yes to "²", and ``int`` reads "٦" as 6)."""
    return text is not None and text.isascii() and text.isdigit()


def is_totp_code(text: str | None) -> bool:
    """Six ASCII digits: what an authenticator app shows."""
    return ascii_digits(text) and len(text or "") == 6


def ensure_date_in_range(value: date) -> None:
    if not MIN_DATE <= value <= MAX_DATE:
        raise ValidationError(
            f"Enter a date between {MIN_DATE:%Y-%m-%d} and {MAX_DATE:%Y-%m-%d}.", code="date_out_of_range"
        )


class DateField(forms.DateField):
    """A day between MIN_DATE and MAX_DATE, written YYYY-MM-DD (what a date input sends). Django's
    other default formats read 02/03/2026 as 3 February, which half the world writes for 2 March."""

    input_formats = ["%Y-%m-%d"]

    def validate(self, value) -> None:
        super().validate(value)
        if value:
            ensure_date_in_range(value)


LOCAL_INPUT_FORMAT = "%Y-%m-%dT%H:%M"  # what <input type="datetime-local"> sends and shows


class DateTimePicker(forms.DateTimeInput):
    """A browser date-time picker; its value is in the viewer's zone (issue 18)."""

    input_type = "datetime-local"

    def __init__(self, attrs=None) -> None:
        super().__init__(attrs, format=LOCAL_INPUT_FORMAT)


def _offset_text(instant: datetime) -> str:
    """``instant``'s UTC offset as ISO 8601 writes it: "+01:00", "-04:00"."""
    minutes = int((instant.utcoffset() or timedelta(0)).total_seconds()) // 60
    return f"{'-' if minutes < 0 else '+'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


class DateTimeField(forms.DateTimeField):
    """An instant on a day between MIN_DATE and MAX_DATE, typed in the viewer's own time zone (issue 18:
    the middleware activates it): a date-time picker's ``2026-11-24T10:30`` is read in that zone; ISO
    8601 with an offset or ``Z`` (``2026-11-24T09:30Z``) is taken as written. A local time that does not
    exist or happens twice there (a daylight-saving switch) is a form error that says so. A value typed
    with another offset is shown back converted to the viewer's zone, so the picker can show it."""

    widget = DateTimePicker
    default_error_messages = {
        "invalid": "Enter a valid date/time, e.g. 2026-11-24T10:30 (your time zone) or 2026-11-24T09:30Z.",
        "overflow": "Enter a date and time between the years 2000 and 2999.",
    }

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("input_formats", [LOCAL_INPUT_FORMAT, "%Y-%m-%d %H:%M", "%Y-%m-%d"])
        super().__init__(**kwargs)

    def to_python(self, value):
        from django.utils import timezone

        try:
            return super().to_python(value)
        except ValidationError as error:
            if error.code == "ambiguous_timezone":
                raise ValidationError(
                    self._switch_problem(value, timezone.get_current_timezone()), code="ambiguous_timezone"
                ) from None
            raise
        except OverflowError:
            raise ValidationError(self.error_messages["overflow"], code="overflow") from None

    def _switch_problem(self, value, zone) -> str:
        """Why a local time a daylight-saving switch skips or repeats in ``zone`` cannot be read, with what to
        type instead written in that same zone: the next valid minute for a skipped time, the time with each of
        its two offsets for a repeated one (an example from another zone reads as a different instant)."""
        from django.utils import timezone

        name = timezone.get_current_timezone_name()
        naive = value if isinstance(value, datetime) else None
        for input_format in self.input_formats if naive is None else ():
            try:
                naive = datetime.strptime(str(value).strip(), input_format)  # noqa: DTZ007 - a wall time in ``zone``
                break
            except ValueError:
                continue
        if naive is None:  # not read by the formats above: a zone-neutral example
            return (
                f"{value} does not exist or happens twice in {name} (a daylight-saving switch). "
                "Choose another minute, or give the time in UTC, e.g. 2026-11-24T09:30Z."
            )
        naive = naive.replace(tzinfo=None)
        typed = f"{naive:{LOCAL_INPUT_FORMAT}}"
        first, second = naive.replace(tzinfo=zone, fold=0), naive.replace(tzinfo=zone, fold=1)
        if first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != naive:  # skipped: the clocks jump over it
            after = first.astimezone(UTC).astimezone(zone)
            return (
                f"{typed} does not exist in {name}: a daylight-saving switch skips it. Choose another minute, "
                f"e.g. {after:{LOCAL_INPUT_FORMAT}} ({after.tzname()})."
            )
        return (
            f"{typed} happens twice in {name} (a daylight-saving switch). Choose another minute, or give the "
            f"offset: {typed}{_offset_text(first)} for the first ({first.tzname()}), "
            f"{typed}{_offset_text(second)} for the second ({second.tzname()})."
        )

    def prepare_value(self, value):
        from django.utils import timezone
        from django.utils.dateparse import parse_datetime

        if isinstance(value, str):
            try:
                parsed = parse_datetime(value.strip())
            except ValueError:
                parsed = None
            if parsed is not None and timezone.is_aware(parsed):
                try:
                    return timezone.localtime(parsed).strftime(LOCAL_INPUT_FORMAT)
                except (OverflowError, ValueError):  # 9999-12-31T23:59-12:00 is past year 9999 anywhere else
                    return value
            return value
        return super().prepare_value(value)

    def validate(self, value) -> None:
        super().validate(value)
        if value:
            try:
                day = value.astimezone(UTC).date()
            except OverflowError:  # 9999-12-31T23:59-12:00 is in year 10000 in UTC
                day = date.max
            ensure_date_in_range(day)


class IdField(forms.IntegerField):
    """An object id: 1 … MAX_ID, in ASCII digits (IntegerField alone takes "١٢" and any size)."""

    default_error_messages = {"invalid": "Enter an id: a whole number written with the digits 0-9."}

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", MAX_ID)
        super().__init__(**kwargs)

    def to_python(self, value):
        if value in self.empty_values:
            return None
        value = str(value).strip()
        if not _NUMBER.fullmatch(value):
            raise ValidationError(self.error_messages["invalid"], code="invalid")
        return int(value)


class WholeNumberField(forms.IntegerField):
    """A whole number typed in ASCII digits (Django's IntegerField also takes Arabic-Indic and other Unicode
    digits, and "1.0"); its bounds as IntegerField's."""

    default_error_messages = {"invalid": "Enter a whole number written with the digits 0-9."}

    def to_python(self, value):
        if value in self.empty_values:
            return None
        text = str(value).strip()
        digits = text[1:] if text[:1] == "-" else text
        if not _NUMBER.fullmatch(digits):
            raise ValidationError(self.error_messages["invalid"], code="invalid")
        return int(text)


class PeoplesDurationField(forms.DurationField):
    """A duration in the admin as the portal writes it ("4h", "1h30m", "2d", or minutes), and Django's
    "4:00:00" too; shown as the portal shows it."""

    default_error_messages = {"invalid": "Write a duration like 30m, 4h, 1h30m or 2d."}

    def prepare_value(self, value):
        if isinstance(value, timedelta):
            minutes = int(value.total_seconds() // 60)
            days, minutes = divmod(minutes, 24 * 60)
            hours, minutes = divmod(minutes, 60)
            text = (f"{days}d" if days else "") + (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
            return text or "0m"
        return value

    def to_python(self, value):
        if value in self.empty_values:
            return None
        if isinstance(value, timedelta):
            return value
        duration = parse_duration(str(value))
        if duration is not None:
            return duration
        try:
            return super().to_python(value)
        except (ValidationError, OverflowError):
            raise ValidationError(self.error_messages["invalid"], code="invalid") from None


class InstantField(forms.Field):
    """An exact instant a page showed and sends back (a hidden field): microseconds since 1970 in UTC, ASCII
    digits, so that no time zone or rounding stands between what was shown and what is compared."""

    default_error_messages = {"invalid": "This form is out of date: reload the page."}
    _EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
    _LAST = (datetime(9999, 12, 31, tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)

    def prepare_value(self, value):
        if isinstance(value, datetime):
            return (value - self._EPOCH) // timedelta(microseconds=1)
        return value

    def to_python(self, value):
        if value in self.empty_values:
            return None
        text = str(value).strip()
        if not _NUMBER.fullmatch(text) or int(text) > self._LAST:
            raise ValidationError(self.error_messages["invalid"], code="invalid")
        return self._EPOCH + timedelta(microseconds=int(text))


class ModelChoiceField(forms.ModelChoiceField):
    """A choice of a row by its id, the id in ASCII digits: Django's would look up "٦" as row 6."""

    def to_python(self, value):
        if value not in self.empty_values and self.to_field_name is None and parse_id(str(value)) is None:
            raise ValidationError(self.error_messages["invalid_choice"], code="invalid_choice")
        return super().to_python(value)


class StorableJSONField(forms.JSONField):
    """Django's JSON form field, for what a jsonb column can hold: nesting deeper than MAX_JSON_DEPTH, a
    number too long for Python, NaN or Infinity, a NUL or an unpaired surrogate in a text is a form error
    (each was a 500: RecursionError, ValueError, or PostgreSQL refusing the row)."""

    default_error_messages = {"unstorable": "This JSON cannot be stored: {problem}."}

    def to_python(self, value):
        try:
            converted = super().to_python(value)
        except (RecursionError, ValueError) as exc:
            raise ValidationError(
                self.error_messages["unstorable"].format(problem="it is nested too deeply or has a number too long"),
                code="unstorable",
            ) from exc
        if (problem := json_problem(converted)) is not None:
            raise ValidationError(self.error_messages["unstorable"].format(problem=problem), code="unstorable")
        return converted

    def bound_data(self, data, initial):
        """The typed text, shown back with the error (Django parses it again here, and only a JSONDecodeError
        was caught)."""
        try:
            value = super().bound_data(data, initial)
        except (RecursionError, ValueError):
            return InvalidJSONInput(data)
        # Parsed, it may hold what no page can show either (a lone surrogate has no UTF-8): the text as typed.
        return InvalidJSONInput(data) if data is not None and json_problem(value) else value


MAX_JSON_DEPTH = 32


def json_problem(value, depth: int = 0, *, texts: bool = True) -> str | None:
    """Why ``value`` (parsed JSON) cannot be stored in a jsonb column, or None (``texts=False``: its nesting and
    numbers only, for callers that make texts storable themselves)."""
    if depth > MAX_JSON_DEPTH:
        return f"it is nested more than {MAX_JSON_DEPTH} levels deep"
    if isinstance(value, float) and not math.isfinite(value):
        return "it has a number that is not finite (NaN or Infinity)"
    if isinstance(value, str):
        return text_problem(value) if texts else None
    if isinstance(value, dict):
        for key, item in value.items():
            if problem := (text_problem(key) if texts else None) or json_problem(item, depth + 1, texts=texts):
                return problem
    elif isinstance(value, list):
        for item in value:
            if (problem := json_problem(item, depth + 1, texts=texts)) is not None:
                return problem
    return None


class KeyTwice(ValueError):
    """A JSON object with the same key twice."""


def json_object_once_per_key(pairs: list[tuple[str, object]]) -> dict:
    """``json.loads``'s ``object_pairs_hook``: an object whose key appears twice is refused (KeyTwice). Parsers
    disagree on which of the two counts (Python's takes the last, others the first), so a body that a proxy,
    a signature check or a log reads one way must not be acted on the other way."""
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise KeyTwice(f"the key {key[:60]!r} appears twice in one object")
            seen.add(key)
    return data


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored or compared in the database, or None: a NUL (PostgreSQL refuses it) or an
    unpaired surrogate (``"\\ud800"`` in JSON: it has no UTF-8)."""
    if "\x00" in text:
        return "a text has a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "a text has an unpaired surrogate"
    return None


class DateFilter(django_filters.DateFilter):
    """A day filter whose value is between MIN_DATE and MAX_DATE."""

    field_class = DateField


class IdFilter(django_filters.Filter):
    """An exact match on an id column (``grant``, ``access_request``)."""

    field_class = IdField


class AnyYesNo(forms.NullBooleanSelect):
    """A yes/no filter whose empty choice reads "Any" (Django's says "Unknown", which reads as a value)."""

    def __init__(self, attrs=None) -> None:
        super().__init__(attrs)
        self.choices = [("unknown", "Any"), ("true", "Yes"), ("false", "No")]


# Alphabets whose letters look alike: a name mixing them (a Cyrillic a among Latin letters) passes for another person's.
_LOOKALIKE_SCRIPTS = frozenset({"LATIN", "CYRILLIC", "GREEK"})

# Cyrillic and Greek letters that pass for Latin ones, and the Latin letters (lower case: names are compared
# case-insensitively) a reader may take each for. From Unicode's confusables.txt (the Cyrillic and Greek letters
# whose prototype is a Latin letter), lower and upper case; a bare vertical stroke passes for both an l and a
# capital I. A name written wholly in these letters reads as a Latin name (Cyrillic "alice" is "alice").
_LATIN_LOOKALIKES: dict[str, str] = {
    # Cyrillic, small
    "\N{CYRILLIC SMALL LETTER A}": "a",
    "\N{CYRILLIC SMALL LETTER ES}": "c",
    "\N{CYRILLIC SMALL LETTER KOMI DE}": "d",
    "\N{CYRILLIC SMALL LETTER IE}": "e",
    "\N{CYRILLIC SMALL LETTER ABKHASIAN CHE}": "e",
    "\N{CYRILLIC SMALL LETTER SHHA}": "h",
    "\N{CYRILLIC SMALL LETTER BYELORUSSIAN-UKRAINIAN I}": "i",
    "\N{CYRILLIC SMALL LETTER IOTA}": "i",
    "\N{CYRILLIC SMALL LETTER PALOCHKA}": "il",
    "\N{CYRILLIC SMALL LETTER JE}": "j",
    "\N{CYRILLIC SMALL LETTER O}": "o",
    "\N{CYRILLIC SMALL LETTER ER}": "p",
    "\N{CYRILLIC SMALL LETTER QA}": "q",
    "\N{CYRILLIC SMALL LETTER GHE}": "r",
    "\N{CYRILLIC SMALL LETTER DZE}": "s",
    "\N{CYRILLIC SMALL LETTER IZHITSA}": "v",
    "\N{CYRILLIC SMALL LETTER OMEGA}": "w",
    "\N{CYRILLIC SMALL LETTER WE}": "w",
    "\N{CYRILLIC SMALL LETTER HA}": "x",
    "\N{CYRILLIC SMALL LETTER U}": "y",
    "\N{CYRILLIC SMALL LETTER STRAIGHT U}": "y",
    # Cyrillic, capital
    "\N{CYRILLIC CAPITAL LETTER A}": "a",
    "\N{CYRILLIC CAPITAL LETTER VE}": "b",
    "\N{CYRILLIC CAPITAL LETTER SOFT SIGN}": "b",
    "\N{CYRILLIC CAPITAL LETTER ES}": "c",
    "\N{CYRILLIC CAPITAL LETTER IE}": "e",
    "\N{CYRILLIC CAPITAL LETTER KOMI SJE}": "g",
    "\N{CYRILLIC CAPITAL LETTER EN}": "h",
    "\N{CYRILLIC CAPITAL LETTER BYELORUSSIAN-UKRAINIAN I}": "il",
    "\N{CYRILLIC LETTER PALOCHKA}": "il",
    "\N{CYRILLIC CAPITAL LETTER JE}": "j",
    "\N{CYRILLIC CAPITAL LETTER KA}": "k",
    "\N{CYRILLIC CAPITAL LETTER EM}": "m",
    "\N{CYRILLIC CAPITAL LETTER O}": "o",
    "\N{CYRILLIC CAPITAL LETTER ER}": "p",
    "\N{CYRILLIC CAPITAL LETTER DZE}": "s",
    "\N{CYRILLIC CAPITAL LETTER TE}": "t",
    "\N{CYRILLIC CAPITAL LETTER IZHITSA}": "v",
    "\N{CYRILLIC CAPITAL LETTER WE}": "w",
    "\N{CYRILLIC CAPITAL LETTER HA}": "x",
    "\N{CYRILLIC CAPITAL LETTER U}": "y",
    "\N{CYRILLIC CAPITAL LETTER STRAIGHT U}": "y",
    # Greek, small
    "\N{GREEK SMALL LETTER ALPHA}": "a",
    "\N{GREEK LUNATE SIGMA SYMBOL}": "c",
    "\N{GREEK SMALL LETTER IOTA}": "i",
    "\N{GREEK LETTER YOT}": "j",
    "\N{GREEK SMALL LETTER KAPPA}": "k",
    "\N{GREEK SMALL LETTER OMICRON}": "o",
    "\N{GREEK SMALL LETTER SIGMA}": "o",
    "\N{GREEK SMALL LETTER RHO}": "p",
    "\N{GREEK SMALL LETTER UPSILON}": "u",
    "\N{GREEK SMALL LETTER NU}": "v",
    "\N{GREEK SMALL LETTER GAMMA}": "y",
    # Greek, capital
    "\N{GREEK CAPITAL LETTER ALPHA}": "a",
    "\N{GREEK CAPITAL LETTER BETA}": "b",
    "\N{GREEK CAPITAL LUNATE SIGMA SYMBOL}": "c",
    "\N{GREEK CAPITAL LETTER EPSILON}": "e",
    "\N{GREEK LETTER DIGAMMA}": "f",
    "\N{GREEK CAPITAL LETTER ETA}": "h",
    "\N{GREEK CAPITAL LETTER IOTA}": "il",
    "\N{GREEK CAPITAL LETTER YOT}": "j",
    "\N{GREEK CAPITAL LETTER KAPPA}": "k",
    "\N{GREEK CAPITAL LETTER MU}": "m",
    "\N{GREEK CAPITAL LETTER SAN}": "m",
    "\N{GREEK CAPITAL LETTER NU}": "n",
    "\N{GREEK CAPITAL LETTER OMICRON}": "o",
    "\N{GREEK CAPITAL LETTER RHO}": "p",
    "\N{GREEK CAPITAL LETTER TAU}": "t",
    "\N{GREEK CAPITAL LETTER CHI}": "x",
    "\N{GREEK CAPITAL LETTER UPSILON}": "y",
    "\N{GREEK UPSILON WITH HOOK SYMBOL}": "y",
    "\N{GREEK CAPITAL LETTER ZETA}": "z",
}


def normal_username(name: str) -> str:
    """``name`` as Django stores a username (NFKC: full-width letters are the plain ones)."""
    return unicodedata.normalize("NFKC", name)


# Each Latin letter, and the Cyrillic and Greek letters that may be read as it (the table above, turned around).
_READ_AS: dict[str, frozenset[str]] = {
    latin: frozenset(ch for ch, readings in _LATIN_LOOKALIKES.items() if latin in readings)
    for latin in sorted(set("".join(_LATIN_LOOKALIKES.values())))
}


def _read_the_same(ch: str) -> str | None:
    """The characters that may be read as ``ch`` reads (``ch`` among them), or None: ``ch`` reads only as itself."""
    if ch in _LATIN_LOOKALIKES:
        readings = set(_LATIN_LOOKALIKES[ch])
    elif ch.isascii() and ch.isalpha():
        readings = {ch.lower()}
    else:
        return None
    alike = {ch, *readings}
    for latin in readings:
        alike |= _READ_AS.get(latin, frozenset())
    return "".join(sorted(alike)) if len(alike) > 1 else None


def username_lookalike_pattern(name: str) -> str | None:
    """A case-insensitive regular expression for the other names that read as ``name`` reads, or None (``name``
    has no letter another alphabet passes for). Both ways: a Latin "alice" matches a Cyrillic one, a Cyrillic "alice"
    the Latin one, and either a name mixing both. Letters compare through the confusable mapping above (Unicode's
    confusables.txt for Cyrillic and Greek, a bare vertical stroke read as an l or a capital I); other characters
    (digits, ``.`` ``_`` ``@`` ``+`` ``-``) stand for themselves. ``name`` itself, in any case, is not matched."""
    name = normal_username(name)
    pattern, lookalike = [], False
    for ch in name:
        alike = _read_the_same(ch)
        pattern.append(f"[{alike}]" if alike else re.escape(ch))
        lookalike = lookalike or alike is not None
    return f"^(?!{re.escape(name)}$){''.join(pattern)}$" if lookalike else None


def _scripts(name: str) -> set[str]:
    return {unicodedata.name(ch, "").split(" ")[0] for ch in name if ch.isalpha()} & _LOOKALIKE_SCRIPTS


def username_lookalike_problem(name: str, taken: Callable[[str], str | None] | None = None) -> str | None:
    """Why ``name`` could pass for another person's name, or None: its letters mix Latin, Cyrillic or Greek; or
    (when ``taken`` is given: it answers an existing name matching a case-insensitive regular expression, or None)
    it reads as a name that is taken, either way round — Cyrillic or Greek letters reading as a taken Latin name (a
    Cyrillic "alice"), or Latin letters reading as a taken name written in Cyrillic or Greek letters. Names that an
    account takes are checked by ``services.usernames.username_problem``, which calls this under its lock."""
    scripts = _scripts(name)
    if len(scripts) > 1:
        return f"it mixes {' and '.join(sorted(s.title() for s in scripts))} letters, which look alike"
    pattern = username_lookalike_pattern(name) if taken is not None else None
    if pattern is None or taken is None:
        return None
    other = taken(pattern)
    if other is None:
        return None
    if scripts and scripts != {"LATIN"}:
        return f"its {scripts.pop().title()} letters read as {other}, another person's name"
    written_in = _scripts(other) - {"LATIN"}
    if written_in:
        alphabets = " and ".join(sorted(s.title() for s in written_in | _scripts(other)))
        return f"it reads as {other}, another person's name written in {alphabets} letters"
    return f"it reads as {other}, another person's name"


def yes_no_filter(field_name: str, label: str) -> django_filters.BooleanFilter:
    return django_filters.BooleanFilter(field_name=field_name, label=label, widget=AnyYesNo)


@lru_cache(maxsize=64)
def zone_named(name: str) -> ZoneInfo | None:
    """The IANA zone ``name`` (a person's time zone; cached), or None when it is empty or not a zone this
    system knows."""
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None
