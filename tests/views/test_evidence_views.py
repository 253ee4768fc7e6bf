"""Evidence packs through the portal and the API, by persona: the auditor builds one from the form,
watches the progress partial, downloads it (recorded); everyone else gets 403 on the page and 404 on any
pack, through every URL; malformed, huge, far-out and NUL-laden periods are form errors or 400s that make
nothing; a missing signing key fails the build with a reason."""

import zipfile
from datetime import date

import pytest
import time_machine
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from accessgov.models import AccessEvent, EvidencePack
from accessgov.services import evidence as evidence_services
from tests.conftest import verify_session
from tests.support.api_helpers import api_client, make_token, post_json
from tests.support.evidence_world import BUILT_AT, SINCE, UNTIL, build_at, make_month

pytestmark = pytest.mark.django_db
PERSONAS = ("requester", "approver", "approver2", "owner", "outsider", "admin")


def as_(user) -> Client:
    return verify_session(Client(), user)


@pytest.fixture
def people(world, make_user):
    world.admin = make_user("root", is_staff=True, is_superuser=False)
    return world


@pytest.fixture
def ready_pack(people, signing_key, django_capture_on_commit_callbacks):
    with time_machine.travel(BUILT_AT, tick=False), django_capture_on_commit_callbacks(execute=False):
        pack = evidence_services.evidence_pack_request(people.auditor, since=SINCE, until=UNTIL)
    return build_at(pack.pk)


def test_the_auditor_builds_a_pack_from_the_form_watches_it_and_downloads_it(people, signing_key, make_user):
    make_month(people, make_user)
    client = as_(people.auditor)
    page = client.get(reverse("evidence"))
    assert page.status_code == 200 and "Build the pack" in page.content.decode()
    assert signing_key.read_text().strip() in page.content.decode()  # the public key is shown
    with time_machine.travel(BUILT_AT, tick=False):
        response = client.post(reverse("evidence"), {"since": "2025-03-01", "until": "2025-03-31"})
    pack = EvidencePack.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("evidence_detail", args=[pack.pk])
    partial = client.get(reverse("evidence_progress", args=[pack.pk])).content.decode()
    assert 'hx-trigger="every 1s"' in partial and "<progress" in partial  # queued: the bar polls
    build_at(pack.pk)
    detail = client.get(reverse("evidence_detail", args=[pack.pk])).content.decode()
    assert "Download the pack" in detail and "every 1s" not in detail and "PCI DSS 7.2.4" in detail
    # Each test says what it checks in words, its id beside it; each control its title.
    assert '<span class="muted mono">grants.approved_by_other</span>' in detail
    assert '<td data-label="Test"><span class="muted mono">' not in detail
    download = client.get(reverse("evidence_download", args=[pack.pk]))
    assert download.status_code == 200 and download["Content-Type"] == "application/zip"
    body = b"".join(download.streaming_content)
    assert "manifest.json" in zipfile.ZipFile(__import__("io").BytesIO(body)).namelist()
    assert AccessEvent.objects.filter(event_type="evidence.downloaded", actor=people.auditor).count() == 1
    assert client.get(reverse("evidence_verifier")).content.startswith(b"#!/usr/bin/env python3")
    assert client.get(reverse("evidence_public_key")).content.decode() == signing_key.read_text()


@pytest.mark.parametrize("persona", PERSONAS)
def test_nobody_but_auditors_reaches_the_page_or_any_pack(people, ready_pack, persona):
    client = as_(getattr(people, persona))
    assert client.get(reverse("evidence")).status_code == 403
    assert client.post(reverse("evidence"), {"since": "2025-03-01", "until": "2025-03-31"}).status_code == 403
    for name in ("evidence_detail", "evidence_progress", "evidence_download"):
        assert client.get(reverse(name, args=[ready_pack.pk])).status_code == 404, name
    assert client.get(reverse("evidence_public_key")).status_code == 403
    assert client.get(reverse("evidence_verifier")).status_code == 403
    assert EvidencePack.objects.count() == 1
    assert not AccessEvent.objects.filter(event_type="evidence.downloaded").exists()


