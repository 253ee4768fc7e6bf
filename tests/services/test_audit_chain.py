"""Tamper evidence: the access-event hash chain, verify_audit, and the database refusing edits."""

import hashlib
import io
import itertools
import json
from datetime import timedelta, timezone

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction
from hypothesis import given
from hypothesis import strategies as st

from accessgov.ledger import hashing
from accessgov.ledger.hashing import GENESIS
from accessgov.ledger.verify import verify_chain
from accessgov.models import AccessEvent, Eligibility
from accessgov.services import access_requests as ar
from tests.support.concurrency import race

H = timedelta(hours=1)


def activity(w, n: int = 3) -> None:
    for _ in range(n):
        access_request = ar.access_request_submit(
            w.requester, role=w.role, duration=H, justification="Investigating incident INC-42 on payments"
        )
        ar.access_request_cancel(w.requester, access_request.pk)


def tamper(sql: str, params: list) -> None:
    """Change the ledger the way an attacker with database superuser rights would (triggers off)."""
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(sql, params)


@pytest.mark.django_db
def test_events_form_one_linear_chain(world):
    activity(world)
    events = list(AccessEvent.objects.order_by("sequence"))
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert events[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(events))
    report = verify_chain()
    assert report.ok and report.checked == len(events) and report.head_hash == events[-1].hash


@pytest.mark.django_db
def test_an_edited_event_is_named(world):
    activity(world)
    target = AccessEvent.objects.get(sequence=3)
    tamper("UPDATE accessgov_accessevent SET reason = %s WHERE id = %s", ["nothing to see", target.pk])
    report = verify_chain()
    assert not report.ok
    assert report.broken_sequence == 3 and report.broken_event_id == target.pk
    assert "was edited" in report.problem
    assert report.checked == 2


@pytest.mark.django_db
def test_a_deleted_event_is_named(world):
    activity(world)
    tamper("DELETE FROM accessgov_accessevent WHERE sequence = %s", [4])
    report = verify_chain()
    assert not report.ok
    assert "event #4 is missing (deleted)" in report.problem


@pytest.mark.django_db
def test_an_inserted_event_is_named(world):
    activity(world)
    head = AccessEvent.objects.order_by("-sequence").first()
    forged = AccessEvent(
        event_type="grant.activated",
        actor_label="mallory",
        sequence=head.sequence + 1,
        prev_hash="f" * 64,
        occurred_at=head.occurred_at,
    )
    forged.hash = forged.compute_hash(forged.prev_hash)
    AccessEvent.objects.bulk_create([forged])
    report = verify_chain()
    assert not report.ok and f"event #{head.sequence + 1} does not follow" in report.problem
    tamper("DELETE FROM accessgov_accessevent WHERE sequence = %s", [head.sequence + 1])
    AccessEvent.objects.bulk_create([AccessEvent(event_type="grant.activated", actor_label="mallory")])
    report = verify_chain()
    assert not report.ok and "outside the chain" in report.problem


@pytest.mark.django_db
def test_verify_audit_command_reports_and_fails_on_a_broken_chain(world):
    activity(world, n=1)
    out = io.StringIO()
    call_command("verify_audit", stdout=out)
    assert out.getvalue().startswith("Audit chain OK: 2 events, head #2 ")
    out = io.StringIO()
    call_command("verify_audit", "--head", stdout=out)
    head = json.loads(out.getvalue())
    assert head["ok"] is True and head["head_sequence"] == 2 and len(head["head_hash"]) == 64
    tamper("UPDATE accessgov_accessevent SET actor_label = %s WHERE sequence = %s", ["someone-else", 1])
    with pytest.raises(CommandError, match="Audit chain BROKEN after 0 good events: event #1"):
        call_command("verify_audit", stdout=io.StringIO())


