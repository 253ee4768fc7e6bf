"""Integrity of the rules (issue 14, holes 1-6): nobody, admins included, gets around separation of
duties, eligibility or removal. Each test replays the attack as it was found, through the path an
attacker would take (the admin, the portal, the API), and checks the rule held and nothing was
half-written. Races are in test_integrity_races.py (PostgreSQL)."""

from datetime import timedelta

import pytest
import time_machine
from django.contrib.auth.models import Group, Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from guardian.shortcuts import assign_perm

from accessgov import permissions
from accessgov.exceptions import NotAuthorized, PolicyViolation, TransitionNotAllowed
from accessgov.models import (
    AccessEvent,
    AccessRequest,
    ApiToken,
    ChangeRequest,
    Eligibility,
    Grant,
    OutboxItem,
    Role,
    System,
    User,
)
from accessgov.services import access_requests as ar
from accessgov.services import changes, provisioning, reviews, sweep
from accessgov.services import eligibility as eligibility_services
from accessgov.services import grants as gs
from accessgov.services import tokens as token_services
from accessgov.services import users as user_services
from tests.conftest import PASSWORD, add_totp_device, sign_in, verify_session
from tests.support.admin_forms import add_user_in_admin, post_admin_form
from tests.support.api_helpers import api_client, make_service_account, make_token, post_json

pytestmark = pytest.mark.django_db
H = timedelta(hours=1)
WHY = "Investigating incident INC-42 on payments"


def as_(user) -> Client:
    return verify_session(Client(), user)


def role_change(admin, role, **values) -> ChangeRequest:
    fresh = Role.objects.get(pk=role.pk)
    for name, value in values.items():
        setattr(fresh, name, value)
    return changes.change_propose(admin, kind=ChangeRequest.Kind.ROLE, instance=fresh, fields=list(values))


# --- 1. Service tokens never act as a person ---------------------------------------------------------


def test_the_admin_offers_no_service_token_for_a_real_person_and_the_service_refuses_it(world, admins):
    first, _ = admins
    response = as_(first).post(
        "/admin/accessgov/apitoken/add/",
        {
            "user": world.approver.pk,
            "name": "impersonation",
            "expires_at_0": (timezone.now() + timedelta(days=30)).strftime("%Y-%m-%d"),
            "expires_at_1": "12:00:00",
            "scopes": ["decisions:decide"],
        },
    )
    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    with pytest.raises(PolicyViolation, match="a person, not a service account"):
        changes.change_propose_service_token(
            first, user=world.approver, name="x", expires_at=timezone.now() + H, scopes=["decisions:decide"]
        )
    assert not ApiToken.objects.exists() and not ChangeRequest.objects.exists()


def test_a_service_token_already_made_for_a_person_no_longer_authenticates(world, admins):
    """The hole as it was exploited: a service token for an approver with decisions:decide approving the
    approver's own request. Such a row (made before the fix) is refused at authentication."""
    first, _ = admins
    mine = ar.access_request_submit(
        world.approver, role=_role_for(world.approver, world), duration=H, justification=WHY
    )
    secret = "agv_s_" + "x" * 43
    ApiToken.objects.create(
        user=world.approver,
        kind=ApiToken.Kind.SERVICE,
        name="legacy",
        key_hash=token_services.hash_secret(secret),
        display_prefix=secret[:10],
        scopes=["decisions:decide", "requests:read"],
        created_by=first,
        expires_at=timezone.now() + timedelta(days=30),
    )
    response = post_json(api_client(secret), f"/api/v1/requests/{mine.pk}/approve/")
    assert response.status_code == 401
    assert AccessRequest.objects.get(pk=mine.pk).status == "pending"


def _role_for(user, world) -> Role:
    """A role on another system that ``user`` may request and that world.approver2 (not ``user``) decides."""
    system = System.objects.create(name="Billing", slug="billing")
    role = Role.objects.create(system=system, name="read", approvals_required=1)
    Eligibility.objects.create(role=role, user=user, starts_at=timezone.now() - H)
    assign_perm("accessgov.approve_role", world.approver2, role)
    assign_perm("accessgov.approve_role", user, role)  # the attacker approves this role too
    return role


