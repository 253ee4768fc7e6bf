"""``manage.py verify_audit``: check the ledger's hash chain, then every activity seal in it; exit 1 and name
the first broken link or seal.

``--head`` prints the chain head as JSON, to keep outside the database; ``--expect-head`` checks the ledger
against such a kept head (``SEQUENCE:HASH``, or the file ``--head`` printed): a chain re-hashed from an earlier
event on, or cut back past the kept head, verifies on its own and fails here.
"""

import json
import re
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from accessgov import clock
from accessgov.activity.verify import verify_activity_seals
from accessgov.ledger.verify import kept_head_problem, verify_chain

_HEAD = re.compile(r"(\d{1,18}):([0-9a-f]{64})")


def kept_head(value: str) -> tuple[int, str]:
    """``SEQUENCE:HASH``, or a file holding the JSON ``--head`` printed."""
    found = _HEAD.fullmatch(value.strip())
    if found:
        return int(found.group(1)), found.group(2)
    try:
        head = json.loads(Path(value).read_text())
        sequence, head_hash = head["head_sequence"], head["head_hash"]
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise CommandError(
            f"--expect-head {value!r}: neither SEQUENCE:HASH (64 hex digits) nor a readable file printed by --head ({exc})"
        ) from exc
    if (
        not isinstance(sequence, int)
        or not isinstance(head_hash, str)
        or not _HEAD.fullmatch(f"{sequence}:{head_hash}")
    ):
        raise CommandError(f"--expect-head {value!r}: the file's head_sequence / head_hash are not a head")
    return sequence, head_hash


class Command(BaseCommand):
    help = "Verify the tamper-evident access-event chain and the activity seals; print the head with --head."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--head", action="store_true", help="Print the chain head as JSON.")
        parser.add_argument(
            "--expect-head",
            metavar="SEQUENCE:HASH|FILE",
            help="A head kept earlier (or the file --head printed): the ledger must still hold it and extend it.",
        )

    def handle(self, *args, **options) -> None:
        expected = kept_head(options["expect_head"]) if options["expect_head"] is not None else None
        report = verify_chain()
        if options["head"]:
            self.stdout.write(json.dumps({**report.as_dict(), "at": clock.now().isoformat()}, indent=2))
        if not report.ok:
            raise CommandError(f"Audit chain BROKEN after {report.checked} good events: {report.problem}")
        if not options["head"]:
            self.stdout.write(
                f"Audit chain OK: {report.checked} events, head #{report.head_sequence} {report.head_hash}"
            )
        if expected is not None:
            problem = kept_head_problem(*expected)
            if problem:
                raise CommandError(f"Audit chain does NOT extend the kept head #{expected[0]}: {problem}")
            if not options["head"]:
                self.stdout.write(f"Kept head #{expected[0]} is in the chain unchanged: the chain extends it")
        seals = verify_activity_seals()
        if not seals.ok:
            raise CommandError(f"Activity seals BROKEN after {seals.seals} good seals: {seals.problem}")
        if not options["head"]:
            self.stdout.write(f"Activity seals OK: {seals.seals} seals over {seals.rows} activity rows")
