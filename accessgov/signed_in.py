"""Who is signed in: the session, then the session's user and the OTP device that verified it in one read.

Every signed-in request needs both. Django's ``auth.get_user`` reads the user and django-otp's middleware
then reads the device, two ORM queries whose building cost more than PostgreSQL's answer (≈ 1 ms of the
≈ 2.6 ms a signed-in health check took, docs/PERFORMANCE.md). ``user_of`` reads both in one prepared
statement and then applies exactly their rules, in their order:

- the session names a user id and a backend listed in AUTHENTICATION_BACKENDS, else anonymous;
- the backend's own rule for loading the user (ModelBackend: active users only; the OIDC backend: any);
- the session's hash must match the user's (a password change or a rotated session stamp ends every other
  session); a hash made with a fallback secret re-keys the session, anything else flushes it;
- the device counts only if it is confirmed and belongs to that user, else its id leaves the session.

The session itself (``SessionStore``, this module is the SESSION_ENGINE) is Django's database store with
its row read by a fixed statement instead of an ORM query built per request.

Anything this module does not know (another backend, another kind of device, a malformed device id)
takes the stock path, so the result is the stock result whatever the session holds.
``tests/security/test_signed_in.py`` compares the two paths over every such case.
"""

from functools import cache, partial

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth import get_user as stock_get_user
from django.contrib.auth.models import AnonymousUser
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.contrib.sessions.models import Session
from django.db import connection, connections
from django.db.models import Model
from django.http import HttpRequest
from django.utils.crypto import constant_time_compare
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.middleware import OTPMiddleware, is_verified
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice

from accessgov import clock, dbsql
from accessgov.models import User

# The backends whose ``get_user`` this module repeats: does it refuse inactive users?
ONE_READ_BACKENDS = {
    "django.contrib.auth.backends.ModelBackend": True,
    "accessgov.identity.oidc.OIDCBackend": False,
}
ONE_READ_DEVICES: dict[str, type[Model]] = {
    TOTPDevice.model_label(): TOTPDevice,
    StaticDevice.model_label(): StaticDevice,
}


def user_of(request: HttpRequest) -> User | AnonymousUser:
    """The signed-in user of ``request`` with ``otp_device`` and ``is_verified()`` set as django-otp's
    middleware sets them (``AnonymousUser`` when nobody is). Reads the session; may flush it or drop its
    device id, as the stock path does."""
    session = request.session
    try:
        user_id = User._meta.pk.to_python(session[SESSION_KEY])
        backend_path = session[BACKEND_SESSION_KEY]
    except KeyError:
        return _with_device(AnonymousUser(), None)
    if backend_path not in settings.AUTHENTICATION_BACKENDS:
        return _with_device(AnonymousUser(), None)
    device_ref = _device_ref(session.get(DEVICE_ID_SESSION_KEY))
    if backend_path not in ONE_READ_BACKENDS or device_ref is None:
        return _stock(request)
    user, device = _user_and_device(user_id, *device_ref)
    if user is not None and ONE_READ_BACKENDS[backend_path] and not user.is_active:
        user = None
    user = _session_verified(request, user)
    if user is None:
        return _with_device(AnonymousUser(), None)
    if device is not None and (device.user_id != user.pk or not device.confirmed):
        device = None
    if device is None and DEVICE_ID_SESSION_KEY in session:
        del session[DEVICE_ID_SESSION_KEY]
    return _with_device(user, device)


def _stock(request: HttpRequest):
    """Django's ``get_user`` and django-otp's verification, unchanged."""
    return OTPMiddleware(lambda request: None)._verify_user_sync(request, stock_get_user(request))


def _with_device(user, device):
    user.otp_device = device
    user.is_verified = partial(is_verified, user)
    return user