def test_a_service_account_is_four_eyed_and_can_never_sign_in(world, admins):
    first, second = admins
    response = as_(first).post(
        "/admin/accessgov/serviceaccount/add/", {"username": "deploy-bot", "description": "CI pipeline"}
    )
    change = ChangeRequest.objects.get(kind="service_account")
    assert response.status_code == 302 and response["Location"] == reverse("change_detail", args=[change.pk])
    assert not User.objects.filter(username="deploy-bot").exists()
    with pytest.raises(NotAuthorized, match="Nobody approves their own"):
        changes.change_approve(first, change.pk)
    changes.change_approve(second, change.pk)
    bot = User.objects.get(username="deploy-bot")
    assert bot.is_service_account and not bot.has_usable_password() and bot.created_by == first
    # Nobody can give it a password in the admin, and one set in a shell does not open the portal.
    assert as_(first).get(f"/admin/accessgov/user/{bot.pk}/password/").status_code == 403
    bot.set_password(PASSWORD)
    bot.save()
    client = Client()
    response = client.post(reverse("accounts:login"), {"username": "deploy-bot", "password": PASSWORD})
    assert response.status_code == 200 and "_auth_user_id" not in client.session
    # ... and then its service tokens stop working too.
    bot.set_unusable_password()
    bot.save()
    _, secret = make_token(bot, kind=ApiToken.Kind.SERVICE, scopes=["requests:read"])
    assert api_client(secret).get("/api/v1/requests/").status_code == 200
    bot.set_password(PASSWORD)
    bot.save()
    assert api_client(secret).get("/api/v1/requests/").status_code == 401


def test_a_service_account_with_an_authenticator_cannot_get_a_token(world, admins):
    first, _ = admins
    bot = make_service_account("odd-bot")
    add_totp_device(bot)
    with pytest.raises(PolicyViolation, match="not a pure service account"):
        changes.change_propose_service_token(
            first, user=bot, name="x", expires_at=timezone.now() + H, scopes=["requests:read"]
        )


# --- 2. Sybil admin -----------------------------------------------------------------------------------


def test_making_someone_staff_or_superuser_in_the_admin_is_only_proposed(world, admins):
    first, second = admins
    url = reverse("admin:accessgov_user_change", args=[world.outsider.pk])
    response = post_admin_form(as_(first), url, "user_form", is_staff="on", is_superuser="on")
    change = ChangeRequest.objects.get(kind="user_rights")
    assert response.status_code == 302 and response["Location"] == reverse("change_detail", args=[change.pk])
    outsider = User.objects.get(pk=world.outsider.pk)
    assert not outsider.is_staff and not outsider.is_superuser
    assert change.beneficiary == outsider and set(change.changes) == {"is_staff", "is_superuser"}
    changes.change_approve(second, change.pk)
    outsider.refresh_from_db()
    assert outsider.is_staff and outsider.is_superuser
    # Narrowing applies at once.
    post_admin_form(as_(first), url, "user_form", is_staff=None, is_superuser=None)
    outsider.refresh_from_db()
    assert not outsider.is_staff and not outsider.is_superuser


