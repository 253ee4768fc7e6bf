"""Each channel of a notification is delivered and retried on its own, and a delivery that succeeded is
never sent again (issue 14, item 10): a failing Slack post retried the whole notify task, and every
email went out again with each retry.

Most tests run the notify task in this process the way a worker runs it: a failure is not raised to
the caller, and each retry is the same task (same id) run again — here at once, where a worker waits
out the backoff. One test runs a real worker on Redis. The Slack receiver is a real HTTP server on 127.0.0.1 (the outbound
guard is opened for it), the mail backend Django's in-memory one — with a variant whose SMTP server
refuses a recipient once."""

import json
import smtplib
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from django.core.mail.backends.locmem import EmailBackend
from django.test import override_settings

from accessgov import notifications, tasks
from accessgov.models import Grant, NotificationDelivery, System
from accessgov.services import access_requests as ar
from tests.support.requests import submit

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("allow_local_receivers", "retries_as_in_a_worker")]


@pytest.fixture
def allow_local_receivers():
    with override_settings(WEBHOOK_ALLOW_PRIVATE_TARGETS=True):
        yield


@pytest.fixture
def retries_as_in_a_worker():
    """The suite makes eager tasks raise their errors; a worker instead runs the task's retries."""
    conf = tasks.notify.app.conf
    before = conf.get("task_eager_propagates")
    conf.update(CELERY_TASK_EAGER_PROPAGATES=False)
    yield
    conf.update(CELERY_TASK_EAGER_PROPAGATES=before)


