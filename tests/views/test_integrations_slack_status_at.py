"""Slack reads a request's status at the instant (``AccessRequest.status_at``), as every page does: a pending
request past its deadline is lapsed — its message says so, without buttons, whenever it is brought up to date
(a sync, the integrations sweep, a click), before the lapse sweep records it; no message is first posted for it; a
click on it is answered "already lapsed". Against the local Slack Web API of tests/views/test_integrations_slack.py."""

import json
from datetime import timedelta

import pytest

from accessgov.integrations import slack as slack_module
from accessgov.models import AccessRequest, Decision, SlackMessage
from accessgov.services import access_requests as request_services
from accessgov.services import integrations as integration_services
from tests.support.requests import submit
from tests.views import test_integrations_slack as slack_tests
from tests.views.test_integrations_slack import _click, _link, _post, _slack_calls, post_request

pytestmark = pytest.mark.django_db
MIN = timedelta(minutes=1)
workspace = slack_tests.workspace  # the same workspace fixture, against the same local Slack API


def shows_lapsed(call: dict) -> bool:
    blocks = json.dumps(call["blocks"])
    return "Lapsed: nobody decided in time" in blocks and not [b for b in call["blocks"] if b["type"] == "actions"]


def test_a_sync_after_the_deadline_shows_lapsed_before_the_sweep_and_the_sweep_changes_nothing_more(
    world, workspace, fake, at_t0, django_capture_on_commit_callbacks
):
    access_request = post_request(world, world.role, django_capture_on_commit_callbacks)
    assert SlackMessage.objects.get(access_request=access_request).shown_state == "pending:0"
    at_t0.move_to(access_request.lapses_at + MIN)
    assert integration_services.slack_request_sync(access_request.pk) == "updated"
    [update] = _slack_calls(fake, "chat.update")
    assert shows_lapsed(update) and update["text"].startswith("Lapsed: nobody decided in time: requester's request")
    assert SlackMessage.objects.get(access_request=access_request).shown_state == "lapsed"
    access_request.refresh_from_db()
    assert access_request.status == AccessRequest.Status.PENDING  # reading changed nothing
    # The sweep records the lapse; its notification syncs the message, which already says so.
    with django_capture_on_commit_callbacks(execute=True):
        assert request_services.access_request_lapse_due(access_request.lapses_at + 2 * MIN) == 1
    assert len(_slack_calls(fake, "chat.update")) == 1
    assert integration_services.slack_request_sync(access_request.pk) == "nothing"


def test_the_integrations_sweep_brings_an_unswept_lapse_up_to_date(
    world, workspace, fake, at_t0, django_capture_on_commit_callbacks
):
    access_request = post_request(world, world.role, django_capture_on_commit_callbacks)
    at_t0.move_to(access_request.lapses_at - MIN)
    integration_services.integrations_sweep(access_request.lapses_at - MIN)
    assert _slack_calls(fake, "chat.update") == []  # still pending: nothing to bring up to date
    at_t0.move_to(access_request.lapses_at + MIN)
    integration_services.integrations_sweep(access_request.lapses_at + MIN)
    [update] = _slack_calls(fake, "chat.update")
    assert shows_lapsed(update)


def test_no_message_is_first_posted_for_a_request_past_its_deadline(world, workspace, fake, at_t0):
    access_request = submit(world)  # its notification never ran (Slack was down, say)
    at_t0.move_to(access_request.lapses_at)
    assert integration_services.slack_request_sync(access_request.pk) == "nothing"
    assert _slack_calls(fake, "chat.postMessage") == []
    assert not SlackMessage.objects.exists()


@pytest.mark.parametrize("action", [slack_module.APPROVE, slack_module.DENY])
def test_a_click_on_a_request_past_its_deadline_is_answered_already_lapsed_and_updates_the_message(
    world, workspace, fake, at_t0, django_capture_on_commit_callbacks, action
):
    _link(world.approver, "U0APPROVER", at_t0)
    access_request = post_request(world, world.role, django_capture_on_commit_callbacks)
    at_t0.move_to(access_request.lapses_at + MIN)
    with django_capture_on_commit_callbacks(execute=True):
        response, _, _ = _post(_click("U0APPROVER", access_request.pk, action))
    assert response.status_code == 200
    [told] = _slack_calls(fake, "chat.postEphemeral")
    assert told["text"] == "This request is already lapsed."
    assert _slack_calls(fake, "views.open") == []  # no decision modal for what cannot be decided
    [update] = _slack_calls(fake, "chat.update")
    assert shows_lapsed(update)
    assert not Decision.objects.filter(access_request=access_request).exists()
    access_request.refresh_from_db()
    assert access_request.status == AccessRequest.Status.PENDING


def test_a_click_just_before_the_deadline_still_decides(
    world, workspace, fake, at_t0, django_capture_on_commit_callbacks
):
    _link(world.approver, "U0APPROVER", at_t0)
    access_request = post_request(world, world.role, django_capture_on_commit_callbacks)
    at_t0.move_to(access_request.lapses_at - timedelta(seconds=1))
    with django_capture_on_commit_callbacks(execute=True):
        response, _, _ = _post(_click("U0APPROVER", access_request.pk))
    assert response.status_code == 200
    access_request.refresh_from_db()
    assert access_request.status == AccessRequest.Status.APPROVED
    assert "Approved" in json.dumps(_slack_calls(fake, "chat.update")[-1]["blocks"])
