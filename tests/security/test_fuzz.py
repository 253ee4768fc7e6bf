"""Property-based fuzz of every form, filter, export and API endpoint (issue 14; QUALITY.md promise 14).

Hypothesis generates hostile input — Unicode (digits that are not 0-9, right-to-left marks, astral
characters), huge and negative numbers, NULs, far dates in every format, oversize text, nested JSON,
bodies that are too big or not JSON at all — and sends it, as the persona who may use the page, through
the whole stack (Django test client: middleware, views, services, the database). For every example:

* **no 5xx**, ever;
* **nothing half-written**: a refused input (4xx) changes no row of any state table, the ledger or the
  model-change log; an accepted one that changes state also grows the ledger, and the hash chain still
  verifies (``verify_chain``);
* the API answers every refusal in its JSON error format.

Each example runs in a savepoint that is rolled back afterwards, so every example starts from the same
world (a pending request, an active grant, a break-glass follow-up, an open review, a pending policy
change, tokens). The run is deterministic (``derandomize``, no example database) and sized for CI: about
FUZZ_EXAMPLES examples per group of pages, a fifth of that per form and four times that for the API (default
25; explore locally with ``FUZZ_EXAMPLES=500 FUZZ_RANDOM=1``).
"""

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import urlencode

import pytest
import time_machine
from auditlog.models import LogEntry
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.db import transaction
from django.test import Client
from django.urls import reverse
from django_otp.plugins.otp_totp.models import TOTPDevice
from guardian.models import GroupObjectPermission, UserObjectPermission
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accessgov.ledger.verify import verify_chain
from accessgov.models import (
    AccessEvent,
    AccessRequest,
    ApiToken,
    BreakGlassFollowUp,
    ChangeRequest,
    Decision,
    Eligibility,
    Grant,
    OutboxItem,
    ReviewCampaign,
    ReviewItem,
    Role,
    User,
)
from accessgov.services import access_requests as ar
from accessgov.services import changes, reviews
from accessgov.services import grants as gs
from tests.conftest import PASSWORD, totp_code, verify_session
from tests.support.api_helpers import make_token
from tests.support.factories import RoleFactory

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
H = timedelta(hours=1)
JUSTIFICATION = "Investigating incident INC-42 on payments"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
RANDOM = os.environ.get("FUZZ_RANDOM") == "1"  # explore new examples locally; CI runs the same ones

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not RANDOM,
    database=None,
    print_blob=False,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # the world is built once; each example is rolled back
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)

# --- Hostile values -------------------------------------------------------------------------------

TRICKY = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\u00b2",  # superscript two: str.isdigit() is true, int() refuses it
    "\uff11\uff12",  # fullwidth digits: \d matches, int() reads 12
    "\u0661\u0662",  # Arabic-Indic digits
    "\U0001d7d9",  # mathematical double-struck one
    "99999999999999999999",
    "9223372036854775808",  # bigint + 1
    "-1",
    "0",
    "1e309",
    "NaN",
    "Infinity",
    "1.5",
    "0x10",
    "9999-12-31",
    "0001-01-01",
    "99999-01-01",
    "2026-02-30",
    "02/03/2026",
    "9999-12-31T23:59",
    "0001-01-01T00:00",
    "2026-13-01T25:61",
    "9999-12-31T23:59:59-12:00",
    "1h",
    "99999999999h",
    "400d",
    "1h30m",
    "<script>alert(1)</script>",
    "' OR '1'='1",
    "%00",
    "../../etc/passwd",
    "\u202eevil",
    "\ufeff",
    "a\r\nX-Injected: 1",
    "=cmd|' /C calc'!A0",
    "[" * 50,
    "a" * 3000,
    "x" * 1_000_000,
]


def _far_moments() -> st.SearchStrategy[str]:
    formats = ["%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%SZ"]
    moments = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59))  # noqa: DTZ001
    return st.tuples(moments, st.sampled_from(formats)).map(lambda pair: pair[0].strftime(pair[1]))


def hostile_text() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(TRICKY),
        st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=30),
        st.integers(min_value=-(2**70), max_value=2**70).map(str),
        _far_moments(),
    )


def json_values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**80), max_value=2**80),
        st.floats(allow_nan=True, allow_infinity=True),
        hostile_text(),
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
        max_leaves=6,
    )


