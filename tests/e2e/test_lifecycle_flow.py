"""A requester asks for access, an approver approves it with a comment from the queue (htmx swap), the
requester watches the live countdown, and the grant ends by itself at expires_at (before any sweep)."""

import re
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from accessgov.models import AccessRequest, Grant
from accessgov.services.sweep import sweep_run
from tests.e2e.conftest import ARTIFACTS
from tests.support.browser import sign_in_browser

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

COUNTDOWN = re.compile(r"^(?:(\d+)h )?(\d+)m (\d{2})s$")


def _seconds_left(text: str) -> int:
    match = COUNTDOWN.match(text)
    assert match, f"countdown text {text!r} is not like '29m 59s'"
    hours, minutes, seconds = match.groups()
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds)


def test_requester_asks_approver_approves_with_comment_and_access_ends_by_itself(live_server, world, new_context):
    ARTIFACTS.mkdir(exist_ok=True)
    justification = "Reconcile the failed settlement batch from last night (read-write needed to re-queue)."
    comment = "OK for the reconciliation; please release when done."

    # --- Requester asks for 30 minutes of read-write on Payments DB ----------------------------
    requester = new_context().new_page()
    sign_in_browser(requester, live_server, world.requester)
    requester.goto(live_server.url + "/requests/new/")
    requester.get_by_label("Role", exact=True).select_option(label="Payments DB · read-write (Medium risk)")
    requester.get_by_label("Duration", exact=True).fill("30m")
    requester.get_by_label("Justification", exact=True).fill(justification)
    requester.get_by_role("button", name="Send request").click()
    requester.wait_for_url(re.compile(r"/requests/\d+/$"))
    request_pk = int(re.search(r"/requests/(\d+)/$", requester.url).group(1))
    expect(requester.get_by_role("heading", level=1)).to_have_text(f"Request #{request_pk}: Payments DB · read-write")
    expect(requester.locator(".page-head .status")).to_have_text("Pending")
    expect(requester.get_by_text("Request sent. Approvers have been notified.")).to_be_visible()

    # --- Approver decides from the queue; htmx swaps the card in place --------------------------
    approver = new_context().new_page()
    sign_in_browser(approver, live_server, world.approver)
    approver.goto(live_server.url + "/approvals/")
    card = approver.locator(f"#request-{request_pk}")
    expect(card).to_contain_text("Payments DB · read-write")
    expect(card).to_contain_text(justification)
    expect(card.locator(".status")).to_have_text("Pending")
    card.get_by_label("Comment").fill(comment)
    with approver.expect_response(re.compile(rf"/requests/{request_pk}/approve/$")) as answer:
        card.get_by_role("button", name="Approve").click()
    assert answer.value.status == 200
    assert answer.value.request.headers.get("hx-request") == "true"  # htmx made the call, not a plain POST
    swapped = approver.locator(f"#request-{request_pk}")
    expect(swapped.locator(".status")).to_have_text("Approved")
    expect(swapped).to_contain_text(f"Approved: request #{request_pk}.")
    expect(swapped.locator("form.decide-form")).to_have_count(0)
    assert approver.url == live_server.url + "/approvals/"  # swapped in place, no navigation
    approver.screenshot(path=str(ARTIFACTS / "approvals.png"), full_page=True)

    approver.goto(f"{live_server.url}/requests/{request_pk}/")
    expect(approver.locator(".page-head .status")).to_have_text("Approved")
    expect(approver.get_by_role("list", name="Timeline")).to_contain_text(comment)

    access_request = AccessRequest.objects.get(pk=request_pk)
    assert access_request.status == AccessRequest.Status.APPROVED
    grant = Grant.objects.get(access_request=access_request)
    assert grant.status == Grant.Status.ACTIVE
    assert timedelta(minutes=29) < grant.expires_at - timezone.now() <= timedelta(minutes=30)

    # --- Requester sees the active grant with a countdown that ticks -----------------------------
    requester.goto(live_server.url + "/access/")
    grant_card = requester.locator("article.grant-card")
    expect(grant_card).to_have_count(1)
    expect(grant_card.get_by_role("heading", level=3)).to_have_text("Payments DB · read-write")
    countdown = grant_card.locator("time.countdown")
    expect(countdown).to_have_text(COUNTDOWN)  # the script replaced the server's "29 minutes"
    first = countdown.inner_text()
    assert 29 * 60 - 5 < _seconds_left(first) <= 30 * 60
    requester.wait_for_timeout(1500)
    second = countdown.inner_text()
    assert second != first, "the countdown did not tick"
    assert 0 < _seconds_left(first) - _seconds_left(second) <= 3
    expect(requester.locator("#no-active-access")).to_have_count(0)
    requester.screenshot(path=str(ARTIFACTS / "my_access.png"), full_page=True)

    # --- The grant ends by itself at expires_at, before any sweep runs ---------------------------
    Grant.objects.filter(pk=grant.pk).update(expires_at=timezone.now() + timedelta(seconds=3))
    requester.reload()
    expect(countdown).to_have_text(COUNTDOWN)
    assert _seconds_left(countdown.inner_text()) <= 3
    # The script counts down to zero, then says so and stops offering Release/Extend (issue 18, item 10).
    expect(grant_card.locator(".countdown-line")).to_have_text("Ended.", timeout=6_000)
    expect(grant_card.get_by_role("button", name="Release now")).to_be_hidden()
    expect(grant_card.get_by_role("link", name="Extend")).to_be_hidden()
    time.sleep(max(0.0, (Grant.objects.get(pk=grant.pk).expires_at - timezone.now()).total_seconds()) + 1)

    requester.reload()
    expect(requester.locator("article.grant-card")).to_have_count(0)
    expect(requester.locator("#no-active-access")).to_have_text("You have no active access.")
    ended = requester.locator("section[aria-labelledby=ended]")
    expect(ended).to_contain_text("Nothing yet.")  # stored state is still "active": no sweep has run
    assert Grant.objects.get(pk=grant.pk).status == Grant.Status.ACTIVE

    assert sweep_run(timezone.now())["expired"] == 1
    requester.reload()
    expect(requester.locator("#no-active-access")).to_be_visible()
    expect(ended.get_by_role("link", name="Payments DB · read-write")).to_be_visible()
    expect(ended).to_contain_text("Expired at")
    expect(ended).not_to_contain_text("Nothing yet.")
    grant.refresh_from_db()
    assert grant.status == Grant.Status.EXPIRED
    assert grant.end_reason == Grant.EndReason.EXPIRED
    requester.screenshot(path=str(ARTIFACTS / "my_access_ended.png"), full_page=True)
