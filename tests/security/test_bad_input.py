"""Bad input gets a clear error, never a 500 (issue 14, items 13-21): durations in every form, NULs
anywhere in a request, invalid and far-out filters on pages and exports, API bodies that are too big or
too deep, review comments and due dates, ticket rules in ASCII, and the admin for people without admin
rights. Each test also checks that nothing was written. The property-based fuzz is tests/security/test_fuzz.py."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.test import Client
from django.urls import reverse

from accessgov import policies
from accessgov.exceptions import PolicyViolation
from accessgov.forms import parse_duration
from accessgov.models import AccessEvent, AccessRequest, Eligibility, Grant, ReviewCampaign, ReviewItem
from accessgov.services import access_requests as ar
from accessgov.services import reviews
from accessgov_cli import main as cli
from tests.conftest import verify_session
from tests.support.api_helpers import make_token

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
    client = api(scene.requester)  # made first: the token records its own token.created
    before = counts()
    response = client.post(
        "/api/v1/requests/",
        {"role_id": scene.role_two.pk, "duration_seconds": value, "justification": JUSTIFICATION},
        content_type="application/json",
    )
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "invalid"
    assert "duration_seconds" in response.json()["error"]["fields"]
    assert counts() == before


# --- NUL bytes: PostgreSQL refuses them in text; the portal answers 400 before anything reads them ----


@pytest.mark.parametrize(
    ("persona", "path"),
    [
        ("auditor", "/audit/changes/?model=%00"),
        ("auditor", "/audit/?actor=a%00b"),
        ("auditor", "/audit/export.csv?actor=%00"),
        ("auditor", "/reports/access/?user=%00"),
        ("auditor", "/grants/?user=%00"),
        ("approver", "/approvals/?risk=%00"),
        ("requester", "/requests/new/?role=%00"),
        ("requester", "/?%00=1"),
    ],
)
def test_a_nul_in_a_query_string_is_a_400(scene, persona, path):
    before = counts()
    response = as_(getattr(scene, persona)).get(path)
    assert response.status_code == 400, response.content[:300]
    assert "NUL" in response.content.decode()
    assert counts() == before


@pytest.mark.parametrize(
    ("persona", "url", "data"),
    [
        ("approver", "request_approve", {"comment": "ok\x00"}),
        ("approver", "request_deny", {"comment": "no\x00"}),
        ("requester", "request_new", {"role": "1", "duration": "1h", "justification": JUSTIFICATION + "\x00"}),
        ("owner", "review_item_decide", {"decision": "revoke", "comment": "Left\x00the team"}),
        ("auditor", "review_new", {"name": "Q\x00"}),
    ],
)
def test_a_nul_in_a_form_field_is_a_400_and_nothing_is_written(scene, persona, url, data):
    campaign = reviews.review_campaign_create(
        scene.auditor, name="Q1 review", systems=[scene.system], due_at=T0 + timedelta(days=14)
    )
    args = {
        "request_approve": [scene.pending.pk],
        "request_deny": [scene.pending.pk],
        "review_item_decide": [campaign.items.order_by("pk").first().pk],
    }.get(url, [])
    before = counts()
    response = as_(getattr(scene, persona)).post(reverse(url, args=args), data)
    assert response.status_code == 400, response.content[:300]
    assert counts() == before
    assert not ReviewItem.objects.exclude(comment="").exists()


def test_a_nul_in_the_sign_in_form_or_the_session_cookie_is_a_400(scene):
    client = Client(raise_request_exception=False)
    response = client.post(reverse("accounts:login"), {"username": "requester\x00", "password": "x"})
    assert response.status_code == 400
    client.cookies["accessgov_session"] = "abcdefghijkl\x00mnop"
    assert client.get("/").status_code == 400
    client = Client(raise_request_exception=False, headers={"User-Agent": "curl\x00"})
    assert client.post(reverse("accounts:login"), {"username": "requester", "password": "x"}).status_code == 400


@pytest.mark.parametrize(
    ("data", "status"),
    [({"justification": "a" * 3_000_000}, 413), ({f"field{i}": "x" for i in range(1500)}, 400)],
)
def test_a_form_post_over_the_limits_is_a_4xx_page_not_a_500(scene, data, status):
    before = counts()
    response = as_(scene.requester).post(reverse("request_new"), data)
    assert response.status_code == status
    assert "Bad request" in response.content.decode()
    assert counts() == before


# --- 16. API bodies and query parameters --------------------------------------------------------


def _api_error(response, status: int) -> dict:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"] == "application/json"
    return response.json()["error"]


def test_an_api_body_over_the_limit_is_413_in_the_api_error_format(scene):
    client = api(scene.requester)  # made first: the token records its own token.created
    before = counts()
    body = b'{"role_id": 1, "duration_seconds": 3600, "justification": "' + b"a" * 3_000_000 + b'"}'
    response = client.post("/api/v1/requests/", body, content_type="application/json")
    error = _api_error(response, 413)
    assert error["code"] == "too_large" and "2.5 MB" in error["message"]
    assert counts() == before


@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"a":' * 100_000, b"[" * 5000 + b"]" * 5000])
def test_deeply_nested_json_is_a_400_in_the_api_error_format(scene, body):
    client = api(scene.requester)  # made first: the token records its own token.created
    before = counts()
    response = client.post("/api/v1/requests/", body, content_type="application/json")
    error = _api_error(response, 400)
    assert error["code"] == "parse_error"
    assert counts() == before


@pytest.mark.parametrize(
    "body",
    [
        b'{"role_id": 1, "role_id": 2, "duration_seconds": 3600, "justification": "twice"}',
        b'{"role_id": 1, "duration_seconds": 3600, "justification": "x", "ticket": {"a": 1, "a": 2}}',
        b'{"role_id": 1, "duration_seconds": 3600, "justification": "x", "justification": "y"}',
    ],
)
def test_a_key_twice_in_an_api_body_is_a_400_that_names_it(scene, body):
    """A probe's finding: ``{"role": a, "role": b}`` was acted on as b (Python's parser keeps the last key,
    others the first). Refused, saying which key; nothing written."""
    client = api(scene.requester)  # made first: the token records its own token.created
    before = counts()
    response = client.post("/api/v1/requests/", body, content_type="application/json")
    error = _api_error(response, 400)
    assert error["code"] == "parse_error"
    assert "appears twice" in error["message"], error
    assert counts() == before


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/roles/?system=%00",
        "/api/v1/events/?event_type=%00",
        "/api/v1/requests/?status=%00",
        "/api/v1/grants/?%00=1",
        "/api/v1/events/?grant=%C2%B2",
        "/api/v1/events/?access_request=%EF%BC%91",
    ],
)
def test_a_nul_or_a_unicode_digit_in_an_api_query_parameter_is_a_400_in_the_api_error_format(scene, path):
    assert _api_error(api(scene.auditor).get(path), 400)["code"] in ("invalid", "policy_violation")


def test_a_nul_in_an_api_body_is_a_400_and_nothing_is_written(scene):
    client = api(scene.approver)  # made first: the token records its own token.created
    before = counts()
    response = client.post(
        f"/api/v1/requests/{scene.pending.pk}/deny/", {"comment": "no\x00"}, content_type="application/json"
    )
    assert _api_error(response, 400)["code"] == "invalid"
    assert counts() == before


# --- 14, 20. The audit trail and its export: filters that do not parse are named, never a 500 --------

INVALID_AUDIT_FILTERS = [
    ("grant=x", "Grant #"),
    ("access_request=1.5", "Request #"),
    ("grant=99999999999999999999", "Grant #"),
    ("grant=%C2%B2", "Grant #"),
    ("since=x", "From (UTC)"),
    ("since=02/03/2026", "From (UTC)"),
    ("until=9999-12-31", "Until (UTC, inclusive)"),
    ("since=0001-01-01", "From (UTC)"),
    ("system=x", "System"),
    ("system=-1", "System"),
    ("event_type=nope", "Event"),
]


@pytest.mark.parametrize(("query", "label"), INVALID_AUDIT_FILTERS)
def test_the_audit_export_with_an_invalid_filter_is_a_400_naming_it_and_records_nothing(scene, query, label):
    before = counts()
    response = as_(scene.auditor).get(f"{reverse('audit_export')}?{query}")
    assert response.status_code == 400, response.content[:300]
    assert response["Content-Type"].startswith("text/plain")
    assert label in response.content.decode()
    assert counts() == before  # no export event for a file that was not made


@pytest.mark.parametrize(("query", "label"), INVALID_AUDIT_FILTERS)
def test_the_audit_trail_shows_why_a_filter_does_not_parse_instead_of_no_events(scene, query, label):
    response = as_(scene.auditor).get(f"{reverse('audit_trail')}?{query}")
    assert response.status_code == 400, response.content[:300]
    page = response.content.decode()
    assert 'class="error"' in page and "No events match" not in page
    assert "Fix the filters" in page


def test_a_valid_audit_filter_still_finds_its_events(scene):
    query = f"grant={scene.grant.pk}&since=2026-03-02&until=2026-03-02"
    page = as_(scene.auditor).get(f"{reverse('audit_trail')}?{query}").content.decode()
    assert f"grant #{scene.grant.pk}" in page
    export = as_(scene.auditor).get(f"{reverse('audit_export')}?{query}")
    assert export.status_code == 200 and b"grant.activated" in b"".join(export.streaming_content)


@pytest.mark.parametrize("query", ["system=x", "role=%C2%B2", "role=99999999999999999999", "status=nope"])
def test_the_grants_list_shows_why_a_filter_does_not_parse(scene, query):
    response = as_(scene.auditor).get(f"{reverse('grants_list')}?{query}")
    assert response.status_code == 400
    assert 'class="error"' in response.content.decode()


# --- 15. Reports: far dates are a form error on the page and in the CSV ---------------------------

REPORTS = ["report_access", "report_approvals", "report_break_glass", "report_denied"]


@pytest.mark.parametrize("query", ["until=9999-12-31", "since=9999-12-31", "since=0001-01-01", "until=3000-01-01"])
@pytest.mark.parametrize("report", REPORTS)
def test_reports_and_their_csv_refuse_far_dates_with_a_form_error(scene, report, query):
    before = counts()
    page = as_(scene.auditor).get(f"{reverse(report)}?{query}")
    assert page.status_code == 400 and "Enter a date between 2000-01-01 and 2999-12-31" in page.content.decode()
    export = as_(scene.auditor).get(f"{reverse(report + '_export')}?{query}")
    assert export.status_code == 400 and "Enter a date between" in export.content.decode()
    assert counts() == before


@pytest.mark.parametrize("report", REPORTS)
def test_reports_still_take_the_last_day_of_the_range(scene, report):
    assert as_(scene.auditor).get(f"{reverse(report)}?since=2000-01-01&until=2999-12-31").status_code == 200
    export = as_(scene.auditor).get(f"{reverse(report + '_export')}?since=2000-01-01&until=2999-12-31")
    assert export.status_code == 200


@pytest.mark.parametrize(
    ("persona", "method", "path", "data"),
    [
        ("requester", "get", "/requests/new/?role=%C2%B2", None),
        ("requester", "get", "/requests/new/?role=99999999999999999999", None),
        ("auditor", "get", "/audit/?before=%C2%B2", None),
        ("auditor", "get", "/audit/changes/?before=%C2%B2", None),
        ("requester", "get", "/grants/?before=%C2%B2", None),
    ],
)
def test_ids_in_query_strings_are_read_in_ascii_digits_only(scene, persona, method, path, data):
    response = getattr(as_(getattr(scene, persona)), method)(path)
    assert response.status_code == 200, response.content[:300]


@pytest.mark.parametrize("system", ["%C2%B2", "99999999999999999999"])
def test_the_approver_queue_filter_names_an_id_that_is_not_ascii_digits_within_bigint(scene, system):
    # The queue's filters validate like every list's (issue 18): the page says what is wrong instead of
    # silently showing everything.
    response = as_(scene.approver).get(f"/approvals/?system={system}")
    assert response.status_code == 400 and "Enter" in response.content.decode()
    assert response.context["items"] == []


def test_review_bulk_keep_ignores_ids_that_are_not_ascii_numbers(scene):
    campaign = reviews.review_campaign_create(
        scene.auditor, name="Q1 review", systems=[scene.system], due_at=T0 + timedelta(days=14)
    )
    url = reverse("review_bulk_keep", args=[campaign.pk])
    response = as_(scene.owner).post(url, {"items": ["\u00b2", "99999999999999999999", "x"], "confirm": "yes"})
    assert response.status_code == 400 and "Select at least one" in response.content.decode()
    assert not campaign.items.exclude(decision="").exists()


@pytest.mark.parametrize("code", ["\u00b2" * 6, "\uff11" * 6, "\u0661\u0662\u0663\u0664\u0665\u0666"])
def test_a_code_in_unicode_digits_is_refused_at_the_otp_step_and_the_step_up(scene, code):
    client = Client(raise_request_exception=False)
    client.post(reverse("accounts:login"), {"username": "requester", "password": "correct horse battery staple"})
    response = client.post(reverse("accounts:otp"), {"otp_token": code})
    assert response.status_code == 200 and "Enter the 6 digits" in response.content.decode()
    scene.role.step_up_required = True
    scene.role.save()
    response = as_(scene.approver).post(reverse("request_approve", args=[scene.pending.pk]), {"otp_token": code})
    assert response.status_code == 403 and "Enter the 6 digits" in response.content.decode()
    scene.pending.refresh_from_db()
    assert scene.pending.status == "pending"


# --- 17, 18. Review decisions and due dates -------------------------------------------------------


@pytest.fixture
def campaign(scene):
    return reviews.review_campaign_create(
        scene.auditor, name="Q1 review", systems=[scene.system], due_at=T0 + timedelta(days=14)
    )


def test_a_review_comment_is_capped_like_every_other_reason(scene, campaign):
    item = campaign.items.order_by("pk").first()
    before = counts()
    response = as_(scene.owner).post(
        reverse("review_item_decide", args=[item.pk]), {"decision": "revoke", "comment": "x" * 1_000_000}
    )
    assert response.status_code == 400 and "at most 2000 characters" in response.content.decode()
    with pytest.raises(PolicyViolation, match="at most 2000 characters"):
        reviews.review_item_decide(scene.owner, item.pk, decision="keep", comment="y" * 2001)
    assert counts() == before
    item.refresh_from_db()
    assert item.decision == "" and item.comment == ""
    reviews.review_item_decide(scene.owner, item.pk, decision="revoke", comment="z" * 2000)
    item.refresh_from_db()
    assert item.comment == "z" * 2000


def _review_form(w, due: str) -> dict:
    return {
        "name": "Far review",
        "systems": [w.system.pk],
        "due_at": due,
        "no_response": "revoke",
        "keep_days": "90",
        "grace_days": "2",
        "long_grant_days": "7",
    }


@pytest.mark.parametrize(
    ("due", "message"),
    [
        ("9999-12-31T00:00", "Enter a date between 2000-01-01 and 2999-12-31"),
        ("2999-12-31T00:00", "at most 366 days ahead"),
        ("2027-03-04T09:00", "at most 366 days ahead"),
        ("99999-01-01T00:00", "Enter a valid date/time"),
        ("0001-01-01T00:00", "Enter a date between"),
        ("9999-12-31T23:59:59-12:00", "Enter a date between"),  # found by the fuzz: year 10000 in UTC
        ("0001-01-01T00:00:00+12:00", "Enter a date between"),
    ],
)
def test_a_review_due_date_is_bounded_and_a_far_one_opens_nothing(scene, due, message):
    before = counts()
    response = as_(scene.auditor).post(reverse("review_new"), _review_form(scene, due))
    assert response.status_code == 400, response.content[:300]
    assert message in response.content.decode()
    assert counts() == before


def test_the_service_refuses_a_due_date_beyond_a_year_for_every_caller(scene):
    with pytest.raises(PolicyViolation, match="at most 366 days ahead"):
        reviews.review_campaign_create(
            scene.auditor, name="Far", systems=[scene.system], due_at=datetime(9999, 12, 31, tzinfo=UTC)
        )
    campaign = reviews.review_campaign_create(
        scene.auditor, name="Next year", systems=[scene.system], due_at=T0 + timedelta(days=366)
    )
    assert as_(scene.auditor).get(reverse("review_detail", args=[campaign.pk])).status_code == 200
    assert as_(scene.owner).get(reverse("reviews")).status_code == 200


# --- 19. Ticket rules match ASCII -----------------------------------------------------------------


@pytest.fixture
def ticket_role(scene):
    from tests.support.factories import RoleFactory

    role = RoleFactory(system=scene.system, name="ops", ticket_required=True, ticket_pattern=r"[A-Z]+-\d+")
    Eligibility.objects.create(role=role, user=scene.requester, starts_at=datetime(2020, 1, 1, tzinfo=UTC))
    return role


@pytest.mark.parametrize("ticket", ["OPS-\u0661\u0662", "OPS-\uff11\uff12", "\uff2f\uff30\uff33-12", "OPS-12\u00b2"])
def test_a_ticket_rule_matches_ascii_only_on_the_page_and_the_api(scene, ticket_role, ticket):
    data = {"role": ticket_role.pk, "duration": "1h", "justification": JUSTIFICATION, "ticket": ticket}
    response = as_(scene.requester).post(reverse("request_new"), data)
    assert response.status_code == 400 and "The ticket must look like" in response.content.decode()
    response = api(scene.requester).post(
        "/api/v1/requests/",
        {"role_id": ticket_role.pk, "duration_seconds": 3600, "justification": JUSTIFICATION, "ticket": ticket},
        content_type="application/json",
    )
    assert _api_error(response, 400)["code"] == "policy_violation"
    assert not AccessRequest.objects.filter(role=ticket_role, status="pending").exists()
    with pytest.raises(PolicyViolation, match="The ticket must look like"):
        policies.validate_ticket(ticket_role, ticket)
    policies.validate_ticket(ticket_role, "OPS-12")


def test_a_ticket_rule_that_does_not_compile_is_a_clear_refusal_and_cannot_be_saved_in_the_admin(
    scene, ticket_role, make_user
):
    from tests.support.admin_forms import post_admin_form

    ticket_role.ticket_pattern = "[A-Z"
    ticket_role.save()
    data = {"role": ticket_role.pk, "duration": "1h", "justification": JUSTIFICATION, "ticket": "OPS-1"}
    response = as_(scene.requester).post(reverse("request_new"), data)
    assert response.status_code == 400 and "ticket rule" in response.content.decode()
    admin = make_user("admin1", is_staff=True, is_superuser=True)
    url = reverse("admin:accessgov_role_change", args=[ticket_role.pk])
    response = post_admin_form(as_(admin), url, "role_form", ticket_pattern="(unclosed")
    assert response.status_code == 200 and "This is not a regular expression" in response.content.decode()


def test_a_ticket_rule_cannot_make_a_request_backtrack_and_one_re2_cannot_read_is_refused(
    scene, ticket_role, make_user
):
    """Rules are matched by RE2 in linear time: the classic catastrophic rule answers at once; a rule with
    a back-reference or a look-around (which only a backtracking engine runs) cannot be saved."""
    import time

    from tests.support.admin_forms import post_admin_form

    ticket_role.ticket_pattern = "(a+)+$"
    ticket_role.save()
    started = time.perf_counter()
    with pytest.raises(PolicyViolation, match="The ticket must look like"):
        policies.validate_ticket(ticket_role, "a" * 100 + "!")  # Python's re: ~2**100 steps
    assert time.perf_counter() - started < 0.5
    admin = make_user("admin1", is_staff=True, is_superuser=True)
    url = reverse("admin:accessgov_role_change", args=[ticket_role.pk])
    for pattern in (r"(OPS)-\1", r"(?=OPS)[A-Z]+-\d+"):
        response = post_admin_form(as_(admin), url, "role_form", ticket_pattern=pattern)
        assert response.status_code == 200 and "back-references and look-arounds" in response.content.decode()
    assert policies.ticket_example(r"[A-Z]+-\d+") == "OPS-123"


@pytest.mark.parametrize(
    "field,value",
    [
        ("max_duration", "999999999 00:00:00"),  # "now + the maximum" overflowed at every extension
        ("max_duration", "367 00:00:00"),
        ("default_duration", "00:00:00"),
        # Below the shortest request (5 min): the request form then refused even the role's default.
        ("default_duration", "00:02:00"),
        ("max_duration", "00:04:59"),
        ("pending_timeout", "-1 00:00:00"),
        ("pending_timeout", "00:00:00"),
        ("approvals_required", ARABIC_INDIC_12[0]),
        ("approvals_required", "1.0"),
    ],
)
def test_a_role_policy_out_of_bounds_is_a_form_error_not_a_proposal(scene, make_user, field, value):
    from accessgov.models import ChangeRequest
    from tests.support.admin_forms import post_admin_form

    admin = make_user("admin1", is_staff=True, is_superuser=True)
    url = reverse("admin:accessgov_role_change", args=[scene.role.pk])
    response = post_admin_form(as_(admin), url, "role_form", **{field: value})
    assert response.status_code == 200, response.status_code
    assert "errorlist" in response.content.decode()
    assert not ChangeRequest.objects.exists()


def test_an_extension_of_a_role_saved_with_a_huge_maximum_is_still_no_500(scene):
    """A maximum saved before roles were bounded (now + it is past year 9999): approving an extension moved the
    grant's end to min(end + asked, now + maximum), which overflowed."""
    from accessgov.models import Role

    # Saved before the bound; now + it is past year 9999.
    Role.objects.filter(pk=scene.role_two.pk).update(max_duration=timedelta(days=3_000_000))
    response = as_(scene.requester).post(
        reverse("grant_extend", args=[scene.grant.pk]), {"duration": "1h", "justification": JUSTIFICATION}
    )
    assert response.status_code == 302, response.status_code
    extension = AccessRequest.objects.get(extends_grant=scene.grant)
    ends = scene.grant.expires_at
    ar.access_request_approve(scene.approver, extension.pk)
    ar.access_request_approve(scene.approver2, extension.pk)
    scene.grant.refresh_from_db()
    assert scene.grant.expires_at == ends + H


