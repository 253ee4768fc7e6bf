"""The one-read signed-in stack (accessgov/signed_in.py) decides exactly what Django's ``get_user`` and
django-otp's middleware decide, for every kind of session: who is signed in, which device verified them,
and what is left of the session afterwards (flushed, re-keyed, device id dropped)."""

from datetime import timedelta

import pytest
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore as StockSessionStore
from django.contrib.sessions.models import Session
from django.test import RequestFactory
from django.utils import timezone
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice

from accessgov import signed_in
from accessgov.models import User

MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"
OIDC_BACKEND = "accessgov.identity.oidc.OIDCBackend"
OLD_SECRET = "an-old-secret-key-that-signed-sessions-before-the-rotation-0123456789"


def _outcome(path: str, data: dict) -> dict:
    """Run one path over a fresh session holding ``data``: what it decided and what it left."""
    session = signed_in.SessionStore()
    session.update(data)
    session.create()
    key = session.session_key
    request = RequestFactory().get("/")
    request.session = signed_in.SessionStore(key)
    try:
        user = signed_in.user_of(request) if path == "one read" else signed_in._stock(request)
    except Exception as error:  # both paths must fail the same way, too
        return {"raised": type(error).__name__}
    return {
        "user": user.pk,
        "authenticated": user.is_authenticated,
        "verified": user.is_verified(),
        "device": (type(user.otp_device).__name__, user.otp_device.pk) if user.otp_device else None,
        "session": dict(request.session.items()),
        "re-keyed": request.session.session_key not in (key, None),
        "flushed": request.session.session_key is None,
    }


def _session(user: User, backend: str = MODEL_BACKEND, device: str | None = "totp", **extra) -> dict:
    data = {SESSION_KEY: str(user.pk), BACKEND_SESSION_KEY: backend, HASH_SESSION_KEY: user.get_session_auth_hash()}
    if device == "totp":
        data[DEVICE_ID_SESSION_KEY] = TOTPDevice.objects.get(user=user, confirmed=True).persistent_id
    elif device is not None:
        data[DEVICE_ID_SESSION_KEY] = device
    return {**data, **extra}


@pytest.fixture
def people(make_user):
    alice = make_user("alice")
    bob = make_user("bob")
    backup = StaticDevice.objects.create(user=alice, name="backup", confirmed=True)
    pending = TOTPDevice.objects.create(user=alice, name="new phone", confirmed=False)
    return alice, bob, backup, pending


def _cases(people) -> dict[str, dict]:
    alice, bob, backup, pending = people
    bobs_device = TOTPDevice.objects.get(user=bob).persistent_id
    return {
        "nobody": {},
        "verified with an authenticator": _session(alice),
        "verified with backup codes": _session(alice, device=backup.persistent_id),
        "password only": _session(alice, device=None),
        "an empty device id": _session(alice, device=""),
        "another person's device": _session(alice, device=bobs_device),
        "an unconfirmed device": _session(alice, device=pending.persistent_id),
        "a device that no longer exists": _session(alice, device="otp_totp.totpdevice/999999"),
        "a malformed device id": _session(alice, device="otp_totp.totpdevice/abc"),
        "a device id without a number": _session(alice, device="otp_totp.totpdevice/"),
        "a device id in non-ASCII digits": _session(alice, device="otp_totp.totpdevice/\uff11\uff12"),
        "a legacy device id (full import path)": _session(
            alice,
            device=f"django_otp.plugins.otp_totp.models.TOTPDevice/{TOTPDevice.objects.get(user=alice, confirmed=True).pk}",
        ),
        "a device model that is not a device": _session(alice, device="auth.group/1"),
        "an unknown app in the device id": _session(alice, device="nope.nothing/1"),
        "signed in through OIDC": _session(alice, backend=OIDC_BACKEND),
        "a backend not configured": _session(alice, backend="django.contrib.auth.backends.RemoteUserBackend"),
        "a stale session hash (password changed)": _session(alice, **{HASH_SESSION_KEY: "0" * 64}),
        "no session hash": {k: v for k, v in _session(alice).items() if k != HASH_SESSION_KEY},
        "a user that no longer exists": {**_session(alice), SESSION_KEY: "999999"},
        "a user id that is not a number": {**_session(alice), SESSION_KEY: "abc"},
        "no backend": {k: v for k, v in _session(alice).items() if k != BACKEND_SESSION_KEY},
    }


