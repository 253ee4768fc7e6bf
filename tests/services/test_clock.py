"""Promise 8 says "measured by the database clock": a web, worker or scheduler host whose clock runs behind
PostgreSQL's must still treat a grant as ended at its ``expires_at`` (a probe showed one 90 s behind listing
the grant as active). ``accessgov.clock`` reads the database's clock; here this process's clock is moved
90 s behind the database's with time-machine, as a drifting host's would be."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from accessgov import clock
from accessgov.models import Grant
from accessgov.services import access_requests as ar

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]
BEHIND = timedelta(seconds=90)


@pytest.fixture
def database_clock(settings):
    settings.DATABASE_CLOCK = True
    clock.forget()
    yield
    clock.forget()  # no offset left for the tests after this one


def database_now():
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        return cursor.fetchone()[0]


def test_a_host_90_s_behind_the_database_reads_the_databases_time(database_clock):
    real = datetime.now(UTC)
    with time_machine.travel(real - BEHIND, tick=True):
        seen = clock.now()
        assert abs((seen - database_now()).total_seconds()) < 1.0
        assert abs((clock.offset() - BEHIND).total_seconds()) < 1.0


def test_a_grant_past_its_end_by_the_database_is_not_active_on_a_host_whose_clock_is_behind(world, database_clock):
    from django.test import Client

    from tests.support.api_helpers import api_client, make_token

    real = datetime.now(UTC)
    with time_machine.travel(real - BEHIND, tick=True):
        access_request = ar.access_request_submit(
            world.requester, role=world.role, duration=timedelta(hours=1), justification="Investigating INC-7"
        )
        ar.access_request_approve(world.approver, access_request.pk)
        grant = Grant.objects.get(access_request=access_request)
        # By the database the grant was made just now (not 90 s ago): its times are the database's.
        assert abs((grant.starts_at - database_now()).total_seconds()) < 2.0
        # Its end passes by the database's clock, while this host's clock is still 90 s before it.
        ended = database_now() - timedelta(seconds=1)
        Grant.objects.filter(pk=grant.pk).update(starts_at=ended - timedelta(minutes=5), expires_at=ended)
        assert datetime.now(UTC) < database_now() - timedelta(seconds=60)  # the host really is behind
        assert not Grant.objects.active(clock.now()).filter(pk=grant.pk).exists()
        _, secret = make_token(world.requester, days=1)
        shown = api_client(secret).get(f"/api/v1/grants/{grant.pk}/").json()
        assert shown["active"] is False and shown["status"] == "expired"
        # The portal's list as well (an auditor's grants list filtered to active ones).
        from tests.conftest import verify_session

        listed = verify_session(Client(), world.auditor).get("/grants/", {"status": "active"})
        assert grant.pk not in [g.pk for g in listed.context["grants"]]


def test_a_host_ahead_of_the_database_takes_a_code_typed_a_moment_ago_for_break_glass(world, database_clock):
    """A probe's finding: break-glass refused a code typed a moment ago ("needs a code entered in the last 5
    minutes") on a worker whose clock ran ahead of the database's measured offset: the session noted the code by
    the host's clock, the check judged it by the database's, so the code was "from the future"."""
    from django.test import Client
    from django.urls import reverse

    from tests.conftest import sign_in

    world.role_two.break_glass_allowed = True
    world.role_two.save(update_fields=["break_glass_allowed"])
    with time_machine.travel(datetime.now(UTC) + timedelta(seconds=3), tick=True):
        client = sign_in(Client(), world.requester)
        form = client.get(reverse("break_glass")).content.decode()
        assert "not needed now" in form  # the page already said the sign-in code counts
        response = client.post(
            reverse("break_glass"),
            {"role": world.role_two.pk, "duration": "15m", "justification": "Prod is down, INC-9"},
        )
    assert response.status_code == 302, response.content.decode()[:500]
    assert world.requester.grants.filter(is_break_glass=True).exists()