@pytest.mark.parametrize(
    "config",
    [
        "[" * 5000 + "]" * 5000,
        "1" * 5000,
        '{"a": 1e999}',
        '{"a": NaN}',
        '{"a": "\\u0000"}',
        '{"a": "\\ud800"}',
        '{"\\u0000": 1}',
    ],
    ids=["deep", "long-number", "infinity", "nan", "nul", "surrogate", "nul-key"],
)
def test_connector_settings_that_jsonb_cannot_hold_are_a_form_error(scene, make_user, config):
    from accessgov.models import ChangeRequest
    from tests.support.admin_forms import post_admin_form

    admin = make_user("admin1", is_staff=True, is_superuser=True)
    url = reverse("admin:accessgov_system_change", args=[scene.system.pk])
    response = post_admin_form(as_(admin), url, "system_form", connector_config=config)
    assert response.status_code == 200, response.status_code
    assert "This JSON cannot be stored" in response.content.decode()
    assert not ChangeRequest.objects.exists()


def test_an_oversized_reason_is_refused_where_it_would_enter_the_ledger(scene, make_user):
    from accessgov.models import ChangeRequest
    from accessgov.services import changes

    before = AccessEvent.objects.count()
    owner = make_user("owner1")
    from guardian.shortcuts import assign_perm

    assign_perm("accessgov.own_system", owner, scene.system)
    eligibility = Eligibility.objects.filter(user=scene.requester).first()
    response = as_(owner).post(
        reverse("eligibility_end", args=[eligibility.pk]), {"confirm": "yes", "reason": "x" * 100_000}
    )
    assert response.status_code == 400 and "at most 2,000 characters" in response.content.decode()
    eligibility.refresh_from_db()
    assert eligibility.ends_at is None
    first, second = (
        make_user("admin1", is_staff=True, is_superuser=True),
        make_user("admin2", is_staff=True, is_superuser=True),
    )
    change = changes.change_propose_account_recovery(first, user=scene.requester, remove_authenticators=True)
    response = as_(second).post(reverse("change_reject", args=[change.pk]), {"comment": "y" * 100_000})
    assert response.status_code == 400
    assert ChangeRequest.objects.get(pk=change.pk).status == "pending"
    assert AccessEvent.objects.count() == before + 1  # the proposal only
    assert not any(len(reason) > 2000 for reason in AccessEvent.objects.values_list("reason", flat=True))