def test_another_persons_address_or_username_changed_in_the_admin_waits_for_a_second_admin_and_both_addresses_hear(
    world, admins, make_user, django_capture_on_commit_callbacks, mailoutbox
):
    """One admin re-pointing a person's address at a mailbox they read is a step towards the account (a recovery
    link, PagerDuty's and Jira's matching by address): it is proposed, another admin who is not the person
    approves, and the person hears of it at the old address and the new."""
    first, second = admins
    third = make_user("admin3", is_staff=True, is_superuser=True)
    person = world.approver
    old_address = person.email
    url = reverse("admin:accessgov_user_change", args=[person.pk])
    response = post_admin_form(as_(first), url, "user_form", email="attacker@evil.test", first_name="Renamed")
    change = ChangeRequest.objects.get(kind="user_identity")
    assert response.status_code == 302 and response["Location"] == reverse("change_detail", args=[change.pk])
    person.refresh_from_db()
    assert person.email == old_address and person.first_name == "Renamed"  # the rest is saved at once
    assert change.beneficiary == person and change.changes == {
        "email": {"label": "Email address", "old": old_address, "new": "attacker@evil.test"}
    }
    with pytest.raises(NotAuthorized):
        changes.change_approve(first, change.pk)
    about_third = changes.change_propose_user_identity(first, user=third, email="third@elsewhere.test")
    with pytest.raises(NotAuthorized, match="your own username or email address"):
        changes.change_approve(third, about_third.pk)
    with django_capture_on_commit_callbacks(execute=True):
        changes.change_approve(second, change.pk)
    person.refresh_from_db()
    assert person.email == "attacker@evil.test"
    assert sorted(m.to[0] for m in mailoutbox) == sorted([old_address, "attacker@evil.test"])
    body = " ".join(mailoutbox[0].body.split())
    assert f"Email address: {old_address} → attacker@evil.test" in body and "admin1" in body and "admin2" in body
    assert AccessEvent.objects.filter(event_type="change.applied", data__change_id=change.pk).count() == 1
    # Neither the proposer nor the approver may then have a recovery link sent there (or approve one).
    for admin in (first, second):
        with pytest.raises(PolicyViolation, match="You set approver's email address"):
            changes.change_propose_account_recovery(admin, user=person, send_link=True)
    link = changes.change_propose_account_recovery(third, user=person, send_link=True)
    for admin in (first, second):
        with pytest.raises(NotAuthorized, match="the link would go where you chose"):
            changes.change_approve(admin, link.pk)


def test_an_identity_change_that_was_overtaken_or_takes_a_name_in_use_is_refused(world, admins):
    first, second = admins
    person = world.requester
    change = changes.change_propose_user_identity(first, user=person, username="renamed", email="new@example.com")
    assert set(change.changes) == {"username", "email"}
    User.objects.filter(pk=person.pk).update(email="meanwhile@example.com")
    with pytest.raises(TransitionNotAllowed, match="changed since this was proposed"):
        changes.change_approve(second, change.pk)
    person.refresh_from_db()
    assert person.username == "requester" and person.email == "meanwhile@example.com"
    with pytest.raises(PolicyViolation, match="taken"):
        changes.change_propose_user_identity(first, user=person, username=world.approver.username)
    with pytest.raises(PolicyViolation, match="Email address"):
        changes.change_propose_user_identity(first, user=person, email="not an address")
    with pytest.raises(PolicyViolation, match="their own"):
        changes.change_propose_user_identity(first, user=first, email="elsewhere@example.com")
    assert changes.change_propose_user_identity(first, user=person, email=person.email) is None
    # Proposed while free, the name taken before approval: refused then, nothing written.
    pending = changes.change_propose_user_identity(first, user=person, username="free-name")
    make_user_named = User.objects.create(username="free-name")
    with pytest.raises(PolicyViolation, match="taken"):
        changes.change_approve(second, pending.pk)
    assert User.objects.get(pk=person.pk).username == "requester" and make_user_named.pk


