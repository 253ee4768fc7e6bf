"""The one bridge from the write side to Celery: services, views and notifications name the task to
send; nothing but this module reaches the task registry, and ``accessgov.tasks`` imports services
(never the reverse), so there is no import circle to hide inside functions.

``enqueue`` sends after the current transaction commits (ids only; a broker outage is logged and
dropped: every queued effect also has a database home the scheduler or the sweep finds).
``send`` sends now, for callers outside a transaction (a task fanning out to another)."""

from celery import current_app
from django.db import transaction

TASK_MODULE = "accessgov.tasks"


def _task(name: str):
    registry = current_app.tasks
    qualified = f"{TASK_MODULE}.{name}"
    if qualified not in registry:
        current_app.loader.import_default_modules()  # a process that has not loaded the task module yet
    return registry[qualified]


def enqueue(name: str, *args) -> None:
    """Send task ``name`` with ``args`` once the current transaction commits (at once outside one)."""
    transaction.on_commit(lambda: _task(name).delay(*args), robust=True)


def send(name: str, *args) -> None:
    """Send task ``name`` with ``args`` now."""
    _task(name).delay(*args)