@pytest.mark.parametrize(
    "query",
    [
        "occurred_at__year=9999999999999999999999",
        "occurred_at__year=9999",  # the year after is 10000
        "occurred_at__year=2026&occurred_at__month=13",
        "occurred_at__year=2026&occurred_at__month=2&occurred_at__day=%C2%B2",
        "occurred_at__year=%D9%A2%D9%A0%D9%A2%D9%A6",
    ],
)
def test_the_admin_date_drill_down_answers_400_for_a_day_no_list_holds(scene, make_user, query):
    admin = make_user("admin1", is_staff=True, is_superuser=True)
    client = as_(admin)
    for path in ("/admin/accessgov/accessevent/", "/admin/accessgov/accessrequest/", "/admin/auditlog/logentry/"):
        response = client.get(f"{path}?{query}".replace("occurred_at", _hierarchy(path)))
        assert response.status_code == 400, (path, response.status_code)
    assert client.get("/admin/accessgov/accessevent/?occurred_at__year=2026&occurred_at__month=3").status_code == 200


def _hierarchy(path: str) -> str:
    return {"accessevent": "occurred_at", "accessrequest": "created_at", "logentry": "timestamp"}[path.split("/")[3]]


def test_unicode_digits_do_not_name_a_role_or_a_number_of_days(scene, make_user):
    role_id = str(scene.role_two.pk)
    arabic = "".join(chr(0x0660 + int(d)) for d in role_id)
    data = {"role": arabic, "duration": "1h", "justification": JUSTIFICATION}
    response = as_(scene.requester).post(reverse("request_new"), data)
    assert response.status_code == 400
    assert not AccessRequest.objects.filter(role=scene.role_two, status="pending").exists()


