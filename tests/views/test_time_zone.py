"""The person's own time zone (issue 18, item 8): shown on every page with the UTC instant on hover, typed
in date-time pickers and read in that zone (daylight-saving switches included), exports in UTC, chosen
on a form that refuses unknown zones, and activated per request without a query of its own."""

import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accessgov.forms import EligibilityForm
from accessgov.models import AccessRequest, Grant
from accessgov.services import access_requests as ar
from tests.conftest import verify_session

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)  # 10:00 in Berlin (CET, UTC+1)


@pytest.fixture(autouse=True)
def _at_t0():
    with time_machine.travel(T0, tick=False):
        yield


@pytest.fixture
def berliner(world):
    world.requester.time_zone = "Europe/Berlin"
    world.requester.save(update_fields=["time_zone"])
    return world.requester


def _grant(world):
    access_request = ar.access_request_submit(
        world.requester, role=world.role, duration=timedelta(hours=1), justification="Investigating INC-77"
    )
    ar.access_request_approve(world.approver, access_request.pk)
    return Grant.objects.get(access_request=access_request)


def test_pages_show_times_in_the_persons_zone_with_the_utc_instant_on_hover(world, berliner):
    grant = _grant(world)
    html = verify_session(Client(), berliner).get(reverse("grant_detail", args=[grant.pk])).content.decode()
    assert (
        '<time datetime="2026-11-02T10:00:00Z" title="2026-11-02 10:00:00 UTC">2026-11-02 11:00:00 CET</time>' in html
    )
    # Someone without a zone sees UTC, named.
    other = verify_session(Client(), world.approver).get(reverse("grant_detail", args=[grant.pk])).content.decode()
    assert (
        '<time datetime="2026-11-02T10:00:00Z" title="2026-11-02 10:00:00 UTC">2026-11-02 10:00:00 UTC</time>' in other
    )


def test_the_zone_costs_no_query_of_its_own(world, berliner):
    _grant(world)
    counts = []
    for zone in ("", "Europe/Berlin"):
        berliner.time_zone = zone
        berliner.save(update_fields=["time_zone"])
        client = verify_session(Client(), berliner)
        client.get(reverse("my_access"))  # warm caches (session, content types)
        with CaptureQueriesContext(connection) as queries:
            assert client.get(reverse("my_access")).status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1]


def test_a_datetime_typed_in_the_persons_zone_is_stored_as_that_instant_and_shown_back(world, berliner):
    client = verify_session(Client(), berliner)
    form = client.get(reverse("request_new")).content.decode()
    assert 'type="datetime-local"' in form and 'name="starts_at"' in form
    data = {
        "role": world.role.pk,
        "duration": "1h",
        "starts_at": "2026-11-02T12:00",
        "justification": "Planned migration OPS-1",
        "ticket": "OPS-1",
    }
    # An error elsewhere keeps the typed time; one typed with an offset comes back in the person's zone.
    refused = client.post(reverse("request_new"), {**data, "starts_at": "2026-11-02T11:00Z", "justification": ""})
    assert refused.status_code == 400
    assert re.search(r'name="starts_at" value="2026-11-02T12:00"', refused.content.decode())
    assert client.post(reverse("request_new"), data).status_code == 302
    access_request = AccessRequest.objects.get()
    assert access_request.starts_at == datetime(2026, 11, 2, 11, 0, tzinfo=UTC)
    detail = client.get(reverse("request_detail", args=[access_request.pk])).content.decode()
    assert "2026-11-02 12:00" in detail and 'title="2026-11-02 11:00' in detail


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("2026-03-29T01:59", datetime(2026, 3, 29, 0, 59, tzinfo=UTC)),  # CET, just before the switch
        ("2026-03-29T03:00", datetime(2026, 3, 29, 1, 0, tzinfo=UTC)),  # CEST, just after
        ("2026-10-25T02:30+01:00", datetime(2026, 10, 25, 1, 30, tzinfo=UTC)),  # the second 02:30, by offset
        ("2026-10-25T02:30+02:00", datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),  # the first one
        ("2026-10-25T01:30Z", datetime(2026, 10, 25, 1, 30, tzinfo=UTC)),
    ],
)
def test_berlin_times_around_the_daylight_saving_switches_are_read_as_the_right_instant(world, typed, expected):
    with timezone.override("Europe/Berlin"):
        form = EligibilityForm(
            {"role": world.role.pk, "user": world.outsider.pk, "ends_at": typed, "reason": "x"}, system=world.system
        )
        assert form.is_valid(), form.errors
    assert form.cleaned_data["ends_at"] == expected


