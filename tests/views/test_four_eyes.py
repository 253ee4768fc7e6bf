"""Four-eyes on policy: a change made in the admin is only proposed; a second admin approves it (with a
diff), never the proposer and never the person whose access it widens; no admin widens their own
rights in one step."""

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from guardian.models import UserObjectPermission

from accessgov.exceptions import NotAuthorized, TransitionNotAllowed
from accessgov.models import AccessEvent, AutoApprovalRule, ChangeRequest, Eligibility, Role, System
from accessgov.services import changes
from tests.conftest import verify_session
from tests.support.admin_forms import post_admin_form

pytestmark = pytest.mark.django_db


def as_(user) -> Client:
    return verify_session(Client(), user)


def role_url(role) -> str:
    return reverse("admin:accessgov_role_change", args=[role.pk])


def test_a_role_policy_change_in_the_admin_is_only_proposed(world, admins):
    first, _ = admins
    before = world.role.approvals_required
    response = post_admin_form(as_(first), role_url(world.role), "role_form", approvals_required=0)
    change = ChangeRequest.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("change_detail", args=[change.pk])
    assert Role.objects.get(pk=world.role.pk).approvals_required == before
    assert change.status == "pending" and change.proposed_by == first
    assert change.changes == {"approvals_required": {"label": "approvals required", "old": str(before), "new": "0"}}
    event = AccessEvent.objects.get(event_type="change.proposed")
    assert event.actor == first and event.data["change_id"] == change.pk


def test_the_proposer_cannot_apply_their_own_change_a_second_admin_can(world, admins):
    first, second = admins
    post_admin_form(as_(first), role_url(world.role), "role_form", approvals_required=0, break_glass_allowed=None)
    change = ChangeRequest.objects.get()
    page = as_(first).get(reverse("change_detail", args=[change.pk])).content.decode()
    assert "Approve and apply" not in page and "Withdraw" in page
    response = as_(first).post(reverse("change_approve", args=[change.pk]))
    assert response.status_code == 403 and "Nobody approves their own policy change" in response.content.decode()
    assert Role.objects.get(pk=world.role.pk).approvals_required != 0

    page = as_(second).get(reverse("change_detail", args=[change.pk])).content.decode()
    assert "<del>" in page and "<ins>0</ins>" in page and "Approve and apply" in page
    assert as_(second).post(reverse("change_approve", args=[change.pk])).status_code == 302
    role = Role.objects.get(pk=world.role.pk)
    assert role.approvals_required == 0
    change.refresh_from_db()
    assert change.status == "applied" and change.decided_by == second
    applied = AccessEvent.objects.get(event_type="change.applied")
    assert applied.actor == second and applied.data["proposed_by"] == "admin1" and applied.data["four_eyes"]
    assert applied.role_id == world.role.pk


def test_an_admin_making_themselves_eligible_needs_another_admin_who_is_not_them(world, admins, make_user):
    first, second = admins
    client = as_(first)
    add_url = reverse("admin:accessgov_eligibility_add")
    response = post_admin_form(
        client, add_url, "eligibility_form", role=world.role.pk, user=first.pk, reason="I need this"
    )
    assert response.status_code == 302
    assert not Eligibility.objects.filter(user=first).exists()
    change = ChangeRequest.objects.get()
    assert change.beneficiary == first and change.target_id is None
    with pytest.raises(NotAuthorized):
        changes.change_approve(first, change.pk)
    changes.change_approve(second, change.pk)
    eligibility = Eligibility.objects.get(user=first)
    assert eligibility.role == world.role and eligibility.created_by == first
    # A third case: the beneficiary is not the proposer, and still cannot approve.
    third = make_user("admin3", is_staff=True, is_superuser=True)
    proposal = changes.change_propose(
        second,
        kind=ChangeRequest.Kind.ELIGIBILITY,
        instance=Eligibility(role=world.role_two, user=third, reason="x"),
        fields=["role", "user", "reason"],
    )
    with pytest.raises(NotAuthorized, match="widens your own access"):
        changes.change_approve(third, proposal.pk)


def test_connector_settings_wait_for_a_second_admin_and_the_secret_never_shows(world, admins):
    first, second = admins
    url = reverse("admin:accessgov_system_change", args=[world.system.pk])
    response = post_admin_form(
        as_(first), url, "system_form", description="Payments (primary)", connector_secret="s3cr3t-value-123"
    )
    assert response.status_code == 302
    system = System.objects.get(pk=world.system.pk)
    assert system.description == "Payments (primary)"  # not policy: saved at once
    assert system.connector_secret == ""
    change = ChangeRequest.objects.get()
    assert set(change.changes) == {"connector_secret"} and "s3cr3t" not in str(change.changes)
    page = as_(second).get(reverse("change_detail", args=[change.pk])).content.decode()
    assert "s3cr3t-value-123" not in page and "(secret)" in page
    changes.change_approve(second, change.pk)
    assert System.objects.get(pk=world.system.pk).connector_secret == "s3cr3t-value-123"
    change.refresh_from_db()
    assert change.secret_payload == ""
    assert "s3cr3t" not in str(list(AccessEvent.objects.values_list("data", flat=True)))


