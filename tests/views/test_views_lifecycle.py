"""The lifecycle pages as each persona sees them: 404 for what they may not see, 403 for what they
may not do, clear messages for bad input, htmx and plain POST both working."""

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from accessgov.exceptions import TransitionNotAllowed
from accessgov.models import AccessEvent, AccessRequest, Eligibility, Grant
from accessgov.services import access_requests as ar
from accessgov.services import grants as gs
from tests.conftest import totp_code, verify_session
from tests.support.requests import submit

pytestmark = pytest.mark.django_db
H = timedelta(hours=1)
T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def as_(user) -> Client:
    return verify_session(Client(), user)


# --- New request -------------------------------------------------------------------------------


def test_new_request_form_offers_only_eligible_roles_with_their_policy(world):
    page = as_(world.requester).get(reverse("request_new")).content.decode()
    assert "Payments DB · read-write" in page
    assert "Payments DB · admin" in page
    assert "allows" not in page  # no error yet
    assert "4 h" in page and "2 h" in page  # max durations beside the roles
    outsider_page = as_(world.outsider).get(reverse("request_new")).content.decode()
    assert "not eligible for any role" in outsider_page


def test_the_chosen_roles_policy_is_right_under_the_role_field(world):
    """A probe's finding: nothing near the field said a ticket was required or the maximum until the form was
    refused (the policy table is far below on a phone). Each role's line is in the page, the chosen one shown
    (the script shows the one chosen later)."""
    page = as_(world.requester).get(reverse("request_new"), {"role": world.role.pk}).content.decode()
    field = page.split('name="role"')[1].split('name="duration"')[0]
    assert (
        "data-role-policies" in page.split('name="role"')[0].rsplit("<select", 1)[1] + page.split('name="role"')[1][:80]
    )
    shown = field.split(f'data-role-policy="{world.role.pk}"')[1].split("</p>")[0]
    assert "hidden" not in shown.split(">")[0] and "at most 4 h" in shown
    other = field.split(f'data-role-policy="{world.role_two.pk}"')[1].split("</p>")[0]
    assert other.split(">")[0].strip().endswith("hidden")


def test_someone_eligible_for_nothing_is_told_whom_to_ask_and_a_system_names_its_owners(world, make_user):
    """A probe's finding: the empty request form and systems list said "ask the owner", and no page named one."""
    admin = make_user("admin", is_staff=True, first_name="Ada", last_name="Admin")
    service = make_user("robot", is_staff=True)
    service.is_service_account = True
    service.save()
    for url in (reverse("request_new"), reverse("system_list")):
        page = as_(world.outsider).get(url).content.decode()
        assert "Ada Admin" in page and "robot" not in page, url
    assert "Ada Admin" not in as_(world.requester).get(reverse("request_new")).content.decode()
    world.owner.email = "owner@example.com"
    world.owner.save()
    page = as_(world.requester).get(reverse("system_detail", args=[world.system.slug])).content.decode()
    assert f"Owners: {world.owner.get_full_name()} (" in page and 'href="mailto:owner@example.com"' in page
    assert admin.pk


def test_new_request_is_submitted_and_shown(world):
    client = as_(world.requester)
    response = client.post(
        reverse("request_new"),
        {"role": world.role.pk, "duration": "1h30m", "justification": "Fix the stuck payout batch", "ticket": ""},
    )
    access_request = AccessRequest.objects.get()
    assert response["Location"] == reverse("request_detail", args=[access_request.pk])
    assert access_request.requested_duration == timedelta(hours=1, minutes=30)
    page = client.get(response["Location"]).content.decode()
    assert "Pending" in page and "Fix the stuck payout batch" in page and "Request submitted" in page


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"duration": "9h"}, "allows at most 4 h"),
        ({"duration": "soon"}, "Write a duration like 30m"),
        ({"justification": ""}, "This field is required"),
        ({"role": "999999"}, "Select a valid choice"),
    ],
)
def test_bad_request_input_gets_a_clear_message_and_nothing_is_written(world, data, message):
    payload = {"role": world.role.pk, "duration": "1h", "justification": "Fix the stuck payout batch", **data}
    response = as_(world.requester).post(reverse("request_new"), payload)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not AccessRequest.objects.exists()