def test_packs_are_shared_by_auditors_and_lost_with_the_right(people, ready_pack, make_user):
    from django.contrib.auth.models import Group

    second = make_user("auditor2")
    second.groups.add(Group.objects.get(name="auditor"))
    assert as_(second).get(reverse("evidence_download", args=[ready_pack.pk])).status_code == 200
    people.auditor.groups.clear()  # the builder stops being an auditor: their own pack is gone for them
    client = as_(people.auditor)
    assert client.get(reverse("evidence_detail", args=[ready_pack.pk])).status_code == 404
    assert client.get(reverse("evidence_detail", args=[ready_pack.pk + 1000])).status_code == 404
    people.auditor.user_permissions.add(Permission.objects.get(codename="audit_access"))
    people.auditor.is_active = False
    assert not evidence_services.permissions.can_build_evidence_pack(people.auditor)


BAD_PERIODS = [
    ({"since": "", "until": ""}, "required"),
    ({"since": "2025-03-31", "until": "2025-03-01"}, "starts after it ends"),
    ({"since": "0001-01-01", "until": "2025-03-01"}, "before 2000-01-01"),
    ({"since": "2025-03-01", "until": "9999-12-31"}, "after today"),
    ({"since": "2020-01-01", "until": "2025-03-31"}, "at most 366 days"),
    ({"since": "2025-03-01\x00", "until": "2025-03-31"}, "NUL character in a form field"),
    ({"since": "2025-13-45", "until": "2025-03-31"}, "valid date"),
    ({"since": "9" * 5000, "until": "2025-03-31"}, "valid date"),
    ({"since": "2025-03-01", "until": "2025-03-31", "systems": ["999999", "x\x00", "1" * 400]}, "NUL character"),
    ({"since": "2025-03-01", "until": "2025-03-31", "systems": ["999999", "x", "1" * 400]}, "valid"),
]


@pytest.mark.parametrize(("data", "message"), BAD_PERIODS)
def test_malformed_huge_or_far_periods_are_form_errors_and_make_nothing(people, signing_key, data, message):
    with time_machine.travel(BUILT_AT, tick=False):
        response = as_(people.auditor).post(reverse("evidence"), data)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not EvidencePack.objects.exists()
    assert not AccessEvent.objects.filter(event_type__startswith="evidence.").exists()


def test_a_pack_that_is_not_ready_is_not_downloadable_and_a_missing_key_fails_the_build(
    people, settings, django_capture_on_commit_callbacks
):
    settings.EVIDENCE_SIGNING_KEY = settings.EVIDENCE_SIGNING_KEY_FILE = ""
    with time_machine.travel(BUILT_AT, tick=False), django_capture_on_commit_callbacks(execute=False):
        pack = evidence_services.evidence_pack_request(people.auditor, since=SINCE, until=UNTIL)
    client = as_(people.auditor)
    assert client.get(reverse("evidence_download", args=[pack.pk])).status_code == 409
    assert "No signing key is configured" in client.get(reverse("evidence")).content.decode()
    pack = build_at(pack.pk)
    assert pack.status == EvidencePack.Status.FAILED and "EVIDENCE_SIGNING_KEY_FILE" in pack.error
    assert AccessEvent.objects.filter(event_type="evidence.failed").count() == 1
    assert build_at(pack.pk) is None  # a duplicate task does nothing
    assert client.get(reverse("evidence_download", args=[pack.pk])).status_code == 409


# --- The API ----------------------------------------------------------------------------------------


