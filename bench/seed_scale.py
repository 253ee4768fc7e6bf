"""A realistic large AccessGov dataset on PostgreSQL, generated with bulk paths, for the benchmarks.

    .venv/bin/python bench/seed_scale.py [--reset] [--users 10000] [--requests 106000] [--events 1000000]

Database: accessgov_bench on 127.0.0.1:5432 (trust auth as `postgres`, like the other benchmarks).
Idempotent: a database already seeded (and still fresh enough that its pending requests have not
lapsed) is left as it is; ``--reset`` drops and rebuilds it. Prints the time of every step.

What it makes (defaults): 10,000 users (every one with a confirmed TOTP device and the password
``bench.common.BENCH_PASSWORD``), 200 systems with 3 approvers and 1 owner each (guardian object
permissions), 1,000 roles (10 % need no approval, high/critical roles need step-up, critical ones 2
approvals), 50,000 eligibilities, 106,000 requests over the last year (100,000 approved with their
decisions and grants: mostly expired, some revoked or released, ~1,000 active right now; the rest
denied, cancelled, lapsed, and ~1,000 pending in approver queues), their outbox rows, break-glass
follow-ups, and 1,000,000 access events in time order forming a VALID hash chain: the events a real
lifecycle writes (submitted, decisions, approved, activated, applied, ended, removed, eligibility
added), topped up with provisioning retries. Hashes are computed here with the same canonical form
as ``AccessEvent.compute_hash`` (checked on a sample against the model), rows go in with COPY, and
``manage.py verify_audit`` is run and timed at the end.

Personas for the page benchmarks: ``bench_auditor`` (in the auditor group), ``bench_approver``
(approve_system on the first 5 systems); both have TOTP devices too.
"""

import argparse
import hashlib
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import (  # noqa: E402
    BENCH_PASSWORD,
    SCALE_DB,
    already_seeded,
    fresh_database,
    production_like_env,
    setup_django,
)

production_like_env(SCALE_DB)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SYSTEMS_PER_APPROVER_PERSONA = 5
APPROVERS_PER_SYSTEM = 3
ROLES_PER_SYSTEM = 5
ELIGIBLE_ROLES_PER_USER = 5
RECENT = 2000  # the newest request slots: half pending in queues, half active grants
TIERS = ["low", "medium", "high", "critical"]
ADDRESSES = [f"10.{a}.{b}.{c}" for a, b, c in ((1, 2, 3), (10, 20, 30), (172, 16, 4), (44, 8, 99), (7, 7, 7))]


def iso(t_us: int) -> str:
    return (EPOCH + timedelta(microseconds=t_us)).isoformat(timespec="microseconds")


def us(dt: datetime) -> int:
    return (dt - EPOCH) // timedelta(microseconds=1)


def canonical(row: dict) -> str:
    return json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


class Timer:
    def __init__(self) -> None:
        self.steps: list[tuple[str, float]] = []
        self.t0 = time.perf_counter()

    def step(self, label: str) -> None:
        now = time.perf_counter()
        self.steps.append((label, now - self.t0))
        print(f"  {label:58} {now - self.t0:6.1f} s", flush=True)
        self.t0 = now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reset", action="store_true", help="drop and rebuild the database")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--systems", type=int, default=200)
    parser.add_argument("--requests", type=int, default=106_000, help="about 1 in 21 is not approved: ~100k grants")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument(
        "--recent", type=int, default=RECENT, help="the newest request slots (half pending, half active grants)"
    )
    parser.add_argument("--no-verify", action="store_true", help="skip verify_audit at the end")
    args = parser.parse_args()
    # The recent slots' requesters are distinct people (step 7919, a prime): one pending request per person.
    if not 0 < args.recent < args.requests:
        parser.error("--recent must be at least 1 and less than --requests")
    if args.users < args.recent or args.users % 7919 == 0:
        parser.error("--users must be at least --recent (and not a multiple of 7919)")

    if not args.reset and already_seeded():
        print(f"{SCALE_DB} is already seeded (use --reset to rebuild it).")
        return
    total_t0 = time.perf_counter()
    timer = Timer()
    fresh_database(SCALE_DB)
    setup_django()
    timer.step("fresh database + migrate")
    seed(args, timer)
    if not args.no_verify:
        from io import StringIO

        from django.core.management import call_command

        out = StringIO()
        call_command("verify_audit", stdout=out)
        timer.step(f"verify_audit: {out.getvalue().strip()[:60]}")
    print(f"seeded {SCALE_DB} in {time.perf_counter() - total_t0:.1f} s")