def test_adding_someone_to_a_group_or_a_group_to_a_permission_is_four_eyed(world, admins):
    first, second = admins
    auditors = Group.objects.get(name="auditor")
    url = reverse("admin:accessgov_user_change", args=[world.outsider.pk])
    post_admin_form(as_(first), url, "user_form", groups=[str(auditors.pk)])
    assert not world.outsider.groups.exists()
    change = ChangeRequest.objects.get(kind="user_rights")
    changes.change_approve(second, change.pk)
    assert list(world.outsider.groups.all()) == [auditors]
    # Leaving a group applies at once.
    post_admin_form(as_(first), url, "user_form", groups=[])
    assert not world.outsider.groups.exists()

    group = Group.objects.create(name="helpers")
    change_user = Permission.objects.get(codename="change_user")
    group_url = reverse("admin:auth_group_change", args=[group.pk])
    response = post_admin_form(as_(first), group_url, "group_form", permissions=[str(change_user.pk)])
    pending = ChangeRequest.objects.get(kind="group_permissions")
    assert response.status_code == 302 and not group.permissions.exists()
    changes.change_approve(second, pending.pk)
    assert list(group.permissions.all()) == [change_user]


def test_sybil_admin_cannot_approve_the_proposers_change_or_access(world, admins, make_user):
    """One admin proposes a policy change, creates a second account, gets it made staff and superuser
    (by an honest second admin) and tries to approve their own change and access with it."""
    first, second = admins
    sybil = add_user_in_admin(as_(first), "sybil")
    # The honest second admin is told, on the change giving it rights, that the proposer made the account.
    url = reverse("admin:accessgov_user_change", args=[sybil.pk])
    post_admin_form(as_(first), url, "user_form", is_staff="on")
    rights = ChangeRequest.objects.filter(kind="user_rights", beneficiary=sybil).latest("pk")
    page = " ".join(as_(second).get(reverse("change_detail", args=[rights.pk])).content.decode().split())
    assert "account was created by <strong>admin1</strong>" in page and "by the proposer" in page
    changes.change_reject(second, rights.pk, comment="Checked: the proposer made this account")
    assert sybil.created_by == first
    add_totp_device(sybil)
    rights = changes.change_propose_user_rights(first, user=sybil, make_staff=True, make_superuser=True)
    changes.change_approve(second, rights.pk)  # the honest admin may approve it: they are independent
    sybil.refresh_from_db()
    assert sybil.is_staff and sybil.is_superuser

    policy = role_change(first, world.role, approvals_required=0)
    page = as_(sybil).get(reverse("change_detail", args=[policy.pk])).content.decode()
    assert "Approve and apply" not in page and "created your account" in page
    response = as_(sybil).post(reverse("change_approve", args=[policy.pk]))
    assert response.status_code == 403 and "created your account" in response.content.decode()
    assert ChangeRequest.objects.get(pk=policy.pk).status == "pending"

    Eligibility.objects.create(role=world.role, user=first, starts_at=timezone.now() - H)
    own = ar.access_request_submit(first, role=world.role, duration=H, justification=WHY)
    # A superuser approves only roles they are named an approver of; named, sybil is still not independent.
    with pytest.raises(NotAuthorized, match="not an approver"):
        ar.access_request_approve(sybil, own.pk)
    assign_perm("accessgov.approve_role", sybil, world.role)
    with pytest.raises(NotAuthorized, match="created your account"):
        ar.access_request_approve(sybil, own.pk)
    assert AccessRequest.objects.get(pk=own.pk).status == "pending"
    assert not Grant.objects.filter(user=first).exists()

    # Thirty days on, the account stands on its own.
    with time_machine.travel(timezone.now() + timedelta(days=31)):
        ar.access_request_lapse_due(timezone.now())
        second_policy = role_change(first, world.role, approvals_required=2)
        changes.change_approve(sybil, second_policy.pk)
    assert Role.objects.get(pk=world.role.pk).approvals_required == 2


