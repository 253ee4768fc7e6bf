"""Issue 22: a precompiled read returns what its queryset returns, for every registered read and on both
databases, and a read whose SQL depends on its values is refused instead of run wrongly."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.contrib.auth.models import Group
from django.db import connection
from django.db.models import Count
from django.test.utils import CaptureQueriesContext

from accessgov import precompiled
from accessgov.models import (
    AccessRequest,
    ActivityRecord,
    BreakGlassFollowUp,
    Eligibility,
    EventWebhookSubscription,
    Grant,
    GrantActivity,
    Role,
)
from accessgov.precompiled import NotPrecompilable, Precompiled
from accessgov.services import access_requests as ar
from accessgov.services import grants as grant_services
from tests.support.factories import RoleFactory, SystemFactory
from tests.support.requests import submit

pytestmark = pytest.mark.django_db
H = timedelta(hours=1)
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def history(world):
    """The requester's grants in every state and requests pending with and without approvals: an
    active grant (role), a scheduled one (read-only, from T0 + 3 h), an expired and a revoked one, a
    request waiting with one of two approvals and one with none."""
    with time_machine.travel(T0 - 10 * H, tick=False):
        ar.access_request_approve(world.approver, submit(world).pk)
    with time_machine.travel(T0 - 8 * H, tick=False):
        grant_services.grant_expire_due(T0 - 8 * H)
        ar.access_request_approve(world.approver, submit(world).pk)
    with time_machine.travel(T0 - 5 * H, tick=False):
        grant_services.grant_expire_due(T0 - 5 * H)
        revoked = submit(world)
        ar.access_request_approve(world.approver, revoked.pk)
        grant_services.grant_revoke(world.approver, Grant.objects.get(access_request=revoked).pk, reason="Done early")
    with time_machine.travel(T0, tick=False):
        grant_services.grant_expire_due(T0)
        ar.access_request_approve(world.approver, submit(world).pk)
        waiting = submit(world, role=world.role_two)
        ar.access_request_approve(world.approver, waiting.pk)  # one of two approvals
        later = RoleFactory(system=world.system, name="read-only", approvals_required=1)
        Eligibility.objects.create(role=later, user=world.requester, starts_at=T0 - H)
        ar.access_request_approve(world.approver2, submit(world, role=later, starts_at=T0 + 3 * H).pk)
    # A break-glass follow-up on the active grant, due at T0 + 2 h; role_two may be used in an emergency.
    active = Grant.objects.filter(user=world.requester, status="active").get()
    Grant.objects.filter(pk=active.pk).update(is_break_glass=True)
    BreakGlassFollowUp.objects.create(grant=active, due_at=T0 + 2 * H)
    Role.objects.filter(pk=world.role_two.pk).update(break_glass_allowed=True)
    hook = {"url": "https://hooks.example.com/in", "secret": "s3cret"}
    EventWebhookSubscription.objects.create(name="everything", event_types=["*"], **hook)
    EventWebhookSubscription.objects.create(name="payments", system=world.system, event_types=["grant.*"], **hook)
    EventWebhookSubscription.objects.create(name="off", event_types=["*"], is_active=False, **hook)
    EventWebhookSubscription.objects.create(name="elsewhere", system=SystemFactory(), event_types=["*"], **hook)
    # A group (nobody in it) eligible for role_two until T0 + 2 h: the catalogue's reads by group.
    world.admins = Group.objects.create(name="db admins")
    Eligibility.objects.create(role=world.role_two, group=world.admins, starts_at=T0 - 2 * H, ends_at=T0 + 2 * H)
    world.outsider.groups.add(Group.objects.create(name="readers"))  # someone's groups, read outside a request
    # Activity under the expired and the revoked grant: totals for one, statements with commands for both.
    expired, revoked_grant = (
        Grant.objects.filter(user=world.requester, status=s).first() for s in ("expired", "revoked")
    )
    GrantActivity.objects.create(grant=expired, statement_count=4, read_count=3, last_activity_at=T0 - 9 * H)
    for grant, commands in ((expired, ["SELECT", "SELECT", "UPDATE", "", "SELECT"]), (revoked_grant, ["DELETE"])):
        for n, command in enumerate(commands):
            ActivityRecord.objects.create(
                system=world.system,
                grant=grant,
                kind=ActivityRecord.Kind.STATEMENT,
                source=ActivityRecord.Source.INGEST,
                principal="alice",
                occurred_at=T0 - 9 * H + n * timedelta(seconds=1),
                command=command,
            )
    ActivityRecord.objects.create(
        system=world.system,
        grant=expired,
        kind=ActivityRecord.Kind.SESSION,
        source="sampler",
        principal="alice",
        occurred_at=T0 - 9 * H,
        command="SELECT",
    )  # a session, not a statement: not counted
    states = set(Grant.objects.filter(user=world.requester).values_list("status", flat=True))
    assert states == {"active", "scheduled", "expired", "revoked"}, states
    assert AccessRequest.objects.filter(requester=world.requester, status="pending").count() == 1
    return world


def _cases(world) -> dict[str, list[dict]]:
    """Values each registered read is run with: the person with a history, people without, several instants."""
    people = [world.requester.pk, world.approver.pk, world.outsider.pk]
    instants = [T0 - 7 * H, T0, T0 + 30 * 60 * timedelta(seconds=1), T0 + 150 * 60 * timedelta(seconds=1), T0 + 4 * H]
    return {
        "my_active_grants": [{"user_id": u, "now": t} for u in people for t in instants],
        "my_scheduled_grants": [{"user_id": u, "now": t} for u in people for t in instants],
        "my_pending_requests": [{"user_id": u, "now": t} for u in people for t in instants],
        "my_recently_ended_grants": [{"user_id": u} for u in people],
        "backup_codes": [{"user_id": u} for u in people],
        "overdue_follow_ups_seen": [
            {"user_id": u, "role_ids": r, "now": t}
            for u in people
            for r in ([], [world.role.pk], [world.role_two.pk, world.role.pk])
            for t in instants
        ],
        "own_break_glass_roles": [{"user_id": u, "now": t} for u in people for t in instants],
        "webhook_subscriptions_everywhere": [{}],
        "ledger_head": [{}],
        "webhook_subscriptions_for_role": [{"role_id": r.pk} for r in (world.role, world.role_two, RoleFactory())],
        "eligible_role_ids": [
            {"user_id": u, "group_ids": groups, "now": t}
            for u in people
            for groups in ([], [world.admins.pk], [world.admins.pk, 10**12])
            for t in instants
        ],
        **{
            name: [
                {"user_id": u, "group_ids": groups, "role_id": r, "now": t}
                for u in people
                for groups in ([], [world.admins.pk])
                for r in (world.role.pk, world.role_two.pk)
                for t in instants
            ]
            for name in ("eligibility_ends", "eligibility_ends_locked")
        },
        "user_group_ids": [{"user_id": u} for u in people],
        "requesters_active_grants": [
            {"user_ids": ids, "now": t} for ids in ([], [world.requester.pk], people) for t in instants
        ],
        "requesters_request_counts": [
            {"user_ids": ids, "since": since}
            for ids in ([], [world.requester.pk], people)
            for t in instants
            for since in (t - 90 * 24 * H, t)
        ],
        "ended_grants_with_activity": [
            {"user_ids": u, "role_ids": r}
            for u in ([], [world.requester.pk], people)
            for r in ([], [world.role.pk], [world.role.pk, world.role_two.pk])
        ],
        "command_counts": [
            {"grant_ids": ids}
            for ids in ([], list(Grant.objects.filter(user=world.requester).values_list("pk", flat=True)))
        ],
        "follow_up_rows": [
            {"ids": ids} for ids in ([], list(BreakGlassFollowUp.objects.values_list("pk", flat=True)), [10**12])
        ],
        "role_system_ids": [
            {"role_ids": ids}
            for ids in ([], [world.role.pk], [world.role.pk, world.role_two.pk, world.role.pk, 10**12])
        ],
    }


def _snapshot(obj, seen: tuple = ()) -> dict | tuple:
    """Every attribute a page could read: the row's fields, annotations, and the related objects loaded
    with it (recursively; a one-to-one's way back to an object already shown as its class and key), as
    plain values (a values_list() row as it is)."""
    if isinstance(obj, tuple):
        return obj
    if any(obj is other for other in seen):
        return {"back to": type(obj).__name__, "pk": obj.pk}
    values = {k: v for k, v in vars(obj).items() if k != "_state"}
    related = {
        name: _snapshot(rel, (*seen, obj)) if rel is not None else None for name, rel in obj._state.fields_cache.items()
    }
    return {"class": type(obj).__name__, "values": values, "related": related, "adding": obj._state.adding}


def test_every_registered_read_returns_what_its_queryset_returns(history):
    import accessgov.activity.selectors
    import accessgov.otp
    import accessgov.permissions
    import accessgov.selectors  # noqa: F401

    cases = _cases(history)
    assert {p.name for p in precompiled.REGISTRY} == set(cases), "each precompiled read needs its cases here"
    empty = set()
    for read in precompiled.REGISTRY:
        rows = 0
        for values in cases[read.name]:
            queryset = read.queryset(**values)
            expected = list(queryset)
            rows += len(expected)
            assert [_snapshot(o) for o in read.list(**values)] == [_snapshot(o) for o in expected], (read, values)
            assert [type(o) for o in read.list(**values)] == [type(o) for o in expected]
            assert read.count(**values) == queryset.count(), (read, values)
            assert read.exists(**values) == queryset.exists(), (read, values)
        if not rows:
            empty.add(read.name)
    assert not empty, f"the cases found no rows for {empty}: nothing was compared"


def test_a_read_is_compiled_once_and_then_one_statement(history):
    from accessgov.selectors import MY_PENDING_REQUESTS

    MY_PENDING_REQUESTS.list(user_id=history.requester.pk, now=T0)
    with CaptureQueriesContext(connection) as queries:
        rows = MY_PENDING_REQUESTS.list(user_id=history.requester.pk, now=T0)
    assert len(queries) == 1
    assert [r.approvals for r in rows] == [1]
    assert rows[0].role.system.name == "Payments DB"  # select_related, no further query
    assert len(queries) == 1


def _read(build, **kinds) -> Precompiled:
    return Precompiled("test_read", build, register=False, **kinds)


@pytest.mark.parametrize(
    ("build", "kinds", "message"),
    [
        # transformed before binding: '%value%'
        (lambda text: Grant.objects.filter(role__name__icontains=text), {"text": str}, "not found among"),
        # inlined into the SQL text
        (lambda n: Grant.objects.extra(where=[f"id > {int(n)}"]), {"n": int}, "not found among"),  # noqa: S610 - an int inlined on purpose
        # decides the SQL's shape
        (
            lambda n: Grant.objects.filter(pk=n).order_by("id" if n < -1_950_000_000 else "-id"),
            {"n": int},
            "depend on the values",
        ),
        # not a list of model instances or plain tuples
        (lambda n: Grant.objects.filter(pk=n).values("pk"), {"n": int}, "model instances"),
        (lambda n: Grant.objects.filter(pk=n).values_list("pk", flat=True), {"n": int}, "model instances"),
        (lambda n: Grant.objects.filter(pk=n).prefetch_related("events"), {"n": int}, "prefetch_related"),
        # a list expanded by __in (one placeholder per id) instead of bound whole by __anyof
        (lambda ids: Grant.objects.filter(pk__in=ids), {"ids": list}, "not found among"),
    ],
)
def test_reads_whose_sql_depends_on_their_values_are_refused(build, kinds, message):
    with pytest.raises(NotPrecompilable, match=message):
        _read(build, **kinds).list(**{name: [1] if kind is list else 1 for name, kind in kinds.items()})


def test_values_are_checked():
    with pytest.raises(NotPrecompilable, match="int, datetime, str or list"):
        _read(lambda flag: Grant.objects.filter(is_break_glass=flag), flag=bool)
    read = _read(
        lambda user_id, now: Grant.objects.filter(user_id=user_id, expires_at__gt=now), user_id=int, now=datetime
    )
    with pytest.raises(TypeError, match="expected the values"):
        read.list(user_id=1)
    with pytest.raises(TypeError, match="must be a datetime"):
        read.list(user_id=1, now="2026-03-02")
    with pytest.raises(ValueError):
        read.list(user_id="not a number", now=T0)
    with pytest.raises(NotPrecompilable, match="aware"):
        read.list(user_id=1, now=datetime(2026, 3, 2, 9, 0))  # noqa: DTZ001 - the naive value under test
    ids = _read(lambda role_ids: Role.objects.filter(pk__anyof=role_ids), role_ids=list)
    for not_ids in (["1"], [1.5], [None], "12", 7):
        with pytest.raises(TypeError):
            ids.list(role_ids=not_ids)
    with pytest.raises(ValueError, match="bigint"):
        ids.list(role_ids=[2**63])


def test_the_same_value_used_twice_and_constants_kept(history):
    """``active(now)`` binds ``now`` twice; the status constants stay as compiled."""
    read = _read(
        lambda user_id, now: Grant.objects.active(now).filter(user_id=user_id).annotate(n=Count("events")),
        user_id=int,
        now=datetime,
    )
    at = T0 + 30 * timedelta(minutes=1)
    got = read.list(user_id=history.requester.pk, now=at)
    expected = list(read.queryset(user_id=history.requester.pk, now=at))
    assert [(g.pk, g.n) for g in got] == [(g.pk, g.n) for g in expected] != []
    assert read.list(user_id=history.requester.pk, now=T0 - 20 * H) == []


def test_break_glass_button_and_overdue_follow_ups_as_their_querysets_say(history):
    """The home page's two fast paths (the break-glass button of people in no group; the overdue follow-ups
    of everyone but auditors) against the querysets they stand for, for every kind of viewer, before and
    after a follow-up falls due."""
    from accessgov import permissions, selectors

    world = history
    grouped = Group.objects.create(name="on call")
    world.outsider.groups.add(grouped)
    Eligibility.objects.create(role=world.role_two, group=grouped, starts_at=T0 - H)
    seen = set()
    for user in (world.requester, world.approver, world.approver2, world.owner, world.auditor, world.outsider):
        for now in (T0, T0 + 3 * H):
            user = type(user).objects.get(pk=user.pk)  # a fresh instance: no memo of an earlier case
            user._permission_memo = {}  # as in a request: the fast paths read the viewer's scope
            may = permissions.may_break_glass(user, now)
            assert may == permissions.eligible_roles(user, now).filter(break_glass_allowed=True).exists(), user
            overdue = selectors.overdue_follow_up_count(user, now)
            assert overdue == selectors.overdue_follow_ups(user, now).count(), (user, now)
            seen.add((user.username, may, overdue))
    assert ("requester", True, 1) in seen and ("requester", True, 0) in seen  # own grant, before/after due
    assert ("outsider", True, 0) in seen  # through a group: the queryset path
    assert ("approver", False, 1) in seen  # oversees the role: through the overseen roles' list
