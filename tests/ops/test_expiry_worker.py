"""Grants end by themselves: the scheduler as a real process (PostgreSQL woken by NOTIFY, and the
embedded SQLite database polling), the sweep, and ``manage.py expire_grants`` run by hand."""

import json
import os
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path

import pytest
import time_machine
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone

from accessgov.models import AccessEvent, Grant
from accessgov.services import access_requests as ar
from accessgov.services.scheduler import scheduler_wake
from accessgov.services.sweep import sweep_run
from tests.support.databases import database_url_of_this_test
from tests.support.workers import start_scheduler

ROOT = Path(__file__).resolve().parents[2]
H = timedelta(hours=1)
T0 = datetime(2026, 11, 24, 10, 0, 15, tzinfo=UTC)


def approved_grant(world) -> Grant:
    access_request = ar.access_request_submit(
        world.requester, role=world.role, duration=H, justification="Investigating incident INC-42 on payments"
    )
    ar.access_request_approve(world.approver, access_request.pk)
    return Grant.objects.get(access_request=access_request)


# --- The scheduler as a real process -----------------------------------------------------------


def _stop(process: subprocess.Popen) -> float:
    """SIGTERM, and the seconds until the process has exited (killed after 15 s)."""
    started = time.monotonic()
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
    return time.monotonic() - started


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_real_scheduler_woken_by_notify_expires_a_grant_at_its_end_with_no_broker_and_no_worker(world, tmp_path):
    assert connection.settings_dict["NAME"].startswith("test_")  # never the development database
    log_path = tmp_path / "scheduler.log"
    # A 30 s interval: the scheduler may only be on time if the NOTIFY wakes it. No Redis at all (an
    # unreachable broker URL), no worker: expiry needs nothing but the database.
    scheduler = start_scheduler(
        {
            "VAR_DIR": str(tmp_path),
            "DATABASE_URL": database_url_of_this_test(),
            "CELERY_BROKER_URL": "redis://127.0.0.1:9/0",
            "CELERY_TASK_ALWAYS_EAGER": "0",
            "SCHEDULER_INTERVAL_SECONDS": "30",
        },
        log_path.open("w"),
    )
    try:
        deadline = time.monotonic() + 30
        while "holds the lease" not in log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "holds the lease" in log_path.read_text(), log_path.read_text()
        time.sleep(0.5)  # the scheduler is waiting (30 s) now
        grant = approved_grant(world)
        # Setup: the shortest policy duration is 5 minutes; end this grant in 2 s, and wake the scheduler
        # as every service does when it writes a deadline.
        with transaction.atomic():
            Grant.objects.filter(pk=grant.pk).update(expires_at=timezone.now() + timedelta(seconds=2))
            scheduler_wake()
        grant.refresh_from_db()
        while time.monotonic() < deadline + 10:
            grant.refresh_from_db()
            if grant.status == Grant.Status.EXPIRED:
                break
            assert grant.status == Grant.Status.ACTIVE
            time.sleep(0.05)
        assert grant.status == Grant.Status.EXPIRED, log_path.read_text()[-3000:]
    finally:
        stopped_in = _stop(scheduler)
    assert scheduler.returncode == 0, log_path.read_text()[-3000:]
    assert stopped_in < 5, stopped_in
    assert grant.end_reason == Grant.EndReason.EXPIRED and grant.ended_at == grant.expires_at
    event = AccessEvent.objects.get(grant=grant, event_type="grant.expired")
    assert event.actor_label == "system:scheduler"
    lag = event.data["observed_lag_seconds"]
    print(f"scheduler expired grant #{grant.pk}: observed lag {lag:.3f} s; stopped {stopped_in:.2f} s after SIGTERM")
    assert 0 <= lag < 1  # never before its end; promptly after it, although the interval is 30 s
    assert "lease" in log_path.read_text() and "stopped" in log_path.read_text()


SEED_SQLITE = """
from datetime import timedelta
from django.utils import timezone
from accessgov.models import AccessRequest, Grant, Role, System, User
now = timezone.now()
user = User.objects.create(username="alice")
system = System.objects.create(name="Payments DB", slug="payments-db")
role = Role.objects.create(system=system, name="read-write", default_duration=timedelta(hours=1),
                           max_duration=timedelta(hours=4))
request = AccessRequest.objects.create(requester=user, role=role, status="approved", requested_duration=timedelta(hours=1),
    approved_duration=timedelta(hours=1), justification="Embedded scheduler test", created_at=now, lapses_at=now,
    decided_at=now)
Grant.objects.create(access_request=request, user=user, role=role, status="active", starts_at=now,
    expires_at=now + timedelta(seconds=3), created_at=now, activated_at=now)
"""


def test_the_scheduler_on_the_embedded_sqlite_database_expires_a_grant_on_time_by_polling(tmp_path):
    # What `make run` starts: SQLite under VAR_DIR, the embedded filesystem broker, no LISTEN/NOTIFY.
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DEBUG": "1",
        "VAR_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'accessgov.sqlite3'}",
        "CELERY_BROKER_URL": "filesystem://",
        "CELERY_TASK_ALWAYS_EAGER": "0",
    }
    env.pop("CELERY_RESULT_BACKEND", None)
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=120)
    subprocess.run([*manage, "shell", "-c", SEED_SQLITE], cwd=ROOT, env=env, check=True, timeout=60)
    log_path = tmp_path / "scheduler.log"
    scheduler = start_scheduler(
        {key: env[key] for key in ("VAR_DIR", "DATABASE_URL", "CELERY_BROKER_URL")}, log_path.open("w")
    )
    database = sqlite3.connect(tmp_path / "accessgov.sqlite3", timeout=20)
    try:
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline:
            status = database.execute("SELECT status FROM accessgov_grant").fetchone()[0]
            if status == "expired":
                break
            time.sleep(0.1)
        assert status == "expired", log_path.read_text()[-3000:]
        actor, data = database.execute(
            "SELECT actor_label, data FROM accessgov_accessevent WHERE event_type = 'grant.expired'"
        ).fetchone()
    finally:
        database.close()
        stopped_in = _stop(scheduler)
    assert actor == "system:scheduler"
    lag = json.loads(data)["observed_lag_seconds"]
    print(f"SQLite scheduler: observed lag {lag:.3f} s; stopped {stopped_in:.2f} s after SIGTERM")
    assert 0 <= lag < 2.5  # polling every second (SCHEDULER_INTERVAL_SECONDS)
    assert "polling" in log_path.read_text()
    assert scheduler.returncode == 0 and stopped_in < 5, log_path.read_text()[-3000:]


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
            "extensions_withdrawn=0",
            "approver_reminders=0",
            "expiry_reminders=0",
            "break_glass_reminders=0",
            "provisioned=0",
            "manual_applies_withdrawn=1",  # the manual system's Apply task was never done: withdrawn
            "removal_alerts=0",
            "review_reminders=0",
            "reviews_closed=0",
            "eligibility_reminders=0",
            "activity_sealed=0",
            "webhooks_delivered=0",
            "notifications_requeued=0",
        ]
        again = StringIO()
        call_command("expire_grants", stdout=again)
        assert "expired=0" in again.getvalue().split()

    grant.refresh_from_db()
    assert grant.status == Grant.Status.EXPIRED
    event = AccessEvent.objects.get(grant=grant, event_type="grant.expired")
    assert event.actor_label == "system:sweep"
    assert event.data["observed_lag_seconds"] == 30.0
