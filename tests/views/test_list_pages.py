"""List pages at scale stay cheap: keyset pages on the grants list, and system/role filters rendered
from a cached choice list."""

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse

from accessgov.models import Eligibility, Grant
from accessgov.services import access_requests as ar
from accessgov.views import grants as grant_views
from tests.conftest import verify_session
from tests.support.factories import RoleFactory

pytestmark = pytest.mark.django_db


def _grant(world, user, role):
    Eligibility.objects.get_or_create(role=role, user=user)
    access_request = ar.access_request_submit(
        user, role=role, duration=timedelta(hours=1), justification="On-call work today"
    )
    ar.access_request_approve(world.approver, access_request.pk)
    return Grant.objects.get(access_request=access_request)


def test_grants_list_pages_by_keyset_newest_first(world, make_user, monkeypatch):
    monkeypatch.setattr(grant_views, "GRANTS_PAGE_SIZE", 2)
    grants = [_grant(world, make_user(f"engineer{n}"), world.role) for n in range(3)]
    client = verify_session(Client(), world.auditor)
    first = client.get(reverse("grants_list"))
    shown = [g.pk for g in first.context["grants"]]
    assert shown == [grants[2].pk, grants[1].pk]
    cursor = first.context["page"].next_cursor
    assert cursor and "Next 2" in first.content.decode()
    second = client.get(reverse("grants_list"), {"after": cursor})
    assert [g.pk for g in second.context["grants"]] == [grants[0].pk] and second.context["page"].next_cursor is None
    # The last page links back to the one before it (not only to the first page), and that link keeps the filters.
    page = second.content.decode()
    back = second.context["page"].prev_cursor
    assert "← Previous" in page and f"back={back}" in page
    again = client.get(reverse("grants_list"), {"back": back, "sort": "-from"})
    assert [g.pk for g in again.context["grants"]] == [grants[2].pk, grants[1].pk]
    # A damaged cursor starts from the newest again instead of failing.
    assert client.get(reverse("grants_list") + "?after=%%%").status_code == 200


def test_system_and_role_filters_list_every_choice_and_filter_by_id(world, make_user):
    other_role = RoleFactory(name="viewer")
    mine = _grant(world, make_user("engineer"), world.role)
    client = verify_session(Client(), world.auditor)
    page = client.get(reverse("grants_list") + f"?role={world.role.pk}")
    html = page.content.decode()
    assert f'<option value="{world.role.pk}" selected>' in html and f'<option value="{other_role.pk}">' in html
    assert [g.pk for g in page.context["grants"]] == [mine.pk]
    assert list(client.get(reverse("grants_list") + f"?role={other_role.pk}").context["grants"]) == []
    invalid = client.get(reverse("grants_list") + "?role=nope")  # no rows, and the page says why (issue 14)
    assert invalid.status_code == 400 and "Enter an id" in invalid.content.decode()
    # A role created now shows up at once (the cached list is dropped on save).
    fresh = RoleFactory(name="brand-new")
    assert f'<option value="{fresh.pk}">' in client.get(reverse("grants_list")).content.decode()


def test_approver_scope_is_read_once_per_request_and_a_removed_permission_shows_on_the_next(world):
    from accessgov import permissions

    pending = ar.access_request_submit(
        world.requester, role=world.role, duration=timedelta(hours=1), justification="Investigating INC-77"
    )
    client = verify_session(Client(), world.approver2)

    def queued(response):
        return [entry["item"].pk for entry in response.context["items"]]

    assert pending.pk in queued(client.get(reverse("approvals")))
    # Within one request the ids are memoized; outside a request (services, shell) never.
    world.approver2._permission_memo = {}
    first = permissions.decidable_role_ids(world.approver2)
    world.approver2.groups.clear()
    assert permissions.decidable_role_ids(world.approver2) == first
    del world.approver2._permission_memo
    assert permissions.decidable_role_ids(world.approver2) == []
    # The next page view reads afresh: the request is no longer in their queue.
    assert pending.pk not in queued(client.get(reverse("approvals")))