def test_auto_approval_rules_are_four_eyed_too(world, admins):
    first, second = admins
    response = post_admin_form(
        as_(first),
        reverse("admin:accessgov_autoapprovalrule_add"),
        "autoapprovalrule_form",
        role=world.role.pk,
        name="everyone, always",
    )
    assert response.status_code == 302 and not AutoApprovalRule.objects.exists()
    changes.change_approve(second, ChangeRequest.objects.get().pk)
    assert AutoApprovalRule.objects.get().name == "everyone, always"


def test_a_change_overtaken_by_another_is_refused_not_applied_blindly(world, admins):
    """Two proposals for the same field: the older is withdrawn when the newer is proposed (approving it first
    applied the value its proposer had replaced, and left the newer one refused as stale and waiting forever)."""
    first, second = admins
    for value in (3, 4):
        role = Role.objects.get(pk=world.role.pk)
        role.approvals_required = value
        changes.change_propose(first, kind=ChangeRequest.Kind.ROLE, instance=role, fields=["approvals_required"])
    older, newer = ChangeRequest.objects.order_by("pk")
    assert (older.status, older.comment) == (
        "withdrawn",
        f"Overtaken by change #{newer.pk}, which sets the same fields again.",
    )
    assert AccessEvent.objects.filter(event_type="change.rejected", data__change_id=older.pk).count() == 1
    with pytest.raises(TransitionNotAllowed):
        changes.change_approve(second, older.pk)
    changes.change_approve(second, newer.pk)
    assert Role.objects.get(pk=world.role.pk).approvals_required == 4
    assert list(ChangeRequest.objects.filter(status="pending")) == []


def test_an_older_change_that_also_sets_other_fields_waits_and_is_refused_once_stale(world, admins):
    first, second = admins
    role = Role.objects.get(pk=world.role.pk)
    role.approvals_required, role.max_duration = 3, timedelta(hours=3)
    wider = changes.change_propose(
        first, kind=ChangeRequest.Kind.ROLE, instance=role, fields=["approvals_required", "max_duration"]
    )
    role = Role.objects.get(pk=world.role.pk)
    role.approvals_required = 4
    narrower = changes.change_propose(first, kind=ChangeRequest.Kind.ROLE, instance=role, fields=["approvals_required"])
    wider.refresh_from_db()
    assert wider.status == "pending"  # withdrawing it would drop its max_duration
    changes.change_approve(second, narrower.pk)
    with pytest.raises(
        TransitionNotAllowed, match="was changed since it was proposed, so it would undo that: reject it"
    ):
        changes.change_approve(second, wider.pk)
    assert Role.objects.get(pk=world.role.pk).approvals_required == 4


def test_reject_needs_a_reason_and_the_proposer_can_withdraw(world, admins):
    first, second = admins
    role = Role.objects.get(pk=world.role.pk)
    role.max_duration = timedelta(hours=72)
    change = changes.change_propose(first, kind=ChangeRequest.Kind.ROLE, instance=role, fields=["max_duration"])
    response = as_(second).post(reverse("change_reject", args=[change.pk]), {"comment": ""})
    assert response.status_code == 400 and "Say why" in response.content.decode()
    assert (
        as_(second).post(reverse("change_reject", args=[change.pk]), {"comment": "72 h is too long"}).status_code == 302
    )
    change.refresh_from_db()
    assert change.status == "rejected" and change.comment == "72 h is too long"
    again = changes.change_propose(first, kind=ChangeRequest.Kind.ROLE, instance=role, fields=["max_duration"])
    assert changes.change_reject(first, again.pk, comment="").status == "withdrawn"
    assert Role.objects.get(pk=world.role.pk).max_duration != timedelta(hours=72)
    assert AccessEvent.objects.filter(event_type="change.rejected").count() == 2


def test_with_four_eyes_off_a_change_applies_at_once_and_is_still_recorded(world, admins, settings):
    settings.FOUR_EYES_POLICY_CHANGES = False
    first, _ = admins
    post_admin_form(as_(first), role_url(world.role), "role_form", approvals_required=0)
    assert Role.objects.get(pk=world.role.pk).approvals_required == 0
    change = ChangeRequest.objects.get()
    assert change.status == "applied" and change.decided_by is None
    assert AccessEvent.objects.get(event_type="change.applied").data["four_eyes"] is False


def test_no_admin_widens_their_own_groups_or_permissions(world, admins):
    first, _ = admins
    client = as_(first)
    url = reverse("admin:accessgov_user_change", args=[first.pk])
    auditors = world.auditor.groups.get()
    response = post_admin_form(client, url, "user_form", groups=[str(auditors.pk)])
    assert response.status_code == 200 and "Nobody changes their own groups" in response.content.decode()
    assert not first.groups.exists()
    # Object permissions on a system: not for oneself.
    perms_url = reverse("admin:accessgov_system_permissions_manage_user", args=[world.system.pk, first.pk])
    response = client.post(perms_url, {"permissions": ["approve_system"]})
    assert response.status_code == 403
    assert not UserObjectPermission.objects.filter(user=first).exists()


