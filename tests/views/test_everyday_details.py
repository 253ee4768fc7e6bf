"""Details seen by a demanding user (issue 18, item 10): what the pages say is true and readable."""

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse

from accessgov.forms import ApiTokenForm
from accessgov.models import ApiToken, Grant
from accessgov.policies import ticket_example
from accessgov.services import access_requests as ar
from accessgov.services import grants as gs
from tests.conftest import verify_session

H = timedelta(hours=1)


@pytest.mark.parametrize(
    ("pattern", "example"),
    [
        (r"[A-Z]+-\d+", "OPS-123"),
        (r"^[A-Z]{2,10}-[0-9]+$", "OP-123"),
        (r"INC\d{7}", "INC1231231"),
        (r"#\d+", "#123"),
        (r"(OPS|INC)-\d+", None),  # beyond the sampler: the rule itself is shown
    ],
)
def test_ticket_rules_are_shown_as_an_example_the_rule_accepts(pattern, example):
    assert ticket_example(pattern) == example


def test_the_token_form_ticks_nothing_in_advance():
    assert not ApiTokenForm().fields["scopes"].initial


@pytest.mark.django_db
def test_the_token_form_offers_only_scopes_the_person_can_use(world):
    def offered(user) -> set[str]:
        page = verify_session(Client(), user).get(reverse("accounts:tokens")).content.decode()
        return {scope for scope in ApiToken.Scope.values if f'value="{scope}"' in page}

    everyone = {"requests:read", "requests:cancel", "grants:read", "grants:release", "catalog:read"}
    assert offered(world.requester) == everyone | {"requests:create"}
    assert offered(world.approver) >= everyone | {"decisions:read", "decisions:decide"}
    assert offered(world.auditor) == everyone | {"events:read", "evidence:read", "evidence:build"}  # eligible for none
    response = verify_session(Client(), world.requester).post(
        reverse("accounts:tokens"), {"name": "ci", "lifetime_days": "30", "scopes": ["events:read"]}
    )
    assert (
        response.status_code == 400 and "events:read is not one of the available choices" in response.content.decode()
    )
    assert not ApiToken.objects.filter(user=world.requester).exists()


@pytest.mark.django_db
def test_a_released_grant_reads_released_not_revoked_by_its_holder(world):
    access_request = ar.access_request_submit(
        world.requester, role=world.role, duration=H, justification="Investigating incident INC-42 on payments"
    )
    ar.access_request_approve(world.approver, access_request.pk)
    grant = Grant.objects.get(access_request=access_request)
    gs.grant_release(world.requester, grant.pk)
    page = verify_session(Client(), world.requester).get(reverse("grant_detail", args=[grant.pk])).content.decode()
    assert '<span class="status status-released">Released</span>' in page
    assert "Released early by the grantee by" not in page


@pytest.mark.django_db
def test_a_denied_request_does_not_say_how_many_decisions_are_still_needed(world):
    access_request = ar.access_request_submit(
        world.requester, role=world.role, duration=H, justification="Investigating incident INC-42 on payments"
    )
    ar.access_request_deny(world.approver, access_request.pk, comment="Use the read-only role")
    page = verify_session(Client(), world.requester).get(reverse("request_detail", args=[access_request.pk]))
    text = page.content.decode()
    assert "1 decision" in text and "needed" not in text.split("Approvals", 1)[1].split("</dd>", 1)[0]


def test_the_role_admin_help_text_names_the_step_up_window(settings):
    from django.forms import modelform_factory

    from accessgov.admin import RoleForm
    from accessgov.models import Role

    settings.OTP_STEP_UP_WINDOW = timedelta(minutes=5)
    form = modelform_factory(Role, form=RoleForm, fields=["step_up_required"])()
    assert "within the last 5 minutes to decide" in form.fields["step_up_required"].help_text


@pytest.mark.django_db
def test_the_approval_chart_caption_gives_the_median_of_approvals_as_its_bars_do(world):
    """The caption's overall median is of approvals by people, like the weekly bars, not of every decision."""
    from datetime import UTC, datetime

    import time_machine

    from accessgov.models import AccessRequest
    from accessgov.reports.approvals import approval_metrics, decided_as_of

    start = datetime(2027, 3, 1, 10, 0, tzinfo=UTC)
    with time_machine.travel(start, tick=False):
        approved = ar.access_request_submit(
            world.requester, role=world.role, duration=H, justification="Investigating incident INC-42 on payments"
        )
    with time_machine.travel(start + timedelta(seconds=60), tick=False):
        ar.access_request_approve(world.approver, approved.pk)
    with time_machine.travel(start + timedelta(minutes=5), tick=False):
        denied = ar.access_request_submit(
            world.requester, role=world.role_two, duration=H, justification="Investigating incident INC-43 on payments"
        )
    with time_machine.travel(start + timedelta(minutes=10), tick=False):
        ar.access_request_deny(world.approver, denied.pk, comment="Use read-write")
    metrics = approval_metrics(decided_as_of(AccessRequest.objects.all(), start + timedelta(minutes=11)))
    assert metrics.approval_median == 60
    assert metrics.median == (60 + 300) / 2
