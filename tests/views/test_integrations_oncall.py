"""Incident-aware auto-approval (issue 19, capability 1), through the portal's request form, against a
local server speaking PagerDuty's REST API v2: on call now at a level, assigned to an open incident of a
service at a priority; the grant ends at the earlier of its duration and the shift's end, or when the
incident resolves; an outage or an off-call requester falls back to people with the reason shown; the
auto-approval event records the evidence."""

from datetime import timedelta

import pytest
from django.urls import reverse

from accessgov.models import AccessEvent, AccessRequest, AutoApprovalRule, Grant, User
from accessgov.services.integrations import integrations_sweep
from tests.support.integration_world import T0, client_for

pytestmark = pytest.mark.django_db

POLICY, SERVICE, SCHEDULE = "PEP1", "PSVC1", "PSCH1"


def _request(world, *, duration="2h"):
    return client_for(world.requester).post(
        reverse("request_new"),
        {"role": world.role.pk, "duration": duration, "justification": "Mitigating the checkout outage now"},
    )


def _pd_world(fake, world, *, level=1, shift_end=T0 + timedelta(minutes=50)):
    fake.state.pd_users = [{"id": "PU1", "email": world.requester.email, "name": "Requester"}]
    fake.state.pd_oncalls = [
        {
            "escalation_policy": {"id": POLICY, "summary": "Payments"},
            "escalation_level": level,
            "schedule": {"id": SCHEDULE, "summary": "Payments primary"},
            "user": {"id": "PU1", "summary": "Requester"},
            "start": (T0 - timedelta(hours=3)).isoformat(),
            "end": shift_end.isoformat() if shift_end else None,
        }
    ]


def _on_call_rule(world, pagerduty, max_level=1):
    return AutoApprovalRule.objects.create(
        role=world.role,
        name="on call",
        oncall_provider=pagerduty,
        oncall_escalation_policy=POLICY,
        oncall_max_level=max_level,
    )


def test_an_on_call_requester_is_auto_approved_until_the_end_of_the_shift_with_the_evidence(
    world, fake, pagerduty, at_t0, django_capture_on_commit_callbacks
):
    _pd_world(fake, world, level=1, shift_end=T0 + timedelta(minutes=50))
    _on_call_rule(world, pagerduty)
    with django_capture_on_commit_callbacks(execute=True):
        response = _request(world, duration="2h")
    assert response.status_code == 302
    access_request = AccessRequest.objects.get(requester=world.requester)
    assert access_request.status == AccessRequest.Status.APPROVED
    grant = Grant.objects.get(access_request=access_request)
    # The earlier of the duration (2 h) and the end of the shift (50 min).
    assert grant.expires_at == T0 + timedelta(minutes=50)
    assert "end of the on-call shift" in access_request.auto_approval_note
    event = AccessEvent.objects.get(access_request=access_request, event_type=AccessEvent.Type.REQUEST_AUTO_APPROVED)
    check = event.data["evidence"]["checks"][0]
    assert check["schedule"] == SCHEDULE and check["level"] == 1 and check["escalation_policy"] == POLICY
    assert event.data["capped_at_shift_end"] == (T0 + timedelta(minutes=50)).isoformat()
    page = client_for(world.requester).get(reverse("request_detail", args=[access_request.pk])).content.decode()
    assert "end of the on-call shift" in page
    # The provider was asked with the key, for the requester, for the policy.
    oncall_calls = fake.calls_to("/pd/oncalls")
    assert oncall_calls and oncall_calls[0][2]["escalation_policy_ids[]"] == [POLICY]


def test_an_off_call_requester_falls_back_to_people_with_the_reason_shown(world, fake, pagerduty, at_t0):
    _pd_world(fake, world, level=2)  # on call, but only at level 2
    _on_call_rule(world, pagerduty, max_level=1)
    response = _request(world)
    assert response.status_code == 302
    access_request = AccessRequest.objects.get(requester=world.requester)
    assert access_request.status == AccessRequest.Status.PENDING
    assert "not on call now for escalation policy PEP1 at level 1 or lower" in access_request.auto_approval_note
    assert not Grant.objects.filter(access_request=access_request).exists()
    queue = client_for(world.approver).get(reverse("approvals")).content.decode()
    assert "not on call now" in queue
    detail = client_for(world.approver).get(reverse("request_detail", args=[access_request.pk])).content.decode()
    assert "Not automatic" in detail


