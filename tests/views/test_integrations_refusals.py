"""What the integrations refuse, and say so: a PagerDuty provider over plain http:// (its official client
speaks https only, so such a provider was accepted and then never asked: every request fell back with
"could not answer (UrlError)"), and a signed Jira webhook whose body is not Jira's shape (it was answered
204, as if nothing were wrong)."""

import hashlib
import hmac
import json

import pytest
from django.test import Client
from django.urls import reverse

from accessgov.integrations import pagerduty as pagerduty_client
from accessgov.integrations.http import ProviderError
from accessgov.models import ChangeRequest, OnCallProvider, TicketProvider
from accessgov.services import changes
from tests.conftest import verify_session
from tests.support.admin_forms import post_admin_form

pytestmark = pytest.mark.django_db
SECRET = "jira-webhook-test-secret"
HTTPS_ONLY = "PagerDuty is reached over https:// only"


def _propose_pagerduty(admin, base_url: str):
    return post_admin_form(
        verify_session(Client(), admin),
        reverse("admin:accessgov_oncallprovider_add"),
        "oncallprovider_form",
        name="PagerDuty",
        base_url=base_url,
        api_key="pd-read-only-key",
    )


def test_a_pagerduty_provider_over_plain_http_is_refused_when_saved_even_with_internal_urls_allowed(admins, settings):
    settings.INTEGRATIONS_ALLOW_PRIVATE_URLS = True
    first, _ = admins
    response = _propose_pagerduty(first, "http://127.0.0.1:8080/pd")
    assert response.status_code == 200
    assert HTTPS_ONLY in response.content.decode()
    assert not ChangeRequest.objects.exists() and not OnCallProvider.objects.exists()


def test_a_pagerduty_provider_over_https_is_still_proposed_and_applied(admins, settings):
    settings.INTEGRATIONS_ALLOW_PRIVATE_URLS = True  # no DNS here: the guard would not resolve the name
    first, second = admins
    assert _propose_pagerduty(first, "https://api.eu.pagerduty.com").status_code == 302
    changes.change_approve(second, ChangeRequest.objects.get(kind=ChangeRequest.Kind.ONCALL_PROVIDER).pk)
    assert OnCallProvider.objects.get().base_url == "https://api.eu.pagerduty.com"


def test_a_pagerduty_provider_saved_over_http_before_says_why_it_is_not_asked(settings):
    settings.INTEGRATIONS_ALLOW_PRIVATE_URLS = True
    provider = OnCallProvider.objects.create(name="PagerDuty", base_url="http://127.0.0.1:9/pd", api_key="k")
    with pytest.raises(ProviderError, match=HTTPS_ONLY):
        pagerduty_client.incident_status(provider, "P123")


def _signed_webhook(provider_id: int, body: bytes):
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return Client().post(
        reverse("jira_webhook", args=[provider_id]),
        data=body,
        content_type="application/json",
        HTTP_X_HUB_SIGNATURE=signature,
    )


@pytest.mark.parametrize(
    "body",
    [
        b"[1, 2]",
        b'"OPS-1"',
        b"{}",
        b'{"issue": 5}',
        b'{"issue": {}}',
        b'{"issue": {"key": "../x"}}',
        b'{"issue": {"key": "OPS-0"}}',
        b'{"issue": {"key": ["OPS-1"]}}',
        b'{"webhookEvent": "jira:issue_updated", "issue": {"id": "10001"}}',
    ],
)
def test_a_signed_jira_webhook_without_jira_s_shape_is_refused_with_the_reason(settings, body):
    settings.INTEGRATIONS_ALLOW_PRIVATE_URLS = True
    provider = TicketProvider.objects.create(name="Jira", base_url="https://127.0.0.1:9/jira", webhook_secret=SECRET)
    response = _signed_webhook(provider.pk, body)
    assert response.status_code == 400, (body, response.status_code)
    assert "issue.key" in response.content.decode()


def test_a_well_formed_jira_webhook_that_changes_nothing_is_still_accepted(settings):
    """An issue no grant is bound to: nothing to read back, nothing ends (200, as before)."""
    settings.INTEGRATIONS_ALLOW_PRIVATE_URLS = True
    provider = TicketProvider.objects.create(name="Jira", base_url="https://127.0.0.1:9/jira", webhook_secret=SECRET)
    body = json.dumps({"webhookEvent": "jira:issue_updated", "issue": {"key": "OPS-42"}}).encode()
    response = _signed_webhook(provider.pk, body)
    assert response.status_code == 200 and response.json() == {"ticket": "OPS-42", "grants_ended": 0}
