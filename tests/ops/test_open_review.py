"""``manage.py open_review``: operators open a review campaign from the command line with the page's rules;
bad input is one error line, never a traceback or a half-opened campaign."""

from datetime import UTC, datetime
from io import StringIO

import pytest
import time_machine
from django.core.management import CommandError, call_command

from accessgov.models import AccessEvent, ReviewCampaign

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def _run(*args: str) -> str:
    out = StringIO()
    with time_machine.travel(T0, tick=False):
        call_command("open_review", *args, stdout=out)
    return out.getvalue()


def test_opens_a_campaign_over_the_named_systems_due_at_the_end_of_the_day(world):
    printed = _run("--name", "Payments recertification", "--system", "payments-db", "--due", "2026-11-30")
    campaign = ReviewCampaign.objects.get()
    assert printed.startswith(f"Opened review #{campaign.pk} 'Payments recertification': 2 items, due 2026-11-30 23:59")
    assert list(campaign.systems.values_list("slug", flat=True)) == ["payments-db"]
    assert campaign.items.count() == 2 and all(i.reviewer == world.owner for i in campaign.items.all())
    event = AccessEvent.objects.get(event_type="review.opened")
    assert event.actor is None and event.actor_label == "system:manage.py open_review"


def test_quarterly_opens_this_quarters_campaign_once(world):
    assert "Opened review" in _run("--quarterly")
    assert "exists already" in _run("--quarterly")
    assert ReviewCampaign.objects.get().period == "2026-Q4"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--system", "nope"), "No system with the slug nope"),
        (("--due", "31/01/2027"), "--due must be a date"),
        (("--due", "2026-10-01"), "The due date must be in the future"),
        (("--due-days", "0"), "from 1 to 3660"),
        (("--due-days", "x" * 500), "Expected a whole number of days"),
        (("--keep-days", "-3"), "from 1 to 3660"),
        (("--quarterly", "--name", "Q"), "--quarterly opens the quarter's campaign as beat does"),
        (("--quarterly", "--due-days", "30"), "drop the other options"),
        (("--quarterly", "--no-response", "keep_and_flag"), "drop the other options"),
        (("--name", "x" * 201), "at most 200 characters"),
        (("--name", "Q\x00"), "without NUL"),
    ],
)
def test_bad_input_is_one_line_and_opens_nothing(world, args, message):
    with pytest.raises(CommandError, match=message):
        _run(*args)
    assert not ReviewCampaign.objects.exists()


def test_no_system_at_all_is_said(db):
    with pytest.raises(CommandError, match="Choose at least one system"):
        _run()