# --- 21. The admin for signed-in people without admin rights ---------------------------------------


@pytest.mark.parametrize("path", ["/admin/", "/admin/accessgov/role/", "/admin/login/?next=/admin/"])
def test_a_signed_in_person_without_admin_rights_gets_403_from_the_admin_not_a_redirect_loop(scene, path):
    response = as_(scene.requester).get(path, follow=True)
    assert response.status_code == 403
    assert len(response.redirect_chain) <= 1
    assert "admin" in response.content.decode().lower()


def test_the_admin_still_opens_for_staff_and_sends_others_to_sign_in(scene, make_user):
    admin = make_user("admin1", is_staff=True, is_superuser=True)
    assert as_(admin).get("/admin/").status_code == 200
    assert as_(admin).get("/admin/login/?next=/admin/").url == "/admin/"
    anonymous = Client().get("/admin/", follow=True)
    assert anonymous.redirect_chain[-1][0].startswith(reverse("accounts:login"))
    password_only = Client()
    password_only.post(reverse("accounts:login"), {"username": "requester", "password": "correct horse battery staple"})
    assert password_only.get("/admin/").url.startswith(reverse("accounts:otp"))


# --- Found by the fuzz ----------------------------------------------------------------------------


@pytest.mark.parametrize("next_url", ["\u00b2", "foo", "admin:index", "home"])
def test_a_next_parameter_that_is_not_a_path_leads_home_instead_of_a_500(scene, next_url):
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from tests.conftest import totp_code

    client = as_(scene.requester)
    assert client.get(reverse("accounts:login"), {"next": next_url}).url == "/"
    code = totp_code(TOTPDevice.objects.get(user=scene.requester))
    response = client.post(f"{reverse('accounts:step_up')}?next={next_url}", {"otp_token": code, "next": next_url})
    assert response.status_code == 302 and response.url == "/"