CASE_NAMES = [
    "nobody",
    "verified with an authenticator",
    "verified with backup codes",
    "password only",
    "an empty device id",
    "another person's device",
    "an unconfirmed device",
    "a device that no longer exists",
    "a malformed device id",
    "a device id without a number",
    "a device id in non-ASCII digits",
    "a legacy device id (full import path)",
    "a device model that is not a device",
    "an unknown app in the device id",
    "signed in through OIDC",
    "a backend not configured",
    "a stale session hash (password changed)",
    "no session hash",
    "a user that no longer exists",
    "a user id that is not a number",
    "no backend",
]


@pytest.mark.parametrize("case", CASE_NAMES)
def test_the_one_read_path_decides_what_djangos_and_django_otps_decide(people, case):
    data = _cases(people)[case]
    assert _outcome("one read", data) == _outcome("stock", data)


def test_the_cases_cover_what_matters(people):
    """The comparison above is only worth its cases: each outcome that matters occurs."""
    outcomes = {name: _outcome("one read", data) for name, data in _cases(people).items()}
    assert set(outcomes) == set(CASE_NAMES)
    assert outcomes["verified with an authenticator"]["verified"] is True
    assert outcomes["verified with backup codes"]["device"][0] == "StaticDevice"
    assert outcomes["password only"]["authenticated"] and not outcomes["password only"]["verified"]
    for name in ("another person's device", "an unconfirmed device", "a device that no longer exists"):
        assert outcomes[name]["authenticated"] and not outcomes[name]["verified"], name
        assert DEVICE_ID_SESSION_KEY not in outcomes[name]["session"], name
    assert outcomes["a stale session hash (password changed)"]["flushed"]
    assert not outcomes["a stale session hash (password changed)"]["authenticated"]
    assert outcomes["a device model that is not a device"] == {"raised": "AttributeError"}


@pytest.mark.parametrize("backend", [MODEL_BACKEND, OIDC_BACKEND])
def test_an_inactive_user_is_decided_as_each_backend_decides(people, backend):
    alice = people[0]
    User.objects.filter(pk=alice.pk).update(is_active=False)
    alice.refresh_from_db()
    data = _session(alice, backend=backend)
    one_read = _outcome("one read", data)
    assert one_read == _outcome("stock", data)
    # ModelBackend refuses inactive users; mozilla-django-oidc's get_user does not (deactivation also
    # rotates the session stamp, which ends the session through the hash check).
    assert one_read["authenticated"] is (backend == OIDC_BACKEND)


def test_a_rotated_session_stamp_ends_the_session_on_both_paths(people):
    alice = people[0]
    data = _session(alice)
    alice.rotate_session_stamp()
    one_read = _outcome("one read", data)
    assert one_read == _outcome("stock", data)
    assert one_read["flushed"] and not one_read["authenticated"]


def test_a_session_hashed_with_a_fallback_secret_is_rekeyed_on_both_paths(people, settings):
    alice = people[0]
    old_hash = alice._session_hash(secret=OLD_SECRET)
    settings.SECRET_KEY_FALLBACKS = [OLD_SECRET]
    data = _session(alice, **{HASH_SESSION_KEY: old_hash})
    one_read = _outcome("one read", data)
    assert one_read == _outcome("stock", data)
    assert one_read["re-keyed"] and one_read["verified"]
    assert one_read["session"][HASH_SESSION_KEY] == alice.get_session_auth_hash()


def test_the_one_read_path_reads_the_user_and_device_in_one_statement(people, django_assert_num_queries):
    data = _session(people[0])
    session = signed_in.SessionStore()
    session.update(data)
    session.create()
    request = RequestFactory().get("/")
    request.session = signed_in.SessionStore(session.session_key)
    assert SESSION_KEY in request.session  # the session read, before the counted one
    with django_assert_num_queries(1):
        user = signed_in.user_of(request)
    assert user.is_verified() and user.notification_preferences == {}
    assert user.last_login is None or timezone.is_aware(user.last_login)
    assert isinstance(user.otp_device.created_at, type(timezone.now())) and user.otp_device.confirmed is True


@pytest.mark.parametrize(
    "expire_in, kept",
    [(3600, True), (-1, False)],
    ids=["live", "expired"],
)
def test_the_session_store_reads_what_djangos_store_reads(db, expire_in, kept):
    stored = Session.objects.create(
        session_key="k" * 32,
        session_data=StockSessionStore().encode({"a": 1}),
        expire_date=timezone.now() + timedelta(seconds=expire_in),
    )
    ours, stock = signed_in.SessionStore(stored.session_key), StockSessionStore(stored.session_key)
    assert ours.load() == stock.load() == ({"a": 1} if kept else {})
    assert ours.session_key == stock.session_key == (stored.session_key if kept else None)


def test_an_unknown_session_key_reads_as_no_session(db):
    ours = signed_in.SessionStore("x" * 32)
    assert ours.load() == {} and ours.session_key is None
