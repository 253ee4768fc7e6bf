"""``manage.py purge_audit --before YYYY-MM-DD``: delete access events older than the retention period.

Refuses any date inside the window (AUDIT_RETENTION_DAYS). Records a checkpoint (the last purged
event's sequence and hash) so the remaining chain still verifies, and an access event saying what was
purged. On PostgreSQL the append-only trigger is lifted only inside this transaction, which needs the
table owner's rights (run it as the role that runs migrations, not as the application's user).
"""

from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.utils import timezone

from accessgov.models import AccessEvent, LedgerCheckpoint, WebhookDelivery
from accessgov.services.events import event_record

TRIGGER = "accessgov_ledger_no_update_delete"


class Command(BaseCommand):
    help = "Purge access events older than the retention period (refuses anything inside it)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--before", required=True, help="Purge events before this date (YYYY-MM-DD, UTC).")
        parser.add_argument("--dry-run", action="store_true", help="Say what would be purged; change nothing.")

    def handle(self, *args, **options) -> None:
        try:
            before = datetime.strptime(options["before"], "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError as exc:
            raise CommandError("--before must be a date like 2019-01-31.") from exc
        earliest_allowed = timezone.now() - timedelta(days=settings.AUDIT_RETENTION_DAYS)
        if before > earliest_allowed:
            raise CommandError(
                f"Refused: {before:%Y-%m-%d} is inside the retention period of {settings.AUDIT_RETENTION_DAYS} days "
                f"(events before {earliest_allowed:%Y-%m-%d} may be purged)."
            )
        doomed = AccessEvent.objects.filter(occurred_at__lt=before, sequence__isnull=False)
        last = doomed.order_by("-sequence").values("sequence", "hash").first()
        if last is None:
            self.stdout.write("Nothing to purge.")
            return
        # Purge a prefix of the chain only: everything up to the last event before the date.
        prefix = AccessEvent.objects.filter(sequence__lte=last["sequence"])
        count = prefix.count()
        if options["dry_run"]:
            self.stdout.write(f"Would purge {count} events (up to #{last['sequence']}).")
            return
        with transaction.atomic():
            # The delivery log of purged events goes with them (it references them).
            WebhookDelivery.objects.filter(event__sequence__lte=last["sequence"])._raw_delete(connection.alias)
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute(f"ALTER TABLE accessgov_accessevent DISABLE TRIGGER {TRIGGER}")
            prefix._raw_delete(prefix.db)
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute(f"ALTER TABLE accessgov_accessevent ENABLE TRIGGER {TRIGGER}")
            LedgerCheckpoint.objects.create(
                sequence=last["sequence"], hash=last["hash"], purged_count=count, purged_before=before
            )
            event_record(
                AccessEvent.Type.AUDIT_PURGED,
                job="purge_audit",
                reason=f"Retention purge of events before {before:%Y-%m-%d}",
                data={
                    "purged": count,
                    "up_to_sequence": last["sequence"],
                    "up_to_hash": last["hash"],
                    "retention_days": settings.AUDIT_RETENTION_DAYS,
                },
            )
        self.stdout.write(f"Purged {count} events (up to #{last['sequence']}); the chain continues from there.")