def test_an_account_the_proposer_empowered_cannot_approve_for_them(world, admins):
    first, second = admins
    # first proposes that the (old, independent) approver gets approve rights on a new role ...
    rights = changes.change_propose_user_rights(first, user=world.approver, make_staff=True)
    changes.change_approve(second, rights.pk)
    world.approver.refresh_from_db()
    policy = role_change(first, world.role, max_duration=timedelta(hours=3))
    with pytest.raises(NotAuthorized, match="gave your account rights"):
        changes.change_approve(world.approver, policy.pk)
    # The honest second admin, whom nobody empowered, still can.
    changes.change_approve(second, policy.pk)

    # Object permissions count too: first gives the outsider approve_role, second approves.
    grant = changes.change_propose_permissions(first, obj=world.role, user=world.outsider, perms={"approve_role"})
    changes.change_approve(second, grant.pk)
    Eligibility.objects.create(role=world.role, user=first, starts_at=timezone.now() - H)
    own = ar.access_request_submit(first, role=world.role, duration=H, justification=WHY)
    with pytest.raises(NotAuthorized, match="gave your account rights"):
        ar.access_request_approve(world.outsider, own.pk)
    # Narrowing (removing rights) does not make anyone dependent.
    changes.change_propose_permissions(second, obj=world.role, user=world.approver, perms=set())
    ar.access_request_approve(world.approver2, own.pk)
    assert AccessRequest.objects.get(pk=own.pk).status == "approved"


def test_four_eyes_off_still_keeps_a_created_account_from_approving_its_creators_access(world, make_user, settings):
    settings.FOUR_EYES_POLICY_CHANGES = False
    lone = make_user("lone-admin", is_staff=True, is_superuser=True)
    puppet = make_user("puppet", created_by=lone)
    changes.change_propose_user_rights(lone, user=puppet, make_superuser=True)
    puppet.refresh_from_db()
    assert puppet.is_superuser
    Eligibility.objects.create(role=world.role, user=lone, starts_at=timezone.now() - H)
    own = ar.access_request_submit(lone, role=world.role, duration=H, justification=WHY)
    with pytest.raises(NotAuthorized):
        ar.access_request_approve(puppet, own.pk)


# --- 3. Nobody confirms provisioning of their own access ------------------------------------------------


def test_an_approver_cannot_confirm_the_manual_tasks_of_their_own_grant(world):
    assert world.system.connector == System.Connector.MANUAL
    Eligibility.objects.create(role=world.role, user=world.approver2, starts_at=timezone.now() - H)
    request = ar.access_request_submit(world.approver2, role=world.role, duration=H, justification=WHY)
    ar.access_request_approve(world.approver, request.pk)
    grant = Grant.objects.get(access_request=request)
    apply_item = OutboxItem.objects.get(grant=grant, action="apply")

    page = as_(world.approver2).get(reverse("provisioning")).content.decode()
    assert reverse("manual_task_done", args=[apply_item.pk]) not in page
    response = as_(world.approver2).post(reverse("manual_task_done", args=[apply_item.pk]))
    assert response.status_code == 403 and "their own access" in response.content.decode()
    with pytest.raises(NotAuthorized, match="their own access"):
        provisioning.manual_task_complete(world.approver2, apply_item.pk)
    assert OutboxItem.objects.get(pk=apply_item.pk).done_at is None

    provisioning.manual_task_complete(world.approver, apply_item.pk)
    gs.grant_release(world.approver2, grant.pk)
    remove_item = OutboxItem.objects.get(grant=grant, action="remove")
    with pytest.raises(NotAuthorized, match="their own access"):
        provisioning.manual_task_complete(world.approver2, remove_item.pk)
    grant.refresh_from_db()
    assert grant.removal_confirmed_at is None
    provisioning.manual_task_complete(world.owner, remove_item.pk)
    grant.refresh_from_db()
    assert grant.removal_confirmed_at is not None


