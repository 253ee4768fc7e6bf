"""The one rule for the name an account takes, on every path that names or renames one: a SCIM joiner or rename,
an account made at first sign-in, the admin's add form and a rename there (proposed and applied), a service
account (proposed and applied), ``manage.py createsuperuser``.

A name is refused when another account has it in another letter case, when it mixes look-alike alphabets, or when
it reads as another account's username or a provider's userName (a Latin "alice" beside one written in Cyrillic
letters, either way round; ``inputs.username_lookalike_problem``). Checked under a transaction-level advisory lock on
PostgreSQL, so two names that read alike, written at once, are checked one after the other: the second sees the
first. No unique constraint holds this: Django's on the username is case-sensitive, and why no "skeleton" column
is in docs/DECISIONS.md.
"""

from django.db import connection

from accessgov import inputs
from accessgov.exceptions import PolicyViolation
from accessgov.models import ExternalIdentity, User

# A transaction-level PostgreSQL advisory lock ("USERNAME"): one name check at a time, until its transaction ends.
USERNAME_LOCK_KEY = 0x555345524E414D45


def lock_usernames() -> None:
    """Wait for any other name check until its transaction ends, and hold this one's the same way (released at
    commit or rollback). SQLite writes one transaction at a time."""
    if connection.vendor != "postgresql":
        return
    if not connection.in_atomic_block:
        raise RuntimeError("A username check runs in the transaction that writes the name.")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [USERNAME_LOCK_KEY])


def _name_taken(pattern: str, *, user_id: int | None) -> str | None:
    """An account's username or a provider's userName matching ``pattern`` (a case-insensitive regular expression,
    from ``inputs.username_lookalike_pattern``), or None; the account ``user_id`` and its links are not counted."""
    accounts = User.objects.filter(username__iregex=pattern)
    names = ExternalIdentity.objects.filter(user_name__iregex=pattern)
    if user_id is not None:
        accounts, names = accounts.exclude(pk=user_id), names.exclude(user_id=user_id)
    return accounts.values_list("username", flat=True).first() or names.values_list("user_name", flat=True).first()


def username_problem(name: str, *, user_id: int | None = None, lock: bool = True) -> str | None:
    """Why ``name`` may not be an account's username, or None (``user_id``: the account being renamed, whose own
    names do not count). Call it in the transaction that writes the name: it holds the username lock until that
    transaction ends. ``lock=False`` is an early look only (a form, a prompt before more questions), to tell a
    person at once; the write checks again with the lock. Raises RuntimeError on PostgreSQL outside a transaction."""
    name = inputs.normal_username(name)
    if problem := inputs.username_lookalike_problem(name):
        return problem  # mixes alphabets: nothing to look up
    if lock:
        lock_usernames()
    others = User.objects.exclude(pk=user_id) if user_id is not None else User.objects.all()
    if other := others.filter(username__iexact=name).values_list("username", flat=True).first():
        return "it is taken" if other == name else f"it is taken, written {other}"
    return inputs.username_lookalike_problem(name, lambda pattern: _name_taken(pattern, user_id=user_id))


def ensure_username_allowed(name: str, *, user_id: int | None = None) -> None:
    """``username_problem`` with the lock, as a refusal: raises PolicyViolation saying why."""
    if problem := username_problem(name, user_id=user_id):
        raise PolicyViolation(f"The username {inputs.normal_username(name)} is refused: {problem}.")