@st.composite
def corrupted(draw, valid: dict, extra_names: tuple[str, ...] = ()) -> dict:
    """``valid`` with up to three fields (or extra names) replaced by hostile values or lists of them."""
    names = sorted(set(valid) | set(extra_names))
    chosen = draw(st.sets(st.sampled_from(names), max_size=3)) if names else set()
    data = dict(valid)
    for name in chosen:
        data[name] = draw(st.one_of(hostile_text(), st.lists(hostile_text(), min_size=1, max_size=3)))
    return data


# --- What must not be half-written ------------------------------------------------------------------

# State whose every change is evidence: a change here must come with new access events.
EVIDENCED = [
    AccessRequest,
    Decision,
    Grant,
    Eligibility,
    ReviewCampaign,
    ReviewItem,
    BreakGlassFollowUp,
    OutboxItem,
    ChangeRequest,
]
# Everything a refused input must leave alone (bookkeeping columns excluded).
WATCHED = [*EVIDENCED, AccessEvent, ApiToken, User, Group, UserObjectPermission, GroupObjectPermission, LogEntry]
BOOKKEEPING = {ApiToken: {"last_used_at", "last_used_address"}, User: {"last_login"}}


def snapshot() -> dict[str, list[tuple]]:
    rows = {}
    for model in WATCHED:
        skip = BOOKKEEPING.get(model, set())
        fields = [f.attname for f in model._meta.concrete_fields if f.attname not in skip]
        rows[model.__name__] = list(model.objects.order_by("pk").values_list(*fields))
    return rows


@contextmanager
def example(scene: "Scene"):
    """One example: a fresh cache (throttles, cached lists), in a savepoint rolled back afterwards; the
    clients' cookies are put back too (a sign-in or a password change rotates the session, whose new
    row the rollback removes)."""
    cache.clear()
    cookies = {name: SimpleCookie(client.cookies.output(header="", sep=";")) for name, client in scene.clients.items()}
    try:
        with transaction.atomic():
            yield
            transaction.set_rollback(True)
    finally:
        for name, client in scene.clients.items():
            client.cookies = cookies[name]


def check(response, before: dict, what: str) -> None:
    """No 5xx; a refusal wrote nothing; an accepted change is in the ledger, whose chain holds."""
    error = getattr(response, "exc_info", None)
    assert response.status_code < 500, f"{what}: {response.status_code} {error and error[1]!r}"
    after = snapshot()
    if response.status_code >= 400:
        changed = [name for name in before if before[name] != after[name]]
        assert not changed, f"{what}: refused ({response.status_code}) but wrote {changed}"
        return
    changed = [m.__name__ for m in EVIDENCED if before[m.__name__] != after[m.__name__]]
    if changed:
        assert len(after["AccessEvent"]) > len(before["AccessEvent"]), f"{what}: {changed} changed without an event"
        report = verify_chain()
        assert report.ok, f"{what}: {report.problem}"


# --- The world -------------------------------------------------------------------------------------


@dataclass
class Scene:
    world: Any
    clients: dict[str, Client] = field(default_factory=dict)
    users: dict[str, Any] = field(default_factory=dict)
    ids: dict[str, Any] = field(default_factory=dict)