def _device_ref(persistent_id: str | None) -> tuple[type[Model] | None, int | None] | None:
    """(model, id) of the session's device, (None, None) for no device, None for one this module does
    not read itself (the stock path decides)."""
    if not persistent_id:
        return None, None
    label, _, device_id = persistent_id.rpartition("/")
    model = ONE_READ_DEVICES.get(label)
    if model is None or not device_id.isascii() or not device_id.isdigit():
        return None
    return model, int(device_id)


def _session_verified(request: HttpRequest, user: User | None) -> User | None:
    """Django's session hash check (``django.contrib.auth.get_user``), as it is written there."""
    if user is None:
        return None
    session_hash = request.session.get(HASH_SESSION_KEY)
    session_auth_hash = user.get_session_auth_hash()
    if session_hash and constant_time_compare(session_hash, session_auth_hash):
        return user
    if session_hash and any(
        constant_time_compare(session_hash, fallback) for fallback in user.get_session_auth_fallback_hash()
    ):
        request.session.cycle_key()
        request.session[HASH_SESSION_KEY] = session_auth_hash
        return user
    request.session.flush()
    return None


def _user_and_device(user_id: int, device_model: type[Model] | None, device_id: int | None):
    """The user row and the device row (either None when absent) in one statement."""
    alias = connection.alias
    sql, user_fields, device_fields = _statement(alias, device_model)
    with dbsql.prepared_cursor() as cursor:
        cursor.execute(sql, [device_id, user_id] if device_model else [user_id])
        row = cursor.fetchone()
    if row is None:
        return None, None
    values = list(row)
    for position, converters, expression in _converters(alias, device_model):
        for convert in converters:
            values[position] = convert(values[position], expression, connection)
    user = User.from_db(alias, [f.attname for f in user_fields], values[: len(user_fields)])
    device_values = values[len(user_fields) :]
    if device_model is None or device_values[0] is None:
        return user, None
    return user, device_model.from_db(alias, [f.attname for f in device_fields], device_values)


@cache
def _statement(alias: str, device_model: type[Model] | None):
    quote = connections[alias].ops.quote_name
    user_fields = User._meta.concrete_fields
    device_fields = device_model._meta.concrete_fields if device_model else ()
    columns = [f"u.{quote(f.column)}" for f in user_fields] + [f"d.{quote(f.column)}" for f in device_fields]
    join = f" LEFT JOIN {quote(device_model._meta.db_table)} d ON d.id = %s" if device_model else ""
    sql = f"SELECT {', '.join(columns)} FROM {quote(User._meta.db_table)} u{join} WHERE u.id = %s"  # noqa: S608 - names from the models
    return sql, user_fields, device_fields


@cache
def _converters(alias: str, device_model: type[Model] | None):
    """The from-database converters of the statement's columns (JSON, and on SQLite booleans and times),
    as the ORM would apply them; built once per process."""
    _, user_fields, device_fields = _statement(alias, device_model)
    expressions = [f.get_col("u") for f in user_fields] + [f.get_col("d") for f in device_fields]
    compiler = User.objects.none().query.get_compiler(alias)
    converters = compiler.get_converters(expressions)
    return [(position, functions, expression) for position, (functions, expression) in converters.items()]


class SessionStore(DatabaseSessionStore):
    """Django's database session store; the row is read with a fixed statement (the ORM's ``get`` with
    its lookups cost more to build than to run). Same rule: the key's row, if it has not expired."""

    def _get_session_from_db(self) -> Session | None:
        with dbsql.prepared_cursor() as cursor:
            cursor.execute(
                _SESSION_STATEMENT,
                [self.session_key, connection.ops.adapt_datetimefield_value(clock.now())],
            )
            row = cursor.fetchone()
        if row is None:
            self._session_key = None
            return None
        return Session(session_key=str(self.session_key), session_data=row[0])


_SESSION_STATEMENT = f'SELECT session_data FROM "{Session._meta.db_table}" WHERE session_key = %s AND expire_date > %s'  # noqa: S608 - the model's table