@pytest.mark.django_db
def test_a_kept_head_finds_a_cut_back_or_re_hashed_chain_that_verifies_on_its_own(world, tmp_path):
    """The chain has no key: whoever can write the table can delete its newest events, or edit an old one and
    re-hash everything after it, and the chain verifies. A head kept outside the database finds both (the
    auditor probe's finding)."""
    from accessgov.ledger.hashing import GENESIS

    call_command("verify_audit", "--expect-head", f"0:{GENESIS}", stdout=io.StringIO())  # kept before any event
    activity(world, n=2)
    out = io.StringIO()
    call_command("verify_audit", "--head", stdout=out)
    kept = tmp_path / "head.json"
    kept.write_text(out.getvalue())
    head = json.loads(out.getvalue())
    activity(world, n=1)  # the ledger grows past the kept head: fine
    out = io.StringIO()
    call_command("verify_audit", "--expect-head", str(kept), stdout=out)
    assert f"Kept head #{head['head_sequence']} is in the chain unchanged" in out.getvalue()

    # Cut back past the kept head: the shorter chain verifies alone, not against the head.
    tamper("DELETE FROM accessgov_accessevent WHERE sequence >= %s", [head["head_sequence"]])
    call_command("verify_audit", stdout=io.StringIO())
    with pytest.raises(CommandError, match=f"does NOT extend the kept head #{head['head_sequence']}: .* is gone"):
        call_command(
            "verify_audit", "--expect-head", f"{head['head_sequence']}:{head['head_hash']}", stdout=io.StringIO()
        )

    # Edit the first event and re-hash every later one with the application's own function.
    tamper("UPDATE accessgov_accessevent SET reason = %s WHERE sequence = 1", ["nothing to see"])
    prev = GENESIS
    for event in AccessEvent.objects.order_by("sequence"):
        tamper(
            "UPDATE accessgov_accessevent SET prev_hash = %s, hash = %s WHERE id = %s",
            [prev, event.compute_hash(prev), event.pk],
        )
        prev = event.compute_hash(prev)
    call_command("verify_audit", stdout=io.StringIO())
    early = AccessEvent.objects.get(sequence=2)
    with pytest.raises(CommandError, match="#2: event #2 no longer has the kept head's hash: the chain was rewritten"):
        call_command("verify_audit", "--expect-head", f"2:{'0' * 64}", stdout=io.StringIO())
    call_command("verify_audit", "--expect-head", f"2:{early.hash}", stdout=io.StringIO())  # the forged head itself


@pytest.mark.django_db
@pytest.mark.parametrize("value", ["", "12", "12:abc", "x:" + "0" * 64, "/no/such/file.json", "-1:" + "0" * 64])
def test_a_kept_head_that_is_not_one_is_a_clear_error(value):
    with pytest.raises(CommandError, match="--expect-head"):
        call_command("verify_audit", "--expect-head", value, stdout=io.StringIO())


@pytest.fixture
def app_role():
    """A non-superuser role with full table rights, as the application's database user should be. Roles
    are cluster-wide: the name carries this test database's, so parallel suites (each with its own test
    database on the same server) do not drop each other's role, which DROP OWNED cannot clean up from here."""
    name = f"accessgov_app_{connection.settings_dict['NAME']}"[:63]
    with connection.cursor() as cursor:
        cursor.execute(f"DROP OWNED BY {name}" if _role_exists(cursor, name) else "SELECT 1")
        cursor.execute(f"DROP ROLE IF EXISTS {name}")
        cursor.execute(f"CREATE ROLE {name} NOLOGIN")
        cursor.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {name}")
    return name


def _role_exists(cursor, name: str) -> bool:
    cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [name])
    return cursor.fetchone() is not None


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("statement", "operation"),
    [
        ("UPDATE accessgov_accessevent SET reason = 'x'", "UPDATE"),
        ("DELETE FROM accessgov_accessevent", "DELETE"),
        ("TRUNCATE accessgov_accessevent", "TRUNCATE"),
    ],
)
def test_the_apps_database_user_is_refused_update_delete_and_truncate(world, app_role, statement, operation):
    activity(world, n=1)
    refused = pytest.raises(DatabaseError, match=f"append-only \\({operation} refused\\)")
    with refused, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL ROLE {app_role}")
        cursor.execute(statement)
    assert AccessEvent.objects.count() == 2
    assert verify_chain().ok


@pytest.mark.postgres
@pytest.mark.django_db
def test_even_a_superuser_cannot_edit_or_delete_without_disabling_the_trigger(world):
    activity(world, n=1)
    for statement in ("UPDATE accessgov_accessevent SET reason = 'x'", "DELETE FROM accessgov_accessevent"):
        refused = pytest.raises(DatabaseError, match="append-only")
        with refused, transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement)
    assert verify_chain().ok


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_inserts_keep_one_chain(world, make_user):
    requesters = [make_user(f"concurrent{i}") for i in range(6)]
    for user in requesters:
        Eligibility.objects.create(role=world.role, user=user)

    def work(user):
        for _ in range(4):
            access_request = ar.access_request_submit(
                user, role=world.role, duration=H, justification="Concurrent chain test run"
            )
            ar.access_request_cancel(user, access_request.pk)

    outcomes = race({user.username: (lambda u=user: work(u)) for user in requesters})
    assert [o for o in outcomes.values() if not o.ok] == []
    report = verify_chain()
    assert report.ok, report.problem
    assert report.checked == AccessEvent.objects.count() == 6 * 4 * 2


