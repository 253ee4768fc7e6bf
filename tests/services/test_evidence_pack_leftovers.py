"""Two things an auditor reading the evidence pack could not see:

- what an access review's close did to each eligibility's end: ``review_items.csv`` has the end before and
  after the close moved it, as its review.applied event recorded them (empty: not moved; "before" empty and
  "after" set: it had no end);
- a break-glass use signed off while it was still in use (refused since, but older data has them):
  ``break_glass.csv``'s ``acknowledged_after_use`` is false for it, and the exceptions register lists it as
  "acknowledged while in use", in the controls that check break-glass sign-offs.
"""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import transaction
from django.utils import timezone

from accessgov.evidence import controls, populations
from accessgov.exports import safe_cell
from accessgov.models import BreakGlassFollowUp, Eligibility, Grant, Role
from accessgov.services import grants as gs
from accessgov.services import reviews

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 9, 1, 9, 0, tzinfo=UTC)
KEEP_FOR = timedelta(days=100)
CLOSE = T0 + timedelta(days=15)
BUILT = T0 + timedelta(days=20)
H, MIN = timedelta(hours=1), timedelta(minutes=1)


def context(as_of: datetime = BUILT) -> populations.Context:
    return populations.Context(
        start=T0 - timedelta(days=1),
        end=T0 + timedelta(days=30),
        as_of=as_of,
        system_ids=None,
        removal_target=timedelta(minutes=5),
        step_up_window=timedelta(minutes=5),
    )


def rows_of(population: populations.Population, ctx: populations.Context, ids=None) -> dict[str, dict[str, str]]:
    """The population's rows as its CSV cells, by stable id."""
    header = population.header()
    return {
        safe_cell(row[0]): dict(zip(header, [safe_cell(v) for v in row], strict=True))
        for row in population.rows(ctx, ids)
    }


# --- review_items.csv: the ends a close moved ------------------------------------------------------


def eligible(make_user, w, name: str, ends_at: datetime | None) -> Eligibility:
    return Eligibility.objects.create(
        role=w.role, user=make_user(name), starts_at=datetime(2026, 1, 1, tzinfo=UTC), ends_at=ends_at
    )


@pytest.fixture
def closed_review(world, make_user):
    with time_machine.travel(T0, tick=False):
        eligibility = {
            "shorter": eligible(make_user, world, "bob", datetime(2026, 12, 12, tzinfo=UTC)),  # not moved
            "longer": eligible(make_user, world, "carol", datetime(2027, 9, 1, tzinfo=UTC)),  # capped
            "revoked": eligible(make_user, world, "dave", datetime(2026, 10, 30, tzinfo=UTC)),  # ended at close
            "standing": Eligibility.objects.get(role=world.role, user=world.requester),  # no end: given one
        }
        campaign = reviews.review_campaign_create(
            world.auditor, name="Q3 review", systems=[world.system], due_at=T0 + timedelta(days=14), keep_for=KEEP_FOR
        )
        items = {name: campaign.items.get(eligibility=e) for name, e in eligibility.items()}
        for name in ("shorter", "longer", "standing"):
            reviews.review_item_decide(world.owner, items[name].pk, decision="keep")
        reviews.review_item_decide(world.owner, items["revoked"].pk, decision="revoke", comment="Left the team")
    with time_machine.travel(CLOSE, tick=False):
        reviews.review_campaign_close(world.auditor, campaign.pk)
    return {name: str(item.pk) for name, item in items.items()}


EXPECTED_ENDS = {
    "shorter": ("", ""),
    "longer": ("2027-09-01T00:00:00Z", "2026-12-25T09:00:00Z"),  # close + 100 days
    "revoked": ("2026-10-30T00:00:00Z", "2026-09-16T09:00:00Z"),  # the close
    "standing": ("", "2026-12-25T09:00:00Z"),
}


def ends(rows: dict[str, dict[str, str]], items: dict[str, str]) -> dict[str, tuple[str, str]]:
    return {
        name: (rows[pk]["eligibility_ends_before"], rows[pk]["eligibility_ends_after"]) for name, pk in items.items()
    }


def test_review_items_show_the_eligibility_end_before_and_after_the_close(closed_review):
    rows = rows_of(populations.ReviewItems(), context())
    assert ends(rows, closed_review) == EXPECTED_ENDS
    # The sampled items (read by id) say the same.
    sampled = rows_of(populations.ReviewItems(), context(), list(closed_review.values()))
    assert ends(sampled, closed_review) == EXPECTED_ENDS


def test_review_items_of_an_open_campaign_have_empty_end_columns(world):
    with time_machine.travel(T0, tick=False):
        reviews.review_campaign_create(
            world.auditor, name="Q3 review", systems=[world.system], due_at=T0 + timedelta(days=14)
        )
    rows = rows_of(populations.ReviewItems(), context(T0 + H))
    assert rows and {(r["eligibility_ends_before"], r["eligibility_ends_after"]) for r in rows.values()} == {("", "")}


