"""One sweep: everything time makes due, set-based. Run by beat every SWEEP_INTERVAL and by
``manage.py expire_grants``; safe to run twice or in parallel (skip-locked batches)."""

from datetime import datetime

from accessgov import clock
from accessgov.models import JobRun
from accessgov.services import (
    access_requests,
    activity,
    eligibility,
    grants,
    notification_outbox,
    provisioning,
    reviews,
    webhooks,
    withdrawals,
)


def sweep_run(now: datetime) -> dict[str, int]:
    return {
        "lapsed": access_requests.access_request_lapse_due(now),
        # Eligibility is a standing condition: pending requests whose eligibility ended (end date,
        # group left) leave the queue with a reason.
        "withdrawn": access_requests.access_request_withdraw_ineligible(now),
        "activated": grants.grant_activate_due(now),
        "expired": grants.grant_expire_due(now),
        # A pending extension of a grant that expired (here, or ended while its request was locked) leaves too.
        "extensions_withdrawn": withdrawals.extensions_withdraw_for_ended_grants(now),
        "approver_reminders": access_requests.access_request_remind_due(now),
        "expiry_reminders": grants.grant_remind_expiring(now),
        "break_glass_reminders": grants.break_glass_remind_overdue(now),
        # The outbox is drained by its own task after each commit, and here too: after a broker or
        # target outage, access is applied/removed within one sweep of recovery.
        "provisioned": provisioning.outbox_drain(now),
        "manual_applies_withdrawn": provisioning.manual_applies_withdraw(now),
        "removal_alerts": provisioning.removal_alert_due(now),
        "review_reminders": reviews.review_reminders_due(now),
        "reviews_closed": reviews.review_campaigns_close_due(now),
        "eligibility_reminders": eligibility.eligibility_remind_ending(now),
        # Activity of grants whose removal is confirmed is sealed into the ledger (after a short delay for
        # log lines still on their way).
        "activity_sealed": activity.activity_seal_due(now),
        # Event webhooks are sent after each commit, and retried (backoff) or caught up here, last, so
        # that the events of this very sweep go out too.
        "webhooks_delivered": webhooks.webhook_deliveries_drain(now),
        # Notifications whose task the broker never ran (down at the commit, or lost the message).
        "notifications_requeued": notification_outbox.notification_outbox_drain(now),
    }


def sweep_run_recorded() -> dict[str, int]:
    """One sweep at the current time, with its duration kept for /metrics (accessgov_sweep_duration)."""
    import time

    started = time.monotonic()
    counts = sweep_run(clock.now())
    JobRun.objects.update_or_create(
        name="sweep",
        defaults={"finished_at": clock.now(), "duration_seconds": time.monotonic() - started, "result": counts},
    )
    return counts
