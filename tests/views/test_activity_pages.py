"""Activity feeding decisions and evidence (issue 17): the approver queue's "last time they ran …", reviews
showing real last use, the activity page (live sessions, findings to sign off), signing off (and every way
of trying it wrongly), the CSV export (formula-safe; statement text for auditors and owners only), the
right-sizing report and its four-eyed proposals, and finding events reaching event webhooks. Activity is
made through the real store service, as the sampler and the ingest API make it; time is pinned."""

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.test import Client
from django.urls import reverse

from accessgov.activity.logs import Observed
from accessgov.models import (
    AccessEvent,
    ActivityFinding,
    ChangeRequest,
    Eligibility,
    EventWebhookSubscription,
    Grant,
    Role,
    System,
    User,
    WebhookDelivery,
)
from accessgov.services import access_requests as ar
from accessgov.services import activity, reviews
from accessgov.services import changes as change_services
from accessgov.services import grants as gs
from tests.conftest import verify_session
from tests.support.factories import UserFactory

pytestmark = pytest.mark.django_db
T0 = datetime(2031, 5, 6, 9, 0, tzinfo=UTC)


@pytest.fixture
def clock():
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


def grant_for(w, justification="Fix the payout batch (PAY-12)") -> Grant:
    access_request = ar.access_request_submit(
        w.requester, role=w.role, duration=timedelta(hours=2), justification=justification
    )
    ar.access_request_approve(w.approver, access_request.pk)
    return Grant.objects.get(access_request=access_request)


def observe(w, *rows: tuple[str, str, float], source="ingest", principal="requester", client="10.0.0.5") -> None:
    """Statements (kind, text, minutes after T0) or sessions, stored the way capture stores them."""
    observed = []
    for kind, text, minutes in rows:
        from accessgov.activity.classify import classify, command_of

        command = command_of(text) if kind == "statement" else ""
        observed.append(
            Observed(
                kind=kind,
                source=source,
                principal=principal,
                occurred_at=T0 + timedelta(minutes=minutes),
                statement=text,
                command=command,
                statement_class=classify(command, text) if kind == "statement" else "",
                client_address=client,
                ended_at=T0 + timedelta(minutes=minutes + 1) if kind == "session" else None,
                state="idle" if kind == "session" else "",
                session_key=f"s{minutes}",
                source_key=f"{kind}:{minutes}:{text}",
            )
        )
    activity.activity_store(w.system, observed, now=T0 + timedelta(minutes=max(r[2] for r in rows)))


@pytest.fixture
def scene(world, clock):
    Role.objects.filter(pk=world.role.pk).update(access_level=Role.AccessLevel.READ_ONLY)
    world.role.refresh_from_db()
    world.grant = grant_for(world)
    return world


def test_the_approver_queue_says_what_the_requester_did_last_time_with_this_role(scene, clock):
    observe(
        scene,
        ("statement", "SELECT * FROM payouts", 5),
        ("statement", "SELECT 1", 6),
        ("statement", "DELETE FROM payouts", 7),
    )
    clock.move_to(T0 + timedelta(hours=3))
    gs.grant_expire_due(T0 + timedelta(hours=3))
    ar.access_request_submit(
        scene.requester, role=scene.role, duration=timedelta(hours=1), justification="Again please"
    )
    page = verify_session(Client(), scene.approver).get(reverse("approvals")).content.decode()
    assert f"grant #{scene.grant.pk}" in page
    assert "they ran 3 statements (2 read, 1 write, 0 DDL, 0 privilege)" in page
    assert "SELECT x2" in page and "DELETE x1" in page
    assert "1 finding" in page  # the DELETE under a read-only role


def test_an_unused_grant_says_so_in_the_queue_and_in_the_review(scene, clock):
    activity.activity_store(scene.system, [], now=T0)  # nothing observed
    from accessgov.models import GrantActivity

    GrantActivity.objects.create(grant=scene.grant, levels=["sessions"])
    clock.move_to(T0 + timedelta(hours=3))
    gs.grant_expire_due(T0 + timedelta(hours=3))
    ar.access_request_submit(
        scene.requester, role=scene.role, duration=timedelta(hours=1), justification="Again, the same job"
    )
    page = verify_session(Client(), scene.approver).get(reverse("approvals")).content.decode()
    assert "they did nothing with it" in page
    campaign = reviews.review_campaign_create(
        scene.auditor, name="Q2", systems=[scene.system], due_at=T0 + timedelta(days=10)
    )
    review = verify_session(Client(), scene.owner).get(reverse("review_detail", args=[campaign.pk])).content.decode()
    assert "no activity under it" in review