@pytest.mark.postgres
def test_review_item_ends_are_the_same_through_the_fast_path_and_the_orm(closed_review, monkeypatch):
    with transaction.atomic():  # the build's snapshot: where the fast path runs
        fast = rows_of(populations.ReviewItems(), context())
        monkeypatch.setattr(populations, "PG_FAST_ROWS", False)
        orm = rows_of(populations.ReviewItems(), context())
    assert fast == orm
    assert ends(fast, closed_review) == EXPECTED_ENDS


# --- break_glass.csv: a sign-off made while the use went on ---------------------------------------


def break_glass(world, when: datetime, *, release_after: timedelta | None = None) -> Grant:
    Role.objects.filter(pk=world.role_two.pk).update(step_up_required=True, break_glass_allowed=True)
    world.role_two.refresh_from_db()
    with time_machine.travel(when, tick=False):
        grant = gs.break_glass_activate(
            world.requester, role=world.role_two, justification="Prod is down, INC-9", duration=H,
            step_up_at=timezone.now(),
        )  # fmt: skip
    if release_after is not None:
        with time_machine.travel(when + release_after, tick=False):
            gs.grant_release(world.requester, grant.pk)
    return Grant.objects.get(pk=grant.pk)


def signed_off_before_the_fix(grant: Grant, by, when: datetime) -> None:
    """An acknowledgement as older data holds it: written before the service refused one while in use."""
    BreakGlassFollowUp.objects.filter(grant=grant).update(
        acknowledged_by=by, acknowledged_at=when, comment="Looked fine"
    )


def test_a_break_glass_use_signed_off_while_in_use_is_an_exception(world):
    day = timedelta(days=1)
    released = break_glass(world, T0, release_after=10 * MIN)  # ended 09:10
    signed_off_before_the_fix(released, world.approver, T0 + 5 * MIN)
    ran_out = break_glass(world, T0 + day)  # ran to its expiry (10:00), not swept
    signed_off_before_the_fix(ran_out, world.approver, T0 + day + 30 * MIN)
    proper = break_glass(world, T0 + 2 * day, release_after=10 * MIN)
    with time_machine.travel(T0 + 2 * day + 20 * MIN, tick=False):
        gs.break_glass_acknowledge(world.approver, proper.follow_up.pk, comment="Checked the session log")
    at_expiry = break_glass(world, T0 + 3 * day)  # signed off the moment it expired, not swept
    with time_machine.travel(T0 + 3 * day + H, tick=False):
        gs.break_glass_acknowledge(world.approver, at_expiry.follow_up.pk, comment="Checked it")
    unsigned = break_glass(world, T0 + 4 * day, release_after=10 * MIN)
    still_on = break_glass(world, T0 + 5 * day)  # still in use when the pack is built
    signed_off_before_the_fix(still_on, world.approver, T0 + 5 * day + MIN)

    population = populations.BreakGlass()
    rows = rows_of(population, context(T0 + 5 * day + 30 * MIN))
    verdicts = {
        name: rows[str(grant.pk)]["acknowledged_after_use"]
        for name, grant in {
            "released": released,
            "ran_out": ran_out,
            "proper": proper,
            "at_expiry": at_expiry,
            "unsigned": unsigned,
            "still_on": still_on,
        }.items()
    }
    assert verdicts == {
        "released": "false",
        "ran_out": "false",
        "proper": "true",
        "at_expiry": "true",
        "unsigned": "",  # nothing signed off yet: no verdict
        "still_on": "false",
    }
    in_use = [e for e in population.exceptions if e.test_id == "break_glass.acknowledged_after_use"]
    assert sorted(e.item_id for e in in_use) == sorted(str(g.pk) for g in (released, ran_out, still_on))
    by_item = {e.item_id: e for e in in_use}
    assert all(e.detail.startswith("Acknowledged while in use") for e in in_use)
    assert "2026-09-01 09:10:00" in by_item[str(released.pk)].detail  # when the access ended
    assert "still in use" in by_item[str(still_on.pk)].detail
    assert by_item[str(released.pk)].at == T0 + 5 * MIN and by_item[str(released.pk)].user == "requester"
    # The other sign-off tests are unchanged by it: someone else signed each off, in time.
    assert {rows[str(g.pk)]["acknowledged_by_other"] for g in (released, ran_out, still_on)} == {"true"}


def test_the_break_glass_controls_check_that_sign_offs_came_after_the_use():
    tests = {f"{c.framework} {c.id}": c.tests for c in controls.CONTROLS}
    assert "break_glass.acknowledged_after_use" in tests["SOC 2 CC7.2"]
    assert "break_glass.acknowledged_after_use" in tests["ISO 27001 A.8.2"]
    (column,) = [c for c in populations.BreakGlass.columns if c.name == "acknowledged_after_use"]
    assert column.test
