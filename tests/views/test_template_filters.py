from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from django.template import engines
from django.utils.safestring import mark_safe
from hypothesis import assume, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from accessgov.templatetags.accessgov_tags import utc_filter, utc_iso_filter, utc_seconds_filter


def test_times_render_in_utc_whatever_zone_the_value_carries():
    value = datetime(2026, 11, 24, 10, 30, 5, tzinfo=timezone(timedelta(hours=1)))
    assert utc_filter(value) == "2026-11-24 09:30"
    assert utc_seconds_filter(value) == "2026-11-24 09:30:05"
    assert utc_iso_filter(value) == "2026-11-24T09:30:05+00:00"
    assert utc_filter(datetime(2026, 1, 2, 3, 4, tzinfo=UTC)) == "2026-01-02 03:04"


def test_missing_times_render_empty():
    assert utc_filter(None) == utc_seconds_filter(None) == utc_iso_filter(None) == ""


def test_status_badge_escapes_its_label():
    html = engines["django"].from_string("{% status s l %}").render({"s": "active", "l": "<b>x</b>"})
    assert html == '<span class="status status-active">&lt;b&gt;x&lt;/b&gt;</span>'


def test_event_types_render_with_their_labels():
    from accessgov.models import AccessEvent
    from accessgov.templatetags.accessgov_tags import event_label_filter

    for value, label in AccessEvent.Type.choices:
        assert event_label_filter(value) == label
    assert event_label_filter("not.a.type") == "not.a.type"


# --- The row helpers' fast paths equal the slow ones they replace (issue 22) -------------------

WHEN_ZONES = ["UTC", "Europe/Berlin", "America/St_Johns", "Asia/Kathmandu", "Pacific/Chatham", "Australia/Lord_Howe"]


def _when_reference(value, seconds: bool = False) -> str:
    """The ``when`` filter as it was written with ``strftime`` before it was made faster."""
    from django.utils import timezone as dj_timezone

    instant = value.astimezone(UTC)
    local = value.astimezone(dj_timezone.get_current_timezone())
    pattern = "%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M"
    return (
        f'<time datetime="{instant:%Y-%m-%dT%H:%M:%SZ}" title="{instant.strftime(pattern)} UTC">'
        f"{local.strftime(pattern)} {local.tzname() or 'UTC'}</time>"
    )


@hypothesis_settings(max_examples=300, deadline=None)
@given(
    value=st.datetimes(
        min_value=datetime(1000, 1, 2),  # noqa: DTZ001 - hypothesis takes naive bounds
        max_value=datetime(9999, 12, 30),  # noqa: DTZ001 - hypothesis takes naive bounds
        timezones=st.sampled_from([UTC, *map(ZoneInfo, WHEN_ZONES)]),
    ),
    zone=st.sampled_from(WHEN_ZONES),
    seconds=st.booleans(),
)
def test_when_shows_what_strftime_showed(value, zone, seconds):
    """Values that exist: a wall time inside a DST gap of its own zone (which no value read from the
    database, always UTC, is) is shown by ``when`` as the instant it stands for, by strftime unchanged."""
    from django.utils import timezone as dj_timezone

    from accessgov.templatetags.accessgov_tags import when_filter

    assume(value.astimezone(UTC).astimezone(value.tzinfo).replace(tzinfo=None) == value.replace(tzinfo=None))

    with dj_timezone.override(ZoneInfo(zone)):
        assert when_filter(value, seconds) == _when_reference(value, seconds)


def test_one_id_urls_are_the_urls_reverse_gives(db):
    from django.urls import NoReverseMatch, get_resolver, reverse, set_script_prefix

    from accessgov.jinja_env import _url

    resolver = get_resolver()
    one_int = [
        name
        for name in resolver.reverse_dict
        if isinstance(name, str)
        and any(
            len(params) == 1 for possibilities, *_ in resolver.reverse_dict.getlist(name) for _, params in possibilities
        )
    ]
    assert "grant_detail" in one_int and "request_detail" in one_int
    try:
        for prefix in ("/", "/accessgov/"):
            set_script_prefix(prefix)
            for name in one_int:
                for pk in (0, 7, 123456789):
                    try:
                        expected = reverse(name, args=[pk])
                    except NoReverseMatch:  # a pattern whose one argument is not an id
                        continue
                    assert _url(name, pk) == expected, (prefix, name, pk)
            assert _url("grant_detail", 5).startswith(prefix)
            for name in ("home", "approvals", "inbox", "admin:index", "accounts:security"):  # without arguments
                assert _url(name) == reverse(name), (prefix, name)
    finally:
        set_script_prefix("/")
    assert _url("approvals") == reverse("approvals")
    assert _url("grant_detail", "5") == reverse("grant_detail", args=["5"])


