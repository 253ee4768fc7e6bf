"""``manage.py purge_activity --before YYYY-MM-DD``: delete sealed activity older than the retention period.

Statement text may hold personal data: keep it no longer than the evidence needs. Refuses any date inside
ACTIVITY_RETENTION_DAYS. Deletes the rows of a prefix of the seals (every seal made before the date, up to
the first one made after it) and records an ``activity.purged`` event naming the last purged seal, so
``verify_audit`` keeps checking every later seal. The seals themselves and their ledger events stay: the
evidence that the activity existed, its counts and its hash outlive its rows. Unsealed activity is never
purged. On PostgreSQL the deletion is let through by the trigger only inside this command's transaction.
"""

from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from accessgov import clock
from accessgov.services.activity import activity_purge


class Command(BaseCommand):
    help = "Purge sealed activity older than the retention period (refuses anything inside it)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--before", required=True, help="Purge activity sealed before this date (YYYY-MM-DD, UTC).")
        parser.add_argument("--dry-run", action="store_true", help="Say what would be purged; change nothing.")

    def handle(self, *args, **options) -> None:
        try:
            before = datetime.strptime(options["before"], "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError as exc:
            raise CommandError("--before must be a date like 2025-01-31.") from exc
        earliest_allowed = clock.now() - timedelta(days=settings.ACTIVITY_RETENTION_DAYS)
        if before > earliest_allowed:
            raise CommandError(
                f"Refused: {before:%Y-%m-%d} is inside the activity retention period of "
                f"{settings.ACTIVITY_RETENTION_DAYS} days (activity sealed before {earliest_allowed:%Y-%m-%d} may be purged)."
            )
        result = activity_purge(before, dry_run=options["dry_run"])
        if result["through_seal_id"] is None:
            self.stdout.write("Nothing to purge.")
            return
        verb = "Would purge" if options["dry_run"] else "Purged"
        self.stdout.write(
            f"{verb} {result['rows']} activity rows of {result['seals']} seals (up to seal #{result['through_seal_id']})."
        )