def test_a_user_name_longer_than_any_account_is_a_form_error_at_sign_in_not_a_500(scene):
    from axes.models import AccessAttempt

    response = Client(raise_request_exception=False).post(
        reverse("accounts:login"), {"username": "a" * 3000, "password": "x"}
    )
    assert response.status_code == 200 and "at most 150 characters" in response.content.decode()
    assert not AccessAttempt.objects.exists()


# --- The wrong method --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, args",
    [
        ("grant_release", "grant"),
        ("grant_revoke", "grant"),
        ("request_cancel", "pending"),
        ("approvals_bulk_decide", None),
    ],
)
def test_a_link_to_an_action_is_a_405_that_says_why_and_changes_nothing(scene, name, args):
    url = reverse(name, args=[getattr(scene, args).pk] if args else [])
    events = AccessEvent.objects.count()
    response = as_(scene.requester).get(url)
    page = response.content.decode()
    assert response.status_code == 405 and response["Allow"] == "POST"
    assert "This link only works as a button" in page and "nothing was done" in page
    assert "This address takes POST, not GET." in page
    assert "Sign out" in page  # the product's page, signed in, not an empty body
    above = {"grant_release": "grant", "grant_revoke": "grant", "request_cancel": "pending"}
    page_above = (
        reverse("grant_detail" if args == "grant" else "request_detail", args=[getattr(scene, args).pk])
        if name in above
        else reverse("approvals")
    )
    assert f'href="{page_above}">Go to the page</a>' in page
    assert AccessEvent.objects.count() == events


def test_the_wrong_method_in_json_is_the_api_error_format(scene):
    response = as_(scene.requester).get(reverse("grant_release", args=[scene.grant.pk]), HTTP_ACCEPT="application/json")
    assert response.status_code == 405 and response["Allow"] == "POST"
    assert response.json()["error"] == {
        "code": "method_not_allowed",
        "message": "This address takes POST, not GET. It carries out an action: use the button on the page that offers it.",
    }


def test_the_api_keeps_its_own_405_body(scene):
    _, secret = make_token(scene.requester)
    response = Client().delete("/api/v1/requests/", HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert response.status_code == 405
    assert response.json()["error"] == {"code": "method_not_allowed", "message": 'Method "DELETE" not allowed.'}