class Slack:
    """A Slack-compatible webhook answering the given statuses in turn (then the last one forever)."""

    def __init__(self, *statuses: int, delay: float = 0.0):
        slack = self
        self.statuses, self.delay, self.posts = list(statuses), delay, []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                time.sleep(slack.delay)
                status = slack.statuses.pop(0) if len(slack.statuses) > 1 else slack.statuses[0]
                slack.posts.append((status, body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/T0/B0/x"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def slack(world):
    receivers = []

    def make(*statuses, delay=0.0):
        receiver = Slack(*statuses, delay=delay)
        receivers.append(receiver)
        System.objects.filter(pk=world.system.pk).update(slack_webhook_url=receiver.url)
        return receiver

    yield make
    for receiver in receivers:
        receiver.close()


class RefusesOnce(EmailBackend):
    """The in-memory backend behind an SMTP server that refuses each address in REFUSE once."""

    REFUSE: set[str] = set()

    def send_messages(self, messages):
        for message in messages:
            refused = set(message.to) & RefusesOnce.REFUSE
            if refused:
                RefusesOnce.REFUSE -= refused
                raise smtplib.SMTPRecipientsRefused(dict.fromkeys(refused, (450, b"try again later")))
        return super().send_messages(messages)


def recipients(mailoutbox) -> Counter:
    return Counter(address for message in mailoutbox for address in message.to)


def notify(kind: str, object_id: int, task_id: str | None = None):
    """Run the notify task as a worker would, its retries included (at once, not after the backoff)."""
    return tasks.notify.apply(args=(kind, object_id), task_id=task_id)


def test_a_failing_slack_post_is_retried_alone_and_each_email_goes_out_once(world, slack, mailoutbox):
    receiver = slack(500, 503, 200)
    notify("request_submitted", submit(world).pk)
    assert recipients(mailoutbox) == Counter({world.approver.email: 1, world.approver2.email: 1})
    assert [status for status, _ in receiver.posts] == [500, 503, 200]
    deliveries = NotificationDelivery.objects.filter(kind="request_submitted")
    assert sorted(deliveries.values_list("channel", "status", "attempts")) == [
        ("email", "sent", 1),
        ("email", "sent", 1),
        ("slack", "sent", 3),
    ]


@override_settings(EMAIL_BACKEND="tests.services.test_notification_delivery.RefusesOnce")
def test_an_email_the_mail_server_refuses_is_retried_alone_and_nobody_gets_a_second_copy(world, slack, mailoutbox):
    receiver = slack(200)
    RefusesOnce.REFUSE = {world.approver.email}
    notify("request_submitted", submit(world).pk)
    assert recipients(mailoutbox) == Counter({world.approver.email: 1, world.approver2.email: 1})
    assert len(receiver.posts) == 1
    refused = NotificationDelivery.objects.get(recipient=world.approver)
    assert (refused.status, refused.attempts) == ("sent", 2)


def test_a_redelivered_notify_message_sends_nothing_twice(world, slack, mailoutbox):
    """The broker hands the same message out again (a worker lost after sending, acks late): same
    task id, nothing new goes out."""
    receiver = slack(200)
    access_request = submit(world)
    for _ in range(2):
        notify("request_submitted", access_request.pk, task_id="a-redelivered-message")
    assert recipients(mailoutbox) == Counter({world.approver.email: 1, world.approver2.email: 1})
    assert len(receiver.posts) == 1


def test_notify_many_published_again_after_a_broker_error_sends_nothing_twice(world, mailoutbox):
    access_request = submit(world)
    ar.access_request_approve(world.approver, access_request.pk)
    grant = Grant.objects.get()
    mailoutbox.clear()
    for _ in range(2):  # notify_many's retry publishes its notify tasks again
        tasks.notify_many.apply(args=("grant_expiring", [grant.pk]), task_id="one-fan-out")
    assert recipients(mailoutbox) == Counter({world.requester.email: 1})


def test_a_channel_that_keeps_failing_is_given_up_after_the_last_retry_without_touching_the_others(
    world, slack, mailoutbox
):
    receiver = slack(500)
    notify("request_submitted", submit(world).pk)
    attempts = tasks.notify.max_retries + 1
    assert len(receiver.posts) == attempts
    failed = NotificationDelivery.objects.get(channel="slack")
    assert (failed.status, failed.attempts) == ("failed", attempts)
    assert "answered 500" in failed.last_error
    assert recipients(mailoutbox) == Counter({world.approver.email: 1, world.approver2.email: 1})


def test_a_later_notification_about_the_same_object_is_sent_again(world, slack, mailoutbox):
    """De-duplication is per notification (the task's id), not per object: a reminder is a new one."""
    receiver = slack(200)
    access_request = submit(world)
    notify("request_reminder", access_request.pk, task_id="first-reminder")
    notify("request_reminder", access_request.pk, task_id="second-reminder")
    assert recipients(mailoutbox) == Counter({world.approver.email: 2, world.approver2.email: 2})
    assert receiver.posts == []  # reminders are email only


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_runs_of_one_notification_at_once_send_each_delivery_once(world, slack, mailoutbox):
    """A redelivery while the first run is still sending (PostgreSQL, one connection per run): the
    lease lets one run send each delivery; the other leaves it (and its task would retry later)."""
    from tests.support.concurrency import race

    receiver = slack(200, delay=0.3)
    access_request = submit(world)  # its own notification runs at the commit (eager): not this test's
    mailoutbox.clear()
    receiver.posts.clear()
    outcomes = race(
        {
            name: (
                lambda: notifications.dispatch("request_submitted", access_request.pk, notification_id="same-message")
            )
            for name in ("first", "second")
        }
    )
    assert all(o.ok for o in outcomes.values()), outcomes
    assert sum(o.value.sent for o in outcomes.values()) == 3
    assert recipients(mailoutbox) == Counter({world.approver.email: 1, world.approver2.email: 1})
    assert len(receiver.posts) == 1
    assert set(
        NotificationDelivery.objects.filter(notification_id="same-message").values_list("status", flat=True)
    ) == {"sent"}


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_retries_only_the_failing_slack_post(world, slack, tmp_path):
    """A Celery worker process on Redis, its emails written to its console: the Slack post fails twice
    and is retried after the backoff; each approver still gets exactly one email."""
    import os

    from celery import Celery

    from tests.support.databases import database_url_of_this_test
    from tests.support.workers import start_worker, stop_worker

    access_request = submit(world)  # (its own notification ran in this process, before Slack was set)
    receiver = slack(500, 500, 200)
    url = os.environ["REDIS_URL"]
    env = {
        "VAR_DIR": str(tmp_path),
        "DATABASE_URL": database_url_of_this_test(),
        "CELERY_BROKER_URL": url,
        "CELERY_RESULT_BACKEND": url,
        "EMAIL_BACKEND": "django.core.mail.backends.console.EmailBackend",
        "WEBHOOK_ALLOW_PRIVATE_TARGETS": "1",
    }
    worker = start_worker(env)
    client = Celery("probe", broker=url, backend=url, set_as_current=False)
    try:
        result = client.send_task("accessgov.tasks.notify", args=("request_submitted", access_request.pk))
        notification = NotificationDelivery.objects.filter(notification_id=result.id)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (
            notification.count() != 3 or notification.exclude(status="sent").exists()
        ):
            time.sleep(0.2)
        time.sleep(1)  # anything more the worker would send, it sends now
    finally:
        stop_worker(worker)
        client.close()
    output = worker.stdout.read()
    assert [status for status, _ in receiver.posts] == [500, 500, 200], output[-3000:]
    sent_to = Counter(line.removeprefix("To: ") for line in output.splitlines() if line.startswith("To: "))
    assert sent_to == Counter({world.approver.email: 1, world.approver2.email: 1}), output[-3000:]
    assert sorted(notification.values_list("channel", "status", "attempts")) == [
        ("email", "sent", 1),
        ("email", "sent", 1),
        ("slack", "sent", 3),
    ]
