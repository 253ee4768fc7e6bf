"""Retention: purge refuses the window, records what it purged, and the rest of the chain still verifies."""

import io
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.management import CommandError, call_command

from accessgov.ledger.verify import verify_chain
from accessgov.models import AccessEvent, LedgerCheckpoint
from accessgov.services import access_requests as ar

pytestmark = pytest.mark.django_db
OLD = datetime(2016, 3, 1, 12, 0, tzinfo=UTC)


def activity(w):
    access_request = ar.access_request_submit(
        w.requester, role=w.role, duration=timedelta(hours=1), justification="Investigating incident INC-42 on payments"
    )
    ar.access_request_cancel(w.requester, access_request.pk)


def test_purge_refuses_anything_inside_the_retention_window(world):
    activity(world)
    with pytest.raises(CommandError, match="inside the retention period"):
        call_command("purge_audit", "--before", "2025-01-01", stdout=io.StringIO())
    with pytest.raises(CommandError, match="must be a date"):
        call_command("purge_audit", "--before", "yesterday", stdout=io.StringIO())
    assert AccessEvent.objects.count() == 2


@pytest.mark.django_db(transaction=True)  # the purge runs in its own transaction, as from cron
def test_purge_removes_old_events_records_it_and_the_chain_still_verifies(world, settings):
    from accessgov.models import Eligibility

    Eligibility.objects.update(starts_at=datetime(2010, 1, 1, tzinfo=UTC))
    with time_machine.travel(OLD, tick=False):
        activity(world)
    activity(world)
    out = io.StringIO()
    call_command("purge_audit", "--before", "2017-01-01", "--dry-run", stdout=out)
    assert "Would purge 2 events" in out.getvalue() and AccessEvent.objects.count() == 4
    call_command("purge_audit", "--before", "2017-01-01", stdout=io.StringIO())
    assert AccessEvent.objects.filter(occurred_at__lt=datetime(2017, 1, 1, tzinfo=UTC)).count() == 0
    checkpoint = LedgerCheckpoint.objects.get()
    assert (checkpoint.sequence, checkpoint.purged_count) == (2, 2)
    purged = AccessEvent.objects.get(event_type="audit.purged")
    assert purged.data["purged"] == 2 and purged.actor_label == "system:purge_audit"
    report = verify_chain()
    assert report.ok, report.problem
    assert report.checked == 3  # two recent events and the purge record
    settings.AUDIT_RETENTION_DAYS = 4000  # lengthened after the purge: that purge still counts
    assert verify_chain().ok


def _recent_prefix_deleted(world):
    """Deletes the first two events the way the purge does (trigger lifted, checkpoint written), as someone
    with the database owner's rights could by hand: no retention purge made it."""
    from accessgov.ledger import purge

    activity(world)
    activity(world)
    second = AccessEvent.objects.get(sequence=2)
    plan = purge.PurgePlan(
        before=second.occurred_at + timedelta(seconds=1), up_to_sequence=2, up_to_hash=second.hash, count=2
    )
    purge.purge_prefix(plan)
    return plan


def test_a_checkpoint_written_by_hand_does_not_hide_deleted_events(world):
    _recent_prefix_deleted(world)
    report = verify_chain()
    assert not report.ok
    assert "no audit.purged event recording it" in report.problem and "#2" in report.problem
    with pytest.raises(CommandError, match=r"BROKEN.*deleted outside a retention purge"):
        call_command("verify_audit", stdout=io.StringIO())


def test_a_purge_record_that_claims_no_retention_or_removed_newer_events_is_named(world):
    from accessgov.services.events import event_record

    plan = _recent_prefix_deleted(world)
    forged = {"purged": 2, "up_to_sequence": 2, "up_to_hash": plan.up_to_hash}
    event_record(
        AccessEvent.Type.AUDIT_PURGED, job="purge_audit", reason="forged", data={**forged, "retention_days": 0}
    )
    report = verify_chain()
    assert not report.ok and "retention of 0 days: no purge runs under 365 days" in report.problem


def test_a_purge_record_whose_events_were_newer_than_its_retention_is_named(world):
    from accessgov.services.events import event_record

    plan = _recent_prefix_deleted(world)  # events of a moment ago, "purged" under a retention of a year
    forged = {"purged": 2, "up_to_sequence": 2, "up_to_hash": plan.up_to_hash, "retention_days": 365}
    event_record(AccessEvent.Type.AUDIT_PURGED, job="purge_audit", reason="forged", data=forged)
    report = verify_chain()
    assert not report.ok and "inside the retention period of event #5" in report.problem


@pytest.mark.django_db(transaction=True)
def test_a_purge_of_every_event_goes_on_from_its_checkpoint(world, settings):
    """The review's finding: with no event left inside the retention window, the purge's own record started a
    new chain at #1 from the genesis hash, and the chain no longer verified."""
    from accessgov.models import Eligibility

    Eligibility.objects.update(starts_at=datetime(2010, 1, 1, tzinfo=UTC))
    with time_machine.travel(OLD, tick=False):
        activity(world)
    call_command("purge_audit", "--before", "2017-01-01", stdout=io.StringIO())
    purged = AccessEvent.objects.get()
    assert (purged.event_type, purged.sequence) == ("audit.purged", 3)
    assert verify_chain().ok
    settings.AUDIT_RETENTION_DAYS = 364
    with pytest.raises(CommandError, match="a purge keeps at least 365 days"):
        call_command("purge_audit", "--before", "2017-01-01", stdout=io.StringIO())
