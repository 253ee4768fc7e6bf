"""An auditor opens an access review from the form; the system owner works through it (keeps two items
with the confirmed bulk keep, revokes one with a reason); the auditor closes it, which revokes the
subject's active grant, and downloads the evidence CSV."""

import csv
import io
import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone
from playwright.sync_api import expect

from accessgov.models import AccessEvent, Eligibility, Grant, ReviewCampaign
from accessgov.services import access_requests as ar
from tests.e2e.conftest import ARTIFACTS
from tests.support.browser import sign_in_browser

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_reviewer_keeps_some_revokes_one_and_auditor_closes_and_exports(live_server, world, new_context):
    ARTIFACTS.mkdir(exist_ok=True)
    team = Group.objects.create(name="oncall-sre")
    world.approver2.groups.add(team)
    Eligibility.objects.create(role=world.role, user=world.approver2)
    access_request = ar.access_request_submit(
        world.requester, role=world.role, duration=timedelta(hours=2), justification="Quarter-end reconciliation"
    )
    ar.access_request_approve(world.approver, access_request.pk)
    grant = Grant.objects.get(access_request=access_request)
    assert grant.status == Grant.Status.ACTIVE

    # --- The auditor opens the review from the form ----------------------------------------------
    auditor = new_context().new_page()
    sign_in_browser(auditor, live_server, world.auditor)
    auditor.get_by_role("link", name="Reviews").click()
    auditor.get_by_role("link", name="Open a review").click()
    auditor.get_by_label("Name").fill("Payments Q4 certification")
    auditor.get_by_label("Payments DB").check()
    auditor.get_by_label("Due", exact=True).fill((timezone.now() + timedelta(days=10)).strftime("%Y-%m-%dT%H:%M"))
    auditor.get_by_label("Revoke what nobody confirmed").check()
    auditor.get_by_role("button", name="Open the review").click()
    auditor.wait_for_url(re.compile(r"/reviews/\d+/$"))
    campaign = ReviewCampaign.objects.get(name="Payments Q4 certification")
    assert campaign.items.count() == 3 and set(campaign.items.values_list("reviewer", flat=True)) == {world.owner.pk}
    expect(auditor.get_by_text("Review opened with 3 items")).to_be_visible()

    # --- The owner works through the list ----------------------------------------------------------
    owner = new_context().new_page()
    sign_in_browser(owner, live_server, world.owner)
    owner.get_by_role("link", name="Reviews").click()
    expect(owner.get_by_text("0 of your 3 items left")).to_have_count(0)
    expect(owner.get_by_text("3 of your 3 items left")).to_be_visible()
    owner.get_by_role("link", name="Payments Q4 certification").click()
    revoke_item = campaign.items.get(subject_user=world.requester, role=world.role)
    keep_items = list(campaign.items.exclude(pk=revoke_item.pk).order_by("pk"))
    revoke_row = owner.locator("tr", has=owner.locator(f"#comment-{revoke_item.pk}"))
    expect(revoke_row).to_contain_text("last granted")  # the decision helper: the requester's grant
    expect(revoke_row).to_contain_text("1 grant in 90 days")
    approver2_row = owner.locator("tr", has=owner.locator(f"#comment-{keep_items[-1].pk}"))
    expect(approver2_row).to_contain_text("oncall-sre")  # the subject's groups

    # Revoking without a reason is refused next to the field, which gets the focus; with one it is recorded.
    revoke_row.get_by_role("button", name="Revoke").click()
    revoke_row = owner.locator("tr", has=owner.locator(f"#comment-{revoke_item.pk}"))
    expect(revoke_row.get_by_text("Say why this access should be revoked.")).to_be_visible()
    expect(revoke_row.get_by_label("Reason")).to_be_focused()
    expect(revoke_row.get_by_label("Reason")).to_have_attribute("aria-invalid", "true")
    revoke_row.get_by_label("Reason").fill("Moved to the data team in October")
    revoke_row.get_by_role("button", name="Revoke").click()
    expect(owner.get_by_text("Decision recorded.")).to_be_visible()

    for item in keep_items:
        owner.get_by_label(f"Select item {item.pk}").check()
    owner.get_by_role("button", name="Keep the selected items…").click()
    expect(owner.get_by_role("heading", name="Keep 2 items?")).to_be_visible()
    owner.get_by_role("button", name="Yes, keep them").click()
    expect(owner.get_by_text("Kept 2 items.")).to_be_visible()
    expect(owner.get_by_role("heading", name="Progress: 3 of 3 (100%)")).to_be_visible()
    owner.screenshot(path=str(ARTIFACTS / "review-worklist.png"), full_page=True)
    assert grant.__class__.objects.get(pk=grant.pk).status == Grant.Status.ACTIVE  # nothing applied yet

    # --- The auditor closes the review and exports the evidence -----------------------------------
    auditor.reload()
    auditor.get_by_role("button", name="Close and apply").click()
    # The confirmation says what will happen, with counts, before anything is applied.
    expect(auditor.get_by_text("1 item revoked.")).to_be_visible()
    expect(auditor.get_by_text("1 active grant ends now.")).to_be_visible()
    expect(auditor.get_by_text("1 eligibility ends: 1 person loses eligibility.")).to_be_visible()
    assert grant.__class__.objects.get(pk=grant.pk).status == Grant.Status.ACTIVE
    auditor.get_by_role("button", name="Yes, close and apply").click()
    expect(auditor.get_by_text("Review closed; its decisions were applied.")).to_be_visible()
    with auditor.expect_download() as download_info:
        auditor.get_by_role("link", name="Export evidence (CSV)").click()
    body = download_info.value.path().read_bytes().decode("utf-8").removeprefix("\ufeff")
    rows = {row["item"]: row for row in csv.DictReader(io.StringIO(body, newline=""))}
    assert rows[str(revoke_item.pk)]["decision"] == "revoke"
    assert rows[str(revoke_item.pk)]["comment"] == "Moved to the data team in October"
    assert rows[str(revoke_item.pk)]["outcome"] == "revoked"
    assert [rows[str(i.pk)]["outcome"] for i in keep_items] == ["kept", "kept"]
    assert all(row["reviewer"] == world.owner.username and row["applied_at"].endswith("Z") for row in rows.values())

    grant.refresh_from_db()
    assert grant.status == Grant.Status.REVOKED
    assert AccessEvent.objects.filter(grant=grant, event_type="grant.revoked").count() == 1
    ended = Eligibility.objects.get(pk=revoke_item.eligibility_id)
    assert ended.ends_at <= timezone.now()
    assert AccessEvent.objects.filter(event_type="export.created", data__report="access review").count() == 1
