"""The Celery app and the beat schedule (the one place periodic work is declared)."""

import os

from celery import Celery
from celery.schedules import crontab

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Emails, Slack messages and event webhooks have their own queue, consumed by their own worker processes
# (`celery worker -Q notifications`; docs/OPERATIONS.md): a slow mail relay or webhook receiver then
# never delays an expiry timer or a removal of access, which run on the default queue.
DEFAULT_QUEUE = "celery"
NOTIFICATIONS_QUEUE = "notifications"
app.conf.task_routes = {
    f"accessgov.tasks.{name}": {"queue": NOTIFICATIONS_QUEUE}
    for name in (
        "notify",
        "notify_many",
        "deliver_event_webhooks",
        "slack_sync",
        "build_evidence_pack",
        "evidence_packs_scheduled",
    )
}

BEAT_SCHEDULE: dict[str, dict] = {
    "heartbeat": {"task": "accessgov.tasks.heartbeat", "schedule": 30.0},
    # The expiry safety net: catches anything the per-grant eta tasks missed.
    "sweep": {"task": "accessgov.tasks.sweep", "schedule": float(os.environ.get("SWEEP_INTERVAL_SECONDS", "30"))},
    # Open the quarter's access review (REVIEW_SCHEDULE_CRON overrides: "minute hour day month weekday").
    "quarterly-review": {
        "task": "accessgov.tasks.quarterly_review",
        "schedule": crontab(
            **dict(
                zip(
                    ("minute", "hour", "day_of_month", "month_of_year", "day_of_week"),
                    os.environ.get("REVIEW_SCHEDULE_CRON", "0 6 1 1,4,7,10 *").split(),
                    strict=True,
                )
            )
        ),
    },
    # Activity capture: sample sessions at PostgreSQL targets and read their server logs (docs/ACTIVITY.md).
    "capture-activity": {
        "task": "accessgov.tasks.capture_activity",
        "schedule": float(os.environ.get("ACTIVITY_SAMPLE_SECONDS", "5")),
    },
    # Compare each target with the active grants and flag (optionally remove) drift.
    "reconcile": {
        "task": "accessgov.tasks.reconcile",
        "schedule": float(os.environ.get("RECONCILE_INTERVAL_SECONDS", "300")),
    },
    # Ticket-bound and incident-bound grants: end those whose ticket closed or incident resolved (the
    # safety net under the Jira webhook); prune the Slack replay guard.
    "integrations-sweep": {
        "task": "accessgov.tasks.integrations_sweep",
        "schedule": float(os.environ.get("INTEGRATIONS_SWEEP_SECONDS", "60")),
    },
    # Scheduled evidence packs (EVIDENCE_SCHEDULE): daily, the last complete month/quarter once, and retries
    # of failed deliveries. Does nothing while EVIDENCE_SCHEDULE is empty.
    "evidence-packs": {"task": "accessgov.tasks.evidence_packs_scheduled", "schedule": crontab(minute=30, hour=2)},
}
app.conf.beat_schedule = BEAT_SCHEDULE
