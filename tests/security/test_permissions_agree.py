"""One home per rule: for every persona, each predicate in ``accessgov.permissions`` agrees with the
service that enforces it and with the page that shows (or hides) the action. A predicate that says
"yes" while its service refuses (or the reverse) is a rule written twice that drifted apart."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import transaction
from django.http import Http404
from django.test import Client
from django.urls import reverse

from accessgov import permissions
from accessgov.exceptions import NotAuthorized
from accessgov.models import AccessRequest, Grant, OutboxItem
from accessgov.services import access_requests as ar
from accessgov.services import changes as change_services
from accessgov.services import grants as grant_services
from accessgov.services.provisioning import manual_task_complete
from tests.conftest import sign_in

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
H = timedelta(hours=1)
PERSONAS = ("requester", "approver", "approver2", "owner", "auditor", "outsider")


class _Rollback(Exception):
    pass


def service_allows(call) -> bool:
    """Run ``call`` and undo it: False if it refused as NotAuthorized, True otherwise (another refusal,
    such as "already decided", is not about who may act)."""
    try:
        with transaction.atomic():
            try:
                call()
            except NotAuthorized:
                return False
            except Exception:  # noqa: S110 - any other refusal means the actor was let through
                pass
            raise _Rollback
    except _Rollback:
        return True


@pytest.fixture
def clock():
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


def pending(world) -> AccessRequest:
    return ar.access_request_submit(world.requester, role=world.role, duration=H, justification="Fix the batch job")


def granted(world) -> Grant:
    access_request = pending(world)
    ar.access_request_approve(world.approver, access_request.pk, comment="ok", step_up_at=T0)
    return Grant.objects.get(access_request=access_request)


def page_status(user, url: str) -> int:
    return sign_in(Client(), user).get(url).status_code


@pytest.mark.django_db
def test_seeing_a_request_page_api_queryset_and_predicate_agree(world, clock):
    access_request = pending(world)
    for name in PERSONAS:
        user = getattr(world, name)
        predicate = permissions.can_view_access_request(user, access_request)
        in_list = permissions.visible_access_requests(user).filter(pk=access_request.pk).exists()
        try:
            permissions.get_visible_access_request_or_404(user, access_request.pk)
            fetched = True
        except Http404:
            fetched = False
        status = page_status(user, reverse("request_detail", args=[access_request.pk]))
        assert predicate == in_list == fetched == (status == 200), name
        assert status in (200, 404), name  # invisible is 404, never an existence oracle
    assert not permissions.can_view_access_request(world.outsider, access_request)


@pytest.mark.django_db
def test_seeing_a_grant_page_queryset_and_predicate_agree(world, clock):
    grant = granted(world)
    for name in PERSONAS:
        user = getattr(world, name)
        predicate = permissions.can_view_grant(user, grant)
        in_list = permissions.visible_grants(user).filter(pk=grant.pk).exists()
        status = page_status(user, reverse("grant_detail", args=[grant.pk]))
        assert predicate == in_list == (status == 200), name
    assert permissions.can_view_grant(world.requester, grant) and not permissions.can_view_grant(world.outsider, grant)


@pytest.mark.django_db
def test_deciding_predicate_and_service_agree_and_the_page_offers_it_only_then(world, clock):
    access_request = pending(world)
    for name in PERSONAS:
        user = getattr(world, name)
        predicate = permissions.can_decide_access_request(user, access_request, T0)
        allowed = service_allows(lambda u=user: ar.access_request_approve(u, access_request.pk, step_up_at=T0))
        assert predicate == allowed, name
        if permissions.can_view_access_request(user, access_request):
            body = sign_in(Client(), user).get(reverse("request_detail", args=[access_request.pk])).content.decode()
            assert (reverse("request_approve", args=[access_request.pk]) in body) == predicate, name
    assert {n for n in PERSONAS if permissions.can_decide_access_request(getattr(world, n), access_request, T0)} == {
        "approver",
        "approver2",
    }
    # After it lapses nobody may decide, and the predicate says so with the service.
    later = access_request.lapses_at + timedelta(seconds=1)
    assert not permissions.can_decide_access_request(world.approver, access_request, later)


@pytest.mark.django_db
def test_cancelling_predicate_and_service_agree(world, clock):
    access_request = pending(world)
    for name in PERSONAS:
        user = getattr(world, name)
        predicate = permissions.can_cancel_access_request(user, access_request)
        assert predicate == service_allows(lambda u=user: ar.access_request_cancel(u, access_request.pk)), name
    assert permissions.can_cancel_access_request(world.requester, access_request)


@pytest.mark.django_db
def test_revoking_and_releasing_predicates_and_services_agree(world, clock):
    grant = granted(world)
    for name in PERSONAS:
        user = getattr(world, name)
        revoke = permissions.can_revoke_grant(user, grant)
        assert revoke == service_allows(lambda u=user: grant_services.grant_revoke(u, grant.pk, reason="done")), name
        release = permissions.can_release_grant(user, grant)
        assert release == service_allows(lambda u=user: grant_services.grant_release(u, grant.pk)), name
        if permissions.can_view_grant(user, grant):
            client = sign_in(Client(), user)  # once: the same TOTP code is not accepted twice
            body = client.get(reverse("grant_detail", args=[grant.pk])).content.decode()
            assert (reverse("grant_revoke", args=[grant.pk]) in body) == revoke, name
            assert (reverse("grant_release", args=[grant.pk]) in body) == release, name
            extend = client.get(reverse("grant_extend", args=[grant.pk])).status_code
            assert (extend == 200) == release, name
    revokers = {n for n in PERSONAS if permissions.can_revoke_grant(getattr(world, n), grant)}
    assert revokers == {"approver", "approver2", "owner"}


@pytest.mark.django_db
def test_completing_a_manual_task_predicate_service_and_dashboard_agree(world, clock):
    grant = granted(world)
    item = OutboxItem.objects.get(grant=grant, action=OutboxItem.Action.APPLY)
    for name in PERSONAS:
        user = getattr(world, name)
        predicate = permissions.can_complete_manual_task(user, grant)
        assert predicate == service_allows(lambda u=user: manual_task_complete(u, item.pk)), name
    assert {n for n in PERSONAS if permissions.can_complete_manual_task(getattr(world, n), grant)} == {
        "approver",
        "approver2",
        "owner",
    }


@pytest.mark.django_db
def test_changing_rights_predicate_services_and_admin_agree(world, clock, make_user):
    admin, other_admin = make_user("admin", is_staff=True), make_user("admin2", is_staff=True)
    group = world.approver2.groups.get()
    admin.groups.add(group)
    cases = [
        ({"user": admin}, lambda: change_services.change_propose_user_rights(admin, user=admin, make_staff=True)),
        (
            {"user": world.outsider},
            lambda: change_services.change_propose_user_rights(admin, user=world.outsider, make_staff=True),
        ),
        (
            {"group": group},
            lambda: change_services.change_propose_permissions(
                admin, obj=world.system, group=group, perms={"own_system"}
            ),
        ),
    ]
    for target, call in cases:
        problem = permissions.rights_change_problem(admin, **target)
        assert (problem is None) == service_allows(call), target
    assert permissions.rights_change_problem(other_admin, group=group) is None
    # Who may manage changes at all: the predicate, the service and the page (404 for others).
    for user in (admin, world.approver, world.auditor):
        predicate = permissions.can_manage_changes(user)
        allowed = service_allows(
            lambda u=user: change_services.change_propose_user_rights(u, user=world.outsider, make_staff=True)
        )
        status = page_status(user, reverse("changes"))
        assert predicate == allowed == (status == 200), user.username


@pytest.mark.django_db
def test_taking_rights_away_in_the_admin_says_why_it_needed_no_second_admin(world, admins, settings):
    """With four-eyes on, a change that only removes permissions applies at once; the admin said "four-eyes is
    off" (the HTTP probe)."""
    from django.contrib.messages import get_messages
    from django.test import Client
    from guardian.shortcuts import get_perms

    from tests.conftest import verify_session

    settings.FOUR_EYES_POLICY_CHANGES = True
    client = verify_session(Client(), admins[0])
    url = f"/admin/accessgov/role/{world.role.pk}/permissions/user-manage/{world.approver.pk}/"
    response = client.post(url, {"permissions": []})
    assert response.status_code == 302, response.content[:500]
    said = [str(m) for m in get_messages(response.wsgi_request)]
    assert any("it only takes rights away, which needs no second admin" in m for m in said), said
    assert not any("four-eyes is off" in m for m in said), said
    assert "approve_role" not in get_perms(world.approver, world.role)
