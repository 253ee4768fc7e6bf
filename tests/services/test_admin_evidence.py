"""Admin changes are evidence too (issue 22, a probe on a production-shaped instance): what an admin takes
away in /admin/ (admin flags, model permissions, a group, a whole group), accounts made in the admin or by
``createsuperuser``, event-webhook subscriptions and personal API tokens each write their access events in
the transaction of the change — and the evidence pack does not count a change that only takes rights away,
applied at once by design, as an exception."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command, get_commands
from django.test import Client
from django.urls import reverse

from accessgov.evidence.populations import Context, PolicyChanges
from accessgov.exceptions import PolicyViolation
from accessgov.models import AccessEvent, ApiToken, ChangeRequest, Eligibility, EventWebhookSubscription, User
from accessgov.services import changes, users
from accessgov.services import tokens as token_services
from tests.conftest import verify_session
from tests.support.admin_forms import post_admin_form

pytestmark = pytest.mark.django_db
Type = AccessEvent.Type
SECRET = "whsec_c2lnbmluZy1rZXktb2YtdGhlLWFkbWluLXRlc3Q="


@pytest.fixture
def admins(make_user):
    return make_user("admin1", is_staff=True, is_superuser=True), make_user("admin2", is_staff=True, is_superuser=True)


def as_(user) -> Client:
    return verify_session(Client(), user)


def _recorded(change: ChangeRequest) -> list[AccessEvent]:
    return list(AccessEvent.objects.filter(data__change_id=change.pk).order_by("sequence"))


def _assert_narrowing(change: ChangeRequest, actor: User) -> None:
    """Recorded the way a removal of who approves or owns is: proposed and applied at once, marked narrowing."""
    assert change.status == ChangeRequest.Status.APPLIED and change.decided_by is None
    assert change.proposed_by == actor and change.beneficiary is None and change.payload["narrowing"] is True
    proposed, applied = _recorded(change)
    assert (proposed.event_type, applied.event_type) == (Type.CHANGE_PROPOSED, Type.CHANGE_APPLIED)
    assert applied.actor == actor and applied.data["four_eyes"] is False and applied.data["narrowing"] is True


# --- 1. Narrowing in the admin is recorded ---------------------------------------------------------


def test_unticking_superuser_and_staff_in_the_admin_is_recorded_as_a_narrowing_change(world, admins):
    first, _ = admins
    target = User.objects.get(pk=world.outsider.pk)
    User.objects.filter(pk=target.pk).update(is_staff=True, is_superuser=True)
    url = reverse("admin:accessgov_user_change", args=[target.pk])
    response = post_admin_form(as_(first), url, "user_form", is_staff=None, is_superuser=None)
    assert response.status_code == 302, response.content.decode()[:2000]

    target.refresh_from_db()
    assert not target.is_staff and not target.is_superuser  # at once: narrowing never waits
    change = ChangeRequest.objects.get(kind=ChangeRequest.Kind.USER_RIGHTS)
    _assert_narrowing(change, first)
    assert set(change.changes) == {"is_staff", "is_superuser"}
    assert change.payload["remove_staff"] is change.payload["remove_superuser"] is True


def test_removing_a_users_model_permission_in_the_admin_is_recorded(world, admins):
    first, _ = admins
    target = world.outsider
    perm = Permission.objects.get(codename="view_grant")
    target.user_permissions.add(perm)
    url = reverse("admin:accessgov_user_change", args=[target.pk])
    response = post_admin_form(as_(first), url, "user_form", user_permissions=[])
    assert response.status_code == 302

    assert not target.user_permissions.exists()
    change = ChangeRequest.objects.get(kind=ChangeRequest.Kind.USER_RIGHTS)
    _assert_narrowing(change, first)
    assert change.payload["remove_permissions"] == [perm.pk]


def test_leaving_a_group_no_grant_depended_on_is_recorded_too(world, admins):
    first, _ = admins
    group = Group.objects.create(name="readers")
    world.outsider.groups.add(group)
    url = reverse("admin:accessgov_user_change", args=[world.outsider.pk])
    response = post_admin_form(as_(first), url, "user_form", groups=[])
    assert response.status_code == 302

    assert not world.outsider.groups.exists()
    change = ChangeRequest.objects.get(kind=ChangeRequest.Kind.USER_RIGHTS)
    _assert_narrowing(change, first)
    assert change.payload["remove_groups"] == [group.pk] and change.changes["groups"]["old"] == "readers"

    # The service itself (not only the admin form) records it.
    world.outsider.groups.add(group)
    left = users.user_groups_leave(first, [world.outsider], [group], by="by hand", job="test")
    assert left == [(world.outsider.pk, group.pk)]
    assert ChangeRequest.objects.filter(kind=ChangeRequest.Kind.USER_RIGHTS).count() == 2


def test_removing_a_groups_permission_in_the_admin_is_recorded_and_counts_for_nobodys_independence(
    world, admins, make_user
):
    first, _ = admins
    group = Group.objects.create(name="helpdesk")
    perm = Permission.objects.get(codename="view_grant")
    group.permissions.add(perm)
    member = make_user("member", is_staff=True)
    member.groups.add(group)
    url = reverse("admin:auth_group_change", args=[group.pk])
    response = post_admin_form(as_(first), url, "group_form", permissions=[])
    assert response.status_code == 302, response.content.decode()[:2000]

    assert not group.permissions.exists()
    change = ChangeRequest.objects.get(kind=ChangeRequest.Kind.GROUP_PERMISSIONS)
    _assert_narrowing(change, first)
    # Taking a right away from someone's group does not make them depend on whoever did it.
    from accessgov import permissions

    assert first.pk not in permissions.dependencies(member)


def test_deleting_a_group_in_the_admin_is_every_member_leaving_it_recorded(world, admins):
    first, _ = admins
    group = Group.objects.create(name="old-team")
    group.permissions.add(Permission.objects.get(codename="view_grant"))
    world.outsider.groups.add(group)
    client = as_(first)
    response = client.post(reverse("admin:auth_group_delete", args=[group.pk]), {"post": "yes"})
    assert response.status_code == 302

    assert not Group.objects.filter(pk=group.pk).exists()
    change = ChangeRequest.objects.get(kind=ChangeRequest.Kind.GROUP_DELETION)
    _assert_narrowing(change, first)
    assert change.payload["members"] == [world.outsider.pk] and change.applied_target_id == group.pk
    assert "view grant" in change.changes["permissions"]["old"].lower()


def test_a_group_that_eligibility_names_is_not_deleted_with_its_record(world, admins):
    first, _ = admins
    group = Group.objects.create(name="oncall")
    Eligibility.objects.create(role=world.role, group=group)
    with pytest.raises(PolicyViolation):
        users.group_delete(first, group.pk)
    assert Group.objects.filter(pk=group.pk).exists() and Eligibility.objects.filter(group=group).exists()
    assert not ChangeRequest.objects.exists()


def test_a_bulk_delete_with_a_group_that_may_not_go_deletes_nothing_and_says_why(world, admins):
    """The review's finding: Django's bulk delete logged both deletions and said "Successfully deleted 2 groups"
    when the service refused one (the admin's own group) and deleted the other."""
    from django.contrib.admin.models import DELETION, LogEntry

    first, _ = admins
    mine, empty = Group.objects.create(name="mine"), Group.objects.create(name="empty")
    first.groups.add(mine)
    data = {"action": "delete_selected", "_selected_action": [mine.pk, empty.pk], "post": "yes"}
    response = as_(first).post(reverse("admin:auth_group_changelist"), data)
    page = response.content.decode()
    assert response.status_code == 200 and "Nobody changes the permissions of a group they belong to" in page
    assert Group.objects.filter(pk__in=[mine.pk, empty.pk]).count() == 2
    assert not LogEntry.objects.filter(action_flag=DELETION).exists() and not ChangeRequest.objects.exists()


# --- 2. The evidence pack tells narrowing from widening -------------------------------------------


def _policy_rows():
    now = datetime.now(tz=UTC)
    ctx = Context(
        now - timedelta(days=1), now + timedelta(days=1), now, None, timedelta(minutes=5), timedelta(minutes=5)
    )
    population = PolicyChanges()
    rows = {row[0]: row for row in population.rows(ctx)}
    return rows, population.exceptions


def test_a_narrowing_change_is_not_an_exception_a_widening_one_without_four_eyes_is(world, admins, settings):
    first, _ = admins
    User.objects.filter(pk=world.outsider.pk).update(is_staff=True)
    narrowed = users.user_rights_narrow(first, User.objects.get(pk=world.outsider.pk), remove_staff=True)
    settings.FOUR_EYES_POLICY_CHANGES = False
    widened = changes.change_propose_user_rights(first, user=world.outsider, make_superuser=True)

    rows, exceptions = _policy_rows()
    assert rows[narrowed.pk][5] == "applied" and rows[narrowed.pk][10] == ""  # the rule does not apply
    assert rows[widened.pk][10] == "false"
    assert [e.item_id for e in exceptions] == [str(widened.pk)]
    assert len(rows[narrowed.pk]) == len(PolicyChanges.columns)  # the columns stay as they were


# --- 3. Accounts made are recorded ----------------------------------------------------------------


def test_an_account_added_in_the_admin_is_recorded_as_created_by_the_admin(admins):
    first, _ = admins
    password = "long enough pass 42"
    response = as_(first).post(
        reverse("admin:accessgov_user_add"), {"username": "newbie", "password1": password, "password2": password}
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    made = User.objects.get(username="newbie")
    assert made.created_by == first
    event = AccessEvent.objects.get(event_type=Type.USER_CREATED)
    assert event.actor == first and event.client_address == "127.0.0.1"
    assert event.data["user_id"] == made.pk and event.data["is_superuser"] is False


def test_createsuperuser_is_ours_and_records_that_it_made_a_superuser(monkeypatch):
    assert get_commands()["createsuperuser"] == "accessgov"
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "a long enough pass 42")
    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", "root-from-shell")
    monkeypatch.setenv("DJANGO_SUPERUSER_EMAIL", "root@example.com")
    call_command("createsuperuser", "--noinput", verbosity=0)
    made = User.objects.get(username="root-from-shell")
    event = AccessEvent.objects.get(event_type=Type.USER_CREATED)
    assert made.is_superuser and event.actor is None
    assert event.actor_label == "system:manage.py createsuperuser"
    assert event.data["is_superuser"] is True and "Superuser" in event.reason

    call_command("createsuperuser", "--noinput", "--username", "second-root", verbosity=0)
    assert AccessEvent.objects.filter(event_type=Type.USER_CREATED, data__username="second-root").count() == 1


# --- 4. Event webhook subscriptions are four-eyed --------------------------------------------------


def _subscription_form(**fields):
    return {"name": "SIEM", "system": "", "url": "", "event_types": "", "secret": "", "is_active": "on", **fields}


def test_a_webhook_subscription_waits_for_a_second_admin_and_taking_it_away_does_not(world, admins, settings):
    first, second = admins
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    client = as_(first)
    response = client.post(
        "/admin/accessgov/eventwebhooksubscription/add/",
        _subscription_form(url="http://127.0.0.1:9/hook", event_types="grant.*", secret=SECRET),
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert not EventWebhookSubscription.objects.exists()  # one admin alone streams nothing anywhere
    proposal = ChangeRequest.objects.get(kind=ChangeRequest.Kind.EVENT_WEBHOOK, status="pending")
    with pytest.raises(Exception, match="own"):
        changes.change_approve(first, proposal.pk)
    changes.change_approve(second, proposal.pk)
    subscription = EventWebhookSubscription.objects.get()
    assert subscription.secret == SECRET

    url = f"/admin/accessgov/eventwebhooksubscription/{subscription.pk}/change/"
    response = client.post(url, _subscription_form(url="http://127.0.0.1:9/hook", event_types="grant.*, request.*"))
    assert response.status_code == 302
    subscription.refresh_from_db()
    assert subscription.event_types == ["grant.*"]  # more types: proposed, not applied
    more = ChangeRequest.objects.get(kind=ChangeRequest.Kind.EVENT_WEBHOOK, status="pending")
    changes.change_reject(second, more.pk, comment="Not needed for the SIEM")

    response = client.post(
        url, _subscription_form(url="http://127.0.0.1:9/hook", event_types="grant.expired", is_active="")
    )
    assert response.status_code == 302
    subscription.refresh_from_db()
    assert subscription.event_types == ["grant.expired"] and not subscription.is_active  # less: at once
    _assert_narrowing(ChangeRequest.objects.filter(kind=ChangeRequest.Kind.EVENT_WEBHOOK).latest("pk"), first)

    response = client.post(f"/admin/accessgov/eventwebhooksubscription/{subscription.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not EventWebhookSubscription.objects.exists()
    deleted = ChangeRequest.objects.filter(kind=ChangeRequest.Kind.EVENT_WEBHOOK).latest("pk")
    _assert_narrowing(deleted, first)
    assert deleted.payload["subscription"]["url"] == "http://127.0.0.1:9/hook"
    recorded = list(ChangeRequest.objects.values("payload", "changes", "secret_payload")) + list(
        AccessEvent.objects.values("data")
    )
    assert SECRET not in json.dumps(recorded, default=str)


def test_a_proposed_webhook_url_is_checked_against_internal_addresses_when_applied(world, admins, settings):
    first, second = admins
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    proposal = changes.change_propose(
        first,
        kind=ChangeRequest.Kind.EVENT_WEBHOOK,
        instance=EventWebhookSubscription(name="x", url="http://127.0.0.1:9/hook", event_types=["*"], secret=SECRET),
        fields=["name", "url", "event_types", "secret", "is_active"],
    )
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False
    with pytest.raises(PolicyViolation):
        changes.change_approve(second, proposal.pk)
    assert not EventWebhookSubscription.objects.exists()


# --- 5. Personal API tokens ------------------------------------------------------------------------


def test_making_and_revoking_a_personal_token_are_recorded_without_the_secret(world):
    client = as_(world.requester)
    response = client.post("/accounts/tokens/", {"name": "laptop", "lifetime_days": "30", "scopes": ["requests:read"]})
    assert response.status_code == 200, response.content.decode()[:2000]
    secret = response.context["secret"]
    token = ApiToken.objects.get(user=world.requester)
    created = AccessEvent.objects.get(event_type=Type.TOKEN_CREATED)
    assert created.actor == world.requester and created.client_address == "127.0.0.1"
    assert created.data["token_id"] == token.pk and created.data["name"] == "laptop"
    assert created.data["scopes"] == ["requests:read"] and created.data["expires_at"] == token.expires_at.isoformat()

    response = client.post(f"/accounts/tokens/{token.pk}/revoke/", {"confirm": "yes"})
    assert response.status_code in (200, 302)
    token.refresh_from_db()
    assert token.revoked_at is not None
    revoked = AccessEvent.objects.get(event_type=Type.TOKEN_REVOKED)
    assert revoked.actor == world.requester and revoked.data["token_id"] == token.pk
    dumped = json.dumps(list(AccessEvent.objects.values("data", "reason")), default=str)
    assert secret.startswith("agv_p_") and secret not in dumped and token.key_hash not in dumped


def test_a_deactivation_still_names_the_tokens_it_revoked_and_each_has_its_event(world, admins):
    first, _ = admins
    token, _ = token_services.api_token_create(
        world.requester,
        user=world.requester,
        name="ci",
        kind="personal",
        expires_at=datetime.now(tz=UTC) + timedelta(days=3),
    )
    users.user_deactivate(first, world.requester.pk, reason="Left the company")
    deactivated = AccessEvent.objects.get(event_type=Type.USER_DEACTIVATED)
    assert deactivated.data["api_tokens_revoked"] == [token.pk]
    revoked = AccessEvent.objects.get(event_type=Type.TOKEN_REVOKED)
    assert revoked.actor == first and revoked.reason == "Account deactivated: Left the company"