_SPAN_ZONES = st.sampled_from([None, UTC, *map(ZoneInfo, WHEN_ZONES)])


@st.composite
def _span_pairs(draw):
    """A value and a "now" up to ~two months apart either way (the remembered spans are under four weeks),
    in the same or different zones, both naive or mixed, down to the microsecond."""
    value = draw(
        st.datetimes(
            min_value=datetime(1900, 1, 2),  # noqa: DTZ001 - hypothesis takes naive bounds
            max_value=datetime(2100, 12, 30),  # noqa: DTZ001 - hypothesis takes naive bounds
            timezones=_SPAN_ZONES,
        )
    )
    span = draw(
        st.one_of(
            st.timedeltas(min_value=timedelta(days=-60), max_value=timedelta(days=60)),
            st.sampled_from([timedelta(0), timedelta(seconds=59, microseconds=999_999), timedelta(days=28)]),
            st.integers(-40_000, 40_000).map(lambda m: timedelta(minutes=m)),
        )
    )
    now = (value + span).replace(tzinfo=draw(_SPAN_ZONES)) if draw(st.booleans()) else value + span
    return value, now


@hypothesis_settings(max_examples=600, deadline=None)
@given(pair=_span_pairs(), reversed_=st.booleans())
def test_timesince_and_timeuntil_answer_what_djangos_filters_answer(pair, reversed_):
    """Ours (remembered for spans under four weeks) against Django's own filters, the oracle."""
    from django.template import defaultfilters

    from accessgov.templatetags.accessgov_tags import timesince_filter, timeuntil_filter

    value, now = pair
    if reversed_:
        assert timeuntil_filter(value, now) == defaultfilters.timeuntil_filter(value, now)
    else:
        assert timesince_filter(value, now) == defaultfilters.timesince_filter(value, now)


def test_timesince_without_now_and_in_templates():
    from django.template import defaultfilters

    from accessgov.templatetags.accessgov_tags import timesince_filter, timeuntil_filter

    soon = datetime.now(UTC) + timedelta(hours=2, minutes=30, seconds=30)
    assert timeuntil_filter(soon) == defaultfilters.timeuntil_filter(soon) == "2\xa0hours, 30\xa0minutes"
    assert timesince_filter(soon) == "0\xa0minutes"
    assert timesince_filter(None) == timesince_filter("") == ""
    rendered = (
        engines["django"].from_string("{{ t|timeuntil:now }}").render({"t": soon, "now": soon - timedelta(days=3)})
    )
    assert rendered == "3\xa0days"
    assert engines["jinja2"].from_string("{{ t|timeuntil(now) }}").render(
        {"t": soon, "now": soon - timedelta(minutes=5)}
    ) == ("5\xa0minutes")


@pytest.mark.parametrize(
    ("status", "label"),
    [("active", "Active"), ("x<script>", "a\"b'&<c>"), ("pending", mark_safe("<b>kept</b>")), ("denied", "Denied")],
)
def test_status_badges_are_built_once_and_escaped_as_format_html_does(status, label):
    from django.utils.html import format_html

    from accessgov.templatetags.accessgov_tags import status_tag

    expected = format_html('<span class="status status-{}">{}</span>', status, label)
    assert status_tag(status, label) == expected
    assert status_tag(status, label) == expected  # again, from the cache for plain strings
    assert "<script>" not in status_tag(status, label)


def test_an_instant_kept_as_text_in_an_events_data_is_shown_like_any_other_time():
    """A probe's finding: the timeline showed "Authenticator code entered at 2026-12-07T04:32:59.378334+00:00"."""
    from django.utils import timezone as dj_timezone

    from accessgov.templatetags.accessgov_tags import when_filter, when_text_filter

    with dj_timezone.override("Europe/Berlin"):
        shown = when_text_filter("2026-12-07T04:32:59.378334+00:00", True)
        assert shown == when_filter(datetime(2026, 12, 7, 4, 32, 59, 378334, tzinfo=UTC), True)
        assert ">2026-12-07 05:32:59 CET</time>" in shown
    assert when_text_filter("not a time") == "not a time" and when_text_filter(None) == ""
