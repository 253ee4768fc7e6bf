"""Queued notifications (services.notification_outbox): a notification commits with the change it tells of, and
a sweep publishes again the ones whose task never ran — once, after a grace, leased, given up after two days.
The broker outage itself, with a real Redis and worker: tests/ops/test_fault_injection.py."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from accessgov.models import QueuedNotification
from accessgov.services.notification_outbox import GIVE_UP, notification_outbox_drain
from tests.support.requests import submit

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 11, 24, 10, 0, 15, tzinfo=UTC)


def test_a_notification_whose_task_never_ran_is_sent_by_a_sweep_after_the_grace_once(world, mailoutbox):
    with time_machine.travel(T0, tick=False):
        access_request = submit(world)  # this test never runs the commit's callbacks: the task is "lost"
        queued = QueuedNotification.objects.get()
        assert (queued.kind, queued.object_ids, queued.done_at) == ("request_submitted", [access_request.pk], None)
        assert notification_outbox_drain() == 0  # its task may still be on its way
    with time_machine.travel(T0 + timedelta(seconds=30), tick=False):
        assert notification_outbox_drain() == 0
    with time_machine.travel(T0 + timedelta(minutes=2), tick=False):
        assert notification_outbox_drain() == 1
        assert notification_outbox_drain() == 0  # done (and leased anyway)
    sent = sorted(m.to[0] for m in mailoutbox)
    assert sent == sorted([world.approver.email, world.approver2.email])
    assert QueuedNotification.objects.get().done_at is not None
    with time_machine.travel(T0 + timedelta(hours=1), tick=False):
        assert notification_outbox_drain() == 0
    assert len(mailoutbox) == 2


def test_a_task_that_is_retrying_holds_its_notification_and_one_that_never_comes_back_is_given_up(world, mailoutbox):
    from accessgov.services.notification_outbox import RUNNING, notification_running

    with time_machine.travel(T0, tick=False):
        submit(world)
        queued = QueuedNotification.objects.get()
        notification_running(queued.notification_id)  # a task that runs, fails a channel, and will retry
    with time_machine.travel(T0 + RUNNING - timedelta(seconds=1), tick=False):
        assert notification_outbox_drain() == 0 and not mailoutbox
    with time_machine.travel(T0 + RUNNING + timedelta(seconds=1), tick=False):
        assert notification_outbox_drain() == 1 and len(mailoutbox) == 2  # its retry never came back
    # Never sent within GIVE_UP (the broker away for days): closed with a warning, then forgotten.
    with time_machine.travel(T0 + timedelta(days=1), tick=False):
        submit(world, role=world.role_two)
    stale = QueuedNotification.objects.get(done_at__isnull=True)
    with time_machine.travel(T0 + timedelta(days=1) + GIVE_UP + timedelta(minutes=1), tick=False):
        mailoutbox.clear()
        assert notification_outbox_drain() == 0 and not mailoutbox
        assert QueuedNotification.objects.get(pk=stale.pk).done_at is not None
    with time_machine.travel(T0 + timedelta(days=1) + 2 * GIVE_UP + timedelta(minutes=2), tick=False):
        notification_outbox_drain()
        assert not QueuedNotification.objects.exists()


def test_a_fan_out_queues_each_of_its_notifications_so_a_lost_one_is_sent_by_a_sweep(world, mailoutbox):
    from accessgov import tasks
    from accessgov.services.notification_outbox import notify_each

    with time_machine.travel(T0, tick=False):
        first, second = submit(world), submit(world, role=world.role_two)
        QueuedNotification.objects.all().delete()  # the submissions' own (never run here): not this test's
        tasks.notify_many.apply(args=("request_submitted", [first.pk], "fan-1"))  # runs its notify at once (eager)
        rows = {q.notification_id: q.done_at is not None for q in QueuedNotification.objects.all()}
        assert rows == {"fan-1:" + str(first.pk): True}  # the per-object row, closed by its notify
        sent = len(mailoutbox)
        assert sent == 2  # the role's two approvers
        # A fan-out whose per-object task the broker lost: its row stays open, and a sweep sends it.
        notify_each("request_submitted", [second.pk], "fan-2")
        notify_each("request_submitted", [second.pk], "fan-2")  # a retried fan-out writes nothing twice
        assert QueuedNotification.objects.filter(notification_id=f"fan-2:{second.pk}").count() == 1
    with time_machine.travel(T0 + timedelta(minutes=2), tick=False):
        assert notification_outbox_drain() == 1
    assert len(mailoutbox) > sent
    assert QueuedNotification.objects.get(notification_id=f"fan-2:{second.pk}").done_at is not None