@pytest.fixture
def scene(world, make_user):
    """Every object a form or endpoint can act on, and a verified session and a token per persona."""
    with time_machine.travel(T0, tick=True):
        w = world
        w.role.break_glass_allowed = True
        w.role.save()
        pending = ar.access_request_submit(w.requester, role=w.role, duration=H, justification=JUSTIFICATION)
        granted = ar.access_request_submit(w.requester, role=w.role_two, duration=H, justification=JUSTIFICATION)
        ar.access_request_approve(w.approver, granted.pk)
        ar.access_request_approve(w.approver2, granted.pk)
        grant = Grant.objects.get(access_request=granted)
        Eligibility.objects.create(role=w.role, user=w.approver, starts_at=T0 - H)
        read_only = RoleFactory(system=w.system, name="read-only", ticket_pattern=r"[A-Z]+-\d+")
        Eligibility.objects.create(role=read_only, user=w.requester, starts_at=T0 - H)
        glass = gs.break_glass_activate(w.approver, role=w.role, justification=JUSTIFICATION, duration=H, step_up_at=T0)
        campaign = reviews.review_campaign_create(
            w.auditor, name="Q1 review", systems=[w.system], due_at=T0 + timedelta(days=14)
        )
        admin1 = make_user("admin1", is_staff=True, is_superuser=True)
        admin2 = make_user("admin2", is_staff=True, is_superuser=True)
        role = Role.objects.get(pk=w.role.pk)
        role.approvals_required = 2
        change = changes.change_propose(
            admin1, kind=ChangeRequest.Kind.ROLE, instance=role, fields=["approvals_required"]
        )
        token, _ = make_token(w.requester, name="laptop")
        scene = Scene(world=w)
        for persona, user in [
            ("requester", w.requester),
            ("approver", w.approver),
            ("owner", w.owner),
            ("auditor", w.auditor),
            ("outsider", w.outsider),
            ("admin", admin2),
        ]:
            scene.users[persona] = user
            scene.clients[persona] = verify_session(Client(raise_request_exception=False), user)
            _, secret = make_token(user, name=f"{persona}-fuzz")
            scene.clients[f"api:{persona}"] = Client(
                raise_request_exception=False, headers={"Authorization": f"Bearer {secret}"}
            )
        scene.clients["anonymous"] = Client(raise_request_exception=False)
        newcomer = make_user("newcomer", device=False)
        for persona, user in [("half", w.requester), ("newcomer", newcomer)]:  # password-only sessions
            scene.users[persona] = user
            scene.clients[persona] = Client(raise_request_exception=False)
            scene.clients[persona].post(reverse("accounts:login"), {"username": user.username, "password": PASSWORD})
        scene.ids = {
            "pending": pending.pk,
            "grant": grant.pk,
            "glass_follow_up": BreakGlassFollowUp.objects.get(grant=glass).pk,
            "campaign": campaign.pk,
            "item": campaign.items.order_by("pk").first().pk,
            "eligibility": Eligibility.objects.filter(user=w.requester, role=w.role).get().pk,
            "change": change.pk,
            "token": token.pk,
            "outbox": OutboxItem.objects.filter(grant=grant).order_by("pk").first().pk,
            "slug": w.system.slug,
            "role": w.role.pk,
            "role_two": w.role_two.pk,
            "role_three": read_only.pk,
            "system": w.system.pk,
            "owner": w.owner.pk,
            "auditor": w.auditor.pk,
        }
    with time_machine.travel(T0 + timedelta(minutes=10), tick=True):
        yield scene


# --- Page forms (POST) ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PageForm:
    persona: str
    url: str  # a URL name
    args: tuple[str, ...] = ()  # keys of Scene.ids
    valid: tuple[tuple[str, Any], ...] = ()  # field -> value, or "@key" for an id from Scene.ids

    def data(self, scene: "Scene") -> dict:
        return {k: _resolve(v, scene, self.persona) for k, v in self.valid}


def _resolve(value, scene: "Scene", persona: str):
    """An "@key" value is an id from Scene.ids; "@totp" the persona's current authenticator code."""
    if value == "@totp":
        return totp_code(TOTPDevice.objects.get(user=scene.users[persona], confirmed=True))
    return scene.ids[value[1:]] if isinstance(value, str) and value.startswith("@") else value