def test_an_address_an_admin_set_lately_does_not_auto_approve_but_the_identity_providers_does(
    world, fake, pagerduty, at_t0, make_user
):
    """An admin could give an account the on-call engineer's address; PagerDuty would then vouch for it."""
    from auditlog.context import set_actor

    admin = make_user("admin1", is_staff=True, is_superuser=True)
    with set_actor(admin):
        world.requester.email = "oncall.engineer@example.com"
        world.requester.save()
    _pd_world(fake, world, level=1)  # the provider knows that address as on call
    _on_call_rule(world, pagerduty)
    assert _request(world).status_code == 302
    access_request = AccessRequest.objects.get(requester=world.requester)
    assert access_request.status == AccessRequest.Status.PENDING
    assert "set on" in access_request.auto_approval_note and "by admin1" in access_request.auto_approval_note
    assert not fake.calls_to("/pd/oncalls")  # not even asked
    # An address the identity provider set (its SCIM service account) is trusted.
    AccessRequest.objects.all().update(status=AccessRequest.Status.CANCELLED)
    scim = make_user("scim-okta", is_service_account=True)
    with set_actor(scim):
        world.requester.email = "oncall.engineer2@example.com"
        world.requester.save()
    fake.state.pd_users[0]["email"] = "oncall.engineer2@example.com"
    assert _request(world).status_code == 302
    assert AccessRequest.objects.filter(requester=world.requester).latest("pk").status == AccessRequest.Status.APPROVED


def test_an_address_another_active_account_has_too_does_not_auto_approve(world, fake, pagerduty, at_t0, make_user):
    """An identity provider may assert any address (a just-in-time account took the on-call engineer's): the
    provider, which knows people by address, cannot tell which of the two it vouches for."""
    twin = make_user("twin", device=False)
    User.objects.filter(pk=twin.pk).update(email=world.requester.email.upper())
    _pd_world(fake, world, level=1)
    _on_call_rule(world, pagerduty)
    assert _request(world).status_code == 302
    access_request = AccessRequest.objects.get(requester=world.requester)
    assert access_request.status == AccessRequest.Status.PENDING
    assert "Another AccessGov account has your email address" in access_request.auto_approval_note
    assert not fake.calls_to("/pd/oncalls")
    # Once the other account is deactivated, the address is the requester's alone again.
    User.objects.filter(pk=twin.pk).update(is_active=False)
    AccessRequest.objects.all().update(status=AccessRequest.Status.CANCELLED)
    assert _request(world).status_code == 302
    assert AccessRequest.objects.filter(requester=world.requester).latest("pk").status == AccessRequest.Status.APPROVED


@pytest.mark.parametrize("failure", [503, 401, "unreachable"])
def test_a_provider_outage_fails_closed_to_people_with_the_reason(world, fake, pagerduty, at_t0, failure):
    _pd_world(fake, world)
    _on_call_rule(world, pagerduty)
    if failure == "unreachable":
        pagerduty.base_url = "https://127.0.0.1:9/pd"  # nothing listens on the discard port
        pagerduty.save()
    else:
        fake.state.pd_fail = failure
    response = _request(world)
    assert response.status_code == 302
    access_request = AccessRequest.objects.get(requester=world.requester)
    assert access_request.status == AccessRequest.Status.PENDING
    assert "Sent to approvers instead" in access_request.auto_approval_note
    assert PD_KEY_NOT_IN(access_request.auto_approval_note)


def PD_KEY_NOT_IN(text: str) -> bool:
    from tests.support.fake_providers import PD_KEY

    return PD_KEY not in text


def test_a_provider_url_pointing_inside_is_refused_without_the_operator_setting(
    world, fake, pagerduty, at_t0, settings
):
    _pd_world(fake, world)
    _on_call_rule(world, pagerduty)
    settings.INTEGRATIONS_ALLOW_PRIVATE_URLS = False
    _request(world)
    access_request = AccessRequest.objects.get(requester=world.requester)
    assert access_request.status == AccessRequest.Status.PENDING
    assert "https://" in access_request.auto_approval_note or "internal" in access_request.auto_approval_note
    assert fake.calls_to("/pd/") == []


