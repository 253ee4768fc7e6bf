"""Provider settings are policy (issue 19): added or changed in the admin they are only proposed; a second
admin approves them; their secrets are write-only (never rendered, masked in the diff, never in events);
provider URLs pointing inside are refused unless the operator allows them."""

import pytest
from django.test import Client
from django.urls import reverse

from accessgov.models import AccessEvent, ChangeRequest, SlackWorkspace, TicketProvider
from accessgov.services import changes
from tests.conftest import verify_session
from tests.support.admin_forms import post_admin_form

pytestmark = pytest.mark.django_db
TOKEN = "jira-api-token-value-1234"
HOOK = "jira-webhook-secret-value-5678"


def as_(user) -> Client:
    return verify_session(Client(), user)


def test_a_ticket_provider_waits_for_a_second_admin_and_its_secrets_never_show(admins, settings):
    settings.INTEGRATIONS_ALLOW_PRIVATE_URLS = True  # no DNS here: the guard would not resolve the name
    first, second = admins
    response = post_admin_form(
        as_(first),
        reverse("admin:accessgov_ticketprovider_add"),
        "ticketprovider_form",
        name="Jira",
        base_url="https://acme.atlassian.net",
        username="bot@acme.example",
        api_token=TOKEN,
        webhook_secret=HOOK,
    )
    assert response.status_code == 302
    assert not TicketProvider.objects.exists()
    change = ChangeRequest.objects.get(kind=ChangeRequest.Kind.TICKET_PROVIDER)
    assert TOKEN not in str(change.changes) + str(change.payload) and HOOK not in str(change.payload)
    page = as_(second).get(reverse("change_detail", args=[change.pk])).content.decode()
    assert TOKEN not in page and HOOK not in page and "(secret)" in page
    with pytest.raises(Exception, match="own policy change"):
        changes.change_approve(first, change.pk)
    changes.change_approve(second, change.pk)
    provider = TicketProvider.objects.get()
    assert provider.api_token == TOKEN and provider.webhook_secret == HOOK
    change.refresh_from_db()
    assert change.secret_payload == ""
    assert TOKEN not in str(list(AccessEvent.objects.values_list("data", "reason")))
    # Editing it never renders the secrets; leaving them empty keeps them.
    edit_url = reverse("admin:accessgov_ticketprovider_change", args=[provider.pk])
    assert TOKEN not in as_(first).get(edit_url).content.decode()
    post_admin_form(as_(first), edit_url, "ticketprovider_form", base_url="https://acme2.atlassian.net")
    edit = ChangeRequest.objects.filter(kind=ChangeRequest.Kind.TICKET_PROVIDER, status="pending").get()
    assert set(edit.changes) == {"base_url"}
    changes.change_approve(second, edit.pk)
    provider.refresh_from_db()
    assert provider.base_url == "https://acme2.atlassian.net" and provider.api_token == TOKEN


def test_a_provider_url_pointing_inside_is_refused_in_the_admin(admins, settings):
    first, _ = admins
    settings.INTEGRATIONS_ALLOW_PRIVATE_URLS = False
    response = post_admin_form(
        as_(first),
        reverse("admin:accessgov_slackworkspace_add"),
        "slackworkspace_form",
        name="Acme",
        team_id="T1",
        api_base_url="https://127.0.0.1/api/",
        bot_token="xoxb-1",
        signing_secret="s",
        channel="C1",
    )
    assert response.status_code == 200
    assert "internal address" in response.content.decode()
    assert not ChangeRequest.objects.exists() and not SlackWorkspace.objects.exists()