def test_reviews_show_the_last_activity_not_only_the_last_grant(scene, clock):
    observe(scene, ("statement", "SELECT 1", 42))
    campaign = reviews.review_campaign_create(
        scene.auditor, name="Q2", systems=[scene.system], due_at=T0 + timedelta(days=10)
    )
    page = verify_session(Client(), scene.owner).get(reverse("review_detail", args=[campaign.pk])).content.decode()
    assert f"last activity {T0:%Y-%m-%d}" in page


def test_the_activity_page_shows_who_is_connected_now_and_findings_waiting_for_sign_off(scene, clock):
    observe(scene, ("session", "", 1), source="sampler")
    observe(scene, ("statement", "UPDATE payouts SET x = 1", 2))
    clock.move_to(T0 + timedelta(minutes=2))
    approver = verify_session(Client(), scene.approver).get(reverse("activity")).content.decode()
    assert f"#{scene.grant.pk}</a> requester" in approver
    assert "Writes under a read-only role" in approver and "What did you check?" in approver
    outsider = verify_session(Client(), scene.outsider).get(reverse("activity")).content.decode()
    assert "Writes under a read-only role" not in outsider and f"#{scene.grant.pk}</a>" not in outsider
    grantee = verify_session(Client(), scene.requester).get(reverse("activity")).content.decode()
    assert "Writes under a read-only role" in grantee and "What did you check?" not in grantee


def test_signing_off_refuses_the_subject_outsiders_empty_nul_and_second_sign_offs(scene):
    observe(scene, ("statement", "UPDATE payouts SET x = 1", 2))
    finding = ActivityFinding.objects.get()
    url = reverse("finding_sign_off", args=[finding.pk])
    assert verify_session(Client(), scene.requester).post(url, {"comment": "fine"}).status_code == 403
    assert verify_session(Client(), scene.outsider).post(url, {"comment": "fine"}).status_code == 404
    approver = verify_session(Client(), scene.approver)
    assert approver.post(url, {"comment": "   "}).status_code == 400
    assert approver.post(url, {"comment": "ok\x00"}).status_code == 400
    assert approver.post(reverse("finding_sign_off", args=[finding.pk + 999]), {"comment": "x"}).status_code == 404
    # Back to the page it was signed off on (a probe landed on the grant's page after signing off on /activity/).
    done = approver.post(
        url, {"comment": "Confirmed with the team lead (PAY-12)", "back": f"/activity/#finding-{finding.pk}"}
    )
    assert done.status_code == 302 and done["Location"] == f"/activity/#finding-{finding.pk}"
    again = verify_session(Client(), scene.owner).post(url, {"comment": "again", "back": "/\\evil.example/"})
    assert again.status_code == 409 and "evil.example" not in again.content.decode()
    finding.refresh_from_db()
    assert finding.signed_off_by == scene.approver
    event = AccessEvent.objects.get(event_type="activity.signed_off")
    assert event.actor == scene.approver and event.grant == scene.grant and event.reason.startswith("Confirmed")


def test_an_account_the_grantee_created_cannot_sign_off_their_finding(scene):
    puppet = UserFactory(username="puppet", created_by=scene.requester)
    from guardian.shortcuts import assign_perm

    assign_perm("accessgov.own_system", puppet, scene.system)
    from tests.conftest import add_totp_device

    add_totp_device(puppet)
    observe(scene, ("statement", "UPDATE payouts SET x = 1", 2))
    finding = ActivityFinding.objects.get()
    response = verify_session(Client(), puppet).post(reverse("finding_sign_off", args=[finding.pk]), {"comment": "ok"})
    assert response.status_code == 403
    assert ActivityFinding.objects.get().is_open


