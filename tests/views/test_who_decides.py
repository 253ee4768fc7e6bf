"""Being told who (issue 18, item 6): who may decide a request, and whose access each audit event is about."""

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.test import Client
from django.urls import reverse

from accessgov import permissions
from accessgov.models import Eligibility
from accessgov.services import access_requests as ar
from tests.conftest import verify_session

pytestmark = pytest.mark.django_db
T0 = datetime(2027, 3, 1, 10, 0, 15, tzinfo=UTC)
H = timedelta(hours=1)


def _deciders_text(response) -> str:
    html = response.content.decode()
    start = html.index('<dd class="deciders">')
    return " ".join(html[start : html.index("</dd>", start)].split())


def test_the_request_page_names_who_may_still_decide_it_from_the_permissions_module(world):
    w = world
    access_request = ar.access_request_submit(
        w.requester, role=w.role_two, duration=H, justification="Rotating the signing keys"
    )
    page = verify_session(Client(), w.requester).get(reverse("request_detail", args=[access_request.pk]))
    text = _deciders_text(page)
    assert "(approver)" in text and "(approver2)" in text  # directly, and through the group on the system
    assert "Approver group: payments approvers" in text
    assert "(requester)" not in text and "(outsider)" not in text
    ar.access_request_approve(w.approver, access_request.pk)  # one of two approvals
    access_request.refresh_from_db()
    deciders = permissions.deciders_of_access_request(access_request)
    assert [u.username for u in deciders.users] == ["approver2"]  # who already decided is not listed again
    ar.access_request_approve(w.approver2, access_request.pk)
    access_request.refresh_from_db()
    assert permissions.deciders_of_access_request(access_request).users == []
    assert (
        "Who can decide"
        not in verify_session(Client(), w.requester)
        .get(reverse("request_detail", args=[access_request.pk]))
        .content.decode()
    )


def test_an_approver_who_may_not_decide_their_own_request_is_not_listed_for_it(world):
    w = world
    Eligibility.objects.create(role=w.role, user=w.approver)
    own = ar.access_request_submit(w.approver, role=w.role, duration=H, justification="My own access please")
    users = [u.username for u in permissions.deciders_of_access_request(own).users]
    assert users == ["approver2"]


def test_the_audit_trail_and_its_csv_have_a_grantee_and_the_file_is_named_by_its_period(world):
    w = world
    with time_machine.travel(T0, tick=False):
        access_request = ar.access_request_submit(
            w.requester, role=w.role, duration=H, justification="Investigating INC-5"
        )
        ar.access_request_approve(w.approver, access_request.pk)
        auditor = verify_session(Client(), w.auditor)
        page = auditor.get(reverse("audit_trail"), {"grantee": "REQUESTER"})
        html = page.content.decode()
        assert '<th scope="col">Grantee</th>' in html and '<td data-label="Grantee">requester</td>' in html
        assert {e.grantee for e in page.context["events"]} == {"requester"}
        assert auditor.get(reverse("audit_trail"), {"grantee": "approver"}).context["events"] == []
        found = auditor.get(reverse("audit_trail"), {"q": "INC-5"}).context["events"]
        assert found and all(e.access_request_id == access_request.pk for e in found)
        export = auditor.get(reverse("audit_export"), {"grantee": "requester"})
        assert export["Content-Disposition"].endswith('filename="accessgov-audit-trail-as_of_2027-03-01T100015Z.csv"')
        body = b"".join(export.streaming_content).decode().lstrip("\ufeff")
        rows = list(csv.DictReader(io.StringIO(body, newline="")))
        assert rows and {row["grantee"] for row in rows} == {"requester"}
        assert {row["actor"] for row in rows} >= {"requester", "approver"}
        period = auditor.get(reverse("audit_export"), {"since": "2027-01-01", "until": "2027-03-31"})
        assert period["Content-Disposition"].endswith('filename="accessgov-audit-trail-2027-01-01_to_2027-03-31.csv"')
        since = auditor.get(reverse("audit_export"), {"since": "2027-02-01"})
        assert since["Content-Disposition"].endswith(
            'filename="accessgov-audit-trail-from_2027-02-01-as_of_2027-03-01T100015Z.csv"'
        )
        assert auditor.get(reverse("audit_export"), {"grantee": "x" * 500}).status_code == 400
