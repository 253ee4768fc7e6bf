"""``manage.py run_scheduler``: the expiry scheduler (accessgov/scheduler.py), until SIGTERM/SIGINT."""

from django.core.management.base import BaseCommand

from accessgov.scheduler import Scheduler


class Command(BaseCommand):
    help = (
        "Run the expiry scheduler: ends and starts grants at their instant and removes access at the "
        "targets, from the database alone. Run two for availability: one holds the lease, the other stands by."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--interval", type=float, help="longest sleep between rounds (SCHEDULER_INTERVAL_SECONDS)")
        parser.add_argument(
            "--lease", type=float, help="seconds the lease lasts without renewal (SCHEDULER_LEASE_SECONDS)"
        )
        parser.add_argument("--threads", type=int, help="drain threads, one system each (SCHEDULER_DRAIN_THREADS)")

    def handle(self, *args, **options) -> None:
        Scheduler(interval=options["interval"], lease_seconds=options["lease"], drain_threads=options["threads"]).run()