def test_the_queue_leaves_out_requests_of_someone_the_approver_is_not_independent_of(world, make_user):
    """A probe's finding: a sock account's queue (page and API) listed its maker's request, which it may not decide."""
    sock = make_user("sock")
    User.objects.filter(pk=sock.pk).update(created_by=world.requester, date_joined=timezone.now() - timedelta(days=1))
    sock.refresh_from_db()
    assign_perm("accessgov.approve_role", sock, world.role)
    request = ar.access_request_submit(world.requester, role=world.role, duration=H, justification=WHY)
    assert f"#{request.pk} " not in as_(sock).get(reverse("approvals")).content.decode()
    assert f"#{request.pk} " in as_(world.approver).get(reverse("approvals")).content.decode()
    _token, secret = make_token(sock, scopes=["decisions:read"])
    listed = api_client(secret).get("/api/v1/decisions/")
    assert listed.status_code == 200 and request.pk not in [row["id"] for row in listed.json()]
    _token, secret = make_token(world.approver, scopes=["decisions:read"])
    assert request.pk in [row["id"] for row in api_client(secret).get("/api/v1/decisions/").json()]
    assert (
        permissions.independence_problem(sock, world.requester)
        == "requester created your account less than 30 days ago."
    )


def test_an_account_the_grantee_made_cannot_confirm_their_manual_tasks(world, make_user):
    """The probe's sock account: an admin creates an account, gets it made an approver of a manual system, and
    has it attest that their own access was applied — and removed."""
    assert world.system.connector == System.Connector.MANUAL
    sock = make_user("sock")
    User.objects.filter(pk=sock.pk).update(created_by=world.approver2, date_joined=timezone.now() - timedelta(days=1))
    sock.refresh_from_db()
    assign_perm("accessgov.approve_role", sock, world.role)
    Eligibility.objects.create(role=world.role, user=world.approver2, starts_at=timezone.now() - H)
    request = ar.access_request_submit(world.approver2, role=world.role, duration=H, justification=WHY)
    ar.access_request_approve(world.approver, request.pk)
    apply_item = OutboxItem.objects.get(grant__access_request=request, action="apply")
    page = as_(sock).get(reverse("provisioning")).content.decode()
    assert reverse("manual_task_done", args=[apply_item.pk]) not in page
    response = as_(sock).post(reverse("manual_task_done", args=[apply_item.pk]), {"confirm": "yes"})
    assert response.status_code == 403 and "created your account" in response.content.decode()
    with pytest.raises(NotAuthorized, match="created your account"):
        provisioning.manual_task_complete(sock, apply_item.pk)
    assert OutboxItem.objects.get(pk=apply_item.pk).done_at is None
    provisioning.manual_task_complete(world.approver, apply_item.pk)  # an independent approver may


# --- 4. Eligibility is standing ----------------------------------------------------------------------------


def _withdrawn(access_request) -> AccessEvent:
    access_request.refresh_from_db()
    assert access_request.status == "cancelled"
    return AccessEvent.objects.get(event_type="request.withdrawn", access_request=access_request)


def test_ending_an_eligibility_withdraws_the_pending_request_and_approval_is_refused(world):
    pending = ar.access_request_submit(world.requester, role=world.role, duration=H, justification=WHY)
    eligibility = Eligibility.objects.get(role=world.role, user=world.requester)
    eligibility_services.eligibility_end(world.owner, eligibility.pk, reason="Moved to another team")
    event = _withdrawn(pending)
    assert "no longer eligible" in event.reason and event.actor_label.startswith("system:")
    with pytest.raises(TransitionNotAllowed):
        ar.access_request_approve(world.approver, pending.pk)
    assert not Grant.objects.filter(access_request=pending).exists()
    # The approver sees why on the request page.
    page = as_(world.approver).get(reverse("request_detail", args=[pending.pk])).content.decode()
    assert "no longer eligible" in page


def test_an_approval_of_a_request_whose_eligibility_ended_by_date_withdraws_it(world):
    pending = ar.access_request_submit(world.requester, role=world.role, duration=H, justification=WHY)
    Eligibility.objects.filter(role=world.role, user=world.requester).update(ends_at=timezone.now() + H)
    with (
        time_machine.travel(timezone.now() + 2 * H),
        pytest.raises(TransitionNotAllowed, match=r"no longer eligible.*withdrawn"),
    ):
        ar.access_request_approve(world.approver, pending.pk)
    _withdrawn(pending)
    assert not Grant.objects.filter(access_request=pending).exists()


