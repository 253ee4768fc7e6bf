"""Fail closed: a database or broker error in the middle of a permission or policy check grants nothing,
changes nothing, and answers a clear error (page or JSON) with a reference id that is also in the error
log - never a stack trace. A broker outage *after* the decision committed loses nothing."""

import logging
import re
from datetime import timedelta

import pytest
from django.db import OperationalError
from django.test import Client
from django.urls import reverse
from django_otp.plugins.otp_totp.models import TOTPDevice
from kombu.exceptions import OperationalError as BrokerOperationalError

from accessgov.models import AccessEvent, AccessRequest, Decision, Eligibility, Grant, OutboxItem
from accessgov.services import access_requests, provisioning
from accessgov.views import errors
from tests.conftest import totp_code, verify_session
from tests.support.factories import RoleFactory

pytestmark = pytest.mark.django_db

REFERENCE = re.compile(r"\b[0-9a-f]{12}\b")
TRACEBACK_TEXT = ("Traceback", 'File "', "OperationalError", "could not connect", "site-packages", ".py")


def database_down(*args, **kwargs):
    raise OperationalError("could not connect to server: Connection refused")


def broker_down(*args, **kwargs):
    raise BrokerOperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")


def state() -> dict[str, int]:
    return {
        "requests": AccessRequest.objects.count(),
        "pending": AccessRequest.objects.filter(status=AccessRequest.Status.PENDING).count(),
        "decisions": Decision.objects.count(),
        "grants": Grant.objects.count(),
        "events": AccessEvent.objects.count(),
        "outbox": OutboxItem.objects.count(),
    }


def assert_clear_error(response, caplog, *, status: int = 503) -> str:
    """The error answer: the status, a reference id shown to the person, the same id logged with the
    exception, and nothing of the exception itself in the body."""
    assert response.status_code == status
    body = response.content.decode()
    reference = response[errors.REFERENCE_HEADER]
    assert reference in body
    for text in TRACEBACK_TEXT:
        assert text not in body, text
    logged = [r for r in caplog.records if r.name == "accessgov.errors" and reference in r.getMessage()]
    assert len(logged) == 1
    assert logged[0].exc_info and isinstance(logged[0].exc_info[1], OperationalError | BrokerOperationalError)
    return body


@pytest.fixture
def pending(world):
    return access_requests.access_request_submit(
        world.requester, role=world.role, duration=timedelta(minutes=30), justification="Fix the nightly batch"
    )


def client_for(user) -> Client:
    return verify_session(Client(raise_request_exception=False), user)


def test_database_error_in_the_permission_check_refuses_an_approval(world, pending, monkeypatch, caplog):
    before = state()
    monkeypatch.setattr("accessgov.permissions.ensure_can_decide_access_request", database_down)
    with caplog.at_level(logging.ERROR, logger="accessgov.errors"):
        response = client_for(world.approver).post(
            reverse("request_approve", args=[pending.pk]), {"comment": "ok", "duration": "", "otp_token": ""}
        )
    body = assert_clear_error(response, caplog)
    assert "Nothing was changed and nothing was granted" in body
    assert state() == before
    pending.refresh_from_db()
    assert pending.status == AccessRequest.Status.PENDING


def test_database_error_in_the_permission_check_refuses_a_denial_over_htmx(world, pending, monkeypatch, caplog):
    before = state()
    monkeypatch.setattr("accessgov.permissions.ensure_can_decide_access_request", database_down)
    with caplog.at_level(logging.ERROR, logger="accessgov.errors"):
        response = client_for(world.approver).post(
            reverse("request_deny", args=[pending.pk]), {"comment": "no"}, headers={"HX-Request": "true"}
        )
    assert_clear_error(response, caplog)
    assert state() == before


def test_database_error_in_policy_evaluation_refuses_a_request(world, monkeypatch, caplog):
    before = state()
    monkeypatch.setattr("accessgov.policies.auto_approval_decision", database_down)
    with caplog.at_level(logging.ERROR, logger="accessgov.errors"):
        response = client_for(world.requester).post(
            reverse("request_new"),
            {"role": world.role.pk, "duration": "30m", "justification": "Fix the nightly batch", "ticket": ""},
        )
    assert_clear_error(response, caplog)
    assert state() == before


def test_database_error_in_the_eligibility_check_refuses_break_glass(world, monkeypatch, caplog):
    emergency = RoleFactory(system=world.system, name="emergency", break_glass_allowed=True)
    Eligibility.objects.create(role=emergency, user=world.requester)
    client = client_for(world.requester)
    before = state()
    monkeypatch.setattr("accessgov.permissions.ensure_can_request_role", database_down)
    code = totp_code(TOTPDevice.objects.get(user=world.requester))
    with caplog.at_level(logging.ERROR, logger="accessgov.errors"):
        response = client.post(
            reverse("break_glass"),
            {"role": emergency.pk, "duration": "30m", "justification": "Payments are down, INC-1", "otp_token": code},
        )
    assert_clear_error(response, caplog)
    assert state() == before
    assert not Grant.objects.filter(user=world.requester, role=emergency).exists()


