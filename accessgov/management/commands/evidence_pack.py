"""``manage.py evidence_pack --since YYYY-MM-DD --until YYYY-MM-DD [--system SLUG …] --as USERNAME``: an
auditor's evidence pack from the command line, built in this process (no worker needed); prints the file, its SHA-256 and the key fingerprint. ``--seed`` fixes the sample's seed."""

from datetime import date

from django.core.management.base import BaseCommand, CommandError

from accessgov.evidence import builder
from accessgov.exceptions import NotAuthorized, PolicyViolation
from accessgov.models import EvidencePack, System, User
from accessgov.services import evidence as evidence_services


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise CommandError(f"{value!r} is not a date (YYYY-MM-DD).") from exc


class Command(BaseCommand):
    help = "Build a signed evidence pack for a period (and optionally some systems) as an auditor."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--since", required=True, help="first day of the period (UTC), YYYY-MM-DD")
        parser.add_argument("--until", required=True, help="last day of the period (UTC, inclusive)")
        parser.add_argument("--system", action="append", default=[], help="a system's slug (repeat; default: all)")
        parser.add_argument("--as", dest="username", required=True, help="the auditor the pack is built for")
        parser.add_argument("--seed", help="the sample's seed (default: random, printed in the pack)")

    def handle(self, *args, **options) -> None:
        actor = User.objects.filter(username=options["username"]).first()
        if actor is None:
            raise CommandError(f"No user {options['username']!r}.")
        systems = []
        for slug in options["system"]:
            system = System.objects.filter(slug=slug).first()
            if system is None:
                raise CommandError(f"No system {slug!r}.")
            systems.append(system)
        try:
            # The build runs here, in this process: no task is queued for a worker.
            pack = evidence_services.evidence_pack_request(
                actor, since=_day(options["since"]), until=_day(options["until"]), systems=systems, queue=False
            )
        except (NotAuthorized, PolicyViolation) as exc:
            raise CommandError(str(exc)) from exc
        pack = evidence_services.evidence_pack_build(pack.pk, seed=options["seed"])
        if pack is None or pack.status != EvidencePack.Status.READY:
            raise CommandError(f"The pack could not be built: {pack.error if pack else 'already taken'}")
        path = builder.evidence_dir() / pack.file_name
        self.stdout.write(f"{path}\nsha256 {pack.file_sha256}\nsigned by {pack.key_fingerprint}")
        problem = pack.summary.get("ledger", {}).get("problem")
        if problem:
            self.stderr.write(f"WARNING: the ledger extract does not verify: {problem}")