def test_the_sweep_withdraws_pending_requests_of_people_who_left_the_group(world):
    group = Group.objects.create(name="oncall")
    world.outsider.groups.add(group)
    Eligibility.objects.create(role=world.role, group=group, starts_at=timezone.now() - H)
    pending = ar.access_request_submit(world.outsider, role=world.role, duration=H, justification=WHY)
    world.outsider.groups.remove(group)
    counts = sweep.sweep_run(timezone.now())
    assert counts["withdrawn"] == 1
    _withdrawn(pending)
    assert sweep.sweep_run(timezone.now())["withdrawn"] == 0


def test_a_review_revoke_withdraws_pending_requests_and_revokes_scheduled_grants(world, make_user):
    start = timezone.now() + 2 * H
    scheduled = ar.access_request_submit(
        world.requester, role=world.role_two, duration=H, justification=WHY, starts_at=start
    )
    ar.access_request_approve(world.approver, scheduled.pk)
    ar.access_request_approve(world.approver2, scheduled.pk)
    pending = ar.access_request_submit(world.requester, role=world.role, duration=H, justification=WHY)
    campaign = reviews.review_campaign_create(
        world.auditor, name="Q4", systems=[world.system], due_at=timezone.now() + H
    )
    for item in campaign.items.filter(subject_user=world.requester):
        reviews.review_item_decide(item.reviewer, item.pk, decision="revoke", comment="Not needed any more")
    reviews.review_campaign_close(world.auditor, campaign.pk)
    _withdrawn(pending)
    grant = Grant.objects.get(access_request=scheduled)
    assert grant.status == "revoked" and grant.provisioning_state == "not_applied"


def test_a_scheduled_grant_whose_holder_lost_eligibility_is_revoked_at_its_start(world):
    start = timezone.now() + 2 * H
    access_request = ar.access_request_submit(
        world.requester, role=world.role, duration=H, justification=WHY, starts_at=start
    )
    ar.access_request_approve(world.approver, access_request.pk)
    grant = Grant.objects.get(access_request=access_request)
    Eligibility.objects.filter(role=world.role, user=world.requester).update(ends_at=timezone.now() + H)
    with time_machine.travel(start + timedelta(seconds=1)):
        assert gs.grant_activate_due(timezone.now()) == 0
    grant.refresh_from_db()
    assert grant.status == "revoked" and grant.activated_at is None
    assert not OutboxItem.objects.filter(grant=grant).exists()
    event = AccessEvent.objects.get(grant=grant, event_type="grant.revoked")
    assert "Not eligible" in event.reason


def test_an_extension_is_refused_once_eligibility_ended(world):
    access_request = ar.access_request_submit(world.requester, role=world.role, duration=H, justification=WHY)
    ar.access_request_approve(world.approver, access_request.pk)
    grant = Grant.objects.get(access_request=access_request)
    extension = ar.access_request_submit_extension(world.requester, grant_id=grant.pk, duration=H, justification=WHY)
    eligibility = Eligibility.objects.get(role=world.role, user=world.requester)
    eligibility_services.eligibility_end(world.owner, eligibility.pk, reason="Left the team")
    _withdrawn(extension)
    expires_at = grant.expires_at
    grant.refresh_from_db()
    assert grant.expires_at == expires_at
    with pytest.raises(PolicyViolation, match="no longer eligible"):
        ar.access_request_submit_extension(world.requester, grant_id=grant.pk, duration=H, justification=WHY)


# --- 5. A scheduled start after the eligibility's end --------------------------------------------------------