HASH_FORMAT_SAMPLES = [
    {"n": 1, "text": "plain"},
    {"zeta": None, "alpha": [1, 2.5, -0.0, 1e16, 10**30], "mid": {"b": True, "a": False}},
    {"quote": 'say "hi" \\ \n\t\r\b\f \x00\x1f \x7f', "unicode": "Zoë ✓ 𝄞 \u2028", "empty": ""},
    {"nan": float("nan"), "inf": float("-inf"), "tuple": (1, "x")},
    {"when": timedelta(seconds=90), "type": AccessEvent.Type.GRANT_EXPIRED},
    {3: "int keys", 1: True, 2: None},
    [],
    "a string",
    None,
    12345678901234567890,
]


@pytest.mark.parametrize("value", HASH_FORMAT_SAMPLES)
def test_the_ledgers_canonical_json_is_exactly_json_dumps(value):
    """Existing ledgers were hashed over json.dumps(...) text: the reusable encoder gives the same bytes."""
    expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    assert hashing.canonical_json(value) == expected
    if value not in (None,) and not isinstance(value, str):
        content = {"data": value, "event_type": "x", "sequence": 7}
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
        assert hashing.hash_content(content, GENESIS) == hashlib.sha256(f"{GENESIS}|{canonical}".encode()).hexdigest()


def test_the_copy_json_of_event_data_refuses_what_json_cannot_hold():
    with pytest.raises(TypeError, match="not JSON serializable"):
        hashing.compact_json({"when": timedelta(seconds=1)})
    assert hashing.compact_json({"b": 1, "a": "ë"}) == json.dumps(
        {"b": 1, "a": "ë"}, separators=(",", ":"), ensure_ascii=False
    )


@pytest.mark.django_db
def test_canonical_content_of_equal_instants_is_the_same_in_any_time_zone(world):
    activity(world, 1)
    event = AccessEvent.objects.order_by("sequence").first()
    as_utc = event.content()
    event.occurred_at = event.occurred_at.astimezone(timezone(timedelta(hours=-5)))
    assert event.content() == as_utc
    assert as_utc["occurred_at"].endswith("+00:00")
    assert event.compute_hash(event.prev_hash) == event.hash


def test_the_ledgers_hash_of_a_fixed_event_never_changes():
    """Issue 16: the canonical encoding moved from the json module's private C hooks to the public
    JSONEncoder API; existing ledgers must keep verifying, so one event's hash is pinned here (computed
    with json.dumps before the move)."""
    content = {
        "sequence": 42,
        "occurred_at": "2025-03-03T10:00:00.123456+00:00",
        "event_type": "grant.revoked",
        "actor_id": 7,
        "actor_label": "zoë",
        "client_address": "203.0.113.9",
        "reason": 'Line\nbreak "quoted" \u2028 ☃',
        "access_request_id": 11,
        "grant_id": None,
        "role_id": 3,
        "data": {"b": [1, 2.5, True, None], "a": {"z": "ü", "y": 1e-7}},
    }
    assert hashing.hash_content(content, "ab" * 32) == (
        "f62662b86582090d537a9fc4eb73da07950cbc26c7020f0752afc5c68edff8e5"
    )
    assert hashing.json_string('a"\n\u2028ü') == json.dumps('a"\n\u2028ü', ensure_ascii=False)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)


@given(
    sequence=st.integers(min_value=0, max_value=2**63 - 1),
    occurred_at=st.datetimes(timezones=st.timezones()),
    event_type=st.text(max_size=40),
    actor_id=st.none() | st.integers(min_value=1),
    actor_label=st.text(max_size=100),
    client_address=st.none() | st.ip_addresses().map(str),
    reason=st.text(max_size=50),
    access_request_id=st.none() | st.integers(min_value=1),
    grant_id=st.none() | st.integers(min_value=1),
    role_id=st.none() | st.integers(min_value=1),
    data=st.dictionaries(st.text(max_size=10), json_values, max_size=4),
)
def test_the_bulk_paths_canonical_text_is_the_ledgers_one(sequence, **values):
    """The sweep writes each event's canonical text before it knows the event's place in the chain
    (``canonical_head``) and adds the sequence under the ledger lock: the same text, and so the same hash,
    as the one hashing function over the whole content."""
    whole = hashing.canonical_content({**values, "sequence": sequence})
    text = hashing.canonical_with_sequence(hashing.canonical_head(values), sequence)
    assert text == hashing.canonical_json(whole)
    assert hashing.hash_canonical(text, GENESIS) == hashing.hash_content(whole, GENESIS)
