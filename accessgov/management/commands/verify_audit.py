"""``manage.py verify_audit``: check the ledger's hash chain, then every activity seal in it; exit 1 and name
the first broken link or seal.

``--head`` prints the chain head as JSON, to keep outside the database (a later head must extend it).
"""

import json

from django.core.management.base import BaseCommand, CommandError

from accessgov import clock
from accessgov.activity.verify import verify_activity_seals
from accessgov.ledger.verify import verify_chain


class Command(BaseCommand):
    help = "Verify the tamper-evident access-event chain and the activity seals; print the head with --head."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--head", action="store_true", help="Print the chain head as JSON.")

    def handle(self, *args, **options) -> None:
        report = verify_chain()
        if options["head"]:
            self.stdout.write(json.dumps({**report.as_dict(), "at": clock.now().isoformat()}, indent=2))
        if not report.ok:
            raise CommandError(f"Audit chain BROKEN after {report.checked} good events: {report.problem}")
        if not options["head"]:
            self.stdout.write(
                f"Audit chain OK: {report.checked} events, head #{report.head_sequence} {report.head_hash}"
            )
        seals = verify_activity_seals()
        if not seals.ok:
            raise CommandError(f"Activity seals BROKEN after {seals.seals} good seals: {seals.problem}")
        if not options["head"]:
            self.stdout.write(f"Activity seals OK: {seals.seals} seals over {seals.rows} activity rows")
