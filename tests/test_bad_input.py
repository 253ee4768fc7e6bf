"""Bad input gets a clear error, never a 500 (issue 14, items 13-21): durations in every form, NULs
anywhere in a request, invalid and far-out filters on pages and exports, API bodies that are too big or
too deep, review comments and due dates, ticket rules in ASCII, and the admin for people without admin
rights. Each test also checks that nothing was written. The property-based fuzz is tests/test_fuzz.py."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.test import Client
from django.urls import reverse

from accessgov.forms import parse_duration
from accessgov.models import AccessEvent, AccessRequest, Grant, ReviewCampaign, ReviewItem
from accessgov.services import access_requests as ar
from accessgov_cli import main as cli
from tests.api_helpers import make_token
from tests.conftest import verify_session

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
H = timedelta(hours=1)
JUSTIFICATION = "Investigating incident INC-42 on payments"
SUPERSCRIPT_TWO = "\u00b2"  # str.isdigit() is true, int() refuses it
FULLWIDTH_ONE = "\uff11"  # regex \d matches it, int() reads it as 1
ARABIC_INDIC_12 = "\u0661\u0662"


@pytest.fixture(autouse=True)
def _fixed_clock():
    with time_machine.travel(T0, tick=True):
        yield


def as_(user) -> Client:
    """A verified session whose errors come back as answers (a 500 is an answer to assert on)."""
    return verify_session(Client(raise_request_exception=False), user)


def api(user, **kwargs) -> Client:
    _, secret = make_token(user, **kwargs)
    return Client(raise_request_exception=False, headers={"Authorization": f"Bearer {secret}"})


def counts() -> dict[str, int]:
    return {
        "requests": AccessRequest.objects.count(),
        "grants": Grant.objects.count(),
        "events": AccessEvent.objects.count(),
        "campaigns": ReviewCampaign.objects.count(),
        "decided items": ReviewItem.objects.exclude(decision="").count(),
    }


@pytest.fixture
def scene(world):
    """A pending request on the 1-approval role, an active grant on the 2-approval role (both the
    requester's), break-glass allowed on the 1-approval role."""
    world.role.break_glass_allowed = True
    world.role.save()
    world.pending = ar.access_request_submit(world.requester, role=world.role, duration=H, justification=JUSTIFICATION)
    granted = ar.access_request_submit(world.requester, role=world.role_two, duration=H, justification=JUSTIFICATION)
    ar.access_request_approve(world.approver, granted.pk)
    ar.access_request_approve(world.approver2, granted.pk)
    world.grant = Grant.objects.get(access_request=granted)
    return world


# --- 13. Durations ------------------------------------------------------------------------------

BAD_DURATIONS = [
    "99999999999999999999",  # int() fine, timedelta(minutes=...) overflows
    "99999999999h",
    "99999999999d",
    "9999999999999999999999999999999d9999999h",
    SUPERSCRIPT_TWO,
    f"{FULLWIDTH_ONE}h",
    f"{ARABIC_INDIC_12}m",
    "400d",  # readable, but longer than any duration the portal takes
    "1" * 5000,
]


def _duration_posts(w, duration: str) -> dict[str, tuple[Client, str, dict]]:
    return {
        "request": (
            as_(w.requester),
            reverse("request_new"),
            {"role": w.role_two.pk, "duration": duration, "justification": JUSTIFICATION},
        ),
        "extend": (
            as_(w.requester),
            reverse("grant_extend", args=[w.grant.pk]),
            {"duration": duration, "justification": JUSTIFICATION},
        ),
        "approve": (as_(w.approver), reverse("request_approve", args=[w.pending.pk]), {"duration": duration}),
        "break-glass": (
            as_(w.requester),
            reverse("break_glass"),
            {"role": w.role.pk, "duration": duration, "justification": JUSTIFICATION, "otp_token": "123456"},
        ),
    }


@pytest.mark.parametrize("duration", BAD_DURATIONS)
@pytest.mark.parametrize("form", ["request", "extend", "approve", "break-glass"])
def test_a_duration_that_is_not_ascii_digits_or_too_long_is_a_form_error_in_every_form(scene, form, duration):
    client, url, data = _duration_posts(scene, duration)[form]
    before = counts()
    response = client.post(url, data)
    assert response.status_code == 400, response.content[:300]
    page = response.content.decode()
    assert "Write a duration like" in page or "at most 366 days" in page or "at most 32 characters" in page
    assert counts() == before
    scene.pending.refresh_from_db()
    assert scene.pending.status == "pending"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90", timedelta(minutes=90)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        (" 2 H ", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("45min", timedelta(minutes=45)),
        ("366d", timedelta(days=366)),
        ("367d", None),
        ("99999999999999999999", None),
        ("99999999999h", None),
        (SUPERSCRIPT_TWO, None),
        (f"{FULLWIDTH_ONE}h", None),
        (f"{ARABIC_INDIC_12}m", None),
        ("1h\n", timedelta(hours=1)),
        ("", None),
        ("h", None),
    ],
)
def test_the_one_duration_parser_reads_ascii_digits_only_and_is_bounded(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "99999999999999999999h",
        SUPERSCRIPT_TWO,
        f"{FULLWIDTH_ONE}h",
        f"{ARABIC_INDIC_12}m",
        "367d",
        "999999999999999999999",
    ],
)
def test_the_cli_refuses_durations_that_are_not_ascii_or_too_long(text):
    import argparse

    with pytest.raises(argparse.ArgumentTypeError):
        cli.parse_duration(text)


@pytest.mark.parametrize(
    "value", ["\u0661\u0662\u0660\u0660", SUPERSCRIPT_TWO, "3600", 3600.5, True, 10**30, "1e4", None]
)
def test_the_api_takes_a_duration_as_a_json_integer_of_seconds_within_bounds(scene, value):
    before = counts()
    response = api(scene.requester).post(
        "/api/v1/requests/",
        {"role_id": scene.role_two.pk, "duration_seconds": value, "justification": JUSTIFICATION},
        content_type="application/json",
    )
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "invalid"
    assert "duration_seconds" in response.json()["error"]["fields"]
    assert counts() == before
