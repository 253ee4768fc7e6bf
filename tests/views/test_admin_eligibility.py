"""Eligibilities in the admin: they are ended, never deleted (a deletion wrote no access event and left the
pending requests that relied on it waiting)."""

import pytest
from django.test import Client
from django.urls import reverse

from accessgov.models import AccessEvent, AccessRequest, Eligibility
from tests.conftest import verify_session
from tests.support.requests import submit

pytestmark = pytest.mark.django_db


def test_an_admin_ends_an_eligibility_with_an_event_and_cannot_delete_it(world, admins):
    first, _ = admins
    client = verify_session(Client(), first)
    pending = submit(world)
    eligibility = Eligibility.objects.get(role=world.role, user=world.requester)
    changelist = reverse("admin:accessgov_eligibility_changelist")

    page = client.get(changelist).content.decode()
    assert 'value="end_eligibilities"' in page and 'value="delete_selected"' not in page
    assert client.get(reverse("admin:accessgov_eligibility_delete", args=[eligibility.pk])).status_code == 403
    refused = client.post(
        changelist, {"action": "delete_selected", "_selected_action": [eligibility.pk], "post": "yes"}
    )
    assert refused.status_code in (200, 302)
    assert Eligibility.objects.filter(pk=eligibility.pk).exists()

    response = client.post(changelist, {"action": "end_eligibilities", "_selected_action": [eligibility.pk]})
    assert response.status_code == 302
    eligibility.refresh_from_db()
    assert eligibility.ends_at is not None
    ended = AccessEvent.objects.get(event_type="eligibility.ended")
    assert (ended.actor, ended.reason) == (first, f"Ended in the admin by {first.username}.")
    pending.refresh_from_db()
    assert pending.status == AccessRequest.Status.CANCELLED
    assert AccessEvent.objects.filter(event_type="request.withdrawn", access_request=pending).exists()
    # Ending it twice says so, and changes nothing.
    client.post(changelist, {"action": "end_eligibilities", "_selected_action": [eligibility.pk]})
    assert AccessEvent.objects.filter(event_type="eligibility.ended").count() == 1
