"""Activity in evidence packs (issues 17 + 21): a pack built over a month that has activity carries it per
grant (sessions, statement counts by class, findings and their sign-off, the seals with their ledger
sequence numbers and hashes) and lists activity findings, an unsigned one as an exception; both are mapped to
SOC 2 CC7.2, ISO 27001 A.8.15 and PCI DSS 10.2 and sampled with their trails. Activity is made through the
services (activity_store, as the ingest stores it; the seal sweep; the sign-off) at fixed instants."""

import json
import zipfile
from datetime import timedelta

import pytest
from django.utils import timezone

from accessgov.activity.classify import classify, command_of
from accessgov.activity.logs import Observed
from accessgov.models import AccessEvent, ActivityFinding, ActivitySeal, Eligibility, EvidencePack, Role
from accessgov.services import activity
from tests.support.evidence_pack import pack_path, read_csv, request_pack, run_verify
from tests.support.evidence_world import DAY, MIN, T0, build_at, make_month
from tests.support.timeline import at, expired, granted, removal_confirmed

pytestmark = pytest.mark.django_db
ACTIVE_AT = T0 + 20 * DAY  # after the month's other history (events stay in time order)


def _store(system, principal: str, when, *texts: str) -> None:
    activity.activity_store(
        system,
        [
            Observed(
                kind="statement",
                source="ingest",
                principal=principal,
                occurred_at=when + timedelta(seconds=i),
                statement=text,
                command=command_of(text),
                statement_class=classify(command_of(text), text),
            )
            for i, text in enumerate(texts)
        ],
        now=when + MIN,
    )


@pytest.fixture
def month_with_activity(world, make_user):
    """The evidence month, plus: dana's read-write grant with a SELECT, an UPDATE and a DDL (a finding the
    approver signs off), expired, removed and sealed; and activity without a grant by mallory, never signed
    off."""
    month = make_month(world, make_user)
    Role.objects.filter(pk=world.role.pk).update(access_level=Role.AccessLevel.READ_WRITE)
    dana = make_user("dana")
    make_user("mallory")  # a person's login, active without a grant of this system
    Eligibility.objects.create(role=world.role, user=dana, starts_at=T0 - 30 * DAY)
    grant = granted(world, ACTIVE_AT, user=dana, justification="Fix the payout batch for INC-12")
    with at(ACTIVE_AT + 10 * MIN):
        _store(
            world.system,
            "dana",
            timezone.now(),
            "SELECT * FROM payouts",
            "UPDATE payouts SET state = 'sent' WHERE id = 7",
            "ALTER TABLE payouts ADD COLUMN note text",
        )
    grant = removal_confirmed(expired(grant), world.approver, 30 * timedelta(seconds=1))
    with at(ACTIVE_AT + DAY):
        assert activity.activity_seal_due(timezone.now()) >= 1
        _store(world.system, "mallory", timezone.now(), "SELECT * FROM cards")
    (ddl,) = ActivityFinding.objects.filter(grant=grant, kind=ActivityFinding.Kind.DDL)
    with at(ACTIVE_AT + 2 * DAY):
        activity.activity_finding_sign_off(world.approver, ddl.pk, comment="Column added for INC-12, agreed")
    (stray,) = ActivityFinding.objects.filter(principal="mallory")
    month.grants["active"] = grant
    month.findings = {"signed": ddl, "open": stray}
    return month


