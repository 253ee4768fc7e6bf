"""Values that hold for the rest of the current database transaction, remembered until it ends.

A state change often records several events in one transaction (an auto-approved request: submitted,
approved, activated). Each took the ledger lock and read the chain's head again, and each read which
webhook subscriptions match, although under the lock the head is the one it just wrote and the
subscriptions are the ones it just read (docs/PERFORMANCE.md, issue 22). ``remember`` keeps such a value
for the transaction it was computed in, and only as long as what it was computed from still stands:

- it is forgotten when the transaction commits or rolls back, and when a savepoint rolls back — the rows
  written and the locks taken there may be gone with it;
- it is only kept inside a transaction (``atomic``); outside one nothing is remembered.

How: each value is stored with the connection's list of commit callbacks (``run_on_commit``) as it was
then. Django replaces that list with a new one at every commit, every rollback and every savepoint
rollback (``BaseDatabaseWrapper.savepoint_rollback``), and only then; so "the list is still the same
object" is "nothing was undone since" (a rollback of an unrelated savepoint also forgets: reading again is
always right). Nothing is registered with ``on_commit``. ``tests/services/test_transaction_memo.py`` holds
this to rollbacks of savepoints, of whole transactions and to commits.
"""

from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from django.db import connection

T = TypeVar("T")
_ATTRIBUTE = "_accessgov_transaction_memo"
_PRUNE_ABOVE = 64


def _memo() -> dict[Hashable, tuple[Any, list]]:
    memo = getattr(connection, _ATTRIBUTE, None)
    if memo is None:
        memo = {}
        setattr(connection, _ATTRIBUTE, memo)
    return memo


def recall(key: Hashable) -> Any | None:
    """The value remembered for ``key`` in this transaction, if it still stands; else None."""
    if not connection.in_atomic_block:
        return None
    entry = _memo().get(key)
    if entry is None:
        return None
    if entry[1] is not connection.run_on_commit:
        del _memo()[key]
        return None
    return entry[0]


def remember(key: Hashable, value: T) -> T:
    """Keep ``value`` for ``key`` until this transaction ends or a savepoint rolls back (outside a
    transaction: nothing is kept). Returns ``value``."""
    if connection.in_atomic_block:
        memo = _memo()
        if len(memo) > _PRUNE_ABOVE:  # keys of transactions that ended
            for stale in [k for k, (_, since) in memo.items() if since is not connection.run_on_commit]:
                del memo[stale]
        memo[key] = (value, connection.run_on_commit)
    return value


def forget(key: Hashable) -> None:
    """Drop ``key`` (what it was computed from changed in this transaction)."""
    _memo().pop(key, None)


def remembered(key: Hashable, compute: Callable[[], T]) -> T:
    """``recall(key)``, or ``compute()`` remembered for the transaction."""
    value = recall(key)
    if value is None:
        value = remember(key, compute())
    return value
