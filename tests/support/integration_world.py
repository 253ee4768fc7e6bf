"""Fixtures shared by the integration tests: the fake providers on loopback (tests/support/fake_providers.py),
provider settings pointing at it, and a fixed instant (tests never read the real date)."""

from datetime import UTC, datetime

import pytest
import time_machine
from django.test import Client

from accessgov.models import OnCallProvider, TicketProvider
from tests.conftest import verify_session
from tests.support.fake_providers import GITHUB_TOKEN, JIRA_TOKEN, JIRA_USER, PD_KEY, FakeProviders

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


@pytest.fixture
def fake(settings):
    settings.INTEGRATIONS_ALLOW_PRIVATE_URLS = True
    with FakeProviders() as providers:
        settings.INTEGRATIONS_CA_FILE = providers.ca_file
        yield providers


@pytest.fixture
def at_t0():
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


@pytest.fixture
def pagerduty(fake, db):
    return OnCallProvider.objects.create(name="PagerDuty", base_url=fake.url + "/pd", api_key=PD_KEY)


@pytest.fixture
def jira_provider(fake, db):
    return TicketProvider.objects.create(
        name="Jira",
        base_url=fake.url + "/jira",
        username=JIRA_USER,
        api_token=JIRA_TOKEN,
        webhook_secret="jira-webhook-test-secret",
    )


@pytest.fixture
def github_provider(fake, db):
    return TicketProvider.objects.create(
        name="GitHub",
        kind=TicketProvider.Kind.GITHUB,
        base_url=fake.url + "/github",
        api_token=GITHUB_TOKEN,
        webhook_secret="github-webhook-test-secret",
    )


def client_for(user) -> Client:
    """A verified portal session for ``user`` (sign-in itself is tested elsewhere)."""
    return verify_session(Client(), user)