PAGE_FORMS = {
    "request": PageForm(
        "requester",
        "request_new",
        valid=(
            ("role", "@role_three"),
            ("duration", "1h"),
            ("starts_at", ""),
            ("justification", JUSTIFICATION),
            ("ticket", "OPS-1"),
        ),
    ),
    "extend": PageForm(
        "requester", "grant_extend", ("grant",), (("duration", "30m"), ("justification", JUSTIFICATION), ("ticket", ""))
    ),
    "approve": PageForm(
        "approver",
        "request_approve",
        ("pending",),
        (("comment", "ok"), ("duration", "30m"), ("otp_token", ""), ("back", "/approvals/")),
    ),
    "deny": PageForm("approver", "request_deny", ("pending",), (("comment", "no"), ("otp_token", ""))),
    "cancel": PageForm("requester", "request_cancel", ("pending",)),
    "break-glass": PageForm(
        "requester",
        "break_glass",
        valid=(("role", "@role"), ("duration", "1h"), ("justification", JUSTIFICATION), ("otp_token", "@totp")),
    ),
    "revoke": PageForm("approver", "grant_revoke", ("grant",), (("reason", "Done with it"), ("confirm", "yes"))),
    "release": PageForm("requester", "grant_release", ("grant",), (("confirm", "yes"),)),
    "acknowledge": PageForm("auditor", "follow_up_acknowledge", ("glass_follow_up",), (("reason", "Seen"),)),
    "eligibility": PageForm(
        "owner",
        "eligibility_add",
        ("slug",),
        (("role", "@role"), ("user", "@auditor"), ("group", ""), ("ends_at", "2026-06-01"), ("reason", "On call")),
    ),
    "eligibility-end": PageForm(
        "owner", "eligibility_end", ("eligibility",), (("reason", "Left the team"), ("confirm", "yes"))
    ),
    "review": PageForm(
        "auditor",
        "review_new",
        valid=(
            ("name", "Q2 review"),
            ("systems", "@system"),
            ("due_at", "2026-03-20T09:00"),
            ("no_response", "revoke"),
            ("keep_days", "90"),
            ("grace_days", "2"),
            ("long_grant_days", "7"),
        ),
    ),
    "review-decide": PageForm("owner", "review_item_decide", ("item",), (("decision", "revoke"), ("comment", "Gone"))),
    "review-keep": PageForm("owner", "review_bulk_keep", ("campaign",), (("items", "@item"), ("confirm", "yes"))),
    "review-reassign": PageForm("auditor", "review_item_reassign", ("item",), (("reviewer", "@auditor"),)),
    "review-close": PageForm("auditor", "review_close", ("campaign",), (("confirm", "yes"),)),
    "token": PageForm(
        "requester",
        "accounts:tokens",
        valid=(("name", "deploy job"), ("lifetime_days", "30"), ("scopes", "requests:read")),
    ),
    "token-revoke": PageForm("requester", "accounts:token_revoke", ("token",), (("confirm", "yes"),)),
    "change-approve": PageForm("admin", "change_approve", ("change",)),
    "change-reject": PageForm("admin", "change_reject", ("change",), (("comment", "Not now"),)),
    "audit-verify": PageForm("auditor", "audit_verify"),
    "step-up": PageForm("requester", "accounts:step_up", valid=(("otp_token", "@totp"), ("next", "/"))),
    "password": PageForm(
        "outsider",
        "accounts:password_change",
        valid=(
            ("old_password", "correct horse battery staple"),
            ("new_password1", "another long passphrase 42"),
            ("new_password2", "another long passphrase 42"),
        ),
    ),
    "sign-in": PageForm("anonymous", "accounts:login", valid=(("username", "requester"), ("password", "wrong"))),
    "otp-step": PageForm("half", "accounts:otp", valid=(("otp_token", "@totp"), ("next", "/"))),
    "enrol": PageForm("newcomer", "accounts:enrol", valid=(("otp_token", "123456"),)),
    "backup-codes": PageForm("requester", "accounts:backup_codes"),
    "authenticator-reset": PageForm("requester", "accounts:authenticator_reset", valid=(("otp_token", "@totp"),)),
    "sign-out": PageForm("requester", "accounts:logout"),
    "manual-task": PageForm("owner", "manual_task_done", ("outbox",)),
}


