from datetime import UTC, datetime, timedelta, timezone

from django.template import engines

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
