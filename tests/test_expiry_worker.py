"""Grants end by themselves: the per-grant eta task on a real worker, the sweep when that task was
lost, and ``manage.py expire_grants`` run by hand."""

import os
import time
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path
from urllib.parse import quote

import pytest
import time_machine
from celery import Celery
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from accessgov.models import AccessEvent, Grant
from accessgov.services import access_requests as ar
from accessgov.services.sweep import sweep_run
from tests.workers import start_worker, stop_worker

ROOT = Path(__file__).resolve().parent.parent
H = timedelta(hours=1)
T0 = datetime(2026, 11, 24, 10, 0, 15, tzinfo=UTC)


def approved_grant(world) -> Grant:
    access_request = ar.access_request_submit(
        world.requester, role=world.role, duration=H, justification="Investigating incident INC-42 on payments"
    )
    ar.access_request_approve(world.approver, access_request.pk)
    return Grant.objects.get(access_request=access_request)


# --- The eta task on a real worker -------------------------------------------------------------


def _database_url_of_this_test() -> str:
    """The database the test runs on (pytest-django's test_… database), as a DATABASE_URL."""
    s = connection.settings_dict
    credentials = quote(s["USER"] or "", safe="")
    if s.get("PASSWORD"):
        credentials += ":" + quote(s["PASSWORD"], safe="")
    host = s.get("HOST") or "127.0.0.1"
    port = f":{s['PORT']}" if s.get("PORT") else ""
    return f"postgres://{credentials}@{host}{port}/{quote(s['NAME'], safe='')}"


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_on_redis_expires_a_grant_at_its_eta(world, tmp_path):
    url = os.environ["REDIS_URL"]
    database_url = _database_url_of_this_test()
    assert connection.settings_dict["NAME"].startswith("test_")  # never the development database
    log_path = tmp_path / "worker.log"
    worker = start_worker(
        {
            "VAR_DIR": str(tmp_path),
            "DATABASE_URL": database_url,
            "CELERY_BROKER_URL": url,
            "CELERY_RESULT_BACKEND": url,
            "CELERY_TASK_ALWAYS_EAGER": "0",
        },
        log_path.open("w"),
        loglevel="INFO",
    )
    # The test process runs tasks eagerly; this client puts them on Redis for the worker. Not the
    # "current" app: the approval's own on_commit tasks must still run eagerly in this process.
    client = Celery("probe", broker=url, backend=url, set_as_current=False)
    try:
        # Wait until the worker is consuming, so that the lag below is the eta's, not the start-up's.
        assert client.send_task("accessgov.tasks.ping").get(timeout=60) == "pong"

        grant = approved_grant(world)
        # Setup only: the shortest policy duration is 5 minutes; make this grant end in 3 s.
        Grant.objects.filter(pk=grant.pk).update(expires_at=timezone.now() + timedelta(seconds=3))
        grant.refresh_from_db()
        client.send_task("accessgov.tasks.expire_grant", args=[grant.pk], eta=grant.expires_at)

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            grant.refresh_from_db()
            if grant.status == Grant.Status.EXPIRED:
                break
            assert grant.status == Grant.Status.ACTIVE
            time.sleep(0.1)
        seen_at = timezone.now()
        assert grant.status == Grant.Status.EXPIRED, log_path.read_text()[-3000:]
        # The worker goes on to tell the grantee (expiry → notify_many → notify, all on Redis).
        told = f"notification grant_ended #{grant.pk}: 1 emails"
        while told not in log_path.read_text() and time.monotonic() < deadline + 10:
            time.sleep(0.1)
        assert told in log_path.read_text(), log_path.read_text()[-3000:]
    finally:
        stop_worker(worker)
        client.close()

    assert grant.end_reason == Grant.EndReason.EXPIRED
    assert grant.ended_at == grant.expires_at
    event = AccessEvent.objects.get(grant=grant, event_type="grant.expired")
    assert event.actor_label == "system:expiry-timer"
    lag = event.data["observed_lag_seconds"]
    print(f"worker expired grant #{grant.pk}: observed lag {lag:.3f} s, seen by the test {seen_at - grant.expires_at}")
    # Never before its end; and promptly after it.
    assert 0 <= lag < 5
    assert event.occurred_at >= grant.expires_at


# --- The sweep and the command -----------------------------------------------------------------


@pytest.mark.django_db
def test_sweep_expires_a_grant_whose_eta_task_was_lost(world):
    # Outside a transactional test, on_commit callbacks never run: no expiry task is ever sent.
    with time_machine.travel(T0, tick=False):
        grant = approved_grant(world)
    assert grant.expires_at == T0 + H

    with time_machine.travel(T0 + H + timedelta(seconds=7), tick=False):
        now = timezone.now()
        grant.refresh_from_db()
        assert grant.status == Grant.Status.ACTIVE  # stored state: nobody expired it
        assert not Grant.objects.active(now).filter(pk=grant.pk).exists()  # reads already say no
        assert not AccessEvent.objects.filter(event_type="grant.expired").exists()

        counts = sweep_run(now)

    assert counts["expired"] == 1
    grant.refresh_from_db()
    assert grant.status == Grant.Status.EXPIRED
    assert grant.ended_at == grant.expires_at
    event = AccessEvent.objects.get(grant=grant, event_type="grant.expired")
    assert event.actor_label == "system:sweep"
    assert event.occurred_at == T0 + H + timedelta(seconds=7)
    assert event.data["observed_lag_seconds"] == 7.0


@pytest.mark.django_db
def test_expire_grants_command_prints_counts_and_expires_a_due_grant(world):
    with time_machine.travel(T0, tick=False):
        grant = approved_grant(world)

    with time_machine.travel(T0 + H - timedelta(seconds=1), tick=False):
        out = StringIO()
        call_command("expire_grants", stdout=out)
        assert "expired=0" in out.getvalue().split()
    grant.refresh_from_db()
    assert grant.status == Grant.Status.ACTIVE

    with time_machine.travel(T0 + H + timedelta(seconds=30), tick=False):
        out = StringIO()
        call_command("expire_grants", stdout=out)
        assert out.getvalue().split() == [
            "lapsed=0",
            "withdrawn=0",
            "activated=0",
            "expired=1",
            "approver_reminders=0",
            "expiry_reminders=0",
            "break_glass_reminders=0",
            "provisioned=0",
            "removal_alerts=0",
            "review_reminders=0",
            "reviews_closed=0",
            "eligibility_reminders=0",
            "activity_sealed=0",
            "webhooks_delivered=0",
        ]
        again = StringIO()
        call_command("expire_grants", stdout=again)
        assert "expired=0" in again.getvalue().split()

    grant.refresh_from_db()
    assert grant.status == Grant.Status.EXPIRED
    event = AccessEvent.objects.get(grant=grant, event_type="grant.expired")
    assert event.actor_label == "system:sweep"
    assert event.data["observed_lag_seconds"] == 30.0