def seed(args, timer: Timer) -> None:
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import Group, Permission
    from django.contrib.contenttypes.models import ContentType
    from django.db import connection
    from django_otp.plugins.otp_totp.models import TOTPDevice
    from guardian.models import UserObjectPermission

    from accessgov import personas
    from accessgov.models import AccessEvent, Role, System, User

    now = datetime.now(UTC).replace(microsecond=0)
    now_us = us(now)
    n_users, n_systems = args.users, args.systems
    n_roles = n_systems * ROLES_PER_SYSTEM
    password = make_password(BENCH_PASSWORD)  # one hash for everyone: the point is not to time PBKDF2 here

    # --- Reference data through the ORM (bulk_create) -------------------------------------------------
    joined = now - timedelta(days=400)
    users = User.objects.bulk_create(
        [
            User(
                username=f"user{i}",
                first_name=f"First{i}",
                last_name=f"Last{i}",
                email=f"user{i}@example.com",
                password=password,
                date_joined=joined,
            )
            for i in range(n_users)
        ],
        batch_size=2000,
    )
    auditor = User.objects.create(username="bench_auditor", email="auditor@example.com", password=password)
    approver = User.objects.create(username="bench_approver", email="approver@example.com", password=password)
    auditor.groups.add(Group.objects.get_or_create(name=personas.AUDITOR)[0])
    Group.objects.get(name=personas.AUDITOR).permissions.add(Permission.objects.get(codename="audit_access"))
    TOTPDevice.objects.bulk_create(
        [TOTPDevice(user=u, name="Authenticator app", confirmed=True) for u in [*users, auditor, approver]],
        batch_size=2000,
    )
    systems = System.objects.bulk_create(
        [
            System(name=f"System {s:03d}", slug=f"system-{s:03d}", description=f"Production service {s}")
            for s in range(n_systems)
        ]
    )
    roles = Role.objects.bulk_create(
        [
            Role(
                system=systems[r // ROLES_PER_SYSTEM],
                name=f"role-{r:04d}",
                risk_tier=TIERS[r % 4],
                approvals_required=0 if r % 10 == 0 else (2 if TIERS[r % 4] == "critical" else 1),
                step_up_required=TIERS[r % 4] in ("high", "critical") and r % 10 != 0,
                break_glass_allowed=TIERS[r % 4] == "critical",
                default_duration=timedelta(hours=1),
                max_duration=timedelta(hours=8),
            )
            for r in range(n_roles)
        ],
        batch_size=2000,
    )
    timer.step(f"{n_users:,} users + TOTP devices, {n_systems} systems, {n_roles:,} roles")

    ct_system = ContentType.objects.get_for_model(System)
    approve_system = Permission.objects.get(codename="approve_system")
    own_system = Permission.objects.get(codename="own_system")

    def approvers_of(s: int) -> list[int]:
        return [s * APPROVERS_PER_SYSTEM + k for k in range(APPROVERS_PER_SYSTEM)]

    def owner_of(s: int) -> int:
        return n_systems * APPROVERS_PER_SYSTEM + s

    perms = []
    for s, system in enumerate(systems):
        perms += [
            UserObjectPermission(user=users[a], permission=approve_system, content_type=ct_system, object_pk=system.pk)
            for a in approvers_of(s)
        ]
        perms.append(
            UserObjectPermission(
                user=users[owner_of(s)], permission=own_system, content_type=ct_system, object_pk=system.pk
            )
        )
    perms += [
        UserObjectPermission(user=approver, permission=approve_system, content_type=ct_system, object_pk=system.pk)
        for system in systems[:SYSTEMS_PER_APPROVER_PERSONA]
    ]
    UserObjectPermission.objects.bulk_create(perms, batch_size=2000)

    def eligible(u: int) -> list[int]:
        return [(u * 37 + k * 211) % n_roles for k in range(ELIGIBLE_ROLES_PER_USER)]

    # Eligibilities (and their events) straight into COPY below; ids are fresh from 1.
    eligibility_rows = []
    for u in range(n_users):
        for k, r in enumerate(eligible(u)):
            eligibility_rows.append((len(eligibility_rows) + 1, r, u, us(joined) + (u * 5 + k) * 60_000_000))
    timer.step(f"{len(perms):,} object permissions")

    user_id = [u.pk for u in users]
    username = [u.username for u in users]
    role_id = [r.pk for r in roles]
    role_system = [r // ROLES_PER_SYSTEM for r in range(n_roles)]

    # --- Requests, decisions, grants, outbox, follow-ups, and the events they wrote ----------------------
    n_req = args.requests
    old = n_req - args.recent
    step_us = (365 * 86400 - 7 * 3600) * 1_000_000 // old
    first_us = now_us - 365 * 86400 * 1_000_000
    requests, decisions, grants, outbox, follow_ups, grant_role = [], [], [], [], [], []
    events: list[tuple] = []  # (t_us, n, event_type, actor_idx|None, label, address, reason, req, grant, role, data)

    def ev(t, etype, actor, label, reason, req, grant, r, data, address=None):
        events.append((t, len(events), etype, actor, label, address, reason, req, grant, r, data))

    sec = 1_000_000
    for i in range(n_req):
        req_pk = i + 1
        if i < old:
            u = (i * 7919) % n_users
            created = first_us + i * step_us
            outcome = "approved" if i % 21 else ("denied", "denied", "denied", "cancelled", "lapsed")[(i // 21) % 5]
            duration_h = (1, 1, 2, 4)[i % 4]
        else:
            j = i - old
            u = ((j * 7919) + 13) % n_users
            created = now_us - 6 * 3600 * sec + j * 10 * sec
            outcome = "pending" if j % 2 == 0 else "approved"
            duration_h = 8
        r = eligible(u)[i % ELIGIBLE_ROLES_PER_USER]
        tier = TIERS[r % 4]
        s = role_system[r]
        auto = r % 10 == 0
        kind = "break_glass" if (tier == "critical" and i % 97 == 0 and outcome == "approved" and i < old) else "access"
        address = ADDRESSES[u % len(ADDRESSES)]
        ticket = f"OPS-{i}" if i % 3 == 0 else ""
        justification = f"Incident INC-{i}: investigate failing payouts on {tier} path"
        duration = timedelta(hours=duration_h)
        decided = None
        apps = [a for a in approvers_of(s) if a != u]
        if outcome == "pending":
            lapses = created + 24 * 3600 * sec
        else:
            lapses = created + 24 * 3600 * sec
            decided = created if (auto or kind == "break_glass") else created + 7 * 60 * sec
            if outcome in ("cancelled",):
                decided = created + 3 * 60 * sec
            elif outcome == "lapsed":
                decided = lapses
        rule = "no approvals required" if auto and outcome == "approved" and kind == "access" else ""
        requests.append(
            (
                req_pk,
                user_id[u],
                role_id[r],
                kind,
                outcome,
                duration,
                duration if outcome == "approved" else None,
                justification,
                ticket,
                iso(created),
                iso(lapses),
                iso(decided) if decided is not None else None,
                rule,
            )
        )
        who = username[u]
        ev(
            created,
            "break_glass.activated" if kind == "break_glass" else "request.submitted",
            u,
            who,
            justification,
            req_pk,
            None,
            r,
            {"duration_seconds": duration_h * 3600, "ticket": ticket, "kind": kind, "starts_at": None}
            if kind == "access"
            else {"duration_seconds": duration_h * 3600, "step_up_at": iso(created - 30 * sec)},
            address,
        )
        if outcome == "cancelled":
            ev(decided, "request.cancelled", u, who, "", req_pk, None, r, {}, address)
        elif outcome == "lapsed":
            ev(decided, "request.lapsed", None, "system:sweep", "No decision before the deadline.", req_pk, None, r, {})
        elif outcome == "denied":
            a = apps[0]
            decisions.append(
                (len(decisions) + 1, req_pk, user_id[a], user_id[u], "deny", "Use the read replica", iso(decided), None)
            )
            ev(
                decided,
                "decision.deny",
                a,
                username[a],
                "Use the read replica",
                req_pk,
                None,
                r,
                {"decision_id": len(decisions)},
                "10.9.9.9",
            )
            ev(
                decided + 1000,
                "request.denied",
                a,
                username[a],
                "Use the read replica",
                req_pk,
                None,
                r,
                {},
                "10.9.9.9",
            )
        elif outcome == "approved":
            if kind == "access" and not auto:
                needed = 2 if tier == "critical" else 1
                for k in range(needed):
                    a = apps[k]
                    at = decided - (needed - 1 - k) * 60 * sec
                    # Step-up roles: the approver entered a fresh code a minute before (the service refuses otherwise).
                    step_up = iso(at - 60 * sec) if TIERS[r % 4] in ("high", "critical") else None
                    decisions.append(
                        (len(decisions) + 1, req_pk, user_id[a], user_id[u], "approve", "ok", iso(at), step_up)
                    )
                    ev(
                        at,
                        "decision.approve",
                        a,
                        username[a],
                        "ok",
                        req_pk,
                        None,
                        r,
                        {"decision_id": len(decisions)},
                        "10.9.9.9",
                    )
                ev(
                    decided + 1000,
                    "request.approved",
                    apps[needed - 1],
                    username[apps[needed - 1]],
                    "",
                    req_pk,
                    None,
                    r,
                    {},
                    "10.9.9.9",
                )
            elif kind == "access":
                ev(decided + 1000, "request.auto_approved", None, "system:auto-approval", rule, req_pk, None, r, {})
            grant_pk = len(grants) + 1
            grant_role.append(r)
            starts = decided + 2000
            expires = starts + duration_h * 3600 * sec
            if expires > now_us:
                status, end_reason, ended, ended_by = "active", "", None, None
            elif i % 20 == 1:
                status, end_reason, ended, ended_by = "revoked", "revoked", starts + 20 * 60 * sec, apps[0]
            elif i % 20 == 2:
                status, end_reason, ended, ended_by = "revoked", "released", starts + 35 * 60 * sec, u
            else:
                status, end_reason, ended, ended_by = "expired", "expired", expires, None
            applied = starts + 80_000
            removed = ended + 150_000 if ended else None
            grants.append(
                (
                    grant_pk,
                    req_pk,
                    user_id[u],
                    role_id[r],
                    status,
                    kind == "break_glass",
                    iso(starts),
                    iso(expires),
                    iso(starts),
                    iso(starts),
                    iso(ended) if ended else None,
                    end_reason,
                    user_id[ended_by] if ended_by is not None else None,
                    "applied" if ended is None else "confirmed",
                    iso(applied),
                    iso(ended) if ended else None,
                    iso(removed) if removed else None,
                    iso(removed) if removed else None,
                )
            )
            outbox.append((len(outbox) + 1, grant_pk, "apply", 1, iso(starts), iso(applied), "applied"))
            if kind == "access":
                activator = None if auto else apps[(2 if tier == "critical" else 1) - 1]
                label = "system:auto-approval" if auto else username[activator]
                ev(
                    starts,
                    "grant.activated",
                    activator,
                    label,
                    "",
                    req_pk,
                    grant_pk,
                    r,
                    {"starts_at": iso(starts), "expires_at": iso(expires)},
                )
            ev(
                applied,
                "provisioning.applied",
                None,
                "system:outbox",
                "",
                req_pk,
                grant_pk,
                r,
                {"outbox_item": len(outbox)},
            )
            if kind == "break_glass":
                follow_ups.append(
                    (
                        len(follow_ups) + 1,
                        grant_pk,
                        iso(starts + 24 * 3600 * sec),
                        user_id[apps[0]],
                        iso(starts + 3 * 3600 * sec),
                        "Checked the incident timeline",
                    )
                )
                ev(
                    starts + 3 * 3600 * sec,
                    "break_glass.acknowledged",
                    apps[0],
                    username[apps[0]],
                    "Checked the incident timeline",
                    req_pk,
                    grant_pk,
                    r,
                    {},
                    "10.9.9.9",
                )
            if ended is not None:
                if end_reason == "expired":
                    ev(
                        ended,
                        "grant.expired",
                        None,
                        "system:scheduler",
                        "",
                        req_pk,
                        grant_pk,
                        r,
                        {"expires_at": iso(expires), "observed_lag_seconds": 0},
                    )
                elif end_reason == "revoked":
                    ev(
                        ended,
                        "grant.revoked",
                        apps[0],
                        username[apps[0]],
                        "Incident closed",
                        req_pk,
                        grant_pk,
                        r,
                        {},
                        "10.9.9.9",
                    )
                else:
                    ev(
                        ended,
                        "grant.released",
                        u,
                        who,
                        "Released early by the grantee.",
                        req_pk,
                        grant_pk,
                        r,
                        {},
                        address,
                    )
                outbox.append(
                    (
                        len(outbox) + 1,
                        grant_pk,
                        "remove",
                        1,
                        iso(ended),
                        iso(removed),
                        "removed",
                    )
                )
                ev(
                    removed,
                    "provisioning.removed",
                    None,
                    "system:outbox",
                    "",
                    req_pk,
                    grant_pk,
                    r,
                    {"outbox_item": len(outbox)},
                )
    for pk, r, u, t in eligibility_rows:
        ev(
            t,
            "eligibility.added",
            owner_of(role_system[r]),
            username[owner_of(role_system[r])],
            "Team member",
            None,
            None,
            r,
            {"eligibility_id": pk, "user": username[u]},
        )
    # Top up to the requested size with provisioning retries (a target that was briefly down).
    missing = args.events - len(events)
    g = 0
    while missing > 0 and grants:
        grant = grants[g % len(grants)]
        t = us(datetime.fromisoformat(grant[6])) + 40_000 - (g // len(grants)) * 1000
        ev(
            t,
            "provisioning.failed",
            None,
            "system:outbox",
            "",
            grant[1],
            grant[0],
            grant_role[g % len(grants)],
            {"attempt": 1 + g // len(grants), "error": "connection refused"},
        )
        g += 1
        missing -= 1
    timer.step(f"{len(requests):,} requests, {len(grants):,} grants, {len(events):,} events built")

    events.sort()
    timer.step("events sorted by time")

    # --- Check the canonical form against the model on a sample, then COPY everything ------------------
    role_pk = role_id
    sample = events[:: max(1, len(events) // 50)][:50]
    for e in sample:
        model = AccessEvent(
            sequence=7,
            occurred_at=EPOCH + timedelta(microseconds=e[0]),
            event_type=e[2],
            actor_id=user_id[e[3]] if e[3] is not None else None,
            actor_label=e[4],
            client_address=e[5],
            reason=e[6],
            access_request_id=e[7],
            grant_id=e[8],
            role_id=role_pk[e[9]] if e[9] is not None else None,
            data=e[10],
        )
        ours = hashlib.sha256(f"x|{canonical(_content(7, e, user_id, role_pk))}".encode()).hexdigest()
        if model.compute_hash("x") != ours:
            raise SystemExit(f"canonical form differs from AccessEvent.compute_hash for {e}")

    raw = connection.connection
    with raw.cursor() as cur:
        # Bulk load: the rows are consistent by construction (and the chain is verified afterwards), so
        # skip the per-row foreign-key and append-only triggers for this session, as pg_restore does.
        cur.execute("SET session_replication_role = replica")
        _copy(
            cur,
            "accessgov_eligibility (id, role_id, user_id, starts_at, ends_at, reason, created_by_id, created_at, end_reminded_at)",
            (
                (pk, role_pk[r], user_id[u], iso(t), None, "Team member", None, iso(t), None)
                for pk, r, u, t in eligibility_rows
            ),
        )
        _copy(
            cur,
            "accessgov_accessrequest (id, requester_id, role_id, kind, status, requested_duration, approved_duration, "
            "justification, ticket, created_at, lapses_at, decided_at, auto_approved_by_rule, starts_at, extends_grant_id, "
            "reminder_sent_at, auto_approval_evidence, auto_approval_note, incident_id, ticket_bound, ticket_title, ticket_url)",
            ((*row, None, None, None, "{}", "", "", False, "", "") for row in requests),
        )
        _copy(
            cur,
            "accessgov_decision (id, access_request_id, approver_id, requester_id, outcome, comment, created_at, step_up_at, duration)",
            ((*row, None) for row in decisions),
        )
        _copy(
            cur,
            "accessgov_grant (id, access_request_id, user_id, role_id, status, is_break_glass, starts_at, expires_at, created_at, "
            "activated_at, ended_at, end_reason, ended_by_id, provisioning_state, provisioned_at, removal_requested_at, removed_at, "
            "removal_confirmed_at, extension_count, provisioning_error, expiry_reminder_sent_at, removal_alerted_at)",
            ((*row, 0, "", None, None) for row in grants),
        )
        _copy(
            cur,
            "accessgov_outboxitem (id, grant_id, action, number, created_at, done_at, outcome, next_attempt_at, attempts, "
            "last_error, lease_until, done_by_id)",
            ((*row, row[4], 1, "", None, None) for row in outbox),
        )
        _copy(
            cur,
            "accessgov_breakglassfollowup (id, grant_id, due_at, acknowledged_by_id, acknowledged_at, comment, last_reminded_at)",
            ((*row, None) for row in follow_ups),
        )
        timer.step(
            f"COPY {len(eligibility_rows):,} eligibilities, {len(decisions):,} decisions, {len(outbox):,} outbox rows, "
            f"{len(follow_ups)} follow-ups"
        )

        prev = "0" * 64

        def event_rows():
            nonlocal prev
            for seq, e in enumerate(events, start=1):
                content = _content(seq, e, user_id, role_pk)
                digest = hashlib.sha256(f"{prev}|{canonical(content)}".encode()).hexdigest()
                yield (
                    seq,
                    seq,
                    content["occurred_at"],
                    e[2],
                    content["actor_id"],
                    e[4],
                    e[5],
                    e[6],
                    e[7],
                    e[8],
                    content["role_id"],
                    json.dumps(e[10]),
                    prev,
                    digest,
                )
                prev = digest

        _copy(
            cur,
            "accessgov_accessevent (id, sequence, occurred_at, event_type, actor_id, actor_label, client_address, reason, "
            "access_request_id, grant_id, role_id, data, prev_hash, hash)",
            event_rows(),
        )
        timer.step(f"hash chain + COPY {len(events):,} events")
        for table in (
            "eligibility",
            "accessrequest",
            "decision",
            "grant",
            "outboxitem",
            "breakglassfollowup",
            "accessevent",
        ):
            cur.execute(
                f"SELECT setval(pg_get_serial_sequence('accessgov_{table}', 'id'), "
                f"coalesce((SELECT max(id) FROM accessgov_{table}), 1))"
            )
        cur.execute("SET session_replication_role = DEFAULT")
        cur.execute("ANALYZE")
    raw.commit()
    timer.step("sequences + ANALYZE")


def _content(seq: int, e: tuple, user_id: list[int], role_pk: list[int]) -> dict:
    return {
        "sequence": seq,
        "occurred_at": iso(e[0]),
        "event_type": e[2],
        "actor_id": user_id[e[3]] if e[3] is not None else None,
        "actor_label": e[4],
        "client_address": e[5],
        "reason": e[6],
        "access_request_id": e[7],
        "grant_id": e[8],
        "role_id": role_pk[e[9]] if e[9] is not None else None,
        "data": e[10],
    }


def _copy(cur, target: str, rows) -> None:
    with cur.copy(f"COPY {target} FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


if __name__ == "__main__":
    main()
