"""Celery tasks: thin, idempotent wrappers that take ids and call services."""

import time

from celery import shared_task


@shared_task(ignore_result=False)
def ping() -> str:
    """Round-trip check used by the worker tests and by operators: returns "pong"."""
    return "pong"


@shared_task
def heartbeat() -> float:
    """Beat's pulse: proves beat → broker → worker is flowing (logged by the worker)."""
    return time.time()