@pytest.mark.parametrize("typed", ["2026-03-29T02:30", "2026-10-25T02:30"])
def test_a_berlin_time_that_does_not_exist_or_happens_twice_is_a_form_error_that_says_so(world, typed):
    with timezone.override("Europe/Berlin"):
        form = EligibilityForm(
            {"role": world.role.pk, "user": world.outsider.pk, "ends_at": typed, "reason": "x"}, system=world.system
        )
        assert not form.is_valid()
    assert "daylight-saving" in form.errors["ends_at"][0] and "Europe/Berlin" in form.errors["ends_at"][0]


def _zone_after(client, user, data: dict, status: int) -> str:
    """POST ``data`` to the time zone form, check the answer's status, and return the zone then saved."""
    assert client.post(reverse("accounts:time_zone"), data).status_code == status
    user.refresh_from_db()
    return user.time_zone


def test_the_time_zone_form_refuses_an_unknown_zone_and_saves_a_known_one(world):
    client = verify_session(Client(), world.requester)
    page = client.get(reverse("accounts:time_zone"))
    assert page.status_code == 200 and "data-browser-zone" in page.content.decode()
    refused = client.post(reverse("accounts:time_zone"), {"time_zone": "Mars/Olympus_Mons"})
    assert refused.status_code == 400 and "not a time zone this system knows" in refused.content.decode()
    assert _zone_after(client, world.requester, {"time_zone": "America/New_York"}, 302) == "America/New_York"
    # Emptied, as the help says: UTC, chosen — the browser's zone does not fill it back on the next page.
    assert _zone_after(client, world.requester, {"time_zone": ""}, 302) == "UTC"
    assert "data-time-zone-url" not in client.get(reverse("home")).content.decode()
    assert _zone_after(client, world.requester, {"time_zone": "Europe/Paris", "auto": "1"}, 204) == "UTC"


def test_the_browser_fills_an_empty_zone_once_and_never_overrides_a_choice(world):
    client = verify_session(Client(), world.approver)
    home = client.get(reverse("home")).content.decode()
    assert f'data-time-zone-url="{reverse("accounts:time_zone")}"' in home and "js/time-zone.js" in home
    assert _zone_after(client, world.approver, {"time_zone": "Asia/Tokyo", "auto": "1"}, 204) == "Asia/Tokyo"
    assert "data-time-zone-url" not in client.get(reverse("home")).content.decode()
    assert _zone_after(client, world.approver, {"time_zone": "Europe/Paris", "auto": "1"}, 204) == "Asia/Tokyo"
    bad = client.post(reverse("accounts:time_zone"), {"time_zone": "Nowhere/Else", "auto": "1"})
    assert bad.status_code == 400


def test_exports_stay_in_utc_whatever_the_persons_zone(world):
    _grant(world)
    world.auditor.time_zone = "Europe/Berlin"
    world.auditor.save(update_fields=["time_zone"])
    response = verify_session(Client(), world.auditor).get(reverse("audit_export"))
    body = b"".join(response.streaming_content).decode() if response.streaming else response.content.decode()
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(body.lstrip("\ufeff"))))
    assert rows and {row["occurred_at"] for row in rows} == {"2026-11-02T09:00:00Z"}


def test_the_admin_shows_times_with_their_zone(world, make_user):
    admin = make_user("admin1", is_staff=True, is_superuser=True, time_zone="Europe/Berlin")
    grant = _grant(world)
    html = (
        verify_session(Client(), admin).get(reverse("admin:accessgov_grant_change", args=[grant.pk])).content.decode()
    )
    assert "2026-11-02 10:00 CET" in html


def test_the_admin_eligibility_form_uses_a_picker_in_the_admins_zone(world, make_user):
    from accessgov.models import ChangeRequest
    from accessgov.services import changes
    from tests.support.admin_forms import post_admin_form

    first = make_user("admin1", is_staff=True, is_superuser=True, time_zone="Europe/Berlin")
    second = make_user("admin2", is_staff=True, is_superuser=True)
    client = verify_session(Client(), first)
    add_url = reverse("admin:accessgov_eligibility_add")
    page = client.get(add_url).content.decode()
    assert 'type="datetime-local"' in page and 'name="ends_at"' in page
    response = post_admin_form(
        client,
        add_url,
        "eligibility_form",
        role=world.role.pk,
        user=world.outsider.pk,
        reason="Joins on-call",
        starts_at="2026-11-02T10:00:00",
        ends_at="2026-12-01T09:30:00",
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    changes.change_approve(second, ChangeRequest.objects.get().pk)
    from accessgov.models import Eligibility

    eligibility = Eligibility.objects.get(user=world.outsider)
    assert eligibility.ends_at == datetime(2026, 12, 1, 8, 30, tzinfo=UTC)  # 09:30 CET
    assert eligibility.starts_at == datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