def test_a_pack_over_a_month_with_activity_carries_it_per_grant_tied_to_the_ledger(
    month_with_activity, signing_key, django_capture_on_commit_callbacks
):
    month = month_with_activity
    with django_capture_on_commit_callbacks(execute=False):
        pack = request_pack(month.world)
    pack = build_at(pack.pk)
    assert pack.status == EvidencePack.Status.READY, pack.error
    ok, problems = run_verify(pack_path(pack), signing_key)
    assert ok, problems

    grant = month.grants["active"]
    (seal,) = ActivitySeal.objects.filter(grant=grant)
    seal_event = AccessEvent.objects.get(pk=seal.event_id)
    with zipfile.ZipFile(pack_path(pack)) as archive:
        rows = {int(r["grant_id"]): r for r in read_csv(archive, "populations/activity.csv")}
        assert set(rows) == {int(r["grant_id"]) for r in read_csv(archive, "populations/grants.csv")}
        row = rows[grant.pk]
        assert (row["user"], row["statements"], row["reads"], row["writes"], row["ddl"]) == ("dana", "3", "1", "1", "1")
        assert (row["findings"], row["findings_open"], row["findings_signed_off_by"]) == ("1", "0", "approver")
        assert row["seal_ids"] == str(seal.pk) and row["seal_hashes"] == seal.content_hash
        assert row["seal_sequences"] == str(seal_event.sequence) and row["sealed_rows"] == "3"
        assert row["sealed"] == "true"
        assert rows[month.grants["removed"].pk]["sealed"] == ""  # no activity captured: the test does not apply

        # The seal's ledger event is in the extract with the same hash: the auditor ties the two together.
        ledger = [json.loads(line) for line in archive.read("ledger/events.jsonl").decode().splitlines()]
        (sealed_line,) = [e for e in ledger if e["sequence"] == seal_event.sequence]
        assert sealed_line["event_type"] == "activity.sealed" and seal.content_hash in json.dumps(sealed_line)

        findings = {int(r["finding_id"]): r for r in read_csv(archive, "populations/activity_findings.csv")}
        signed, stray = findings[month.findings["signed"].pk], findings[month.findings["open"].pk]
        assert (signed["kind"], signed["signed_off_by"], signed["signed_off"]) == ("ddl", "approver", "true")
        assert signed["signed_off_by_other"] == "true" and signed["grant_id"] == str(grant.pk)
        assert (stray["kind"], stray["grant_id"], stray["signed_off"]) == ("no_grant", "", "false")

        exceptions = {r["exception_id"] for r in read_csv(archive, "populations/exceptions.csv")}
        assert f"activity_findings.signed_off:{month.findings['open'].pk}" in exceptions
        assert f"activity_findings.signed_off:{month.findings['signed'].pk}" not in exceptions

        control_map = json.loads(archive.read("controls/control_map.json"))
        controls = {f"{c['framework']} {c['id']}": c for c in control_map["controls"]}
        for name in ("SOC 2 CC7.2", "ISO 27001 A.8.15", "PCI DSS 10.2"):
            tests = {t["id"]: t for t in controls[name]["tests"]}
            assert tests["activity_findings.signed_off"]["result"] == "1 / 2 (50 %)", name
            assert controls[name]["status"] == "exceptions"
            assert "populations/activity_findings.csv" in controls[name]["files"]
        for name in ("ISO 27001 A.8.15", "PCI DSS 10.2"):
            sealed = {t["id"]: t for t in controls[name]["tests"]}["activity.sealed"]
            assert (
                sealed["result"] == "1 / 1 (100 %); 6 rows not counted (empty cells: the column says why)"
                and sealed["file"] == "populations/activity.csv"
            )

        sample = json.loads(archive.read("sample/sample.json"))["populations"]
        sampled = {item["id"]: item for item in sample["activity"]["items"]}
        assert str(grant.pk) in sampled  # every grant fits in a sample of 25
        trail = [e["event_type"] for e in sampled[str(grant.pk)]["trail"]]
        assert "activity.sealed" in trail and "activity.finding" in trail and "activity.signed_off" in trail
        finding_items = {item["id"]: item for item in sample["activity_findings"]["items"]}
        assert [e["event_type"] for e in finding_items[str(month.findings["signed"].pk)]["trail"]] == [
            "activity.finding",
            "activity.signed_off",
        ]
        summary = archive.read("summary/summary.html").decode()
        assert "populations/activity.csv" in summary and "populations/activity_findings.csv" in summary


def test_a_pack_scoped_to_another_system_leaves_this_systems_activity_out(
    month_with_activity, signing_key, django_capture_on_commit_callbacks
):
    from tests.support.factories import SystemFactory

    other = SystemFactory(name="Ledger DB", slug="ledger-db")
    with django_capture_on_commit_callbacks(execute=False):
        pack = request_pack(month_with_activity.world, systems=[other])
    pack = build_at(pack.pk)
    assert pack.status == EvidencePack.Status.READY, pack.error
    with zipfile.ZipFile(pack_path(pack)) as archive:
        assert read_csv(archive, "populations/activity.csv") == []
        assert read_csv(archive, "populations/activity_findings.csv") == []
