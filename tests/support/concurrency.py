"""Running calls at the same instant in separate threads and connections (``race``)."""

import random
import threading
import time
from collections.abc import Callable

from celery.result import allow_join_result
from django.db import connection

JUSTIFICATION = "Investigating incident INC-42 on payments"


class Outcome:
    """What one racer got: the service's return value, or the exception it raised."""

    def __init__(self, name: str):
        self.name = name
        self.value = None
        self.error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def __repr__(self) -> str:
        return f"<{self.name}: {self.error!r}>" if self.error else f"<{self.name}: {self.value!r}>"


def race(calls: dict[str, Callable[[], object]], *, jitter: float = 0.0) -> dict[str, Outcome]:
    """Run each call in its own thread, released together by a barrier (after each thread has opened
    its own database connection). ``jitter`` adds a random delay of up to that many seconds after the
    barrier so that repeated races exercise both orders. Every thread closes its connection."""
    barrier = threading.Barrier(len(calls))
    outcomes = {name: Outcome(name) for name in calls}

    def run(name: str, call: Callable[[], object]) -> None:
        outcome = outcomes[name]
        try:
            connection.ensure_connection()
            barrier.wait(timeout=10)
            if jitter:
                time.sleep(random.uniform(0, jitter))
            outcome.value = call()
        except BaseException as exc:
            outcome.error = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(name, call), name=f"racer-{name}") for name, call in calls.items()]
    # Eager tasks (the services' on_commit notifications) run inside the racing threads. Celery guards
    # each eager call with a process-global "join would block" flag that it saves and restores, which
    # is not thread-safe: interleaved saves can leave it stuck on, and every later AsyncResult.get()
    # in this process would then raise "Never call result.get() within a task!". allow_join_result()
    # restores the value from before the race.
    with allow_join_result():
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a racer is still running after 60 s (deadlock?)"
    return outcomes
