"""An export's file name says what bounds its rows: the Until day when there is one, else the moment of the
export (``as_of_…``, to the second), never a day the rows are not bounded by (``to_<today>`` left out rows
made later that day)."""

import re
from datetime import UTC, date, datetime

import pytest
import time_machine
from django.test import Client
from django.urls import reverse

from accessgov import exports
from tests.conftest import verify_session

AT = datetime(2027, 3, 1, 14, 12, 5, tzinfo=UTC)


def test_an_export_without_until_is_named_by_its_moment_and_one_with_until_by_its_days():
    with time_machine.travel(AT, tick=False):
        assert exports.file_name("grants") == "accessgov-grants-as_of_2027-03-01T141205Z.csv"
        assert exports.file_name("access-history", since=date(2027, 2, 1)) == (
            "accessgov-access-history-from_2027-02-01-as_of_2027-03-01T141205Z.csv"
        )
        assert exports.file_name("audit-trail", since=date(2027, 1, 1), until=date(2027, 1, 31)) == (
            "accessgov-audit-trail-2027-01-01_to_2027-01-31.csv"
        )
        assert exports.file_name("activity", until=date(2027, 2, 14)) == "accessgov-activity-to_2027-02-14.csv"


def test_two_unfiltered_exports_of_one_day_have_distinct_names_in_time_order():
    with time_machine.travel(datetime(2027, 3, 1, 9, 0, tzinfo=UTC), tick=False):
        morning = exports.file_name("grants")
    with time_machine.travel(datetime(2027, 3, 1, 17, 30, tzinfo=UTC), tick=False):
        evening = exports.file_name("grants")
    assert morning < evening


def test_the_moment_is_utc_and_safe_in_a_file_name_whatever_the_server_zone(settings):
    settings.TIME_ZONE = "Pacific/Auckland"  # 2027-03-02 03:12 there
    with time_machine.travel(AT, tick=False):
        name = exports.file_name("grants")
    assert name == "accessgov-grants-as_of_2027-03-01T141205Z.csv"
    assert re.fullmatch(r"[A-Za-z0-9._-]+", name)  # no colon: Windows and macOS keep it as is


@pytest.mark.django_db
def test_the_audit_export_is_named_as_of_its_moment_without_until(world):
    with time_machine.travel(AT, tick=False):
        auditor = verify_session(Client(), world.auditor)
        unfiltered = auditor.get(reverse("audit_export"))
        since = auditor.get(reverse("audit_export"), {"since": "2027-02-01"})
        period = auditor.get(reverse("audit_export"), {"since": "2027-01-01", "until": "2027-03-31"})
    assert (
        unfiltered["Content-Disposition"] == 'attachment; filename="accessgov-audit-trail-as_of_2027-03-01T141205Z.csv"'
    )
    assert since["Content-Disposition"].endswith(
        'filename="accessgov-audit-trail-from_2027-02-01-as_of_2027-03-01T141205Z.csv"'
    )
    assert period["Content-Disposition"].endswith('filename="accessgov-audit-trail-2027-01-01_to_2027-03-31.csv"')