def test_non_admins_do_not_see_policy_changes(world, admins):
    first, _ = admins
    role = Role.objects.get(pk=world.role.pk)
    role.approvals_required = 0
    change = changes.change_propose(first, kind=ChangeRequest.Kind.ROLE, instance=role, fields=["approvals_required"])
    for person in (world.approver, world.owner, world.auditor):
        assert as_(person).get(reverse("changes")).status_code == 404
        assert as_(person).post(reverse("change_approve", args=[change.pk])).status_code == 404
    with pytest.raises(NotAuthorized):
        changes.change_approve(world.approver, change.pk)


def test_who_approves_a_system_is_four_eyed_and_removals_apply_at_once(world, admins, make_user):
    from django.contrib.auth.models import Group
    from guardian.shortcuts import get_user_perms

    first, second = admins
    newcomer = make_user("newcomer_approver")
    url = reverse("admin:accessgov_system_permissions_manage_user", args=[world.system.pk, newcomer.pk])
    response = as_(first).post(url, {"permissions": ["approve_system"]})
    change = ChangeRequest.objects.get(kind="object_permission")
    assert response.status_code == 302 and response["Location"] == reverse("change_detail", args=[change.pk])
    assert "approve_system" not in get_user_perms(newcomer, world.system)
    assert change.beneficiary == newcomer and change.changes["approve_system"]["new"] == "yes"
    changes.change_approve(second, change.pk)
    assert "approve_system" in get_user_perms(newcomer, world.system)

    # Taking it away again does not wait for anyone.
    response = as_(second).post(url, {})
    assert "approve_system" not in get_user_perms(newcomer, world.system)
    removal = ChangeRequest.objects.filter(kind="object_permission").latest("pk")
    assert removal.status == "applied" and removal.payload["remove"] == ["approve_system"]

    # A group the admin belongs to: refused outright.
    group = Group.objects.create(name="admins-approvers")
    first.groups.add(group)
    group_url = reverse("admin:accessgov_system_permissions_manage_group", args=[world.system.pk, group.pk])
    assert as_(first).post(group_url, {"permissions": ["approve_system"]}).status_code == 403
    # Another admin proposes it; the member cannot approve it.
    as_(second).post(group_url, {"permissions": ["approve_system"]})
    pending = ChangeRequest.objects.filter(kind="object_permission", status="pending").get()
    with pytest.raises(NotAuthorized, match="group you are in"):
        changes.change_approve(first, pending.pk)


def test_a_mixed_role_edit_says_what_was_saved_at_once_and_what_was_proposed(world, admins):
    """Issue 18, item 10: a plain field is saved at once and a four-eyed one proposed; the message says both."""
    first, _ = admins
    client = as_(first)
    response = post_admin_form(
        client, role_url(world.role), "role_form", approvals_required=0, description="Writes to the payouts tables"
    )
    assert response.status_code == 302
    page = client.get(response["Location"]).content.decode()
    assert "Saved at once (no approval needed): Description." in page
    assert "Proposed as change #" in page
    assert Role.objects.get(pk=world.role.pk).description == "Writes to the payouts tables"


def test_a_change_s_page_says_before_and_after_once_applied_not_now(world, admins):
    first, second = admins
    role = Role.objects.get(pk=world.role.pk)
    role.approvals_required = 3
    change = changes.change_propose(first, kind=ChangeRequest.Kind.ROLE, instance=role, fields=["approvals_required"])
    url = reverse("change_detail", args=[change.pk])
    assert '<th scope="col">When proposed</th><th scope="col">Proposed</th>' in as_(second).get(url).content.decode()
    changes.change_approve(second, change.pk)
    page = as_(second).get(url).content.decode()
    assert '<th scope="col">Before</th><th scope="col">After</th>' in page and ">Now<" not in page


def test_the_role_form_takes_durations_as_the_portal_writes_them_and_says_what_is_wrong(world, admins):
    first, second = admins
    page = as_(first).get(role_url(world.role)).content.decode()
    assert 'name="max_duration" value="4h"' in page and 'name="default_duration" value="1h"' in page
    response = post_admin_form(as_(first), role_url(world.role), "role_form", default_duration="10h")
    assert response.status_code == 200
    assert "The default duration cannot be longer than the maximum duration." in response.content.decode()
    assert "role_default_within_max" not in response.content.decode()
    response = post_admin_form(
        as_(first), role_url(world.role), "role_form", max_duration="3h", default_duration="1:30:00"
    )
    assert response.status_code == 302
    change = ChangeRequest.objects.get()
    assert change.changes["max_duration"] == {"label": "max duration", "old": "4 h", "new": "3 h"}
    changes.change_approve(second, change.pk)
    role = Role.objects.get(pk=world.role.pk)
    assert (role.max_duration, role.default_duration) == (timedelta(hours=3), timedelta(hours=1, minutes=30))