def test_an_auditor_token_builds_polls_and_downloads_a_pack(people, signing_key, django_capture_on_commit_callbacks):
    _, secret = make_token(people.auditor, name="audit-bot", scopes=["evidence:read", "evidence:build"])
    client = api_client(secret)
    with time_machine.travel(BUILT_AT, tick=False), django_capture_on_commit_callbacks(execute=False):
        response = post_json(
            client,
            "/api/v1/evidence-packs/",
            {"since": "2025-03-01", "until": "2025-03-31", "systems": ["payments-db"]},
        )
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "queued" and body["systems"] == ["payments-db"] and body["download_url"] is None
    build_at(body["id"])
    detail = client.get(f"/api/v1/evidence-packs/{body['id']}/").json()
    assert detail["status"] == "ready" and detail["progress"] == 100 and len(detail["file_sha256"]) == 64
    download = client.get(detail["download_url"])
    assert download.status_code == 200 and download["Content-Type"] == "application/zip"
    assert [p["id"] for p in client.get("/api/v1/evidence-packs/").json()["results"]] == [body["id"]]
    event = AccessEvent.objects.get(event_type="evidence.requested")
    assert event.data["systems"] == ["payments-db"] and event.data["via"]


@pytest.mark.parametrize("persona", ["requester", "approver", "owner", "outsider"])
def test_non_auditor_tokens_cannot_build_list_or_fetch_packs(people, ready_pack, persona):
    _, secret = make_token(getattr(people, persona), name="t", scopes=["evidence:read", "evidence:build"])
    client = api_client(secret)
    assert (
        post_json(client, "/api/v1/evidence-packs/", {"since": "2025-03-01", "until": "2025-03-31"}).status_code == 403
    )
    assert client.get("/api/v1/evidence-packs/").status_code == 403
    assert client.get(f"/api/v1/evidence-packs/{ready_pack.pk}/").status_code == 404
    assert client.get(f"/api/v1/evidence-packs/{ready_pack.pk}/download/").status_code == 404
    assert EvidencePack.objects.count() == 1


def test_an_auditor_token_without_the_evidence_scopes_is_refused(people, ready_pack):
    _, secret = make_token(people.auditor, name="t", scopes=["events:read"])
    client = api_client(secret)
    assert client.get("/api/v1/evidence-packs/").status_code == 403
    assert client.get(f"/api/v1/evidence-packs/{ready_pack.pk}/download/").status_code == 403
    assert (
        post_json(client, "/api/v1/evidence-packs/", {"since": "2025-03-01", "until": "2025-03-31"}).status_code == 403
    )


@pytest.mark.parametrize(
    "body",
    [
        {"since": "2025-03-01"},
        {"since": "2025-03-01", "until": "2025-03-31", "status": "ready"},
        {"since": "2025-03-01\u0000", "until": "2025-03-31"},
        {"since": "1900-01-01", "until": "2025-03-31"},
        {"since": "2025-03-01", "until": "2025-03-31", "systems": ["no-such-system"]},
        {"since": "2025-03-01", "until": "2025-03-31", "systems": ["x"] * 501},
        {"since": 20250301, "until": None},
        ["since", "until"],
    ],
)
def test_malformed_api_bodies_are_400_and_make_nothing(people, signing_key, body):
    _, secret = make_token(people.auditor, name="t", scopes=["evidence:build"])
    with time_machine.travel(BUILT_AT, tick=False):
        response = post_json(api_client(secret), "/api/v1/evidence-packs/", body)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] in ("invalid", "policy_violation")
    assert not EvidencePack.objects.exists()


def test_the_period_rule_itself():
    today = date(2025, 4, 2)
    problem = evidence_services.evidence_period_problem
    assert problem(date(2025, 3, 1), date(2025, 3, 31), today) is None
    assert problem(date(2024, 4, 2), date(2025, 4, 1), today) is None  # 365 days
    assert "at most" in problem(date(2024, 1, 1), date(2025, 4, 1), today)
    assert "after today" in problem(date(2025, 4, 1), date(2025, 4, 3), today)
