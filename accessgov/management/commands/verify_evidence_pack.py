"""``manage.py verify_evidence_pack FILE``: every offline check of the auditor's verifier (signature, file
hashes, ledger chain, control tests, sample), with the portal's configured key unless ``--public-key``
names another; ``--against-database`` also compares the pack's ledger extract with this database's
ledger, naming any event edited, deleted or inserted since the pack was built. Exit 1 naming what broke."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from accessgov.evidence import signing, verify
from accessgov.evidence.ledger import compare_with_database


class Command(BaseCommand):
    help = "Verify an evidence pack: signature, every file's SHA-256, the ledger chain, control tests, sample."

    def add_arguments(self, parser) -> None:
        parser.add_argument("pack", help="the evidence pack (.zip)")
        parser.add_argument("--public-key", help="a PEM public key (default: this portal's signing key)")
        parser.add_argument("--previous", help="the previous period's pack: check the ledger continues from it")
        parser.add_argument(
            "--against-database", action="store_true", help="also compare the ledger extract with this database"
        )

    def handle(self, *args, **options) -> None:
        if options["public_key"]:
            try:
                public_pem = Path(options["public_key"]).read_bytes()
            except OSError as exc:
                raise CommandError(f"Cannot read {options['public_key']}: {exc.strerror}") from exc
        else:
            info = signing.public_key_info()
            if info is None:
                raise CommandError("No signing key is configured here: give the public key with --public-key.")
            public_pem = info["pem"].encode()
        try:
            report, manifest = verify.verify_pack(
                options["pack"], public_key_pem=public_pem, previous=options["previous"]
            )
        except verify.Unreadable as exc:
            raise CommandError(str(exc)) from exc
        if options["against_database"]:
            for problem in compare_with_database(options["pack"], manifest.get("ledger", {})):
                report.fail(problem)
            if report.ok:
                report.good("database: the ledger still holds the pack's events unchanged, and its head extends them")
        period = manifest.get("period", {})
        self.stdout.write(
            f"Evidence pack #{manifest.get('pack_id')} for {period.get('since')} to {period.get('until')}"
        )
        lines = report.lines()
        if not report.ok:
            self.stdout.write("\n".join(lines[:-1]))
            raise CommandError(lines[-1] + " " + "; ".join(report.problems[:3]))
        self.stdout.write("\n".join(lines))