def test_a_scheduled_start_after_the_eligibility_end_is_refused_in_the_form_and_the_api(world):
    Eligibility.objects.filter(role=world.role, user=world.requester).update(ends_at=timezone.now() + 2 * H)
    late = timezone.now() + 3 * H
    with pytest.raises(PolicyViolation, match="choose a start before then"):
        ar.access_request_submit(world.requester, role=world.role, duration=H, justification=WHY, starts_at=late)
    _, secret = make_token(world.requester, scopes=["requests:create"])
    response = post_json(
        api_client(secret),
        "/api/v1/requests/",
        {"role_id": world.role.pk, "duration_seconds": 3600, "justification": WHY, "starts_at": late.isoformat()},
    )
    assert response.status_code == 400 and "choose a start before then" in response.json()["error"]["message"]
    assert not AccessRequest.objects.exists()
    # A start before the end is fine.
    ar.access_request_submit(
        world.requester, role=world.role, duration=H, justification=WHY, starts_at=timezone.now() + H
    )


# --- 6. Ending a grant that is past its end but not yet swept queues the removal ---------------------------


@pytest.fixture
def overdue_grant(world):
    """A grant stored as active whose expires_at has passed, not yet swept (workers down)."""
    access_request = ar.access_request_submit(world.requester, role=world.role, duration=H, justification=WHY)
    ar.access_request_approve(world.approver, access_request.pk)
    grant = Grant.objects.get(access_request=access_request)
    OutboxItem.objects.filter(grant=grant).update(done_at=timezone.now(), outcome="applied")
    Grant.objects.filter(pk=grant.pk).update(provisioning_state="applied")
    return grant


def _assert_recorded_as_expiry_with_removal(grant) -> None:
    grant.refresh_from_db()
    assert grant.status == "expired" and grant.ended_at == grant.expires_at
    assert grant.provisioning_state == "removal_pending"
    assert OutboxItem.objects.filter(grant=grant, action="remove", done_at__isnull=True).count() == 1
    assert AccessEvent.objects.filter(grant=grant, event_type="grant.expired").count() == 1
    # The sweep finds nothing more to do, and queues no second removal.
    assert gs.grant_expire_due(timezone.now()) == 0
    assert OutboxItem.objects.filter(grant=grant, action="remove").count() == 1


@pytest.mark.parametrize("path", ["deactivation", "review", "revoke", "release"])
def test_ending_a_grant_already_past_its_end_queues_its_removal(world, overdue_grant, make_user, path):
    with time_machine.travel(overdue_grant.expires_at + timedelta(minutes=5)):
        if path == "deactivation":
            admin = make_user("admin", is_staff=True, is_superuser=True)
            user_services.user_deactivate(admin, world.requester.pk, reason="Left the company")
        elif path == "review":
            gs.grant_revoke_by_system(overdue_grant.pk, reason="Access review", job="review-close")
        elif path == "revoke":
            gs.grant_revoke(world.approver, overdue_grant.pk, reason="Not needed")
        else:
            gs.grant_release(world.requester, overdue_grant.pk)
        _assert_recorded_as_expiry_with_removal(overdue_grant)


def test_releasing_an_overdue_grant_in_the_portal_says_what_happened(world, overdue_grant):
    with time_machine.travel(overdue_grant.expires_at + timedelta(minutes=5)):
        client = as_(world.requester)
        response = client.post(reverse("grant_release", args=[overdue_grant.pk]), {"confirm": "yes"}, follow=True)
        assert response.status_code == 200
        assert "had already ended; its removal at the target is queued" in response.content.decode()
    _assert_recorded_as_expiry_with_removal(overdue_grant)


def test_deactivation_revokes_tokens_through_the_token_service(world, make_user):
    admin = make_user("admin", is_staff=True, is_superuser=True)
    token, secret = make_token(world.requester)
    user_services.user_deactivate(admin, world.requester.pk, reason="Left")
    token.refresh_from_db()
    assert token.revoked_by == admin and token.revoked_at is not None
    assert api_client(secret).get("/api/v1/requests/").status_code == 401


def test_a_person_signs_in_after_all_this(world):
    """Sanity: the rules above do not lock ordinary people out."""
    client = sign_in(Client(), world.requester)
    assert client.get(reverse("home")).status_code == 200
