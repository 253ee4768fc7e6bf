"""The four-eyes independence check against the paths an adversarial probe found around it (promise 3): a
token an admin proposed for an approving bot, an admin's own provider identity, a backdated account, and an
account recovery. Each test sends the probe's own requests and failed before the fix."""

from datetime import timedelta

import pytest
from django.contrib.auth.hashers import make_password
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accessgov import permissions
from accessgov.exceptions import NotAuthorized
from accessgov.models import AccessRequest, AutoApprovalRule, ChangeRequest, Eligibility, Grant
from accessgov.services import access_requests as ar
from accessgov.services import changes
from accessgov.services.tokens import api_token_revoke
from tests.conftest import verify_session
from tests.support.admin_forms import add_user_in_admin, post_admin_form
from tests.support.api_helpers import api_client, make_service_account, post_json
from tests.support.factories import UserFactory
from tests.support.integration_world import T0

pytestmark = pytest.mark.django_db
H = timedelta(hours=1)
WHY = "Investigating incident INC-42 on payments"


def as_(user) -> Client:
    return verify_session(Client(), user)


def _approving_bot(world, admins):
    """An approving bot set up by other admins (the first had nothing to do with it) and a token for it that
    the first admin proposed (a routine rotation) and the second approved: the secret was shown to the first."""
    first, second = admins
    third = UserFactory(username="admin3", is_staff=True, is_superuser=True)
    bot = make_service_account("incident-bot")
    changes.change_approve(
        third, changes.change_propose_permissions(second, obj=world.role, user=bot, perms={"approve_role"}).pk
    )
    assert permissions.independence_problem(bot, first) is None
    change, secret = changes.change_propose_service_token(
        first,
        user=bot,
        name="rotation-2026",
        expires_at=timezone.now() + timedelta(days=30),
        scopes=["decisions:read", "decisions:decide", "requests:read"],
    )
    changes.change_approve(second, change.pk)
    return bot, secret


def test_an_admin_cannot_approve_their_own_request_with_a_bot_token_they_proposed(world, admins):
    first, _ = admins
    bot, secret = _approving_bot(world, admins)
    assert permissions.independence_problem(bot, first) == (
        f"{first.username} holds an API token of your account: they can act as you."
    )
    Eligibility.objects.create(role=world.role, user=first, starts_at=timezone.now() - H)
    own = ar.access_request_submit(first, role=world.role, duration=H, justification=WHY)
    response = post_json(api_client(secret), f"/api/v1/requests/{own.pk}/approve/", {"comment": "lgtm"})
    assert response.status_code == 403
    assert "holds an API token of your account" in response.content.decode()
    assert AccessRequest.objects.get(pk=own.pk).status == "pending"
    assert not Grant.objects.filter(user=first).exists()


def test_a_revoked_token_no_longer_ties_the_bot_to_its_proposer(world, admins):
    first, second = admins
    bot, _ = _approving_bot(world, admins)
    api_token_revoke(second, bot.api_tokens.get().pk, authorized=True)
    assert permissions.independence_problem(bot, first) is None


def test_an_admin_cannot_re_point_their_own_e_mail_or_username(world, admins, make_user):
    """PagerDuty's on-call check matches the requester's e-mail: an admin who set theirs to the on-call
    engineer's was auto-approved by the on-call rule with nobody else involved."""
    first, second = admins
    url = reverse("admin:accessgov_user_change", args=[first.pk])
    for field, value in (("email", "oncall@example.com"), ("username", "approver-twin")):
        response = post_admin_form(as_(first), url, "user_form", **{field: value})
        assert response.status_code == 200
        assert "Nobody changes their own username or e-mail address here" in response.content.decode()
    first.refresh_from_db()
    assert (first.username, first.email) != ("approver-twin", "oncall@example.com")
    assert first.email != "oncall@example.com"
    # Another admin may propose it, and a third (neither of them) approve it; the admin's other fields stay theirs.
    response = post_admin_form(as_(second), url, "user_form", email="first@example.com")
    assert response.status_code == 302
    change = ChangeRequest.objects.get(kind="user_identity", target_id=first.pk)
    response = post_admin_form(as_(first), url, "user_form", first_name="Firstly")
    assert response.status_code == 302
    first.refresh_from_db()
    assert (first.email, first.first_name) == ("admin1@example.com", "Firstly")
    for nobody in (first, second):
        with pytest.raises(NotAuthorized):
            changes.change_approve(nobody, change.pk)
    changes.change_approve(make_user("admin3", is_staff=True, is_superuser=True), change.pk)
    first.refresh_from_db()
    assert first.email == "first@example.com"


def test_the_on_call_rule_does_not_approve_an_admin_who_tried_to_borrow_an_e_mail(
    world, admins, fake, pagerduty, at_t0
):
    first, _ = admins
    world.approver.email = "oncall@example.com"
    world.approver.save()
    fake.state.pd_users = [{"id": "PU1", "email": "oncall@example.com", "name": "On call"}]
    fake.state.pd_oncalls = [
        {
            "escalation_policy": {"id": "PEP1", "summary": "Payments"},
            "escalation_level": 1,
            "schedule": {"id": "PSCH1", "summary": "Payments primary"},
            "user": {"id": "PU1", "summary": "On call"},
            "start": (T0 - timedelta(hours=3)).isoformat(),
            "end": (T0 + timedelta(hours=3)).isoformat(),
        }
    ]
    AutoApprovalRule.objects.create(
        role=world.role, name="on call", oncall_provider=pagerduty, oncall_escalation_policy="PEP1", oncall_max_level=1
    )
    Eligibility.objects.create(role=world.role, user=first, starts_at=T0 - H)
    post_admin_form(
        as_(first), reverse("admin:accessgov_user_change", args=[first.pk]), "user_form", email="oncall@example.com"
    )
    as_(first).post(reverse("request_new"), {"role": world.role.pk, "duration": "2h", "justification": WHY})
    assert AccessRequest.objects.get(requester=first).status == "pending"
    assert not Grant.objects.filter(user=first).exists()


def test_an_account_s_creation_date_cannot_be_backdated(admins):
    first, _ = admins
    sybil = add_user_in_admin(as_(first), "sybil")
    joined = sybil.date_joined
    response = post_admin_form(
        as_(first),
        reverse("admin:accessgov_user_change", args=[sybil.pk]),
        "user_form",
        date_joined_0="2020-01-01",
        date_joined_1="00:00:00",
    )
    assert response.status_code == 302
    sybil.refresh_from_db()
    assert sybil.date_joined == joined
    assert "created your account" in (permissions.independence_problem(sybil, first) or "")


def test_who_reset_an_account_is_not_its_independent_second_pair_of_eyes(world, admins):
    first, second = admins
    change = changes.change_propose_account_recovery(
        first, user=world.approver, password_hash=make_password("known to first 123"), remove_authenticators=True
    )
    changes.change_approve(second, change.pk)
    assert ChangeRequest.objects.get(pk=change.pk).status == "applied"
    problem = f"{first.username} gave your account rights or reset its sign-in less than"
    assert problem in (permissions.independence_problem(world.approver, first) or "")
    assert problem.replace(first.username, second.username) in (
        permissions.independence_problem(world.approver, second) or ""
    )
    Eligibility.objects.create(role=world.role, user=first, starts_at=timezone.now() - H)
    own = ar.access_request_submit(first, role=world.role, duration=H, justification=WHY)
    with pytest.raises(Exception, match="reset its sign-in"):
        ar.access_request_approve(world.approver, own.pk)
    assert AccessRequest.objects.get(pk=own.pk).status == "pending"