def test_the_export_is_formula_safe_and_gives_statement_text_to_auditors_and_owners_only(scene):
    observe(scene, ("statement", '=HYPERLINK("http://evil")', 3), ("statement", "SELECT secret FROM people", 4))

    def rows(user):
        response = verify_session(Client(), user).get(reverse("activity_export") + f"?grant={scene.grant.pk}")
        assert response.status_code == 200
        text = b"".join(response.streaming_content).decode("utf-8-sig")
        return list(csv.DictReader(io.StringIO(text)))

    audited = rows(scene.auditor)
    assert [r["statement"] for r in audited] == ['\'=HYPERLINK("http://evil")', "SELECT secret FROM people"]
    assert [r["statement"] for r in rows(scene.approver)] == ["", ""]
    assert rows(scene.outsider) == []
    assert AccessEvent.objects.filter(event_type="export.created", data__report="activity").count() == 3


@pytest.mark.parametrize(
    "query",
    [
        "until=9999-12-31",  # the day after overflowed
        "grant=%C2%B2",  # superscript two: isdigit() yes, int() no
        "system=%C2%B2",
        "grant=%D9%A1%D9%A2",  # Arabic-Indic "12" was read as grant 12
        "since=2026-02-30",  # was ignored: the whole export
        "until=garbage",
        "since=2026-03-02&until=2026-03-01",
        "grant=99999999999999999999",
    ],
)
def test_the_activity_export_refuses_filters_that_do_not_parse_and_exports_nothing(scene, query):
    observe(scene, ("statement", "SELECT 1", 3))
    response = verify_session(Client(), scene.auditor).get(reverse("activity_export") + "?" + query)
    assert response.status_code == 400, response.content[:300]
    assert response.content.decode().startswith("The filters are not valid: ")
    assert not AccessEvent.objects.filter(event_type="export.created").exists()


def test_the_activity_export_reads_its_days_inclusively(scene):
    observe(scene, ("statement", "SELECT 1", 3))
    day = T0.date()

    def count(query: str) -> int:
        response = verify_session(Client(), scene.auditor).get(reverse("activity_export") + "?" + query)
        assert response.status_code == 200
        return len(list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode("utf-8-sig")))))

    assert count(f"since={day}&until={day}") == count("") > 0
    assert count(f"until={day - timedelta(days=1)}") == 0
    assert count(f"since={day + timedelta(days=1)}") == 0


def test_right_sizing_lists_unused_roles_and_idle_eligibility_and_its_proposals_are_four_eyed(scene, clock, make_user):
    from accessgov.models import GrantActivity

    GrantActivity.objects.create(grant=scene.grant, levels=["sessions"])
    observe(scene, ("statement", "SELECT 1", 20))  # used for 20 minutes of its 2 hours
    Eligibility.objects.create(role=scene.role_two, user=scene.outsider, starts_at=T0 - timedelta(days=200))
    clock.move_to(T0 + timedelta(hours=3))
    gs.grant_expire_due(T0 + timedelta(hours=3))
    admin = make_user("admin1", is_staff=True, is_superuser=True)
    admin2 = make_user("admin2", is_staff=True, is_superuser=True)
    page = verify_session(Client(), admin).get(reverse("report_right_sizing")).content.decode()
    assert "Propose maximum 30m" in page or "Propose maximum 30 min" in page
    assert "outsider" in page and "Propose ending it" in page
    # Non-admins see the report for what they oversee, without proposal buttons; proposing is refused.
    owner = verify_session(Client(), scene.owner)
    assert "Propose" not in owner.get(reverse("report_right_sizing")).content.decode()
    refused = owner.post(
        reverse("right_sizing_propose"), {"action": "max_duration", "id": scene.role.pk, "minutes": 30}
    )
    assert refused.status_code == 403
    # One click proposes; the proposer cannot apply it; a second admin does.
    client = verify_session(Client(), admin)
    response = client.post(
        reverse("right_sizing_propose"), {"action": "max_duration", "id": scene.role.pk, "minutes": 30}
    )
    assert response.status_code == 302
    change = ChangeRequest.objects.get(kind=ChangeRequest.Kind.ROLE, status="pending")
    assert change.proposed_by == admin
    with pytest.raises(Exception, match="own"):
        change_services.change_approve(admin, change.pk)
    change_services.change_approve(admin2, change.pk)
    scene.role.refresh_from_db()
    assert scene.role.max_duration == timedelta(minutes=30) and scene.role.default_duration <= timedelta(minutes=30)
    idle = Eligibility.objects.get(user=scene.outsider)
    client.post(reverse("right_sizing_propose"), {"action": "end_eligibility", "id": idle.pk})
    ending = ChangeRequest.objects.get(kind=ChangeRequest.Kind.ELIGIBILITY, status="pending")
    change_services.change_approve(admin2, ending.pk)
    idle.refresh_from_db()
    assert idle.ends_at is not None and idle.ends_at <= T0 + timedelta(hours=3)
    # Bad proposals are clear refusals.
    for body in (
        {"action": "max_duration", "id": scene.role.pk, "minutes": 10_000},  # lengthening
        {"action": "max_duration", "id": "x", "minutes": 30},
        {"action": "max_duration", "id": "²", "minutes": 30},  # isdigit() says yes, int() says no
        {"action": "max_duration", "id": scene.role.pk, "minutes": "²"},
        {"action": "max_duration", "id": scene.role.pk, "minutes": "9" * 30},
        {"action": "end_eligibility", "id": "²"},
        {"action": "end_eligibility", "id": "٦"},  # an Arabic-Indic six is not an id
        {"action": "nonsense", "id": scene.role.pk},
        {"action": "end_eligibility", "id": idle.pk},  # already ended
    ):
        assert client.post(reverse("right_sizing_propose"), body).status_code == 400, body
    assert ChangeRequest.objects.filter(status="pending").count() == 0


