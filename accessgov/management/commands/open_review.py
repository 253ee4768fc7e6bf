"""``manage.py open_review``: open an access review campaign from the command line (PRODUCT.md's operator
commands), with the same rules as the review page and the quarterly beat (``services/reviews``).

    manage.py open_review --name "Payments Q1 recertification" --system payments-db --due 2027-01-31
    manage.py open_review --quarterly      # this quarter's campaign over every system, as beat opens it (once)

The campaign is opened by the job ``manage.py open_review`` (no person: whoever runs the command has the
server's rights, not an auditor's account), which the ledger's ``review.opened`` event names.
"""

from datetime import UTC, date, datetime, time, timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from accessgov import clock
from accessgov.exceptions import AccessGovError
from accessgov.models import ReviewCampaign, System
from accessgov.services import reviews

JOB = "manage.py open_review"


def _days(value: str) -> int:
    try:
        days = int(value)
    except ValueError:
        raise CommandError(f"Expected a whole number of days, not {value[:40]!r}.") from None
    if not 1 <= days <= 3660:
        raise CommandError("A number of days from 1 to 3660.")
    return days


class Command(BaseCommand):
    help = "Open an access review campaign (all systems unless --system is given), or this quarter's with --quarterly."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--name", help="The campaign's name (default: 'Access review YYYY-MM-DD').")
        parser.add_argument(
            "--system", action="append", default=[], metavar="SLUG", help="A system to review (repeat it); default all."
        )
        due = parser.add_mutually_exclusive_group()
        due.add_argument("--due", help="Due date, YYYY-MM-DD (end of that day, UTC).")
        due.add_argument("--due-days", help=f"Due this many days from now (default {settings.REVIEW_DUE_DAYS}).")
        parser.add_argument(
            "--no-response",
            choices=ReviewCampaign.NoResponse.values,
            default=ReviewCampaign.NoResponse.REVOKE,
            help="What happens to items nobody answers by the due date (default: revoke).",
        )
        parser.add_argument("--keep-days", help="How long kept eligibility runs on (default: REVIEW_KEEP_DAYS).")
        parser.add_argument("--long-grant-days", help="Also review grants active longer than this (default 7).")
        parser.add_argument(
            "--quarterly",
            action="store_true",
            help="Open this quarter's campaign over every system, as the quarterly beat does (nothing if it exists).",
        )

    def handle(self, *args, **options) -> None:
        now = clock.now()
        if options["quarterly"]:
            chosen = ("name", "system", "due", "due_days", "keep_days", "long_grant_days")
            if any(options[name] for name in chosen) or options["no_response"] != ReviewCampaign.NoResponse.REVOKE:
                raise CommandError(
                    "--quarterly opens the quarter's campaign as beat does (its name, systems, due date and rules): "
                    "drop the other options."
                )
            campaign = reviews.review_campaign_quarterly(now)
            if campaign is None:
                self.stdout.write("This quarter's review exists already (or there is no system to review).")
                return
        else:
            campaign = self._open(now, options)
        self.stdout.write(
            f"Opened review #{campaign.pk} '{campaign.name}': {campaign.items.count()} items, "
            f"due {campaign.due_at:%Y-%m-%d %H:%M} UTC."
        )

    def _open(self, now: datetime, options: dict) -> ReviewCampaign:
        slugs = options["system"]
        systems = list(System.objects.filter(slug__in=slugs)) if slugs else list(System.objects.all())
        unknown = sorted(set(slugs) - {s.slug for s in systems})
        if unknown:
            raise CommandError(f"No system with the slug {', '.join(unknown)[:200]}.")
        if options["due"]:
            try:
                day = date.fromisoformat(options["due"]) if len(options["due"]) == 10 else None
            except ValueError:
                day = None
            if day is None:
                raise CommandError("--due must be a date like 2027-01-31.")
            due_at = datetime.combine(day, time(23, 59, 59), tzinfo=UTC)
        else:
            due_at = now + timedelta(days=_days(options["due_days"] or str(settings.REVIEW_DUE_DAYS)))
        keep_for = timedelta(days=_days(options["keep_days"])) if options["keep_days"] else None
        try:
            return reviews.review_campaign_create(
                None,
                name=options["name"] or f"Access review {now:%Y-%m-%d}",
                systems=systems,
                due_at=due_at,
                no_response=options["no_response"],
                keep_for=keep_for,
                long_grant_threshold=timedelta(days=_days(options["long_grant_days"] or "7")),
                job=JOB,
            )
        except AccessGovError as error:
            raise CommandError(str(error)) from error
