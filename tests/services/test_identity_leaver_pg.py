"""A leaver deactivated over SCIM loses their membership at a real PostgreSQL target: the SCIM call
commits the deactivation with the grant's removal in its outbox, the drain revokes the membership, ends
the grantee's open session and reads pg_auth_members back to confirm."""

import time

import psycopg
import pytest
from django.test import Client

from accessgov.models import AccessEvent, ExternalIdentity, Grant, IdentityProvider
from tests.support.identity_support import OKTA_DEACTIVATE, Scim, make_scim_client
from tests.support.provisioning import approve, pg, target, wait_until  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_a_scim_deactivation_removes_the_membership_at_the_postgresql_target(pg):  # noqa: F811
    provider = IdentityProvider.objects.create(
        slug="okta", name="Okta", issuer="https://example.okta.com", client_id="c"
    )
    _, secret = make_scim_client(provider)
    identity = ExternalIdentity.objects.create(
        provider=provider, user=pg.requester, subject="00u-leaver", user_name="leaver"
    )
    grant = approve(pg)  # applied at the target by the drain after the approval's commit
    grant.refresh_from_db()
    assert grant.provisioning_state == Grant.Provisioning.APPLIED
    assert pg.principal in pg.target.members()
    session = pg.target.connect_as(pg.principal)
    assert pg.target.read_table_as_managed(session) == 2

    started = time.monotonic()
    answer = Scim(Client(), secret).patch(f"Users/{identity.scim_id}", OKTA_DEACTIVATE)
    assert answer.status_code == 200 and answer.json()["active"] is False
    assert wait_until(lambda: Grant.objects.get(pk=grant.pk).removal_confirmed_at is not None)
    lag = time.monotonic() - started

    assert pg.principal not in pg.target.members()
    assert wait_until(lambda: pg.target.sessions_of(pg.principal) == 0)
    with pytest.raises(psycopg.OperationalError):
        session.execute("SELECT 1")
    grant.refresh_from_db()
    assert grant.status == Grant.Status.REVOKED and grant.provisioning_state == Grant.Provisioning.CONFIRMED
    removed = AccessEvent.objects.get(grant=grant, event_type=AccessEvent.Type.PROVISIONING_REMOVED)
    deactivated = AccessEvent.objects.get(event_type=AccessEvent.Type.USER_DEACTIVATED)
    assert deactivated.sequence < removed.sequence and deactivated.data["idp"] == "okta"
    assert lag < 5  # the leaver target (p99 ≤ 5 s) is measured properly by bench/leaver_lag.py
