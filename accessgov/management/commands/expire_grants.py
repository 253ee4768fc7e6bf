"""``manage.py expire_grants``: run one sweep now (lapse, activate, expire, remind) and print counts."""

from django.core.management.base import BaseCommand

from accessgov.services.sweep import sweep_run_recorded


class Command(BaseCommand):
    help = "Run one expiry sweep by hand: lapse overdue requests, activate/expire grants, send reminders."

    def handle(self, *args, **options) -> None:
        counts = sweep_run_recorded()
        self.stdout.write(" ".join(f"{k}={v}" for k, v in counts.items()))