def test_finding_events_reach_event_webhooks_without_statement_text(scene):
    subscription = EventWebhookSubscription.objects.create(
        name="SIEM", url="https://siem.example.com/hook", event_types=["activity.*"], secret="s"
    )
    observe(scene, ("statement", "UPDATE payouts SET iban = 'DE00'", 2))
    delivery = WebhookDelivery.objects.get(subscription=subscription)
    assert delivery.event.event_type == "activity.finding"
    assert "DE00" not in str(delivery.event.data) and delivery.event.data["kind"] == "write_read_only"


def test_capture_settings_are_validated_in_the_admin_and_changing_them_is_four_eyed(make_user, world):
    admin = verify_session(Client(), make_user("root", is_staff=True, is_superuser=True))
    base = {
        "name": "Target DB",
        "slug": "target-db",
        "environment": "production",
        "description": "",
        "slack_webhook_url": "",
        "connector": "postgres",
        "connector_secret": "pw",
        "roles-TOTAL_FORMS": "0",
        "roles-INITIAL_FORMS": "0",
        "roles-MIN_NUM_FORMS": "0",
        "roles-MAX_NUM_FORMS": "1000",
    }
    config = {"host": "db.internal", "dbname": "app", "user": "accessgov_provisioner"}
    refused = admin.post(
        "/admin/accessgov/system/add/",
        {**base, "connector_config": json.dumps({**config, "activity": {"sessions": "yes", "log_file": "x"}})},
    )
    assert refused.status_code == 200 and "activity.sessions is true or false." in refused.content.decode()
    created = admin.post("/admin/accessgov/system/add/", {**base, "connector_config": json.dumps(config)})
    assert created.status_code == 302
    system = System.objects.get(slug="target-db")
    with_capture = {**config, "activity": {"sessions": True, "statement_log": True}}
    admin.post(
        f"/admin/accessgov/system/{system.pk}/change/",
        {**base, "connector_secret": "", "connector_config": json.dumps(with_capture)},
    )
    system.refresh_from_db()
    assert "activity" not in system.connector_config  # only proposed: a second admin applies it
    assert ChangeRequest.objects.filter(kind=ChangeRequest.Kind.SYSTEM, status="pending").count() == 1


def test_the_demo_shows_activity_on_a_grant_and_says_why_its_targets_are_not_sampled(settings):
    from django.core.management import call_command

    call_command("seed_demo", "--force", stdout=io.StringIO())
    break_glass = Grant.objects.get(is_break_glass=True)
    auditor = verify_session(Client(), User.objects.get(username="audrey"))
    page = auditor.get(reverse("grant_detail", args=[break_glass.pk])).content.decode()
    assert "ALTER TABLE refunds DROP COLUMN IF EXISTS migration_tmp" in page
    assert "Schema change (DDL) under a read-only or read-write role" in page
    assert "uses the manual connector, which cannot watch sessions itself" in page
    assert ActivityFinding.objects.filter(grant=break_glass, kind="ddl", status="open").exists()