def test_a_refusal_sits_next_to_its_field_an_empty_duration_is_the_roles_default_and_a_duplicate_links_the_first(
    world,
):
    """A probe's findings on the request form: policy errors only in a banner, no default, a dead-end duplicate."""
    client = as_(world.requester)
    payload = {"role": world.role.pk, "duration": "9h", "justification": "Fix the stuck payout batch"}
    page = client.post(reverse("request_new"), payload).content.decode()
    error = page.split('id="id_duration_error"')[1][:200]
    assert "allows at most 4 h" in error and 'class="form-errors"' not in page
    for zero in ("0m", "0", "0h0m", "0d"):  # zero is a duration, refused, not an empty field (was the default hour)
        page = client.post(reverse("request_new"), {**payload, "duration": zero}).content.decode()
        assert "longer than zero" in page.split('id="id_duration_error"')[1][:200], zero
    assert not AccessRequest.objects.exists()
    response = client.post(reverse("request_new"), {**payload, "duration": ""})
    first = AccessRequest.objects.get()
    assert response.status_code == 302 and first.requested_duration == world.role.default_duration
    again = client.post(reverse("request_new"), {**payload, "duration": ""}).content.decode()
    assert "already have a pending request" in again
    assert f'href="{reverse("request_detail", args=[first.pk])}"' in again


def test_the_menu_marks_approvals_on_someone_elses_request_and_requests_on_ones_own(world):
    """A probe's finding: an approver on a colleague's request saw "Requests" (their own) marked as the page."""
    access_request = submit(world)
    url = reverse("request_detail", args=[access_request.pk])

    def current(user) -> str:
        page = as_(user).get(url).content.decode()
        return page.split('aria-current="page"')[0].rsplit("href=", 1)[1]

    assert reverse("approvals") in current(world.approver)
    assert reverse("my_requests") in current(world.requester)


def test_ineligible_role_cannot_be_posted_by_id(world):
    response = as_(world.outsider).post(
        reverse("request_new"), {"role": world.role.pk, "duration": "1h", "justification": "Let me in please"}
    )
    assert response.status_code == 400
    assert not AccessRequest.objects.exists()


def test_request_body_cannot_set_server_owned_fields(world):
    as_(world.requester).post(
        reverse("request_new"),
        {
            "role": world.role.pk,
            "duration": "1h",
            "justification": "Fix the stuck payout batch",
            "status": "approved",
            "requester": world.approver.pk,
            "lapses_at": "2099-01-01T00:00",
        },
    )
    access_request = AccessRequest.objects.get()
    assert access_request.status == "pending"
    assert access_request.requester == world.requester
    assert access_request.lapses_at < timezone.now() + timedelta(hours=25)


# --- Request detail and decisions --------------------------------------------------------------


def test_request_detail_is_visible_to_the_right_people_and_404_to_others(world):
    access_request = submit(world)
    url = reverse("request_detail", args=[access_request.pk])
    for user in (world.requester, world.approver, world.approver2, world.owner, world.auditor):
        assert as_(user).get(url).status_code == 200, user
    assert as_(world.outsider).get(url).status_code == 404
    assert as_(world.outsider).get(reverse("request_detail", args=[999999])).status_code == 404


def test_decide_panel_only_for_approvers_never_for_the_requester(world):
    access_request = submit(world)
    url = reverse("request_detail", args=[access_request.pk])
    assert 'button primary">Approve' in as_(world.approver).get(url).content.decode()
    assert 'button primary">Approve' not in as_(world.requester).get(url).content.decode()
    assert 'button primary">Approve' not in as_(world.auditor).get(url).content.decode()


def test_approve_by_plain_post_redirects_back_with_the_grant(world):
    access_request = submit(world)
    client = as_(world.approver)
    response = client.post(reverse("request_approve", args=[access_request.pk]), {"comment": "ok"})
    assert response.status_code == 302
    access_request.refresh_from_db()
    assert access_request.status == "approved"
    assert Grant.objects.active(timezone.now()).filter(user=world.requester).exists()
    # A probe's finding: the grant's event written with the approval had no client address.
    events = AccessEvent.objects.filter(access_request=access_request, actor=world.approver)
    assert sorted(events.values_list("event_type", "client_address")) == [
        ("decision.approve", "127.0.0.1"),
        ("grant.activated", "127.0.0.1"),
        ("request.approved", "127.0.0.1"),
    ]


