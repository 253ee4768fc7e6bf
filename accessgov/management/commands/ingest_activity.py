"""``manage.py ingest_activity --system SLUG FILE [--format jsonlog|csvlog]``: read a PostgreSQL server log
file (a copy of one, or an export from a managed database's log service) and store its pgaudit lines as
activity, attributed and checked like any capture. Lines seen before are skipped, so running it twice over
the same file stores nothing twice."""

from django.core.management.base import BaseCommand, CommandError

from accessgov.models import System
from accessgov.services.activity import activity_ingest_file


class Command(BaseCommand):
    help = "Ingest a PostgreSQL server log file (jsonlog or csvlog) as activity of a system."

    def add_arguments(self, parser) -> None:
        parser.add_argument("path", help="The log file.")
        parser.add_argument("--system", required=True, help="The system's slug.")
        parser.add_argument("--format", choices=["jsonlog", "csvlog"], default="jsonlog")

    def handle(self, *args, **options) -> None:
        system = System.objects.filter(slug=options["system"]).first()
        if system is None:
            raise CommandError(f"No system {options['system']!r}.")
        try:
            result, unreadable = activity_ingest_file(system, options["path"], log_format=options["format"])
        except OSError as exc:
            raise CommandError(f"Cannot read {options['path']}: {exc.strerror}") from exc
        summary = ", ".join(f"{key} {value}" for key, value in result.as_dict().items())
        self.stdout.write(f"{summary}, unreadable lines {unreadable}")