@pytest.mark.parametrize("group", ["requests", "grants", "reviews", "admin and accounts"])
def test_no_page_form_answers_5xx_or_half_writes_whatever_it_is_sent(scene, group):
    names = {
        "requests": ["request", "approve", "deny", "cancel", "break-glass"],
        "grants": ["extend", "revoke", "release", "acknowledge", "eligibility", "eligibility-end", "manual-task"],
        "reviews": ["review", "review-decide", "review-keep", "review-reassign", "review-close"],
        "admin and accounts": [
            "token",
            "token-revoke",
            "change-approve",
            "change-reject",
            "audit-verify",
            "step-up",
            "password",
            "sign-in",
            "otp-step",
            "enrol",
            "backup-codes",
            "authenticator-reset",
            "sign-out",
        ],
    }[group]

    @settings(FUZZ, max_examples=EXAMPLES * len(names) // 5)  # about EXAMPLES / 5 per form
    @given(st.data())
    def run(data):
        name = data.draw(st.sampled_from(names), label="form")
        form = PAGE_FORMS[name]
        valid = form.data(scene)
        posted = data.draw(corrupted(valid, extra_names=("extra",)), label="data")
        htmx = data.draw(st.booleans(), label="htmx")
        url = reverse(form.url, args=[scene.ids[key] for key in form.args])
        headers = {"HX-Request": "true"} if htmx else {}
        with example(scene):
            before = snapshot()
            response = scene.clients[form.persona].post(url, posted, headers=headers)
            check(response, before, f"POST {url}")

    run()


# --- Filters and exports (GET) --------------------------------------------------------------------

FILTER_PAGES = {
    "audit_trail": (
        "auditor",
        ["event_type", "actor", "system", "access_request", "grant", "since", "until", "before", "back"],
    ),
    "audit_export": ("auditor", ["event_type", "actor", "system", "access_request", "grant", "since", "until"]),
    "model_changes": ("auditor", ["model", "before", "back"]),
    "grants_list": ("auditor", ["system", "role", "status", "user", "break_glass", "before", "after", "back", "q"]),
    "inbox": ("requester", ["q", "unread", "before"]),
    "approvals": ("approver", ["system", "risk"]),
    "request_new": ("requester", ["role"]),
    "system_list": ("outsider", []),
    "home": ("requester", ["next"]),
    "break_glass_follow_ups": ("auditor", []),
    "provisioning": ("owner", []),
    "reviews": ("owner", []),
    "changes": ("admin", []),
}
REPORT_FILTERS = [
    "since",
    "until",
    "system",
    "role",
    "user",
    "outcome",
    "sort",
    "after",
    "back",
    "requester",
    "approver",
]
for _report in ("report_access", "report_approvals", "report_break_glass", "report_denied"):
    FILTER_PAGES[_report] = ("auditor", REPORT_FILTERS)
    FILTER_PAGES[f"{_report}_export"] = ("auditor", REPORT_FILTERS)


@pytest.mark.parametrize("group", ["audit and lists", "reports"])
def test_no_filter_page_or_export_answers_5xx_or_writes_on_a_refusal(scene, group):
    names = sorted(n for n in FILTER_PAGES if n.startswith("report_") == (group == "reports"))

    @FUZZ
    @given(st.data())
    def run(data):
        name = data.draw(st.sampled_from(names), label="page")
        persona, params = FILTER_PAGES[name]
        keys = data.draw(st.lists(st.sampled_from([*params, "page", "x"]), max_size=4), label="params")
        query = {key: data.draw(st.one_of(hostile_text(), st.just(str(scene.ids["grant"]))), label=key) for key in keys}
        with example(scene):
            before = snapshot()
            response = scene.clients[persona].get(reverse(name), query)
            if response.streaming:
                b"".join(response.streaming_content)  # the export runs while it streams
            check(response, before, f"GET {name} {query!r}")

    run()


# --- The admin: a role's policy and an eligibility, as proposals -----------------------------------


def test_no_admin_policy_form_answers_5xx_whatever_it_is_sent(scene):
    from tests.support.admin_forms import post_admin_form

    forms = {
        "role": (
            reverse("admin:accessgov_role_change", args=[scene.ids["role"]]),
            "role_form",
            {},
            ["name", "max_duration", "default_duration", "pending_timeout", "approvals_required", "ticket_pattern"],
        ),
        "eligibility": (
            reverse("admin:accessgov_eligibility_add"),
            "eligibility_form",
            {"role": scene.ids["role_two"], "user": scene.ids["auditor"], "reason": "On call"},
            ["role", "user", "group", "starts_at_0", "starts_at_1", "ends_at_0", "ends_at_1", "reason"],
        ),
    }

    @FUZZ
    @given(st.data())
    def run(data):
        url, form_id, valid, fields = forms[data.draw(st.sampled_from(sorted(forms)), label="form")]
        hostile = {k: data.draw(hostile_text(), label=k) for k in data.draw(st.sets(st.sampled_from(fields)))}
        with example(scene):
            before = snapshot()
            response = post_admin_form(scene.clients["admin"], url, form_id, **{**valid, **hostile})
            check(response, before, f"admin {form_id} {hostile!r}")

    run()


# --- The API --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    persona: str
    method: str
    path: str  # with {pk} for the object
    pk: str = ""  # key of Scene.ids
    params: tuple[str, ...] = ()
    body: tuple[tuple[str, Any], ...] = ()


API = [
    Endpoint("requester", "get", "/api/v1/requests/", params=("status", "cursor", "page_size")),
    Endpoint(
        "requester",
        "post",
        "/api/v1/requests/",
        body=(("role_id", "@role_three"), ("duration_seconds", 3600), ("justification", JUSTIFICATION), ("ticket", "")),
    ),
    Endpoint("requester", "get", "/api/v1/requests/{pk}/", "pending"),
    Endpoint("requester", "post", "/api/v1/requests/{pk}/cancel/", "pending"),
    Endpoint(
        "approver",
        "post",
        "/api/v1/requests/{pk}/approve/",
        "pending",
        body=(("comment", "ok"), ("duration_seconds", 1800)),
    ),
    Endpoint("approver", "post", "/api/v1/requests/{pk}/deny/", "pending", body=(("comment", "no"),)),
    Endpoint("approver", "get", "/api/v1/decisions/"),
    Endpoint("requester", "get", "/api/v1/grants/", params=("status", "active", "cursor", "page_size")),
    Endpoint("requester", "get", "/api/v1/grants/{pk}/", "grant"),
    Endpoint("requester", "post", "/api/v1/grants/{pk}/release/", "grant"),
    Endpoint("requester", "get", "/api/v1/systems/", params=("cursor", "page_size")),
    Endpoint("requester", "get", "/api/v1/roles/", params=("system", "eligible", "cursor")),
    Endpoint("requester", "get", "/api/v1/roles/{pk}/", "role"),
    Endpoint("owner", "get", "/api/v1/eligibility/", params=("cursor", "page_size")),
    Endpoint("auditor", "get", "/api/v1/events/", params=("event_type", "access_request", "grant", "cursor")),
    Endpoint("requester", "get", "/api/schema/", params=("format", "lang")),
    Endpoint("requester", "get", "/api/v1/{pk}/", "slug"),
]

RAW_BODIES = [
    b"[" * 100_000,
    b'{"a":' * 50_000,
    b"[" * 40 + b"]" * 40,
    b'{"comment": "' + b"x" * 3_000_000 + b'"}',
    b"\xff\xfe\x00{",
    b'{"duration_seconds": 1e999}',
    b'{"duration_seconds": NaN}',
    b'{"justification": "\\u0000"}',
    b'{"role_id": 99999999999999999999999}',
    b'{"starts_at": "9999-12-31T23:59:59-12:00"}',
    b'{"a": 1' + b"1" * 5000 + b"}",
    b"",
    b"null",
    b'"text"',
]


@st.composite
def api_requests(draw, scene: Scene):
    endpoint = draw(st.sampled_from(API), label="endpoint")
    pk = draw(
        st.one_of(
            st.just(scene.ids.get(endpoint.pk, "")),
            st.integers(min_value=0, max_value=2**70),
            hostile_text().filter(lambda s: "/" not in s and "?" not in s and "#" not in s),
        ),
        label="pk",
    )
    path = endpoint.path.format(pk=pk)
    keys = draw(st.lists(st.sampled_from([*endpoint.params, "x"]), max_size=3), label="params")
    query = {key: draw(hostile_text(), label=key) for key in keys}
    content_type, body = "application/json", b""
    if endpoint.method == "post":
        kind = draw(st.sampled_from(["fields", "any json", "raw", "form"]), label="body kind")
        valid = {k: _resolve(v, scene, endpoint.persona) for k, v in endpoint.body}
        if kind == "fields":
            fields = dict(valid)
            for name in draw(st.sets(st.sampled_from([*valid, "status", "requester"]), max_size=3)):
                fields[name] = draw(json_values(), label=name)
            body = json.dumps(fields).encode()
        elif kind == "any json":
            body = json.dumps(draw(json_values())).encode()
        elif kind == "raw":
            body = draw(st.sampled_from(RAW_BODIES))
        else:
            content_type = draw(st.sampled_from(["application/x-www-form-urlencoded", "text/plain"]))
            body = f"comment={draw(hostile_text())}".encode(errors="replace")
    return endpoint, path, query, content_type, body


def test_no_api_endpoint_answers_5xx_or_half_writes_and_refusals_are_in_the_error_format(scene):
    @settings(FUZZ, max_examples=EXAMPLES * 4)
    @given(st.data())
    def run(data):
        endpoint, path, query, content_type, body = data.draw(api_requests(scene))
        client = scene.clients[f"api:{endpoint.persona}"]
        with example(scene):
            before = snapshot()
            if endpoint.method == "get":
                response = client.get(path, query)
            else:
                url = f"{path}?{urlencode(query)}" if query else path
                response = client.post(url, body, content_type=content_type)
            what = f"{endpoint.method.upper()} {path} {query!r} {body[:120]!r}"
            check(response, before, what)
            if response.status_code >= 400:
                assert response["Content-Type"] == "application/json", what
                error = response.json()["error"]
                assert error["code"] and error["message"], what

    run()