def test_approve_with_htmx_swaps_the_card(world):
    access_request = submit(world)
    response = as_(world.approver).post(
        reverse("request_approve", args=[access_request.pk]),
        {"comment": "ok", "back": "/approvals/"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert f'id="request-{access_request.pk}"' in html
    assert "Approved" in html
    assert "<html" not in html  # a partial, not a page


def test_a_refused_htmx_decision_keeps_its_card_whole(world):
    """A probe's finding: after a deny without a comment the card lost the requester's context and its Select box."""
    access_request = submit(world)
    response = as_(world.approver).post(
        reverse("request_deny", args=[access_request.pk]),
        {"comment": "", "back": "/approvals/"},
        HTTP_HX_REQUEST="true",
    )
    html = response.content.decode()
    assert response.status_code == 400 and "<html" not in html
    assert "Approvals so far:" in html and "requests" in html and "in 90 days" in html
    assert f'name="ids" value="{access_request.pk}"' in html


def test_requester_approving_own_request_is_403(world):
    from guardian.shortcuts import assign_perm

    assign_perm("accessgov.approve_role", world.requester, world.role)
    access_request = submit(world)
    response = as_(world.requester).post(reverse("request_approve", args=[access_request.pk]), {})
    assert response.status_code == 403
    assert "You cannot decide your own request." in response.content.decode()
    access_request.refresh_from_db()
    assert access_request.status == "pending"


def test_outsider_deciding_is_404_and_auditor_deciding_is_403(world):
    access_request = submit(world)
    assert as_(world.outsider).post(reverse("request_approve", args=[access_request.pk]), {}).status_code == 404
    assert as_(world.auditor).post(reverse("request_approve", args=[access_request.pk]), {}).status_code == 403


def test_deny_without_comment_is_400_with_reason(world):
    access_request = submit(world)
    response = as_(world.approver).post(reverse("request_deny", args=[access_request.pk]), {"comment": ""})
    assert response.status_code == 400
    assert "Say why you deny" in response.content.decode()


def test_deciding_an_already_decided_request_is_409(world):
    access_request = submit(world)
    ar.access_request_approve(world.approver, access_request.pk)
    response = as_(world.approver2).post(
        reverse("request_deny", args=[access_request.pk]), {"comment": "no"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 409
    assert "already approved" in response.content.decode()


def test_step_up_role_needs_a_fresh_code_in_the_decide_form(world):
    world.role.step_up_required = True
    world.role.save()
    access_request = submit(world)
    client = as_(world.approver)  # verified session without a recent code
    url = reverse("request_approve", args=[access_request.pk])
    response = client.post(url, {"comment": "ok"})
    assert response.status_code == 403
    assert "needs a code from your authenticator" in response.content.decode()
    device = TOTPDevice.objects.get(user=world.approver)
    response = client.post(url, {"comment": "ok", "otp_token": "000000" if totp_code(device) != "000000" else "111111"})
    assert response.status_code == 403
    device.refresh_from_db()
    device.throttle_reset()  # the person waits out the one-second throttle after a wrong code
    response = client.post(url, {"comment": "ok", "otp_token": totp_code(device)})
    assert response.status_code == 302
    access_request.refresh_from_db()
    assert access_request.status == "approved"
    assert access_request.decisions.get().step_up_at is not None


def test_requester_cancels_and_others_cannot(world):
    access_request = submit(world)
    url = reverse("request_cancel", args=[access_request.pk])
    assert as_(world.approver).post(url).status_code == 403
    assert as_(world.approver).post(url, {"confirm": "yes"}).status_code == 403
    assert as_(world.outsider).post(url).status_code == 404
    assert as_(world.requester).post(url, {"confirm": "yes"}).status_code == 302
    access_request.refresh_from_db()
    assert access_request.status == "cancelled"


# --- Approver dashboard ------------------------------------------------------------------------


def test_queue_shows_what_i_may_decide_oldest_first_and_never_my_own(world):
    Eligibility.objects.create(role=world.role, user=world.approver)
    first = submit(world)
    own = ar.access_request_submit(world.approver, role=world.role, duration=H, justification="My own need here")
    second = submit(world, role=world.role_two)
    page = as_(world.approver).get(reverse("approvals")).content.decode()
    assert page.index(f"#{first.pk} ") < page.index(f"#{second.pk} ")
    assert f"#{own.pk} " not in page
    assert "holds 0 active grants" in page
    filtered = as_(world.approver).get(reverse("approvals") + "?risk=high").content.decode()
    assert f"#{first.pk} " not in filtered and f"#{second.pk} " in filtered


def test_someone_who_approves_nothing_is_told_so_not_shown_an_empty_queue(world):
    submit(world)
    page = as_(world.requester).get(reverse("approvals")).content.decode()
    assert "You approve no role, so no request comes to you here." in page
    assert "Search the queue" not in page and "Nothing to decide right now" not in page
    approver_page = as_(world.approver).get(reverse("approvals")).content.decode()
    assert "You approve no role" not in approver_page and "Search the queue" in approver_page


def test_queue_hides_requests_i_already_decided(world):
    access_request = submit(world, role=world.role_two)
    ar.access_request_approve(world.approver, access_request.pk)
    assert f"#{access_request.pk} " not in as_(world.approver).get(reverse("approvals")).content.decode()
    assert f"#{access_request.pk} " in as_(world.approver2).get(reverse("approvals")).content.decode()


def test_dashboard_query_count_does_not_grow_with_the_queue(world, django_assert_max_num_queries, make_user):
    from guardian.shortcuts import assign_perm

    from tests.support.factories import RoleFactory

    submit(world, role=world.role)
    client = as_(world.approver)
    with django_assert_max_num_queries(80) as one:
        response = client.get(reverse("approvals"))
    assert response.content.decode().count('class="queue-item') == 1
    for i in range(12):
        role = RoleFactory(system=world.system, name=f"r{i}")
        Eligibility.objects.create(role=role, user=world.requester)
        assign_perm("accessgov.approve_role", world.approver, role)
        submit(world, role=role)
    with django_assert_max_num_queries(len(one.captured_queries)):
        response = client.get(reverse("approvals"))
    assert response.content.decode().count('class="queue-item') == 13


def test_queue_context_for_a_page_matches_the_context_of_each_request(world):
    from django.utils import timezone

    from accessgov import selectors

    denied = submit(world, role=world.role_two)
    ar.access_request_deny(world.approver, denied.pk, comment="Use the replica")
    ar.access_request_approve(world.approver, submit(world, role=world.role_two).pk)
    pending = [submit(world)]
    now = timezone.now()
    batch = selectors.requester_contexts(pending, now)
    for access_request in pending:
        one = selectors.requester_context(access_request, now)
        assert batch[access_request.pk]["requests_90d"] == one["requests_90d"] == 3
        assert batch[access_request.pk]["denials_90d"] == one["denials_90d"] == 1
        assert batch[access_request.pk]["active_grants"] == one["active_grants"]


# --- My access, grants, extension, revoke ------------------------------------------------------


def test_my_access_shows_a_countdown_and_release_ends_access(world):
    ar.access_request_approve(world.approver, submit(world).pk)
    grant = Grant.objects.get()
    client = as_(world.requester)
    page = client.get(reverse("my_access")).content.decode()
    assert f'data-countdown="{grant.expires_at.isoformat()}"' in page.replace("+00:00", "+00:00")
    # Until the target confirms it, the card says the access may not work yet (a probe's finding: "Active" only).
    assert grant.provisioning_state == "pending" and world.system.connector == "manual"
    assert "Not applied yet" in page and "a person applies it at Payments DB" in page
    Grant.objects.filter(pk=grant.pk).update(provisioning_state="applied")
    assert "Not applied yet" not in client.get(reverse("my_access")).content.decode()
    assert client.post(reverse("grant_release", args=[grant.pk]), {"confirm": "yes"}).status_code == 302
    assert "You have no active access" in client.get(reverse("my_access")).content.decode()


def test_someone_who_sees_a_grant_but_does_not_hold_it_is_refused_before_the_confirmation(world):
    """The approver sees the requester's grant; releasing it showed them "Release your access …?" first."""
    ar.access_request_approve(world.approver, submit(world).pk)
    grant = Grant.objects.get()
    for data in ({}, {"confirm": "yes"}):
        response = as_(world.approver).post(reverse("grant_release", args=[grant.pk]), data)
        assert response.status_code == 403
        assert "Only the person who holds a grant can release it." in response.content.decode()
        assert "Release your access" not in response.content.decode()
    assert as_(world.outsider).post(reverse("grant_release", args=[grant.pk])).status_code == 404
    grant.refresh_from_db()
    assert grant.status == "active"


def test_my_access_drops_a_grant_at_expiry_without_any_sweep(world):
    ar.access_request_approve(world.approver, submit(world).pk)
    grant = Grant.objects.get()
    client = as_(world.requester)
    with time_machine.travel(grant.expires_at + timedelta(seconds=1)):
        client.session  # noqa: B018 - keep the session alive across travel
        page = client.get(reverse("my_access")).content.decode()
    assert grant.role.name not in page.split("Waiting for approval")[0] or "You have no active access" in page


def test_extend_form_asks_for_more_time_on_the_same_grant(world):
    ar.access_request_approve(world.approver, submit(world).pk)
    grant = Grant.objects.get()
    client = as_(world.requester)
    assert client.get(reverse("grant_extend", args=[grant.pk])).status_code == 200
    response = client.post(
        reverse("grant_extend", args=[grant.pk]), {"duration": "1h", "justification": "Migration still running"}
    )
    extension = AccessRequest.objects.get(kind="extension")
    assert response["Location"] == reverse("request_detail", args=[extension.pk])
    response = client.post(reverse("grant_extend", args=[grant.pk]), {"duration": "9h", "justification": "More please"})
    assert response.status_code in (400, 409)
    # The approver sees the grant but may not extend it: a 403 (promise 5), and an outsider a 404.
    assert as_(world.approver).get(reverse("grant_extend", args=[grant.pk])).status_code == 403
    assert as_(world.outsider).get(reverse("grant_extend", args=[grant.pk])).status_code == 404
    # Approved, the grant's timeline says to when it now runs, and from when (a probe: "extended by" only).
    previous = grant.expires_at
    ar.access_request_approve(world.approver, extension.pk)
    grant.refresh_from_db()
    page = client.get(reverse("grant_detail", args=[grant.pk])).content.decode()
    assert grant.expires_at == previous + timedelta(hours=1)
    assert re.search(r"Now ends <time[^>]*>[^<]+</time> \(was <time", page), page[page.find("extended") :][:400]


def test_the_extend_page_says_at_once_why_a_grant_cannot_be_extended(world):
    """A probe's finding: a break-glass grant's inbox item said "extend or release it", and the extend page showed
    a full form that refused only after the reason and ticket were typed."""
    ar.access_request_approve(world.approver, submit(world).pk)
    grant = Grant.objects.get()
    grant.is_break_glass = True
    grant.save(update_fields=["is_break_glass"])
    client = as_(world.requester)
    page = client.get(reverse("grant_extend", args=[grant.pk])).content.decode()
    assert "Break-glass access to Payments DB · read-write cannot be extended" in page
    assert 'name="justification"' not in page
    assert "extend or release it" not in client.get(reverse("inbox")).content.decode()
    # The page and the request path agree (a probe: the page sent people to a request that refused them,
    # saying "extend it instead"): both say to release it, then ask the normal way.
    assert "release it (or let it end), then request access normally" in page
    with pytest.raises(TransitionNotAllowed, match="release it \\(or let it end\\), then request access normally"):
        submit(world)
    grant.is_break_glass = False
    grant.save(update_fields=["is_break_glass"])
    with time_machine.travel(grant.expires_at + timedelta(seconds=1)):
        ended = as_(world.requester).get(reverse("grant_extend", args=[grant.pk])).content.decode()
    assert "Only active access can be extended" in ended and 'name="justification"' not in ended


def test_a_second_click_on_extend_asks_for_nothing_more(world):
    """The extend form carries the end it showed: a double click (or a second tab) on an auto-approved role's
    extension once extended the grant twice; now the second POST is refused with the new end, and the grant is
    extended once."""
    world.role.approvals_required = 0
    world.role.save()
    with time_machine.travel(T0, tick=False):
        assert submit(world).status == "approved"  # auto-approved, as its extensions are
        grant = Grant.objects.get()
        client = as_(world.requester)
        page = client.get(reverse("grant_extend", args=[grant.pk])).content.decode()
        shown = re.search(r'name="ends_at" value="([0-9]+)"', page).group(1)
        data = {"duration": "1h", "justification": "Migration still running", "ends_at": shown}
        first = client.post(reverse("grant_extend", args=[grant.pk]), data)
        second = client.post(reverse("grant_extend", args=[grant.pk]), data)
    assert first.status_code == 302
    assert second.status_code == 409
    assert "extended a moment ago: it now ends at 2026-11-24 11:00 UTC" in second.content.decode()
    grant.refresh_from_db()
    assert (grant.expires_at, grant.extension_count) == (T0 + 2 * H, 1)
    assert AccessRequest.objects.filter(kind="extension").count() == 1


@pytest.mark.parametrize("ends_at", ["yesterday", "١٢٣", "-1", "9" * 30, "253402300800000001"])
def test_an_extend_form_with_a_mangled_end_says_reload(world, ends_at):
    ar.access_request_approve(world.approver, submit(world).pk)
    grant = Grant.objects.get()
    response = as_(world.requester).post(
        reverse("grant_extend", args=[grant.pk]),
        {"duration": "1h", "justification": "Migration still running", "ends_at": ends_at},
    )
    assert response.status_code == 400
    assert "This form is out of date: reload the page." in response.content.decode()
    assert not AccessRequest.objects.filter(kind="extension").exists()


def test_grant_detail_visibility_and_revoke(world):
    ar.access_request_approve(world.approver, submit(world).pk)
    grant = Grant.objects.get()
    url = reverse("grant_detail", args=[grant.pk])
    assert as_(world.outsider).get(url).status_code == 404
    assert as_(world.auditor).get(url).status_code == 200
    assert "Revoke access now" in as_(world.owner).get(url).content.decode()
    assert "Revoke access now" not in as_(world.requester).get(url).content.decode()
    assert as_(world.requester).post(reverse("grant_revoke", args=[grant.pk]), {"reason": "x"}).status_code == 403
    assert as_(world.outsider).post(reverse("grant_revoke", args=[grant.pk]), {"reason": "x"}).status_code == 404
    assert (
        as_(world.owner)
        .post(reverse("grant_revoke", args=[grant.pk]), {"reason": "Done", "confirm": "yes"})
        .status_code
        == 302
    )
    grant.refresh_from_db()
    assert grant.status == "revoked"


def test_grants_list_shows_only_visible_grants_and_filters(world, make_user):
    ar.access_request_approve(world.approver, submit(world).pk)
    assert "requester" in as_(world.auditor).get(reverse("grants_list")).content.decode()
    assert "No grants match" in as_(world.outsider).get(reverse("grants_list")).content.decode()
    page = as_(world.auditor).get(reverse("grants_list") + "?status=expired").content.decode()
    assert "No grants match" in page


# --- Break-glass -------------------------------------------------------------------------------


def test_break_glass_page_needs_a_fresh_code_then_activates(world):
    world.role_two.break_glass_allowed = True
    world.role_two.save()
    client = as_(world.requester)
    data = {"role": world.role_two.pk, "duration": "30m", "justification": "Prod is down, INC-77", "otp_token": ""}
    response = client.post(reverse("break_glass"), data)
    # No code typed and none entered in the last 5 minutes: refused as the decide form refuses it, saying why.
    assert response.status_code == 403 and "Break-glass needs a code" in response.content.decode()
    assert not Grant.objects.exists()
    device = TOTPDevice.objects.get(user=world.requester)
    response = client.post(reverse("break_glass"), {**data, "otp_token": totp_code(device)})
    assert response["Location"] == reverse("my_access")
    grant = Grant.objects.get()
    assert grant.is_break_glass
    page = as_(world.auditor).get(reverse("break_glass_follow_ups")).content.decode()
    assert "Prod is down, INC-77" in page and "Acknowledge after it ends" in page  # reviewed once it has ended
    gs.grant_release(world.requester, grant.pk)
    response = as_(world.auditor).post(
        reverse("follow_up_acknowledge", args=[grant.follow_up.pk]), {"reason": "Checked the session recording"}
    )
    assert response.status_code == 302
    grant.follow_up.refresh_from_db()
    assert grant.follow_up.acknowledged_by == world.auditor


def test_break_glass_on_a_role_without_it_is_not_offered(world):
    page = as_(world.requester).get(reverse("break_glass")).content.decode()
    assert "None of the roles you are eligible for allows break-glass" in page


# --- Systems and eligibility -------------------------------------------------------------------


def test_owner_adds_and_ends_eligibility_others_cannot(world):
    url = reverse("system_detail", args=[world.system.slug])
    assert "Add or renew eligibility" in as_(world.owner).get(url).content.decode()
    assert "Add or renew eligibility" not in as_(world.requester).get(url).content.decode()
    add = reverse("eligibility_add", args=[world.system.slug])
    data = {"role": world.role.pk, "user": world.outsider.pk, "reason": "Joins the payments on-call"}
    assert as_(world.requester).post(add, data).status_code == 403
    assert as_(world.owner).post(add, data).status_code == 302
    eligibility = Eligibility.objects.get(user=world.outsider)
    assert as_(world.outsider).get(reverse("request_new")).content.decode().count("read-write") >= 1
    end = reverse("eligibility_end", args=[eligibility.pk])
    assert as_(world.requester).post(end, {"reason": "x"}).status_code == 404
    assert as_(world.owner).post(end, {"reason": "Left the team", "confirm": "yes"}).status_code == 302
    eligibility.refresh_from_db()
    assert eligibility.ends_at is not None and eligibility.ends_at <= timezone.now()


def test_eligibility_form_needs_user_or_group(world):
    response = as_(world.owner).post(
        reverse("eligibility_add", args=[world.system.slug]), {"role": world.role.pk, "reason": "x"}, follow=True
    )
    assert "Choose either a user or a group." in response.content.decode()


def test_home_shows_queue_size_for_approvers(world):
    submit(world)
    page = as_(world.approver).get(reverse("home")).content.decode()
    assert "Waiting for you" in page
    assert "Waiting for you" not in as_(world.requester).get(reverse("home")).content.decode()


def test_htmx_request_from_a_half_signed_in_session_redirects_the_whole_page(world):
    client = Client()
    client.force_login(world.approver)
    response = client.post(reverse("request_approve", args=[1]), {}, HTTP_HX_REQUEST="true")
    assert response.status_code == 204
    assert response["HX-Redirect"].startswith("/accounts/otp/")


def test_grant_detail_for_expired_grant_says_expired(world):
    ar.access_request_approve(world.approver, submit(world).pk)
    grant = Grant.objects.get()
    Grant.objects.filter(pk=grant.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1), starts_at=timezone.now() - H
    )
    page = as_(world.requester).get(reverse("grant_detail", args=[grant.pk])).content.decode()
    assert "status-expired" in page
    assert "Release now" not in page
    assert gs.grant_expire_due(timezone.now()) == 1


def test_home_warns_owners_about_removals_overdue_at_the_target(world):
    ar.access_request_approve(world.approver, submit(world).pk)
    grant = Grant.objects.get()
    gs.grant_revoke(world.owner, grant.pk, reason="Done")
    assert "not yet removed at the target" not in as_(world.owner).get(reverse("home")).content.decode()
    Grant.objects.filter(pk=grant.pk).update(removal_requested_at=timezone.now() - timedelta(minutes=6))
    assert "1 ended grant not yet removed at the target" in as_(world.owner).get(reverse("home")).content.decode()
    assert "not yet removed" not in as_(world.outsider).get(reverse("home")).content.decode()


def test_queue_badge_counts_exactly_what_the_queue_shows(world):
    from accessgov import permissions, selectors

    approve_first = submit(world, role=world.role_two)
    ar.access_request_approve(world.approver, approve_first.pk, step_up_at=timezone.now())
    submit(world)  # waiting for both approvers
    Eligibility.objects.create(role=world.role_two, user=world.outsider)
    lapsed = ar.access_request_submit(
        world.outsider, role=world.role_two, duration=H, justification="Investigating INC-44 on payments"
    )
    AccessRequest.objects.filter(pk=lapsed.pk).update(lapses_at=timezone.now() - timedelta(seconds=1))
    Eligibility.objects.create(role=world.role, user=world.approver2)
    ar.access_request_submit(
        world.approver2, role=world.role, duration=H, justification="Investigating INC-43 on payments"
    )
    now = timezone.now()
    for user in (world.approver, world.approver2, world.requester):
        queue = selectors.approver_queue(user, now)
        assert selectors.approver_queue_size(user, now, permissions.decidable_role_ids(user)) == queue.count()
    # approver: the 1-approval request and approver2's own (not the 2-approval one they approved, not the lapsed one)
    assert selectors.approver_queue(world.approver, now).count() == 2
    # approver2: the 2-approval request and the 1-approval request, never their own
    assert selectors.approver_queue(world.approver2, now).count() == 2


def test_a_superuser_decides_only_where_named_an_approver(world, admins):
    """The queue, "who can decide" and the notifications read the named approvers; the request page offered a
    superuser a Decide panel on a request they were never named for (and "nobody" could decide)."""
    first, _ = admins
    pending = submit(world)
    client = as_(first)
    page = client.get(reverse("request_detail", args=[pending.pk])).content.decode()
    assert "<h2>Decide</h2>" not in page
    assert client.post(reverse("request_approve", args=[pending.pk]), {"comment": "ok"}).status_code == 403
    pending.refresh_from_db()
    assert pending.status == "pending"


def test_a_request_for_a_role_nobody_can_approve_says_so_when_sent(world):
    from guardian.shortcuts import remove_perm

    remove_perm("accessgov.approve_role", world.approver, world.role)
    world.approver2.groups.clear()
    client = as_(world.requester)
    response = client.post(
        reverse("request_new"),
        {"role": world.role.pk, "duration": "1h", "justification": "Fix the stuck payout batch", "ticket": ""},
        follow=True,
    )
    page = response.content.decode()
    assert "nobody can approve Payments DB · read-write yet: an owner of Payments DB must name an approver" in page
    assert "Approvers have been notified" not in page


def test_the_release_confirmation_shows_the_end_in_the_person_s_time_zone(world):
    world.requester.time_zone = "America/New_York"
    world.requester.save()
    with time_machine.travel(T0, tick=False):
        ar.access_request_approve(world.approver, submit(world).pk)
        grant = Grant.objects.get()
        page = as_(world.requester).post(reverse("grant_release", args=[grant.pk])).content.decode()
    assert "it had until 2026-11-24 05:00 EST" in page and "UTC)" not in page


def test_the_decision_message_says_a_shortened_approval_and_a_request_still_waiting(world):
    client = as_(world.approver)
    shortened = submit(world)
    response = client.post(reverse("request_approve", args=[shortened.pk]), {"duration": "30m"}, follow=True)
    assert f"Approved for 30 min (asked: 1 h): request #{shortened.pk}." in response.content.decode()
    world.role_two.step_up_required = False
    world.role_two.save()
    two = submit(world, role=world.role_two)
    response = client.post(reverse("request_approve", args=[two.pk]), {}, follow=True)
    assert f"Approved: request #{two.pk}, which still waits for another approver." in response.content.decode()


def test_a_scheduled_grant_can_be_cancelled_and_the_confirmation_says_what_that_means(world):
    with time_machine.travel(T0, tick=False):
        scheduled = submit(world, starts_at=T0 + 2 * H)
        ar.access_request_approve(world.approver, scheduled.pk)
        grant = Grant.objects.get()
        assert grant.status == "scheduled"
        client = as_(world.requester)
        assert "Cancel it…" in client.get(reverse("my_access")).content.decode()
        assert "Cancel this scheduled access…" in client.get(reverse("grant_detail", args=[grant.pk])).content.decode()
        page = client.post(reverse("grant_release", args=[grant.pk])).content.decode()
        assert "Cancel your scheduled access to Payments DB · read-write?" in page
        assert "it will not start, and nothing was given at Payments DB" in page and "removes it" not in page
        response = client.post(reverse("grant_release", args=[grant.pk]), {"confirm": "yes"}, follow=True)
        # Access that never started was cancelled, not "released early" (a probe's finding), in every place.
        ended = client.get(reverse("my_access")).content.decode()
        assert "Cancelled by the grantee before it started" in ended and "Released early" not in ended
        detail = client.get(reverse("grant_detail", args=[grant.pk])).content.decode()
        assert "Cancelled by the grantee before it started" in detail and "Released early" not in detail
    assert "You cancelled your scheduled access to Payments DB · read-write." in response.content.decode()
    assert AccessEvent.objects.get(event_type="grant.released").reason == "Cancelled by the grantee before it started."
    grant.refresh_from_db()
    assert (grant.status, grant.provisioning_state) == ("revoked", "not_applied")


def test_the_approvers_card_shows_a_scheduled_start_in_their_time_zone(world):
    """A probe's finding: the card said only "Access · 3 h", whether it starts now or tomorrow morning."""
    world.approver.time_zone = "America/New_York"
    world.approver.save()
    with time_machine.travel(T0, tick=False):
        submit(world, starts_at=T0 + 20 * H)
        page = as_(world.approver).get(reverse("approvals")).content.decode()
    starts = (T0 + 20 * H).astimezone(ZoneInfo("America/New_York"))
    assert "starts " in page and f"{starts:%H:%M}" in page
