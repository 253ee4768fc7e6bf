"""Shared fixtures: personas, real TOTP codes, signed-in clients, and service gates.

Tests that need PostgreSQL, Redis, Chromium or an external tool carry a marker; without the service
they skip with the reason, and with REQUIRE_SERVICES=1 (CI) that skip becomes a failure.
"""

import os
import shutil
import time

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from accessgov import otp
from tests.support.factories import UserFactory

# Fixtures shared by several test modules live in tests/support/ and are registered here.
pytest_plugins = ["tests.support.provisioning", "tests.support.identity_support", "tests.support.security_world"]

REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"


def _redis_database_per_worker() -> None:
    """Under pytest-xdist (CI runs two workers) each worker gets its own Redis database — REDIS_URL's number
    minus the worker's — so one worker's ``flushdb`` or queue never drops or counts another's messages."""
    from urllib.parse import urlsplit, urlunsplit

    url, worker = os.environ.get("REDIS_URL"), os.environ.get("PYTEST_XDIST_WORKER", "")
    if not url or not worker.startswith("gw"):
        return
    parts = urlsplit(url)
    database = int(parts.path.lstrip("/") or 0)
    os.environ["REDIS_URL"] = urlunsplit(parts._replace(path=f"/{(database - int(worker[2:])) % 16}"))


_redis_database_per_worker()
CHROMIUM_PATH = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
PASSWORD = "correct horse battery staple"


def pytest_report_header(config):
    from django.conf import settings

    database = settings.DATABASES["default"]
    where = f"{database['ENGINE'].rsplit('.', 1)[-1]} {database.get('HOST') or database['NAME']}"
    return f"AccessGov tests on {where} (DATABASE_URL, or PostgreSQL on 127.0.0.1 when one answers)"


def _postgres_missing() -> str | None:
    if connection.vendor != "postgresql":
        return "needs PostgreSQL: set DATABASE_URL=postgres://… (the suite is running on SQLite)"
    return None


def _redis_missing() -> str | None:
    url = os.environ.get("REDIS_URL")
    if not url:
        return "needs Redis: set REDIS_URL=redis://127.0.0.1:6379/15"
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except Exception as exc:
        return f"needs Redis: {url} is not reachable ({exc.__class__.__name__})"
    return None


def _browser_missing() -> str | None:
    if not os.path.exists(CHROMIUM_PATH):
        return f"needs Chromium at {CHROMIUM_PATH} (Debian package 'chromium', or set CHROMIUM_PATH)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "needs the playwright Python package"
    return None


def _oathtool_missing() -> str | None:
    return None if shutil.which("oathtool") else "needs oathtool (Debian package 'oathtool')"


SERVICE_GATES = {
    "postgres": _postgres_missing,
    "redis": _redis_missing,
    "browser": _browser_missing,
    "tools": _oathtool_missing,
}


@pytest.fixture(autouse=True)
def _settings_restored(request):
    """A test leaves Django's settings as it found them: one that did not (``@override_settings`` beside the
    ``settings`` fixture restores the decorator's state after the decorator ended) opened the outbound guard for
    every later test of its worker. Checked after every other fixture of the test has been torn down; the
    settings are put back, so that one leak fails one test."""
    from django.conf import settings

    wrapped = settings._wrapped
    before = dict(vars(wrapped))
    yield
    if settings._wrapped is not wrapped:  # an override left in place
        left = sorted(name for name in vars(settings._wrapped) if name.isupper())
        settings._wrapped = wrapped
        pytest.fail(f"{request.node.nodeid} left settings overridden: {', '.join(left)}", pytrace=False)
    after = vars(wrapped)
    changed = sorted(
        name for name in before.keys() | after.keys() if _differs(before.get(name, _MISSING), after.get(name, _MISSING))
    )
    if changed:
        for name in changed:
            if name in before:
                setattr(wrapped, name, before[name])
            else:
                delattr(wrapped, name)
        pytest.fail(f"{request.node.nodeid} left settings changed: {', '.join(changed)}", pytrace=False)


_MISSING = object()