def _incident(status="acknowledged", priority="P1", assignee="PU1"):
    return {
        "id": "PINC1",
        "incident_number": 4711,
        "status": status,
        "service": {"id": SERVICE},
        "priority": {"name": priority} if priority else None,
        "assignments": [{"assignee": {"id": assignee}}],
        "acknowledgements": [],
        "html_url": "https://example.pagerduty.com/incidents/PINC1",
    }


def _incident_rule(world, pagerduty, min_priority="P2"):
    return AutoApprovalRule.objects.create(
        role=world.role,
        name="incident responder",
        oncall_provider=pagerduty,
        incident_service=SERVICE,
        incident_min_priority=min_priority,
    )


def test_an_incident_responder_is_auto_approved_and_a_resolved_incident_ends_the_grant(
    world, fake, pagerduty, at_t0, django_capture_on_commit_callbacks
):
    _pd_world(fake, world)
    fake.state.pd_incidents = {"PINC1": _incident(priority="P1")}
    _incident_rule(world, pagerduty, min_priority="P2")
    with django_capture_on_commit_callbacks(execute=True):
        _request(world)
    access_request = AccessRequest.objects.get(requester=world.requester)
    assert access_request.status == AccessRequest.Status.APPROVED
    assert access_request.incident_id == "PINC1"
    event = AccessEvent.objects.get(access_request=access_request, event_type=AccessEvent.Type.REQUEST_AUTO_APPROVED)
    assert event.data["evidence"]["checks"][0]["incident"] == "PINC1"
    assert event.data["evidence"]["checks"][0]["priority"] == "P1"
    grant = Grant.objects.get(access_request=access_request)
    # Still open: one sweep leaves the grant alone.
    integrations_sweep(T0 + timedelta(minutes=5))
    grant.refresh_from_db()
    assert grant.status == Grant.Status.ACTIVE
    fake.state.pd_incidents["PINC1"]["status"] = "resolved"
    with django_capture_on_commit_callbacks(execute=True):
        counts = integrations_sweep(T0 + timedelta(minutes=10))
    assert counts["incident_resolved"] == 1
    grant.refresh_from_db()
    assert grant.status == Grant.Status.REVOKED and grant.end_reason == Grant.EndReason.INCIDENT_RESOLVED
    ended = AccessEvent.objects.get(grant=grant, event_type=AccessEvent.Type.GRANT_INCIDENT_RESOLVED)
    assert ended.data["incident"] == "PINC1" and ended.actor_label == "system:integrations-sweep"
    assert grant.outbox_items.filter(action="remove").exists()


@pytest.mark.parametrize(
    ("incident", "why"),
    [
        ({"priority": "P3"}, "priority P2 or higher"),
        ({"assignee": "PU9"}, "not assigned to an open incident"),
        ({"status": "resolved"}, "not assigned to an open incident"),
        ({"priority": None}, "priority P2 or higher"),
    ],
)
def test_incident_conditions_that_do_not_hold_send_the_request_to_people(world, fake, pagerduty, at_t0, incident, why):
    _pd_world(fake, world)
    fake.state.pd_incidents = {"PINC1": _incident(**incident)}
    _incident_rule(world, pagerduty)
    _request(world)
    access_request = AccessRequest.objects.get(requester=world.requester)
    assert access_request.status == AccessRequest.Status.PENDING
    assert why in access_request.auto_approval_note


def test_a_requester_unknown_to_pagerduty_is_not_auto_approved(world, fake, pagerduty, at_t0):
    _pd_world(fake, world)
    fake.state.pd_users = [{"id": "PU2", "email": "someone.else@example.com"}]
    _on_call_rule(world, pagerduty)
    _request(world)
    access_request = AccessRequest.objects.get(requester=world.requester)
    assert access_request.status == AccessRequest.Status.PENDING
    assert "No PagerDuty user has the email" in access_request.auto_approval_note
