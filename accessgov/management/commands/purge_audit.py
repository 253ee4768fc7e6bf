"""``manage.py purge_audit --before YYYY-MM-DD``: delete access events older than the retention period.

Refuses any date inside the window (AUDIT_RETENTION_DAYS). Records a checkpoint (the last purged
event's sequence and hash) so the remaining chain still verifies, and an access event saying what was
purged (``services/audit.audit_purge``). On PostgreSQL the append-only trigger is lifted only inside
that transaction, which needs the table owner's rights (run it as the role that runs migrations, not as
the application's user).
"""

from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError

from accessgov.exceptions import PolicyViolation
from accessgov.services.audit import audit_purge


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
        try:
            plan = audit_purge(before, dry_run=options["dry_run"])
        except PolicyViolation as exc:
            raise CommandError(str(exc)) from exc
        if plan is None:
            self.stdout.write("Nothing to purge.")
        elif options["dry_run"]:
            self.stdout.write(f"Would purge {plan.count} events (up to #{plan.up_to_sequence}).")
        else:
            self.stdout.write(
                f"Purged {plan.count} events (up to #{plan.up_to_sequence}); the chain continues from there."
            )