def _differs(a, b) -> bool:
    try:
        return a is not b and bool(a != b)
    except Exception:  # a value that cannot be compared: by identity
        return True


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Cached filter choices, report summaries and the database clock's offset never leak from one test into
    the next."""
    from django.core.cache import cache

    from accessgov import catalog, clock, permissions

    cache.clear()
    catalog.forget()  # the filter forms' system and role lists, kept in the process
    permissions._dependency_ids.clear()  # the queue's per-process memo of who may not decide whose requests
    clock.forget()


@pytest.fixture(autouse=True)
def _service_gate(request):
    for marker, missing in SERVICE_GATES.items():
        if request.node.get_closest_marker(marker) is None:
            continue
        reason = missing()
        if reason and REQUIRE_SERVICES:
            pytest.fail(f"REQUIRE_SERVICES=1 but this test {reason}", pytrace=False)
        if reason:
            pytest.skip(reason)


# --- TOTP -------------------------------------------------------------------------------------


def totp_code(device: TOTPDevice, at: float | None = None) -> str:
    """The code an authenticator app shows for ``device`` at ``at`` (now by default)."""
    generator = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    generator.time = time.time() if at is None else at
    return f"{generator.token():0{device.digits}d}"


def add_totp_device(user) -> TOTPDevice:
    return TOTPDevice.objects.create(user=user, name="Authenticator app", confirmed=True)


# --- Personas ---------------------------------------------------------------------------------


@pytest.fixture
def make_user(db):
    def make(username: str | None = None, *, device: bool = True, backup_codes: bool = False, **extra):
        kwargs = {"username": username} if username else {}
        user = UserFactory(**kwargs, **extra)
        if device:
            add_totp_device(user)
        if backup_codes:
            user.backup_codes = otp.new_backup_codes(user)
        return user

    return make


@pytest.fixture
def requester(make_user):
    return make_user("requester", backup_codes=True)


@pytest.fixture
def admins(make_user):
    """Two portal admins (staff, superuser, with authenticators): the proposer and the second pair of eyes."""
    return make_user("admin1", is_staff=True, is_superuser=True), make_user("admin2", is_staff=True, is_superuser=True)


@pytest.fixture
def newcomer(make_user):
    """A user who has never enrolled an authenticator."""
    return make_user("newcomer", device=False)


def sign_in(client: Client, user, *, otp_step: bool = True) -> Client:
    """Sign ``user`` in through the real two steps (password, then a real TOTP code)."""
    response = client.post(reverse("accounts:login"), {"username": user.username, "password": PASSWORD})
    assert response.status_code == 302, response.content
    if otp_step:
        device = TOTPDevice.objects.get(user=user, confirmed=True)
        response = client.post(reverse("accounts:otp"), {"otp_token": totp_code(device)})
        assert response.status_code == 302, response.content
    return client


@pytest.fixture
def verified_client(client, requester):
    return sign_in(client, requester)


def verify_session(client: Client, user) -> Client:
    """A verified session without spending a TOTP code (for crawls; sign-in itself is tested apart)."""
    from django_otp import DEVICE_ID_SESSION_KEY

    client.force_login(user)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = TOTPDevice.objects.get(user=user, confirmed=True).persistent_id
    session.save()
    return client


# --- The lifecycle world: a system, roles, an eligible requester and approvers ----------------


@pytest.fixture
def world(make_user):
    """requester (eligible), approver + second approver (guardian approve_role), owner (own_system),
    auditor (audit_access via group), outsider (nothing); a 1-approval role and a 2-approval role."""
    from datetime import UTC, datetime, timedelta

    from django.contrib.auth.models import Group, Permission
    from guardian.shortcuts import assign_perm

    from accessgov.models import Eligibility
    from tests.support.factories import RoleFactory, SystemFactory

    class World:
        pass

    w = World()
    w.system = SystemFactory(name="Payments DB", slug="payments-db")
    w.role = RoleFactory(
        system=w.system,
        name="read-write",
        approvals_required=1,
        default_duration=timedelta(hours=1),
        max_duration=timedelta(hours=4),
    )
    w.role_two = RoleFactory(
        system=w.system,
        name="admin",
        approvals_required=2,
        risk_tier="high",
        default_duration=timedelta(hours=1),
        max_duration=timedelta(hours=2),
    )
    w.requester = make_user("requester", backup_codes=True)
    w.approver = make_user("approver")
    w.approver2 = make_user("approver2")
    w.owner = make_user("owner")
    w.auditor = make_user("auditor")
    w.outsider = make_user("outsider")
    # Eligible since long before any instant a test travels to (tests pin dates such as T0).
    since = datetime(2020, 1, 1, tzinfo=UTC)
    for role in (w.role, w.role_two):
        Eligibility.objects.create(role=role, user=w.requester, starts_at=since)
        assign_perm("accessgov.approve_role", w.approver, role)
    approvers = Group.objects.create(name="payments approvers")
    w.approver2.groups.add(approvers)
    assign_perm("accessgov.approve_system", approvers, w.system)
    assign_perm("accessgov.own_system", w.owner, w.system)
    auditors = Group.objects.create(name="auditor")
    auditors.permissions.add(Permission.objects.get(codename="audit_access"))
    w.auditor.groups.add(auditors)
    return w


@pytest.fixture(autouse=True)
def _reset_celery_join_guard():
    """Eager tasks run from test threads can leave Celery's process-wide "inside a task" flag set,
    which then makes every later ``result.get()`` in this process refuse to wait. Reset it per test."""
    yield
    from celery import _state

    _state._set_task_join_will_block(False)


# Integration fixtures (fake providers on loopback, provider settings pointing at them).
from tests.support.integration_world import at_t0, fake, github_provider, jira_provider, pagerduty  # noqa: E402, F401

# --- Evidence packs ----------------------------------------------------------------------------


@pytest.fixture
def signing_key(settings, tmp_path):
    """The operator's key, made for this test; packs go to a temporary EVIDENCE_DIR."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from accessgov.evidence import signing

    key = Ed25519PrivateKey.generate()
    settings.EVIDENCE_SIGNING_KEY = signing.private_key_pem(key).decode()
    settings.EVIDENCE_SIGNING_KEY_FILE = ""
    settings.EVIDENCE_DIR = tmp_path / "evidence"
    public = tmp_path / "accessgov-evidence-key.pem"
    public.write_text(signing.public_key_pem(key.public_key()))
    return public


# --- A private PostgreSQL cluster with pgaudit and pg_stat_statements (activity capture tests) ----------


@pytest.fixture(scope="session")
def pg_cluster():
    """One private PostgreSQL target cluster for the whole session (tests/support/pg_cluster.py), started on first
    use and stopped by its PID at the end. Skips (fails with REQUIRE_SERVICES=1) without initdb or pgaudit."""
    from tests.support import pg_cluster as cluster_module

    reason = cluster_module.missing()
    if reason and REQUIRE_SERVICES:
        pytest.fail(f"REQUIRE_SERVICES=1 but the private target cluster {reason}", pytrace=False)
    if reason:
        pytest.skip(reason)
    cluster = cluster_module.PrivateCluster()
    try:
        yield cluster.start()
    finally:
        cluster.stop()
