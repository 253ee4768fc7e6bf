"""Deactivating an account ends its sessions, revokes its grants through the lifecycle (removal queued at
the target), withdraws its pending requests from approvers' queues and revokes its API tokens — all
audited; reactivation restores nothing."""

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accessgov.exceptions import NotAuthorized, TransitionNotAllowed
from accessgov.models import AccessEvent, AccessRequest, ApiToken, Grant, OutboxItem, User
from accessgov.services import access_requests as ar
from accessgov.services import tokens, users
from tests.conftest import verify_session
from tests.support.admin_forms import post_admin_form

pytestmark = pytest.mark.django_db
H = timedelta(hours=1)


@pytest.fixture
def admin(make_user):
    return make_user("admin1", is_staff=True, is_superuser=True)


@pytest.fixture
def busy_requester(world):
    """The requester with an active grant, a pending request, an API token and a signed-in session."""
    granted = ar.access_request_submit(world.requester, role=world.role, duration=H, justification="Fix incident INC-1")
    ar.access_request_approve(world.approver, granted.pk)
    pending = ar.access_request_submit(
        world.requester, role=world.role_two, duration=H, justification="Fix incident INC-2"
    )
    token, _secret = tokens.api_token_create(
        world.requester,
        user=world.requester,
        name="laptop",
        kind=ApiToken.Kind.PERSONAL,
        expires_at=timezone.now() + timedelta(days=7),
        scopes=["requests:read"],
    )
    session = verify_session(Client(), world.requester)
    assert session.get(reverse("my_access")).status_code == 200
    return {"grant": Grant.objects.get(access_request=granted), "pending": pending, "token": token, "session": session}


def test_deactivation_ends_sessions_revokes_grants_withdraws_requests_and_tokens(world, admin, busy_requester):
    result = users.user_deactivate(admin, world.requester.pk, reason="Left the company")
    assert result == {"grants_revoked": 1, "requests_withdrawn": 1, "tokens_revoked": 1}

    response = busy_requester["session"].get(reverse("my_access"))
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")

    grant = Grant.objects.get(pk=busy_requester["grant"].pk)
    assert grant.status == Grant.Status.REVOKED and not Grant.objects.active(timezone.now()).exists()
    assert OutboxItem.objects.filter(grant=grant, action=OutboxItem.Action.REMOVE).count() == 1
    pending = AccessRequest.objects.get(pk=busy_requester["pending"].pk)
    assert pending.status == AccessRequest.Status.CANCELLED
    assert not ar_queue_contains(world.approver, pending)
    assert ApiToken.objects.get(pk=busy_requester["token"].pk).revoked_at is not None

    assert AccessEvent.objects.filter(event_type="user.deactivated").count() == 1
    assert AccessEvent.objects.filter(event_type="grant.revoked", grant=grant).count() == 1
    assert AccessEvent.objects.filter(event_type="request.cancelled", access_request=pending).count() == 1
    deactivated = AccessEvent.objects.get(event_type="user.deactivated")
    assert deactivated.actor == admin and deactivated.reason == "Left the company"


def ar_queue_contains(approver, access_request) -> bool:
    from accessgov import selectors

    return selectors.approver_queue(approver, timezone.now()).filter(pk=access_request.pk).exists()


def test_a_deactivated_user_cannot_sign_in(world, admin):
    from tests.conftest import PASSWORD

    users.user_deactivate(admin, world.requester.pk, reason="Left")
    client = Client()
    response = client.post(reverse("accounts:login"), {"username": "requester", "password": PASSWORD})
    assert response.status_code == 200 and "_auth_user_id" not in client.session


def test_unchecking_active_in_the_admin_goes_through_the_service(world, admin, busy_requester):
    url = reverse("admin:accessgov_user_change", args=[world.requester.pk])
    response = post_admin_form(verify_session(Client(), admin), url, "user_form", is_active=None)
    assert response.status_code == 302
    assert Grant.objects.get(pk=busy_requester["grant"].pk).status == Grant.Status.REVOKED
    assert AccessEvent.objects.filter(event_type="user.deactivated").count() == 1


def test_the_admins_deactivate_action_says_what_each_account_loses_and_needs_a_reason(world, admin, busy_requester):
    """A probe's finding: the action ran at once, with a fixed reason, revoking live access."""
    client = verify_session(Client(), admin)
    changelist = reverse("admin:accessgov_user_changelist")
    chosen = {"action": "deactivate_users", "_selected_action": [world.requester.pk]}
    page = client.post(changelist, chosen)
    assert page.status_code == 200 and "Deactivate 1 account?" in page.content.decode()
    assert "<td>1</td><td>1</td>" in " ".join(page.content.decode().split()).replace("> <", "><")
    assert Grant.objects.get(pk=busy_requester["grant"].pk).status == Grant.Status.ACTIVE  # nothing yet
    no_reason = client.post(changelist, {**chosen, "confirm": "yes", "reason": "  "})
    assert no_reason.status_code == 200 and "Say why" in no_reason.content.decode()
    assert User.objects.get(pk=world.requester.pk).is_active
    done = client.post(changelist, {**chosen, "confirm": "yes", "reason": "Left the company on Friday"})
    assert done.status_code == 302
    assert Grant.objects.get(pk=busy_requester["grant"].pk).status == Grant.Status.REVOKED
    assert AccessEvent.objects.get(event_type="user.deactivated").reason == "Left the company on Friday"
    # People are deactivated, never deleted: the action and the button are gone.
    listing = client.get(changelist).content.decode()
    assert "delete_selected" not in listing
    deleting = client.post(reverse("admin:accessgov_user_delete", args=[world.requester.pk]), {"post": "yes"})
    assert deleting.status_code == 403 and User.objects.filter(pk=world.requester.pk).exists()


def test_reactivation_restores_nothing_and_is_audited(world, admin, busy_requester):
    users.user_deactivate(admin, world.requester.pk, reason="Suspended during investigation")
    users.user_reactivate(admin, world.requester.pk, reason="Cleared")
    world.requester.refresh_from_db()
    assert world.requester.is_active
    assert Grant.objects.get(pk=busy_requester["grant"].pk).status == Grant.Status.REVOKED
    assert AccessRequest.objects.get(pk=busy_requester["pending"].pk).status == AccessRequest.Status.CANCELLED
    assert ApiToken.objects.get(pk=busy_requester["token"].pk).revoked_at is not None
    assert AccessEvent.objects.get(event_type="user.reactivated").reason == "Cleared"
    with pytest.raises(TransitionNotAllowed):
        users.user_reactivate(admin, world.requester.pk, reason="again")


def test_only_admins_deactivate_accounts(world):
    with pytest.raises(NotAuthorized):
        users.user_deactivate(world.approver, world.requester.pk, reason="I don't like them")
    world.requester.refresh_from_db()
    assert world.requester.is_active and not AccessEvent.objects.filter(event_type="user.deactivated").exists()
