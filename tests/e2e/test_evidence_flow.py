"""An auditor builds an evidence pack from the portal: the form, a progress bar that shows the pack waiting
and then, without a reload, ready; the download; and the downloaded file verifies offline with the public
key the portal shows."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from accessgov.evidence import verify
from accessgov.models import AccessEvent, EvidencePack
from accessgov.services import access_requests as ar
from accessgov.services.evidence import evidence_pack_build
from tests.e2e.conftest import ARTIFACTS
from tests.support.browser import sign_in_browser

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_auditor_builds_a_pack_watches_its_progress_bar_and_downloads_it(
    live_server,
    world,
    new_context,
    signing_key,
    monkeypatch,
    tmp_path,
):
    ARTIFACTS.mkdir(exist_ok=True)
    access_request = ar.access_request_submit(
        world.requester, role=world.role, duration=timedelta(hours=1), justification="Quarter-end reconciliation"
    )
    ar.access_request_approve(world.approver, access_request.pk)
    # No worker yet: the build task is only noted, so the page shows the pack waiting.
    queued: list[int] = []
    monkeypatch.setattr("accessgov.tasks.build_evidence_pack.delay", queued.append)

    page = new_context().new_page()
    sign_in_browser(page, live_server, world.auditor)
    page.get_by_role("link", name="Evidence").click()
    expect(page.get_by_role("heading", name="Evidence packs", exact=True)).to_be_visible()
    today = timezone.now().date()
    page.get_by_label("First day (UTC)").fill((today - timedelta(days=7)).isoformat())
    page.get_by_label("Last day (UTC, included)").fill(today.isoformat())
    page.get_by_role("button", name="Build the pack").click()
    page.wait_for_url(re.compile(r"/evidence/\d+/$"))
    pack = EvidencePack.objects.get()
    assert queued == [pack.pk]

    bar = page.get_by_role("progressbar", name=f"Building evidence pack #{pack.pk}")
    expect(bar).to_be_visible()
    expect(page.get_by_text("Waiting for a worker")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "evidence-building.png"))

    evidence_pack_build(pack.pk)  # the worker's turn; the page polls and swaps in the result by itself
    expect(page.get_by_role("link", name="Download the pack")).to_be_visible(timeout=10_000)
    expect(page.get_by_role("progressbar", name=f"Evidence pack #{pack.pk} built")).to_be_visible()
    expect(bar).to_have_count(0)
    page.screenshot(path=str(ARTIFACTS / "evidence-ready.png"))

    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download the pack").click()
    saved = tmp_path / download_info.value.suggested_filename
    download_info.value.save_as(saved)
    public_pem = page.locator("details pre").first.text_content().strip() + "\n"
    report, manifest = verify.verify_pack(str(saved), public_key_pem=public_pem.encode())
    assert report.ok, report.problems
    assert manifest["pack_id"] == pack.pk
    assert AccessEvent.objects.filter(event_type="evidence.downloaded", actor=world.auditor).count() == 1