def test_database_error_in_the_sign_in_gate_lets_nobody_through(world, monkeypatch, caplog):
    """The OTP middleware cannot decide: the page is refused, not served."""
    monkeypatch.setattr("accessgov.middleware.view_name", database_down)
    with caplog.at_level(logging.ERROR, logger="accessgov.errors"):
        response = client_for(world.auditor).get(reverse("audit_trail"))
    assert_clear_error(response, caplog)
    assert "Audit" not in response.content.decode().split("<main", 1)[1].split("Something", 1)[0]


def test_api_client_gets_json_with_the_reference(world, pending, monkeypatch, caplog):
    from tests.support.api_helpers import make_token

    _, secret = make_token(world.approver)
    before = state()
    monkeypatch.setattr("accessgov.permissions.ensure_can_decide_access_request", database_down)
    client = Client(raise_request_exception=False, headers={"Authorization": f"Bearer {secret}"})
    with caplog.at_level(logging.ERROR, logger="accessgov.errors"):
        response = client.post(
            reverse("api:request_approve", args=[pending.pk]), {"comment": "ok"}, content_type="application/json"
        )
    assert_clear_error(response, caplog)
    assert response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "unavailable" and error["reference"] == response[errors.REFERENCE_HEADER]
    assert state() == before


def test_a_bug_is_a_500_and_a_json_client_is_told_so(world, monkeypatch, caplog):
    def bug(*args, **kwargs):
        raise KeyError("role")

    monkeypatch.setattr("accessgov.selectors.my_requests", bug)
    client = client_for(world.requester)
    with caplog.at_level(logging.ERROR, logger="accessgov.errors"):
        page = client.get(reverse("my_requests"))
        data = client.get(reverse("my_requests"), headers={"Accept": "application/json"})
    assert page.status_code == 500 and "Something went wrong" in page.content.decode()
    assert data.status_code == 500 and data.json()["error"]["code"] == "server_error"
    assert page[errors.REFERENCE_HEADER] != data[errors.REFERENCE_HEADER]
    assert "KeyError" not in page.content.decode() + data.content.decode()


def test_the_error_page_needs_neither_database_nor_session(rf, monkeypatch):
    """Rendered while the database is gone: no context processors, no queries."""
    from django.db import connection

    monkeypatch.setattr(connection, "cursor", database_down)
    request = rf.get("/requests/")
    try:
        raise OperationalError("gone")
    except OperationalError:
        response = errors.server_error(request)
    assert response.status_code == 503 and response["Retry-After"] == "30"
    assert "temporarily unavailable" in response.content.decode()
    assert REFERENCE.search(response.content.decode())


def test_approval_with_the_broker_down_still_commits_and_loses_nothing(
    world, pending, monkeypatch, django_capture_on_commit_callbacks, caplog
):
    """Publishing after commit fails (Redis is down): the approval stands, its grant, its event and its
    provisioning outbox row are in the database, and the outbox delivers once the broker is back."""
    from celery.app.task import Task

    from accessgov.models import System

    # An automatic target (a fake of the webhook connector stands in for it below).
    System.objects.filter(pk=world.system.pk).update(connector=System.Connector.WEBHOOK)
    monkeypatch.setattr(Task, "apply_async", broker_down)
    client = client_for(world.approver)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = client.post(reverse("request_approve", args=[pending.pk]), {"comment": "ok", "duration": ""})
    assert response.status_code == 302
    assert callbacks, "side effects were scheduled after commit (and failed to publish)"
    pending.refresh_from_db()
    assert pending.status == AccessRequest.Status.APPROVED
    grant = pending.grant
    assert grant.status == Grant.Status.ACTIVE
    assert AccessEvent.objects.filter(access_request=pending, event_type=AccessEvent.Type.REQUEST_APPROVED).exists()
    item = OutboxItem.objects.get(grant=grant, action=OutboxItem.Action.APPLY)
    assert item.done_at is None
    monkeypatch.undo()  # the broker is back; the sweep (or the drain task) delivers the outbox
    applied = []

    class Target:
        automatic, reads_back = True, False

        def principal_for(self, username):
            return username

        def apply(self, target):
            applied.append(target)

        def close(self):
            pass

    monkeypatch.setattr(provisioning, "connector_for", lambda system: Target())
    assert provisioning.outbox_drain() == 1
    item.refresh_from_db()
    assert item.done_at is not None and len(applied) == 1
    assert OutboxItem.objects.filter(grant=grant, action=OutboxItem.Action.APPLY).count() == 1
